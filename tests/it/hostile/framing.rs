//! A peer that plays with HTTP framing: headers far over the limit (over
//! HTTP/1.1 and HTTP/2), and requests that smuggle a second request behind
//! conflicting or malformed `Content-Length` and `Transfer-Encoding`. The
//! gateway answers 431 or 400 or closes, never interprets the hidden
//! request, and a good peer is still served.

use std::time::Duration;

use http::StatusCode;

use super::{Fixture, TARGET_PATH, raw_h1, statuses};

#[tokio::test]
async fn oversized_headers_get_431_or_a_close() {
    let fx = Fixture::new().await;
    let value = "v".repeat(8 * 1024);
    let mut request = format!("GET {TARGET_PATH} HTTP/1.1\r\nhost: localhost\r\n");
    for i in 0..100 {
        request.push_str(&format!("x-big-{i}: {value}\r\n"));
    }
    request.push_str(&format!("authorization: Bearer {}\r\n\r\n", fx.token));
    let seen = raw_h1(&fx, request.as_bytes()).await;
    println!("100 x 8 KiB headers over HTTP/1.1: {:?}", statuses(&seen));
    assert!(
        matches!(statuses(&seen).as_slice(), [] | [431]),
        "{seen:.300}"
    );

    // The same over HTTP/2 through hyper's client.
    let client = fx.world.client_alpn(Some(&fx.police), &[b"h2"]);
    let mut conn = client
        .connect(fx.gateway.border, "localhost")
        .await
        .unwrap();
    let mut request = xborder::client::get(TARGET_PATH.parse().unwrap());
    for i in 0..100 {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", fx.token).parse().unwrap(),
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), conn.send(request))
        .await
        .expect("answered or reset promptly");
    match seen {
        Ok(response) => {
            println!("100 x 8 KiB headers over h2: {}", response.status());
            assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            );
        }
        Err(e) => println!("100 x 8 KiB headers over h2: refused: {e}"),
    }
    fx.still_served().await;
    fx.shutdown().await;
}

/// Request smuggling over HTTP/1.1: each request hides a second one
/// (`GET /v1/keys`) that a server with the wrong framing would answer.
#[tokio::test]
async fn smuggled_requests_are_never_interpreted() {
    let fx = Fixture::new().await;
    let smuggled = "GET /v1/keys HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let chunked_end = format!("0\r\n\r\n{smuggled}");
    let cases = [
        (
            "Content-Length and Transfer-Encoding: chunked",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n{chunked_end}",
                chunked_end.len()
            ),
        ),
        (
            "Transfer-Encoding: chunked and Content-Length",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "two Content-Length values",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\ncontent-length: {}\r\n\r\n{{}}{smuggled}",
                2 + smuggled.len()
            ),
        ),
        (
            "Content-Length: 2, N",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2, {}\r\n\r\n{{}}{smuggled}",
                2 + smuggled.len()
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: xchunked\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked, identity\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding : chunked\r\ncontent-length: {}\r\n\r\n{chunked_end}",
                chunked_end.len()
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in &cases {
        let seen = raw_h1(&fx, request.as_bytes()).await;
        let codes = statuses(&seen);
        println!("{what}: responses {codes:?}");
        let answered_smuggled = seen.contains("\"keys\"");
        if answered_smuggled || !matches!(codes.as_slice(), [] | [400]) {
            failures.push(format!("{what}: responses {codes:?}: {seen:.600}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    fx.still_served().await;
    fx.shutdown().await;
}
