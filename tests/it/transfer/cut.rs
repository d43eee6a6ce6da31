//! A stream that ends early: revoked, at its sunset, or abandoned by the
//! client. The stream ends with an error, the receipt says why and counts
//! and hashes exactly the bytes the client received, and the gateway stays
//! healthy.

use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{pattern, receipt};
use crate::support::*;

/// A 256 MiB stream; the client reads one frame, the grant is revoked, the
/// stream ends with an error and the receipt says why.
#[tokio::test]
async fn revocation_cuts_a_stream_and_its_receipt_says_so() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({}),
    )
    .await;
    let total: u64 = 256 << 20;
    let mut conn = world
        .client(Some(&police))
        .connect(gateway.border, "localhost")
        .await
        .unwrap();
    let request = xborder::client::bearer_get(
        format!("/v1/data/content/+3725550123?bytes={total}")
            .parse()
            .unwrap(),
        &token,
    );
    let response = conn.send(request).await.unwrap();
    let transfer = response.headers()["x-xborder-transfer"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());

    revoke(&world, gateway.admin, &grant).await;
    let revoked_at = Instant::now();
    let mut received = 0u64;
    let ended = loop {
        match body.frame().await {
            Some(Ok(frame)) => received += frame.into_data().map(|d| d.len() as u64).unwrap_or(0),
            Some(Err(e)) => break Some(e.to_string()),
            None => break None,
        }
    };
    // Correctness here; the 100 ms target is measured in benches.
    eprintln!(
        "stream cut {:?} after the revocation answered, {received} bytes later",
        revoked_at.elapsed()
    );
    assert!(
        ended.is_some(),
        "the stream ended cleanly instead of being cut"
    );
    assert!(received < total);

    let receipt = receipt(&world, gateway.border, &police, &transfer).await;
    assert_eq!(
        (
            receipt["complete"].as_bool(),
            receipt["incomplete"].as_str()
        ),
        (Some(false), Some("revoked"))
    );
    assert!(receipt["plaintext_bytes"].as_u64().unwrap() < total);
    gateway.shutdown().await;
}

/// A slow reader's transfer is cut (revoked, or at its sunset) over HTTP/1.1
/// and HTTP/2 while the reader has stopped reading: the receipt counts and
/// hashes exactly the bytes the client received, not the pieces that were
/// sealed and still queued at the cut (nor those that sat in the
/// connection's buffers, which leave before the reset), and its plaintext
/// count is the whole age chunks among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_transfers_receipt_counts_exactly_what_the_client_received() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let mut config = world.config(upstream);
    // The reader pauses until the sunset: not an idle connection to close.
    config.timeouts.idle = Duration::from_secs(30);
    let gateway = Running::start_with(config, stop).await;
    let police = world.fi_police();
    let total: u64 = 256 << 20;
    for (alpn, http2) in [(&[&b"http/1.1"[..]][..], false), (&[&b"h2"[..]][..], true)] {
        for cut in ["revoked", "expired"] {
            let terms = match cut {
                "expired" => json!({ "lifetime": "2s" }),
                _ => json!({}),
            };
            let (token, grant) = grant_with(
                &world,
                gateway.border,
                gateway.admin,
                &police,
                &["content"],
                terms,
            )
            .await;
            let mut conn = world
                .client_alpn(Some(&police), alpn)
                .connect(gateway.border, "localhost")
                .await
                .unwrap();
            assert_eq!(conn.is_http2(), http2);
            let response = conn
                .send(xborder::client::bearer_get(
                    format!("/v1/data/content/+3725550123?bytes={total}")
                        .parse()
                        .unwrap(),
                    &token,
                ))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let transfer = response.headers()["x-xborder-transfer"]
                .to_str()
                .unwrap()
                .to_owned();
            let mut body = response.into_body();
            let mut received = Vec::new();
            // A slow reader: a little, then a pause that lets every queue
            // between the sealer and this client fill up, during which the
            // grant ends.
            while received.len() < 1 << 20 {
                let frame = body.frame().await.unwrap().unwrap();
                received.extend_from_slice(&frame.into_data().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if cut == "expired" {
                let expired = eventually(Duration::from_secs(10), || async {
                    grant_view(&world, gateway.admin, &grant).await["state"] == "expired"
                })
                .await;
                assert!(expired, "the grant expires at its sunset");
            } else {
                revoke(&world, gateway.admin, &grant).await;
            }
            let ended = tokio::time::timeout(Duration::from_secs(20), async {
                loop {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                received.extend_from_slice(&data);
                            }
                        }
                        Some(Err(e)) => break Some(e.to_string()),
                        None => break None,
                    }
                }
            })
            .await
            .expect("the stream is cut");
            assert!(ended.is_some(), "{cut} over h2={http2}: ended cleanly");

            let receipt = receipt(&world, gateway.border, &police, &transfer).await;
            assert_eq!(receipt["incomplete"], cut, "h2={http2}");
            assert_eq!(
                receipt["ciphertext_bytes"],
                received.len(),
                "{cut} over h2={http2}: the receipt counts what the client got"
            );
            assert_eq!(
                receipt["ciphertext_sha256"],
                hex::encode(Sha256::digest(&received)),
                "{cut} over h2={http2}"
            );
            // The plaintext whose age chunks arrived: whole 64 KiB chunks,
            // each 64 KiB + 16 B of the ciphertext after the header.
            let plaintext = receipt["plaintext_bytes"].as_u64().unwrap();
            assert_eq!(plaintext % (64 << 10), 0, "{cut} over h2={http2}");
            let chunks = plaintext / (64 << 10);
            let header = received.len() as u64 - chunks * ((64 << 10) + 16);
            assert!(
                (100..400).contains(&header),
                "{cut} over h2={http2}: {chunks} chunks leave {header} bytes of header"
            );
            assert_eq!(
                receipt["plaintext_sha256"],
                hex::encode(Sha256::digest(pattern(plaintext))),
                "{cut} over h2={http2}"
            );
        }
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_the_gateway_healthy() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(&world, gateway.border, gateway.admin, &police, &["content"]).await;
    let transfer = {
        let mut conn = world
            .client(Some(&police))
            .connect(gateway.border, "localhost")
            .await
            .unwrap();
        let request = xborder::client::bearer_get(
            "/v1/data/content/+3725550123?bytes=268435456"
                .parse()
                .unwrap(),
            &token,
        );
        let response = conn.send(request).await.unwrap();
        let transfer = response.headers()["x-xborder-transfer"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut body = response.into_body();
        body.frame().await.unwrap().unwrap();
        transfer
        // The connection and the body drop here.
    };
    let receipt = receipt(&world, gateway.border, &police, &transfer).await;
    assert_eq!(
        (
            receipt["complete"].as_bool(),
            receipt["incomplete"].as_str()
        ),
        (Some(false), Some("client_gone"))
    );
    // And the next transfer goes through.
    let (status, _, sealed) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/content/+3725550123?bytes=1000",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open_sealed(&sealed), pattern(1000));
    gateway.shutdown().await;
}
