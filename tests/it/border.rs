//! The border listener: who gets in, what reaches the upstream, and that
//! bodies stream intact both ways.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::StatusCode;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xborder::pki::LeafSpec;
use xborder::upstream_example::pattern_byte;

use crate::support::*;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_foreign_peer_reaches_the_upstream_over_http2_and_http1() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;

    for (alpn, expect_h2) in [
        (&[&b"h2"[..], b"http/1.1"][..], true),
        (&[&b"http/1.1"[..]][..], false),
    ] {
        let client = world.client_alpn(Some(&police), alpn);
        let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
        assert_eq!(conn.is_http2(), expect_h2);
        let (status, body) = get_with(
            &mut conn,
            "/v1/data/subscriber/+3725550123?fields=name",
            &token,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
        assert_eq!(record["target"], "+3725550123");
        assert_eq!(record["asked_by"], "spiffe://fi.xborder.test/agency/police");
        assert_eq!(record["asked_from"], "FI");
        assert_eq!(record["category"], "subscriber");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn identity_headers_a_peer_sends_are_replaced_by_the_verified_ones() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let client = world.client(Some(&police));
    let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
    let mut request =
        xborder::client::bearer_get("/v1/data/subscriber/+3725550123".parse().unwrap(), &token);
    request.headers_mut().insert(
        "x-xborder-peer",
        "spiffe://ee.xborder.test/admin/operator".parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("x-xborder-jurisdiction", "EE".parse().unwrap());
    let response = conn.send(request).await.unwrap();
    let (_, body) = xborder::client::collect(response).await.unwrap();
    let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
    assert_eq!(record["asked_by"], "spiffe://fi.xborder.test/agency/police");
    assert_eq!(record["asked_from"], "FI");
    gateway.shutdown().await;
}

/// 64 MiB up to the upstream and back, never collected whole on either side.
#[tokio::test]
async fn a_64_mib_body_streams_both_ways_intact() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(&world, gateway.border, gateway.admin, &police, &["content"]).await;
    let client = world.client(Some(&police));
    let total = 64 * MIB;

    // Upload: a streamed body echoed back by the upstream.
    let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
    let chunks = stream::iter((0..total / MIB).map(|i| {
        let chunk: Vec<u8> = (i * MIB..(i + 1) * MIB).map(pattern_byte).collect();
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(chunk)))
    }));
    let body = StreamBody::new(chunks).map_err(|e| match e {}).boxed();
    let request = http::Request::post("/v1/data/content/+3725550123")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (received, received_hash) = drain(response.into_body()).await;
    assert_eq!(received, total);
    assert_eq!(received_hash, expected_hash(total), "echoed body differs");

    // Download over HTTP/1.1: the pattern the upstream generates.
    let h1 = world.client_alpn(Some(&police), &[b"http/1.1"]);
    let mut conn = h1.connect(gateway.border, "localhost").await.unwrap();
    let path = format!("/v1/data/content/+3725550123?bytes={total}");
    let request = xborder::client::bearer_get(path.parse().unwrap(), &token);
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (received, hash) = drain(response.into_body()).await;
    assert_eq!(received, total);
    assert_eq!(hash, expected_hash(total));
    gateway.shutdown().await;
}

fn expected_hash(n: u64) -> [u8; 32] {
    let mut hash = Sha256::new();
    for start in (0..n).step_by(MIB as usize) {
        let chunk: Vec<u8> = (start..(start + MIB).min(n)).map(pattern_byte).collect();
        hash.update(&chunk);
    }
    hash.finalize().into()
}

async fn drain(body: hyper::body::Incoming) -> (u64, [u8; 32]) {
    let sealed = body.collect().await.unwrap().to_bytes();
    let plaintext = open_sealed(&sealed);
    (plaintext.len() as u64, Sha256::digest(&plaintext).into())
}

