//! One TLS connection's life: handshake within its timeout, the peer's
//! identity from the verified certificate, HTTP/1.1 or HTTP/2 by ALPN, header
//! and idle timeouts, and draining on shutdown.
//!
//! Every refusal is logged once, here, with the peer address and the reason.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Listener, Services, admin, border};
use crate::identity::{self, PeerIdentity};
use crate::transfers::stream::{WriteState, Writes};

/// Accepts connections until `stop` is cancelled; each runs on `connections`.
pub(super) async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    services: Arc<Services>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                connections.spawn(connection(stream, remote, kind, services.clone()));
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = kind.name(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    kind: Listener,
    services: Arc<Services>,
) {
    let metrics = &services.listener_metrics;
    let _ = stream.set_nodelay(true);
    let snapshot = services.tls.borrow().clone();
    let server_config = match kind {
        Listener::Border => snapshot.border.clone(),
        Listener::Admin => match &snapshot.admin {
            Some(config) => config.clone(),
            None => return,
        },
    };
    let handshake = TlsAcceptor::from(server_config).accept(stream);
    let handshake = tokio::select! {
        _ = services.draining.cancelled() => return,
        result = tokio::time::timeout(services.config.timeouts.tls_handshake, handshake) => result,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics
                .handshakes
                .with_label_values(&[kind.name(), "refused"])
                .inc();
            tracing::warn!(listener = kind.name(), peer = %remote, reason = %handshake_reason(&e), "connection refused");
            return;
        }
        Err(_) => {
            metrics
                .handshakes
                .with_label_values(&[kind.name(), "timeout"])
                .inc();
            tracing::warn!(listener = kind.name(), peer = %remote, reason = "TLS handshake timed out", "connection refused");
            return;
        }
    };
    let peer = match peer_identity(&tls, &snapshot) {
        Ok(peer) => peer,
        Err(reason) => {
            // The verifier admits only certificates this succeeds on; reaching
            // here means the two disagree, which must not let the peer in.
            metrics
                .handshakes
                .with_label_values(&[kind.name(), "refused"])
                .inc();
            tracing::error!(listener = kind.name(), peer = %remote, %reason, "connection refused after handshake");
            return;
        }
    };
    metrics
        .handshakes
        .with_label_values(&[kind.name(), "ok"])
        .inc();
    let open = metrics.open_connections.with_label_values(&[kind.name()]);
    open.inc();
    tracing::debug!(listener = kind.name(), peer = %remote, spiffe_id = %peer.spiffe_id, jurisdiction = %peer.jurisdiction, "connection accepted");

    let activity = Arc::new(Activity::new());
    let (write_state, writes) = Writes::channel();
    let io = TokioIo::new(Tracked {
        inner: tls,
        activity: activity.clone(),
        writes: write_state,
    });
    let peer = Arc::new(peer);
    let service_shared = services.clone();
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // A transfer cut on this connection waits for its writes to settle.
        request.extensions_mut().insert(writes.clone());
        let services = service_shared.clone();
        let peer = peer.clone();
        let in_flight = InFlight::begin(service_activity.clone());
        async move {
            let head = request.method() == http::Method::HEAD;
            let response = match kind {
                Listener::Border => border::handle(&services, &peer, request).await,
                Listener::Admin => admin::handle(&services, &peer, request).await,
            };
            // No content in an answer to HEAD (RFC 9110 §9.3.2): hyper drops
            // it over HTTP/1.1, but over HTTP/2 it would send DATA, which a
            // client must treat as a protocol error.
            let response = if head {
                response.map(|_| crate::wire::full(bytes::Bytes::new()))
            } else {
                response
            };
            // The exchange is in flight until its response body is done.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                })
                .boxed()
            }))
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(services.config.timeouts.header_read);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);

    let idle = services.config.timeouts.idle;
    let mut draining = false;
    let mut watchdog = tokio::time::interval(idle.min(Duration::from_secs(1)) / 2);
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(listener = kind.name(), peer = %remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = services.draining.cancelled(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            _ = services.closing.cancelled() => break,
            _ = watchdog.tick() => {
                if activity.quiet_for() < idle {
                    continue;
                }
                if activity.in_flight() {
                    // An exchange with no byte moving either way for the whole
                    // idle period is stalled (a slow POST, a client that stopped
                    // reading): a graceful close would wait on it for ever.
                    tracing::warn!(listener = kind.name(), peer = %remote, reason = "no bytes moved for the idle timeout with an exchange in flight", "closing stalled connection");
                    break;
                }
                if !draining {
                    tracing::debug!(listener = kind.name(), peer = %remote, "closing idle connection");
                    draining = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
    open.dec();
}

fn peer_identity(
    tls: &tokio_rustls::server::TlsStream<TcpStream>,
    snapshot: &crate::tls::ServerTls,
) -> Result<PeerIdentity, String> {
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or("no client certificate")?;
    let spiffe_id = identity::spiffe_id_of(leaf).map_err(|e| e.to_string())?;
    let jurisdiction = snapshot
        .jurisdiction_of(spiffe_id.trust_domain())
        .ok_or("trust domain not bound to a jurisdiction")?;
    PeerIdentity::from_verified_leaf(leaf, jurisdiction.clone(), spiffe_id.trust_domain())
        .map_err(|e| e.to_string())
}

/// The refusal in plain words; rustls' certificate errors carry our [`crate::tls::Refusal`].
fn handshake_reason(e: &io::Error) -> String {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no client certificate".to_owned(),
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            other.0.to_string()
        }
        other => other.to_string(),
    }
}

/// When bytes last moved and how many exchanges are in flight on a connection.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long no byte has moved either way.
    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// Counts one exchange as in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An I/O stream that records when bytes last moved, and whether what was
/// written has been flushed to the socket (a cut response waits for that).
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    writes: WriteState,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !buf.is_empty() {
            self.writes.wrote();
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if bufs.iter().any(|b| !b.is_empty()) {
            self.writes.wrote();
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.writes.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
