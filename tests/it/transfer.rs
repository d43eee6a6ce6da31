//! Transfers over real TLS, one story a module: what the grantee receives
//! and how it checks it ([`sealing`]), quotas and rate limits ([`limits`]),
//! streams cut by revocation, a sunset or a vanished client ([`cut`]), a
//! 1 GiB transfer in bounded memory ([`memory`]), and an app relaying through
//! its own gateway ([`relay`]). The helpers they share are here.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use xborder::upstream_example::pattern_byte;

use crate::support::*;

mod cut;
mod limits;
mod memory;
mod relay;
mod sealing;

fn pattern(n: u64) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// The receipt of `transfer` once it is written.
async fn receipt(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    transfer: &str,
) -> Value {
    let client = world.client(Some(cert));
    let path = format!("/v1/transfers/{transfer}/receipt");
    for _ in 0..200 {
        let (status, body) = send_json(&client, border, Method::GET, &path, None, None).await;
        if status == StatusCode::OK {
            return body["receipt"].clone();
        }
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the receipt of {transfer} never came");
}