#[tokio::test]
async fn peers_without_an_acceptable_certificate_are_refused() {
    let world = World::new();
    let now = OffsetDateTime::now_utc();
    let revoked = world.fi_police();
    world.write("fi/ca.crl", &world.fi.crl_pem(&[&revoked]).unwrap());
    let gateway = Running::start(&world).await;

    let us = xborder::pki::DevCa::new(&jurisdiction("US")).unwrap();
    let cases = [
        ("no client certificate", None),
        (
            "unknown CA",
            Some(
                us.issue(&LeafSpec::client(spiffe(
                    "spiffe://us.xborder.test/agency/fbi",
                )))
                .unwrap(),
            ),
        ),
        (
            "EE's CA vouching for FI's trust domain",
            Some(
                world
                    .ee
                    .issue(&LeafSpec::client(spiffe(
                        "spiffe://fi.xborder.test/agency/police",
                    )))
                    .unwrap(),
            ),
        ),
        (
            "FI's CA vouching for EE's trust domain",
            Some(
                world
                    .fi
                    .issue(&LeafSpec::client(spiffe(
                        "spiffe://ee.xborder.test/admin/operator",
                    )))
                    .unwrap(),
            ),
        ),
        (
            "expired",
            Some(
                world
                    .fi
                    .issue(
                        &LeafSpec::client(spiffe("spiffe://fi.xborder.test/agency/police")).valid(
                            now - time::Duration::days(30),
                            now - time::Duration::days(1),
                        ),
                    )
                    .unwrap(),
            ),
        ),
        ("revoked by CRL", Some(revoked)),
        (
            "no clientAuth EKU",
            Some(
                world
                    .fi
                    .issue(&LeafSpec::server(spiffe(
                        "spiffe://fi.xborder.test/agency/police",
                    )))
                    .unwrap(),
            ),
        ),
    ];
    let count = cases.len();
    for (what, cert) in &cases {
        let seen = assert_refused(&world.client(cert.as_ref()), gateway.border).await;
        assert!(!seen.is_empty(), "{what}");
    }
    let refused = gateway
        .metric(r#"xborder_tls_handshakes_total{listener="border",result="refused"}"#)
        .await;
    assert_eq!(refused, Some(count as f64));

    // A good peer is still served.
    let good = world.client(Some(&world.fi_police()));
    let (status, _) = get(&good, gateway.border, PING).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    gateway.shutdown().await;
}

#[tokio::test]
async fn refusals_of_requests_are_problem_json_with_a_stable_code() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let client = world.client(Some(&world.fi_police()));
    let mut conn = client.connect(gateway.border, "localhost").await.unwrap();

    for (path, status, code) in [
        (
            "/v1/data/nothing-here",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscribers/1",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscriber/../../admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/%2e%2e/x",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
    ] {
        let response = conn
            .send(xborder::client::get(path.parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let (_, body) = xborder::client::collect(response).await.unwrap();
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], code, "{path}");
        assert_eq!(problem["status"], status.as_u16());
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_problem() {
    let world = World::new();
    // An address nothing listens on: bind, note, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gateway = Running::start_with(world.config(dead), Default::default()).await;
    let police = world.fi_police();
    let token = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let mut conn = world
        .client(Some(&police))
        .connect(gateway.border, "localhost")
        .await
        .unwrap();
    let (status, body) = get_with(&mut conn, "/v1/data/subscriber/+3725550123", &token)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["code"], "upstream_unavailable");
    assert!(
        !problem["title"].as_str().unwrap().contains("127.0.0.1"),
        "no internals in the text"
    );
    gateway.shutdown().await;
}

/// A client that drips its headers is cut once `timeouts.header_read` (1 s) passes.
#[tokio::test]
async fn a_slowloris_client_is_cut_after_the_header_timeout() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let config = world.client_config(Some(&world.fi_police()), &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(gateway.border)
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /v1/data/subscriber/+3725550123 HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();

    // Drip one header line every 200 ms for up to 10 s; the gateway must cut us well before.
    let started = std::time::Instant::now();
    let mut cut = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tls
            .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(read) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await {
            // EOF, an error, or hyper's 408 before closing: all mean "cut".
            let _ = read;
            cut = true;
            break;
        }
    }
    // Cut before the 10 s of dripping ended: the header deadline (1 s) acted.
    assert!(cut, "still connected after {:?}", started.elapsed());

    // The listener still serves others.
    let client = world.client(Some(&world.fi_police()));
    assert_eq!(
        get(&client, gateway.border, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    for alpn in [&[&b"h2"[..]][..], &[&b"http/1.1"[..]][..]] {
        let client = world.client_alpn(Some(&world.fi_police()), alpn);
        let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
        assert_eq!(
            get_on(&mut conn, PING).await.unwrap().0,
            StatusCode::NOT_FOUND
        );
        // idle = 2 s in the test config.
        let closed = tokio::time::timeout(Duration::from_secs(8), conn.closed()).await;
        assert!(closed.is_ok(), "idle connection still open after 8 s");
    }
    gateway.shutdown().await;
}

/// A client that connects and never starts its handshake is cut after `timeouts.tls_handshake` (2 s).
#[tokio::test]
async fn a_silent_client_is_cut_after_the_handshake_timeout() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let mut silent = tokio::net::TcpStream::connect(gateway.border)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "not cut: {read:?}");
    let timeouts = gateway
        .metric(r#"xborder_tls_handshakes_total{listener="border",result="timeout"}"#)
        .await;
    assert_eq!(timeouts, Some(1.0));
    gateway.shutdown().await;
}

/// Garbage, half handshakes and certificate-less peers, 200 of them, then a good peer.
#[tokio::test]
async fn after_a_burst_of_bad_connections_a_good_peer_is_served() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let anonymous = world.client(None);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let addr = gateway.border;
        let anonymous = anonymous.clone();
        tasks.spawn(async move {
            match i % 4 {
                0 => {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
                }
                1 => {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let _ = s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01]).await;
                }
                2 => drop(tokio::net::TcpStream::connect(addr).await.unwrap()),
                _ => {
                    let _ = get(&anonymous, addr, "/").await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let client = world.client(Some(&world.fi_police()));
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(5), get(&client, gateway.border, PING))
            .await
            .expect("served promptly")
            .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    gateway.shutdown().await;
}
