//! Outbound calls to a foreign gateway's `border` over mTLS.
//!
//! The gateway, the demo and `xborder fetch` call foreign gateways with the
//! identity in `identity.client_certificate`. One connection per
//! [`BorderClient::connect`]; HTTP/2 when the server offers it by ALPN,
//! else HTTP/1.1.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{AlertDescription, ClientConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::wire::Body;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("connection closed by the server: {0}")]
    Closed(String),
    /// The server refused our client certificate with a TLS alert (under
    /// TLS 1.3 it arrives after the handshake, on the first exchange).
    #[error(
        "the server refused this client certificate (TLS alert {0:?}; the server's log says why)"
    )]
    CertificateRefused(AlertDescription),
    #[error("`{0}` is not a valid server name")]
    ServerName(String),
}

/// A client that speaks to foreign gateways as one identity.
#[derive(Clone)]
pub struct BorderClient {
    tls: Arc<ClientConfig>,
}

/// One open connection to a gateway.
pub struct Connection {
    sender: Sender,
    /// Why the connection ended, once it has: a refusal by the server shows
    /// up here (under TLS 1.3 a client learns of it only on its first read).
    ended: tokio::sync::watch::Receiver<Option<String>>,
    /// A TLS alert the server sent, once it has.
    alert: Arc<OnceLock<AlertDescription>>,
    server_certificate: Option<CertificateDer<'static>>,
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Body>),
    Http2(hyper::client::conn::http2::SendRequest<Body>),
}

impl BorderClient {
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        Self { tls }
    }

    /// Opens an mTLS connection to `addr`, checking its certificate for `server_name`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ClientError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(
                |source| match alert_in(&source).filter(refuses_certificate) {
                    // TLS 1.2: the refusal ends the handshake itself.
                    Some(alert) => ClientError::CertificateRefused(alert),
                    None => ClientError::Handshake { addr, source },
                },
            )?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let server_certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| cert.clone().into_owned());
        let alert = Arc::new(OnceLock::new());
        let io = TokioIo::new(Alerts {
            inner: tls,
            alert: alert.clone(),
        });
        let (ended_tx, ended) = tokio::sync::watch::channel(None);
        let report = move |result: Result<(), hyper::Error>| {
            let why = match result {
                Ok(()) => "closed".to_owned(),
                Err(e) => crate::error::chain(&e),
            };
            ended_tx.send_replace(Some(why));
        };
        let sender = if h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move { report(conn.await) });
            Sender::Http2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move { report(conn.await) });
            Sender::Http1(send)
        };
        Ok(Connection {
            sender,
            ended,
            alert,
            server_certificate,
        })
    }
}

impl Connection {
    /// Sends one request; the response body streams as it arrives.
    pub async fn send(
        &mut self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ClientError> {
        match self.try_send(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                // Prefer the connection's own reason (a TLS alert) to "channel closed".
                let wait = self.ended.wait_for(Option::is_some);
                let why = match tokio::time::timeout(std::time::Duration::from_secs(1), wait).await
                {
                    Ok(Ok(why)) => Some(why.clone().unwrap_or_default()),
                    _ => None,
                };
                match (self.alert.get().copied().filter(refuses_certificate), why) {
                    (Some(alert), _) => Err(ClientError::CertificateRefused(alert)),
                    (None, Some(why)) => Err(ClientError::Closed(why)),
                    (None, None) => Err(e),
                }
            }
        }
    }

    async fn try_send(
        &mut self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, ClientError> {
        match &mut self.sender {
            Sender::Http1(send) => {
                if !request.headers().contains_key(http::header::HOST) {
                    request.headers_mut().insert(
                        http::header::HOST,
                        http::HeaderValue::from_static("localhost"),
                    );
                }
                send.ready().await?;
                Ok(send.send_request(request).await?)
            }
            Sender::Http2(send) => {
                send.ready().await?;
                Ok(send.send_request(request).await?)
            }
        }
    }

    /// The leaf certificate the server presented.
    pub fn server_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.server_certificate.as_ref()
    }

    /// Waits until the connection ends; returns why.
    pub async fn closed(&mut self) -> String {
        match self.ended.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "closed".to_owned(),
        }
    }

    pub fn is_http2(&self) -> bool {
        matches!(self.sender, Sender::Http2(_))
    }
}

/// The TLS alert an I/O error from rustls carries, if it is one.
fn alert_in(error: &std::io::Error) -> Option<AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// The alerts a server sends when it will not accept a client certificate.
fn refuses_certificate(alert: &AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired
            | AlertDescription::DecryptError
    )
}

/// A TLS stream that keeps the alert a server sent. A server that refuses
/// our certificate under TLS 1.3 sends an alert and closes; if our first
/// write fails on the closed socket before anything was read, the alert
/// still waits in the receive buffer: read it, so the error says why rather
/// than "broken pipe".
struct Alerts<T> {
    inner: T,
    alert: Arc<OnceLock<AlertDescription>>,
}

impl<T: AsyncRead + Unpin> Alerts<T> {
    fn keep(&self, error: &std::io::Error) {
        if let Some(alert) = alert_in(error) {
            let _ = self.alert.set(alert);
        }
    }

    /// After a failed write: the alert waiting to be read, as the error.
    /// `Pending` until the socket has been seen readable: it will be, as
    /// the server has closed it (EOF, the alert, or a reset are all
    /// readiness), and the write is tried again then.
    fn pending_alert(
        &mut self,
        cx: &mut Context<'_>,
        error: std::io::Error,
    ) -> Poll<std::io::Error> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        if !matches!(
            error.kind(),
            BrokenPipe | ConnectionReset | ConnectionAborted
        ) {
            return Poll::Ready(error);
        }
        let mut scratch = [0u8; 256];
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Err(read)) if alert_in(&read).is_some() => {
                self.keep(&read);
                Poll::Ready(read)
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(error),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Alerts<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &result {
            self.keep(e);
        }
        result
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Alerts<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => self.pending_alert(cx, e).map(Err),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => self.pending_alert(cx, e).map(Err),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => self.pending_alert(cx, e).map(Err),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads a whole response body; for small bodies (JSON, problems) only.
pub async fn collect(
    response: Response<Incoming>,
) -> Result<(http::response::Parts, Bytes), ClientError> {
    let (parts, body) = response.into_parts();
    Ok((parts, body.collect().await?.to_bytes()))
}

/// A request with an empty body.
pub fn get(uri: http::Uri) -> Request<Body> {
    let mut request = Request::new(crate::wire::full(Bytes::new()));
    *request.uri_mut() = uri;
    request
}

/// A GET presenting a grant token as `Authorization: Bearer <token>`. A token
/// that cannot be a header value is left out (the gateway answers
/// `token_missing`).
pub fn bearer_get(uri: http::Uri, token: &str) -> Request<Body> {
    let mut request = get(uri);
    if let Ok(value) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    request
}
