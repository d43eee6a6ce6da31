//! A peer that aims a path past its route into the upstream: dot segments,
//! encoded slashes and dots, backslashes, NULs, doubled slashes and a 64 KiB
//! path. Each is refused (`bad_path`, `route_not_found`, or hyper's 400 and
//! 414) or served with the upstream seeing only the granted target.

use http::StatusCode;
use serde_json::Value;

use super::{Fixture, problem_code, raw_h1, statuses};
use crate::support::*;

/// Paths aimed past the route into the upstream: refused with `bad_path`,
/// `route_not_found` or hyper's 400/414, or served with the upstream seeing
/// only the granted target (the example upstream echoes what it got).
#[tokio::test]
async fn paths_aimed_past_a_route_never_reach_an_unintended_upstream_path() {
    let fx = Fixture::new().await;
    let refused = [
        (
            "/v1/data/subscriber/../../admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123/../../../admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/./+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/%2e%2e/%2e%2e/admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/%2E%2E/x",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/.%2e/x",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber%2F..%2Fcontent/+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%2F..%2F..%2Fadmin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%2f",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/..%5c..%5cadmin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%00",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data//subscriber/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "//v1/data/subscriber/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscriberx/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscriber/+3725559999/../+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
    ];
    let mut failures = Vec::new();
    for (path, status, code) in refused {
        let seen = fx.pull_as(&fx.police, path, &fx.token).await;
        println!("{path}: {} {}", seen.0.as_u16(), seen.1);
        if seen != (status, code.to_owned()) {
            failures.push(format!("{path}: expected {status} {code}, got {seen:?}"));
        }
    }

    // Served: the upstream saw only paths beneath /subscriber/ that start with the granted target.
    for (path, upstream_target) in [
        ("/v1/data/subscriber/+3725550123/", "+3725550123/"),
        ("/v1/data/subscriber//+3725550123", "/+3725550123"),
        ("/v1/data/subscriber/+3725550123//x", "+3725550123//x"),
        (
            "/v1/data/subscriber/+3725550123/%252e%252e/admin",
            "+3725550123/%252e%252e/admin",
        ),
    ] {
        let mut conn = fx
            .world
            .client(Some(&fx.police))
            .connect(fx.gateway.border, "localhost")
            .await
            .unwrap();
        let (status, body) = get_with(&mut conn, path, &fx.token).await.unwrap();
        if status != StatusCode::OK {
            println!("{path}: {status} {}", String::from_utf8_lossy(&body));
            continue;
        }
        let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
        println!(
            "{path}: 200, the upstream saw /subscriber/{}",
            record["target"]
        );
        if record["target"] != upstream_target {
            failures.push(format!("{path}: the upstream saw {}", record["target"]));
        }
    }

    // What the URI parser of hyper's client will not send: raw over HTTP/1.1.
    let long = format!("/v1/data/subscriber/{}", "a".repeat(64 * 1024));
    let raw_cases = [
        (
            "backslashes",
            "/v1/data/subscriber/..\\..\\admin".to_owned(),
            &[400][..],
        ),
        (
            "a backslash target",
            "/v1/data/subscriber/+3725550123\\..\\x".to_owned(),
            &[400][..],
        ),
        ("64 KiB path", long, &[400, 414, 431][..]),
    ];
    for (what, path, allowed) in raw_cases {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            fx.token
        );
        let seen = raw_h1(&fx, request.as_bytes()).await;
        let codes = statuses(&seen);
        println!("{what}: {codes:?} {}", problem_code(&seen));
        let ok = match codes.as_slice() {
            [] => true,
            [code] => allowed.contains(code),
            _ => false,
        };
        if !ok || seen.contains("Mari Maasikas") {
            failures.push(format!("{what}: {seen:.400}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    fx.still_served().await;
    fx.shutdown().await;
}
