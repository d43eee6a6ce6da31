//! A peer that tries to use up the listener rather than fool it: a
//! thousand connections that never handshake, HTTP/2 rapid reset, a request
//! body that stalls after five bytes. The listener cuts or outlasts them, a
//! good peer is served meanwhile and after, and no connection of theirs is
//! left counted as open.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Fixture, raw_tls, statuses};
use crate::support::*;

/// A thousand TCP connections that never start a handshake; a good peer is
/// served while they are open and after they are gone.
#[tokio::test]
async fn a_thousand_idle_connections_do_not_wedge_the_listener() {
    let fx = Fixture::new().await;
    let mut idle = Vec::with_capacity(1000);
    let started = Instant::now();
    for _ in 0..1000 {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(fx.gateway.border),
        )
        .await
        .expect("connect promptly")
        .unwrap();
        idle.push(stream);
    }
    println!("1000 idle connections open in {:?}", started.elapsed());
    let served = Instant::now();
    fx.still_served().await;
    println!("good peer served in {:?} beside them", served.elapsed());
    drop(idle);
    fx.still_served().await;
    // The listener counts no connection of theirs as open.
    assert!(
        eventually(Duration::from_secs(5), || async {
            fx.gateway
                .metric(r#"xborder_open_connections{listener="border"}"#)
                .await
                .unwrap_or(0.0)
                == 0.0
        })
        .await
    );
    fx.shutdown().await;
}

/// HTTP/2 rapid reset (CVE-2023-44487), in raw frames: the `h2` crate is
/// not a dependency this package may name in tests, so HEADERS and
/// RST_STREAM are written by hand.
#[tokio::test]
async fn http2_rapid_reset_does_not_wedge_the_listener() {
    let fx = Fixture::new().await;
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"h2").await;
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.push(0x04); // :path, literal without indexing
    block.push(u8::try_from(PING.len()).unwrap());
    block.extend_from_slice(PING.as_bytes());
    block.push(0x01); // :authority
    block.push(9);
    block.extend_from_slice(b"localhost");
    let streams: u32 = 5000;
    let started = Instant::now();
    let mut written = 0;
    for i in 0..streams {
        let id = 1 + 2 * i;
        frame(&mut out, 0x1, 0x4 | 0x1, id, &block); // HEADERS, END_HEADERS|END_STREAM
        frame(&mut out, 0x3, 0, id, &8u32.to_be_bytes()); // RST_STREAM CANCEL
        if out.len() > 64 * 1024 {
            if tls.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        written = i + 1;
    }
    let _ = tls.write_all(&out).await;
    let _ = tls.flush().await;
    // Read what the server says: GOAWAY (and its code), or a close.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut buf = vec![0u8; 64 * 1024];
    while seen.len() < 8 * 1024 * 1024 {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let goaway = goaway_code(&seen);
    println!(
        "rapid reset: {written} of {streams} streams sent and reset in {:?}; GOAWAY {goaway:?}",
        started.elapsed()
    );
    drop(tls);
    // Bounded by `still_served`'s deadlines: a wedged listener fails there.
    fx.still_served().await;
    fx.shutdown().await;
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The error code of the first GOAWAY among the frames in `bytes`.
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let kind = rest[3];
        let payload = rest.get(9..9 + len)?;
        if kind == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        rest = &rest[9 + len..];
    }
    None
}

/// A body that stalls: the headers declare 1 KiB, 5 bytes come, then
/// nothing. The connection must be cut within a bound (`timeouts.idle` is
/// 2 s and `header_read` 1 s in the test config), or a thousand such
/// clients hold a thousand connections and tasks for ever.
#[tokio::test]
async fn a_stalled_request_body_is_cut() {
    let fx = Fixture::new().await;
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"http/1.1").await;
    tls.write_all(
        b"POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1024\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let cut = loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    println!(
        "stalled body: cut {cut} after {:?}, answered {:?}",
        started.elapsed(),
        statuses(&String::from_utf8_lossy(&seen))
    );
    assert!(cut, "still open after {:?}", started.elapsed());
    drop(tls);
    fx.still_served().await;
    fx.shutdown().await;
}
