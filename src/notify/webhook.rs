//! One delivery attempt: a POST of a notice to the webhook over plain HTTP/1.1.
//!
//! A fresh connection per attempt rather than a pool: notices are few, and a
//! pooled connection the receiver closed while idle would only turn into a
//! failed attempt. The timeout covers everything from connecting to the
//! response's status line; the response body is not read.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Notice;

/// The header that carries the notice id; the same on every attempt.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The attempt number, from 1 (informative; the body never changes).
pub const ATTEMPT_HEADER: &str = "x-xborder-notice-attempt";

/// The configured receiver.
pub(super) struct Webhook {
    uri: Uri,
    timeout: Duration,
}

/// Why an attempt failed; its text is the notice's `last_error`.
#[derive(Debug)]
pub(super) enum Failure {
    Connect(String, std::io::Error),
    /// The receiver closed the connection without answering.
    Closed,
    Http(hyper::Error),
    Request(http::Error),
    Status(StatusCode),
    Timeout(Duration),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(authority, e) => write!(f, "cannot connect to {authority}: {e}"),
            Self::Closed => f.write_str("the connection closed before an answer"),
            Self::Http(e) => {
                write!(f, "HTTP exchange failed: {e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Self::Request(e) => write!(f, "cannot build the request: {e}"),
            Self::Status(status) => write!(f, "answered {status}"),
            Self::Timeout(after) => {
                write!(f, "no answer within {}", humantime::format_duration(*after))
            }
        }
    }
}

impl Webhook {
    /// `uri` is an `http://` URL with a host, as config validation ensures.
    pub(super) fn new(uri: Uri, timeout: Duration) -> Self {
        Self { uri, timeout }
    }

    /// POSTs `notice` as attempt number `attempt`; `Ok` with the status on 2xx.
    pub(super) async fn post(&self, notice: &Notice, attempt: u32) -> Result<StatusCode, Failure> {
        tokio::time::timeout(self.timeout, self.exchange(notice, attempt))
            .await
            .unwrap_or(Err(Failure::Timeout(self.timeout)))
    }

    async fn exchange(&self, notice: &Notice, attempt: u32) -> Result<StatusCode, Failure> {
        let host = self.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(80);
        let authority = self
            .uri
            .authority()
            .map_or_else(String::new, |a| a.as_str().to_owned());
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| Failure::Connect(authority.clone(), e))?;
        // Small writes: send the request at once rather than wait for an ACK.
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Http)?;
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let request = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("xborder/", env!("CARGO_PKG_VERSION"))),
            )
            .header(IDEMPOTENCY_KEY_HEADER, notice.id.to_string())
            .header(ATTEMPT_HEADER, attempt.to_string())
            .body(Full::new(Bytes::from(notice.body())))
            .map_err(Failure::Request)?;
        // The connection is driven here, not spawned: when this future is
        // dropped (timeout, shutdown) the socket closes with it.
        let response = tokio::select! {
            response = sender.send_request(request) => response.map_err(Failure::Http)?,
            ended = connection => {
                return Err(match ended {
                    Err(e) => Failure::Http(e),
                    Ok(()) => Failure::Closed,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            Ok(status)
        } else {
            Err(Failure::Status(status))
        }
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}
