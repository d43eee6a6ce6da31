//! Hostile peers, one story a module: forged and mangled grant tokens
//! ([`tokens`]), certificates that must not get in ([`certificates`]), HTTP
//! framing tricks ([`framing`]), floods of connections and streams and a
//! stalled body ([`exhaustion`]), paths aimed past a route ([`paths`]), and
//! JSON built to exhaust a parser ([`json_bodies`]). Each case asserts the
//! exact refusal, and after each group a good peer still pulls a transfer
//! that decrypts. The [`Fixture`] and the raw HTTP/1.1 helpers they share
//! are here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xborder::pki::Issued;

use crate::support::*;

mod certificates;
mod exhaustion;
mod framing;
mod json_bodies;
mod paths;
mod tokens;

const TARGET_PATH: &str = "/v1/data/subscriber/+3725550123";

/// A gateway, FI's police, and a grant token for subscriber data.
struct Fixture {
    world: World,
    gateway: Running,
    police: Issued,
    token: String,
}

impl Fixture {
    async fn new() -> Self {
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
        Self {
            world,
            gateway,
            police,
            token,
        }
    }

    /// A good peer is still served: a grant-token transfer answers 200 and decrypts.
    async fn still_served(&self) {
        let client = self.world.client(Some(&self.police));
        let mut conn = tokio::time::timeout(
            Duration::from_secs(20),
            client.connect(self.gateway.border, "localhost"),
        )
        .await
        .expect("a good peer connects promptly")
        .expect("a good peer's handshake succeeds");
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(30),
            get_with(&mut conn, TARGET_PATH, &self.token),
        )
        .await
        .expect("a good peer is answered promptly")
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
        assert_eq!(record["target"], "+3725550123");
    }

    /// GET `path` with `token` over `cert`; the status and problem code.
    async fn pull_as(&self, cert: &Issued, path: &str, token: &str) -> (StatusCode, String) {
        let (status, body) = send_json(
            &self.world.client(Some(cert)),
            self.gateway.border,
            Method::GET,
            path,
            None,
            Some(token),
        )
        .await;
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    }

    async fn shutdown(self) {
        self.gateway.shutdown().await;
    }
}

/// A raw TLS stream to the border, as `cert`, offering only `alpn`.
async fn raw_tls(
    world: &World,
    addr: SocketAddr,
    cert: &Issued,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = world.client_config(Some(cert), &[alpn]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Writes `bytes` on a fresh HTTP/1.1 connection and reads whatever comes
/// back until the server closes (at most 1 MiB, 6 s).
async fn raw_h1(fx: &Fixture, bytes: &[u8]) -> String {
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"http/1.1").await;
    // The server may close mid-write, which is one of the acceptable outcomes.
    let _ = tls.write_all(bytes).await;
    let _ = tls.flush().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut buf = vec![0u8; 64 * 1024];
    while seen.len() < 1024 * 1024 {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The status codes of the HTTP/1.1 responses in `raw`.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

fn problem_code(raw: &str) -> String {
    raw.split_once("\"code\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(code, _)| code.to_owned())
        .unwrap_or_default()
}
