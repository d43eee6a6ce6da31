//! A peer that files a request with a body built to exhaust the parser or
//! the memory: deep nesting, padding past the 64 KiB cap, a megabyte of
//! white space, a declared 10 GB body. Each is refused with its code, and
//! nothing is filed.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Fixture, problem_code, raw_h1, statuses};
use crate::support::*;

/// Filing with a body built to exhaust the parser or the memory.
#[tokio::test]
async fn hostile_json_bodies_are_refused() {
    let fx = Fixture::new().await;
    let client = fx.world.client(Some(&fx.police));
    let post = |body: Vec<u8>| {
        let client = client.clone();
        let border = fx.gateway.border;
        async move {
            let mut conn = client.connect(border, "localhost").await.unwrap();
            let request = http::Request::post("/v1/requests")
                .header("content-type", "application/json")
                .body(xborder::wire::full(body))
                .unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), conn.send(request))
                .await
                .expect("answered promptly")
                .unwrap();
            let (parts, body) = xborder::client::collect(response).await.unwrap();
            let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (
                parts.status,
                problem["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "100 000 nested arrays (over 64 KiB)",
            "[".repeat(100_000).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "60 000 nested arrays (under 64 KiB)",
            "[".repeat(60_000).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "30 000 nested arrays, closed",
            format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "nested objects in a field",
            format!(
                "{{\"purpose\":{}1{}}}",
                "{\"a\":".repeat(10_000),
                "}".repeat(10_000)
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "a valid request padded past 64 KiB",
            {
                let mut body = request_body(&["subscriber"], "normal");
                body["justification"] = json!("x".repeat(70 * 1024));
                body.to_string().into_bytes()
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "1 MiB of whitespace",
            vec![b' '; 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    let mut failures = Vec::new();
    for (what, body, status, code) in cases {
        let seen = post(body).await;
        println!("{what}: {} {}", seen.0.as_u16(), seen.1);
        if seen != (status, code.to_owned()) {
            failures.push(format!("{what}: expected {status} {code}, got {seen:?}"));
        }
    }

    // A declared 10 GB body whose first 128 KiB arrive: refused once the cap is passed.
    let mut request =
        b"POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10000000000\r\n\r\n"
            .to_vec();
    request.extend(std::iter::repeat_n(b' ', 128 * 1024));
    let seen = raw_h1(&fx, &request).await;
    println!(
        "declared 10 GB, 128 KiB sent: {:?} {}",
        statuses(&seen),
        problem_code(&seen)
    );
    if statuses(&seen) != [413] || problem_code(&seen) != "body_too_large" {
        failures.push(format!("declared 10 GB: {seen:.400}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was filed.
    let (status, all) = send_json(
        &admin(&fx.world, "rita"),
        fx.gateway.admin,
        Method::GET,
        "/v1/requests",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        all["requests"].as_array().unwrap().len(),
        1,
        "only the fixture's"
    );
    fx.still_served().await;
    fx.shutdown().await;
}
