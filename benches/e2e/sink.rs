//! The upstream every target forwards to: plain HTTP/1.1 on loopback, in
//! the bench process (on the load generator's core). It ignores the path and
//! answers from the query:
//!
//! - `bytes=N`: N bytes (default 200, a small record), in 64 KiB chunks as
//!   fast as the reader takes them;
//! - `drip_ms=M` with `bytes=N`: 16 KiB every M ms, a slow source, so that
//!   transfers stay in flight.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CHUNK: usize = 64 << 10;
const DRIP: usize = 16 << 10;
const SMALL: usize = 200;

type Body = BoxBody<Bytes, Infallible>;

/// Binds 127.0.0.1:0 and serves until the runtime ends; the bound address.
pub async fn spawn() -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sink binds 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|r| async move { Ok::<_, Infallible>(answer(&r)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn param(request: &Request<Incoming>, name: &str) -> Option<usize> {
    request
        .uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn answer(request: &Request<Incoming>) -> Response<Body> {
    let bytes = param(request, "bytes").unwrap_or(SMALL);
    let body = match param(request, "drip_ms") {
        Some(ms) => drip(bytes, Duration::from_millis(ms as u64)),
        None if bytes <= CHUNK => Full::new(Bytes::from(vec![b'x'; bytes])).boxed(),
        None => stream(bytes),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, bytes)
        .body(body)
        .expect("a well-formed response")
}

/// `n` bytes in 64 KiB chunks of one shared buffer: no per-byte work here.
fn stream(n: usize) -> Body {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..n)
            .step_by(CHUNK)
            .map(move |at| Ok::<_, Infallible>(Frame::data(chunk.slice(..CHUNK.min(n - at))))),
    );
    StreamBody::new(frames).boxed()
}

/// `n` bytes, 16 KiB every `every`.
fn drip(n: usize, every: Duration) -> Body {
    let chunk = Bytes::from(vec![b'x'; DRIP]);
    let frames = futures_util::stream::unfold(0usize, move |at| {
        let chunk = chunk.clone();
        async move {
            if at >= n {
                return None;
            }
            tokio::time::sleep(every).await;
            let len = DRIP.min(n - at);
            Some((
                Ok::<_, Infallible>(Frame::data(chunk.slice(..len))),
                at + len,
            ))
        }
    });
    StreamBody::new(frames).boxed()
}
