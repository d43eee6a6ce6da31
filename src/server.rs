//! The gateway's listeners and their lifecycle.
//!
//! Start-up is two steps. [`Gateway::build`] reads and checks every file the
//! configuration names (reporting every problem at once), opens the store and
//! builds every service; nothing listens yet. [`Gateway::serve`] serves on
//! [`Listeners`] the caller bound until its shutdown future resolves, then
//! stops accepting, lets in-flight exchanges finish within
//! `timeouts.shutdown_grace`, and returns once every transfer has its receipt.
//!
//! The listeners are thin adapters: `border` (foreign peers, mTLS) and
//! `admin` (our operators, mTLS) share the connection handling in [`conn`];
//! `ops` is plain HTTP for probes and metrics.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::audit::LogKey;
use crate::clock::Clock;
use crate::config::{self, Config, ConfigErrors};
use crate::grants::GrantMetrics;
use crate::identity::Jurisdiction;
use crate::metrics::{AuditMetrics, CertificateMetrics, ListenerMetrics, StoreMetrics};
use crate::notify::NoticeMetrics;
use crate::ratelimit::RateLimiter;
use crate::review::Review;
use crate::store::postgres::listen;
use crate::store::{Recorder, Store, StoreError};
use crate::tls::ServerTls;
use crate::transfers::stream::Transfers;
use crate::wire::Body;

mod admin;
pub(crate) mod api;
mod audit;
mod border;
mod build;
mod conn;
mod local;
mod ops;
mod proxy;
mod serve;

pub use build::check_files;

/// Which TLS listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Border,
    Admin,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Self::Border => "border",
            Self::Admin => "admin",
        }
    }
}

/// The services and state every listener hands its requests to.
pub(crate) struct Services {
    pub config: Arc<Config>,
    pub tls: watch::Receiver<Arc<ServerTls>>,
    pub registry: prometheus::Registry,
    pub listener_metrics: ListenerMetrics,
    /// Grant endings by cause, counted from `review.ended`.
    pub grant_metrics: GrantMetrics,
    /// Requests and grants in the store, refreshed at each scrape.
    pub store_metrics: StoreMetrics,
    /// Certificate expiries of the current TLS snapshot, refreshed at each scrape.
    pub certificate_metrics: CertificateMetrics,
    /// The notice outbox (refreshed at each scrape) and delivery attempts.
    pub notice_metrics: NoticeMetrics,
    pub upstream: proxy::Upstream,
    /// Reads for the listeners; every change goes through `review` or
    /// `transfers`, which write it with its audit entries.
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub review: Arc<Review>,
    /// Signs the audit log's tree heads.
    pub log_key: LogKey,
    /// Appends the events that change no stored state.
    pub audit: Recorder,
    pub audit_metrics: AuditMetrics,
    pub transfers: Arc<Transfers>,
    /// Rate limiters per jurisdiction pair (holder, requester).
    pub limiters: HashMap<(Jurisdiction, Jurisdiction), Arc<RateLimiter>>,
    /// Cancelled when shutdown begins: connections finish what is in flight.
    pub draining: CancellationToken,
    /// Cancelled when the grace period is over: connections close at once.
    pub closing: CancellationToken,
}

/// A gateway built from its configuration: every file read and checked, the
/// store open, every service and metric ready. Nothing listens yet.
pub struct Gateway {
    services: Arc<Services>,
    tls_tx: watch::Sender<Arc<ServerTls>>,
    /// The sidecar relay, when the configuration has a `local` listener.
    relay: Option<Arc<local::Relay>>,
    /// Installed at build, before any listener is announced.
    hangup: Option<tokio::signal::unix::Signal>,
    /// Announces other replicas' grant endings (a shared store only).
    endings: Option<listen::Listener>,
}

/// The sockets a gateway serves on. The caller binds them ([`Listeners::bind`]
/// binds what the configuration names; tests bind `127.0.0.1:0`), so the
/// gateway is built and checked before any port is announced.
pub struct Listeners {
    pub border: TcpListener,
    pub admin: Option<TcpListener>,
    pub ops: Option<TcpListener>,
    pub local: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot bind `listeners.{listener}` to {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot use `data_dir` {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store ({0})")]
    Store(#[from] StoreError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("a local listener was given, but the configuration has no `listeners.local`")]
    LocalUnconfigured,
}

impl Listeners {
    /// Binds every address `listeners` names.
    pub async fn bind(listeners: &config::Listeners) -> Result<Self, StartError> {
        async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener,
                    addr,
                    source,
                })
        }
        async fn optional(
            listener: &'static str,
            addr: Option<SocketAddr>,
        ) -> Result<Option<TcpListener>, StartError> {
            match addr {
                Some(addr) => bind(listener, addr).await.map(Some),
                None => Ok(None),
            }
        }
        Ok(Self {
            border: bind("border", listeners.border).await?,
            admin: optional("admin", listeners.admin).await?,
            ops: optional("ops", listeners.ops).await?,
            local: optional("local", listeners.local).await?,
        })
    }

    pub fn border_addr(&self) -> SocketAddr {
        local_addr(&self.border)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(local_addr)
    }

    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(local_addr)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local.as_ref().map(local_addr)
    }
}

/// Serves plain HTTP/1.1 on `listener` (the ops and local listeners) until
/// `stop`; every request goes to `handle`.
async fn serve_plain<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = handle(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound TCP listener has a local address")
}
