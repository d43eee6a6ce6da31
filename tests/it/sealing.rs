//! Sealed transfers across age's 64 KiB chunk boundaries, through the real
//! gateway: a data service that sends its body in frames of random sizes
//! (empty, one byte, whole chunks, a chunk ± 1), and the requester gets back
//! exactly the body, and a receipt whose hashes and sizes are those of what
//! went in and what came out.

use std::convert::Infallible;
use std::process::Command;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::support::*;

const CHUNK: usize = 64 * 1024;

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// A data service: `GET /frames/{target}?len=N&frames=a,b,c` answers `N`
/// bytes of [`body`] in frames of `a`, `b`, `c`, ... bytes (the last frame
/// takes the rest), each flushed on its own.
async fn framing_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|r: Request<Incoming>| async move {
                    Ok::<_, Infallible>(frames(r.uri().query().unwrap_or("")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn frames(query: &str) -> Response<xborder::wire::Body> {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
    };
    let data = Bytes::from(body(param("len").parse().unwrap()));
    let mut at = 0;
    let mut pieces = Vec::new();
    for n in param("frames").split(',').filter(|s| !s.is_empty()) {
        let end = (at + n.parse::<usize>().unwrap()).min(data.len());
        pieces.push(data.slice(at..end));
        at = end;
    }
    pieces.push(data.slice(at..));
    let stream = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(Frame::data(piece))
    });
    Response::new(
        StreamBody::new(stream)
            .map_err(|e: Infallible| match e {})
            .boxed(),
    )
}

async fn receipt(world: &World, border: std::net::SocketAddr, transfer: &str) -> Value {
    let client = world.client(Some(&world.fi_police()));
    let path = format!("/v1/transfers/{transfer}/receipt");
    for _ in 0..200 {
        let (status, body) = send_json(&client, border, http::Method::GET, &path, None, None).await;
        if status == StatusCode::OK {
            return body["receipt"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the receipt of {transfer} never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_random_frames_around_chunk_boundaries_open_to_themselves_with_true_receipts() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = framing_upstream().await;
    let text = world.config_text(upstream)
        + &format!(
            "\n[[routes]]\nprefix = \"/v1/data/frames\"\nupstream = \"http://{upstream}/frames\"\ncategory = \"content\"\nparameters = [\"len\", \"frames\"]\n"
        );
    world.write("ee/gateway.toml", &text);
    let config = xborder::config::Config::load(&world.path("ee/gateway.toml")).unwrap();
    let gateway = Running::start_with(config, stop.clone()).await;
    let police = world.fi_police();
    let (token, _) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({}),
    )
    .await;

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ea1);
    let lengths = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 1];
    for (case, len) in lengths.into_iter().enumerate() {
        // Frames of 0, 1, a chunk, a chunk ± 1 and anything in between.
        let frames: Vec<String> = (0..rng.gen_range(0..8))
            .map(|_| match rng.gen_range(0..5) {
                0 => 0,
                1 => 1,
                2 => CHUNK,
                3 => CHUNK - 1 + rng.gen_range(0..3),
                _ => rng.gen_range(0..2 * CHUNK),
            })
            .map(|n| n.to_string())
            .collect();
        let path = format!(
            "/v1/data/frames/+3725550123?len={len}&frames={}",
            frames.join(",")
        );
        let (status, transfer, sealed) =
            pull_raw(&world, gateway.border, &police, Some(&token), &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let plaintext = body(len);
        assert!(
            open_sealed(&sealed) == plaintext,
            "{path}: decrypts to another body"
        );
        if case == 4 {
            // The real `age` CLI agrees.
            world.write("fi/identity.txt", &format!("{IDENTITY}\n"));
            std::fs::write(world.path("fi/sealed.age"), &sealed).unwrap();
            let age = Command::new("age")
                .args(["-d", "-i"])
                .arg(world.path("fi/identity.txt"))
                .arg(world.path("fi/sealed.age"))
                .output()
                .expect("the `age` CLI is installed (apt-get install age)");
            assert!(
                age.status.success(),
                "{}",
                String::from_utf8_lossy(&age.stderr)
            );
            assert!(age.stdout == plaintext, "{path}: age -d gives another body");
        }
        let receipt = receipt(&world, gateway.border, &transfer.unwrap()).await;
        assert_eq!(receipt["complete"], true, "{path}");
        assert_eq!(receipt["plaintext_bytes"], len, "{path}");
        assert_eq!(receipt["ciphertext_bytes"], sealed.len(), "{path}");
        assert_eq!(
            receipt["plaintext_sha256"],
            hex::encode(Sha256::digest(&plaintext)),
            "{path}"
        );
        assert_eq!(
            receipt["ciphertext_sha256"],
            hex::encode(Sha256::digest(&sealed)),
            "{path}"
        );
    }
    stop.cancel();
    gateway.shutdown().await;
}
