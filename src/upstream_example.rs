//! A small built-in data service, standing in for a company's own behind the
//! gateway in `xborder demo` and in tests.
//!
//! - `GET /subscriber/{target}`: a JSON subscriber record, naming who asked
//!   (from the gateway's `x-xborder-*` headers).
//! - `GET /content/{target}?bytes=N`: N bytes (default 1 MiB) of a fixed
//!   pattern, streamed in 64 KiB chunks, standing in for stored content.
//! - `POST /content/{target}`: the request body streamed back as it arrives.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::wire::{Body, full};

const CHUNK: usize = 64 * 1024;

/// Byte `i` of the `/bytes/{n}` pattern, so a receiver can check what it got.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Serves on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|r| async move { Ok::<_, Infallible>(handle(r)) });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, stop));
    Ok(bound)
}

fn handle(request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    match (request.method().clone(), path.as_str()) {
        (Method::GET, p) if p.starts_with("/subscriber/") => {
            let header = |name: &str| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let body = serde_json::json!({
                "target": &p["/subscriber/".len()..],
                "name": "Mari Maasikas",
                "customer_since": "2019-04-01",
                "asked_by": header(crate::wire::PEER_HEADER),
                "asked_from": header(crate::wire::JURISDICTION_HEADER),
                "category": header(crate::wire::CATEGORY_HEADER),
            });
            let mut response = Response::new(full(body.to_string()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        (Method::GET, p) if p.starts_with("/content/") => {
            let n = match crate::wire::query_param(request.uri().query(), "bytes") {
                None => Ok(1024 * 1024),
                Some(n) => n.parse::<u64>(),
            };
            match n {
                Ok(n) => Response::new(pattern(n)),
                Err(_) => status(StatusCode::BAD_REQUEST),
            }
        }
        (Method::POST, p) if p.starts_with("/content/") => {
            Response::new(request.into_body().map_err(Into::into).boxed())
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// `n` pattern bytes, produced chunk by chunk as the receiver reads. Each
/// chunk is a slice of one shared buffer (the pattern repeats every 251
/// bytes), so serving a gigabyte costs no per-byte work here.
fn pattern(n: u64) -> Body {
    static TILE: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let tile = TILE.get_or_init(|| {
        (0..(CHUNK + 251) as u64)
            .map(pattern_byte)
            .collect::<Vec<u8>>()
            .into()
    });
    let chunks = stream::unfold(0u64, move |sent| async move {
        (sent < n).then(|| {
            let len = (n - sent).min(CHUNK as u64) as usize;
            let start = (sent % 251) as usize;
            (
                Ok::<_, Infallible>(Frame::data(tile.slice(start..start + len))),
                sent + len as u64,
            )
        })
    });
    StreamBody::new(chunks)
        .map_err(|e: Infallible| match e {})
        .boxed()
}
