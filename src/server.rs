//! The gateway's listeners and their lifecycle.
//!
//! [`Gateway::bind`] checks every file and binds every listener, so a bad
//! configuration fails before any port answers. [`Gateway::run`] serves until
//! its shutdown future resolves, then stops accepting, lets in-flight
//! exchanges finish within `timeouts.shutdown_grace`, and returns.
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
use tokio_util::task::TaskTracker;

use crate::audit::LogKey;
use crate::audit::entry::{Event, Pseudonymiser};
use crate::clock::Clock;
use crate::config::StoreSettings;
use crate::config::{Config, ConfigErrors};
use crate::grant::token::{TokenKeys, TokenSettings, Tokens};
use crate::grants;
use crate::identity::Jurisdiction;
use crate::metrics::{
    self, AuditMetrics, CertificateMetrics, GrantMetrics, ListenerMetrics, NoticeMetrics,
    StoreMetrics, TransferMetrics,
};
use crate::notify::Notifier;
use crate::ratelimit::RateLimiter;
use crate::review::Review;
use crate::store::postgres::{PostgresStore, listen};
use crate::store::sqlite::SqliteStore;
use crate::store::{Recorder, Store, StoreError};
use crate::tls::{self, ServerTls};
use crate::transfer::receipt::Receipt;
use crate::transfers::stream::Transfers;
use crate::wire::Body;

mod admin;
pub(crate) mod api;
mod audit;
mod border;
mod conn;
mod local;
mod ops;
mod proxy;

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

/// What the listeners share.
pub(crate) struct Shared {
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

/// A gateway with its configuration checked and its listeners bound.
pub struct Gateway {
    shared: Arc<Shared>,
    tls_tx: watch::Sender<Arc<ServerTls>>,
    border: TcpListener,
    admin: Option<TcpListener>,
    ops: Option<TcpListener>,
    local: Option<(TcpListener, Arc<local::Relay>)>,
    /// Installed at bind, before any listener is announced.
    hangup: Option<tokio::signal::unix::Signal>,
    /// Announces other replicas' grant endings (a shared store only).
    endings: Option<listen::Listener>,
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
}

impl Gateway {
    /// Checks every file `config` names, prepares the data directory, and
    /// binds every listener.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let snapshot = ServerTls::load(&config).map_err(ConfigErrors)?;
        let tokens = load_tokens(&config)?;
        let (log_key, names) = load_audit_keys(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let ended = tokio::sync::broadcast::channel(1024).0;
        let rearm = Arc::new(tokio::sync::Notify::new());
        // The embedded store, or the shared one with its listener for the
        // grant endings of other replicas.
        let (store, endings): (Arc<dyn Store>, _) = match &config.store {
            StoreSettings::Sqlite => (
                Arc::new(SqliteStore::open(
                    &config.data_dir.join(SqliteStore::FILE_NAME),
                    names.clone(),
                )?),
                None,
            ),
            StoreSettings::Postgres(settings) => {
                let store = PostgresStore::open((**settings).clone(), names.clone()).await?;
                let endings = store.listener(ended.clone(), rearm.clone());
                (Arc::new(store), Some(endings))
            }
        };
        let review = Arc::new(Review {
            store,
            policies: config.policies.clone(),
            tokens: Arc::new(tokens),
            names,
            clock: Clock::system(),
            holder: config.jurisdiction.clone(),
            rearm,
            notices: Arc::new(tokio::sync::Notify::new()),
            ended,
        });
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind {
                    listener,
                    addr,
                    source,
                })
        };
        let border = bind("border", config.listeners.border).await?;
        let admin = match config.listeners.admin {
            Some(addr) => Some(bind("admin", addr).await?),
            None => None,
        };
        let ops = match config.listeners.ops {
            Some(addr) => Some(bind("ops", addr).await?),
            None => None,
        };
        let local = match config.listeners.local {
            Some(addr) => {
                let client = crate::tls::client_config(&config).map_err(ConfigErrors)?;
                let relay = local::Relay::new(
                    crate::client::BorderClient::new(client),
                    config.peers.clone(),
                );
                Some((bind("local", addr).await?, Arc::new(relay)))
            }
            None => None,
        };

        let registry = prometheus::Registry::new();
        metrics::register_build_info(&registry)?;
        metrics::register_process(&registry)?;
        let listener_metrics = ListenerMetrics::register(&registry)?;
        listener_metrics.known_listeners(
            std::iter::once(Listener::Border)
                .chain(config.listeners.admin.map(|_| Listener::Admin))
                .map(Listener::name),
        );
        let transfer_metrics = TransferMetrics::register(&registry)?;
        let known: std::collections::BTreeSet<&Jurisdiction> = config
            .trust
            .keys()
            .chain(config.policies.pairs().map(|p| &p.requester))
            .collect();
        transfer_metrics.known_jurisdictions(known);
        let grant_metrics = GrantMetrics::register(&registry)?;
        let store_metrics = StoreMetrics::register(&registry)?;
        let certificate_metrics = CertificateMetrics::register(&registry)?;
        let audit_metrics = AuditMetrics::register(&registry)?;
        let audit = Recorder {
            store: review.store.clone(),
            clock: review.clock.clone(),
            failures: audit_metrics.append_failures.clone(),
        };
        let notice_metrics = NoticeMetrics::register(&registry)?;
        close_interrupted(&review, &config.routes).await?;
        review
            .store
            .record(review.now(), started_event(&config, &review, &log_key))
            .await?;
        let limiters = config
            .policies
            .pairs()
            .map(|p| {
                (
                    (p.holder.clone(), p.requester.clone()),
                    Arc::new(RateLimiter::new(p.rate)),
                )
            })
            .collect();
        let transfers = Arc::new(Transfers {
            review: review.clone(),
            quotas: Default::default(),
            metrics: transfer_metrics,
        });
        let (tls_tx, tls_rx) = watch::channel(Arc::new(snapshot));
        let upstream = proxy::Upstream::new(config.timeouts.upstream_connect, config.timeouts.idle);
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            tls: tls_rx,
            registry,
            listener_metrics,
            grant_metrics,
            store_metrics,
            certificate_metrics,
            notice_metrics,
            upstream,
            review,
            log_key,
            audit,
            audit_metrics,
            transfers,
            limiters,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
        });
        Ok(Self {
            shared,
            tls_tx,
            border,
            admin,
            ops,
            local,
            hangup: tls::reload::listen_for_hangup(),
            endings,
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
        self.local
            .as_ref()
            .map(|(listener, _)| local_addr(listener))
    }

    /// Serves until `shutdown` resolves, then drains within the grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            shared,
            tls_tx,
            border,
            admin,
            ops,
            local,
            hangup,
            endings,
        } = self;
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let acceptors = TaskTracker::new();
        // Subscribed before the scheduler starts, so no ending is missed; it
        // counts through the drain and stops when `run` returns.
        let count_endings = tokio::spawn(grants::count_endings(
            shared.review.ended.subscribe(),
            shared.grant_metrics.clone(),
        ));

        // Runs until every connection is done, so transfers still draining
        // are cut when another replica ends their grant.
        let stop_listening = CancellationToken::new();
        let listening = endings.map(|l| tokio::spawn(l.run(stop_listening.clone(), None)));
        tracing::info!(listener = "border", addr = %local_addr(&border), "listening");
        acceptors.spawn(conn::accept_loop(
            border,
            Listener::Border,
            shared.clone(),
            stop_accepting.clone(),
            connections.clone(),
        ));
        if let Some(admin) = admin {
            tracing::info!(listener = "admin", addr = %local_addr(&admin), "listening");
            acceptors.spawn(conn::accept_loop(
                admin,
                Listener::Admin,
                shared.clone(),
                stop_accepting.clone(),
                connections.clone(),
            ));
        }
        if let Some(ops) = ops {
            tracing::info!(listener = "ops", addr = %local_addr(&ops), "listening");
            acceptors.spawn(ops::serve(ops, shared.clone(), stop_accepting.clone()));
        }
        if let Some((listener, relay)) = local {
            tracing::info!(listener = "local", addr = %local_addr(&listener), "listening");
            acceptors.spawn(local::serve(listener, relay, stop_accepting.clone()));
        }
        acceptors.spawn(grants::run(shared.review.clone(), stop_accepting.clone()));
        let notifier = Notifier::new(
            shared.review.store.clone(),
            shared.review.clock.clone(),
            shared.review.notices.clone(),
            shared.config.notify.clone(),
            shared.notice_metrics.clone(),
        );
        acceptors.spawn(notifier.run(stop_accepting.clone()));
        acceptors.spawn(forget_idle_rate_keys(
            shared.clone(),
            stop_accepting.clone(),
        ));
        acceptors.spawn(tls::reload::run(
            shared.config.clone(),
            tls_tx,
            hangup,
            shared.audit.clone(),
            stop_accepting.clone(),
        ));

        shutdown.await;
        let grace = shared.config.timeouts.shutdown_grace;
        // Stop accepting first (the listeners close when their loops end),
        // then say so: whoever reads the log may rely on it.
        stop_accepting.cancel();
        shared.draining.cancel();
        acceptors.close();
        acceptors.wait().await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: no new connections, draining in-flight exchanges"
        );
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "grace period over; closing the connections still open"
            );
            shared.closing.cancel();
            connections.wait().await;
        } else {
            tracing::info!("drained; all exchanges finished");
        }
        count_endings.abort();
        stop_listening.cancel();
        if let Some(listening) = listening {
            let _ = listening.await;
        }
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

/// Closes the transfers a stop left open, with receipts that say so.
async fn close_interrupted(
    review: &Review,
    routes: &[crate::transfer::Route],
) -> Result<(), StoreError> {
    for open in review.store.interrupted_transfers().await? {
        // Whether its route sealed it; a route gone from the config is
        // assumed to have (the default).
        let sealed = routes
            .iter()
            .find(|r| r.prefix == open.route)
            .is_none_or(|r| r.seal);
        let receipt = Receipt::interrupted(&open, review.now(), sealed);
        match review
            .store
            .close_transfer(receipt, review.receipt_signer())
            .await
        {
            Ok(_) => {
                tracing::warn!(transfer_id = %open.id, grant_id = %open.grant_id, "transfer interrupted by the last stop, closed incomplete");
            }
            // A replica starting at the same moment closed it first.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Keeps the rate limiters' per-key state bounded.
async fn forget_idle_rate_keys(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => shared.limiters.values().for_each(|l| l.forget_idle()),
        }
    }
}

/// The grant token keys and settings `config` names.
pub fn load_tokens(config: &Config) -> Result<Tokens, ConfigErrors> {
    let files = &config.tokens;
    let keys = TokenKeys::load(&files.signing_key, &files.verify_keys)
        .map_err(|e| ConfigErrors(vec![config.error("tokens", e.to_string())]))?;
    Ok(Tokens::new(
        keys,
        TokenSettings {
            issuer: files.issuer.clone(),
            audience: files.audience.clone(),
            leeway: files.leeway,
        },
    ))
}

/// The key that signs tree heads and the key that pseudonymises targets;
/// the problems of both, if any.
pub fn load_audit_keys(config: &Config) -> Result<(LogKey, Pseudonymiser), ConfigErrors> {
    let files = &config.audit;
    let log_key = LogKey::load(&files.signing_key, &files.origin)
        .map_err(|e| config.error("audit.signing_key", e.to_string()));
    let names = Pseudonymiser::from_file(&files.pseudonym_key)
        .map_err(|e| config.error("audit.pseudonym_key", e.to_string()));
    match (log_key, names) {
        (Ok(log_key), Ok(names)) => Ok((log_key, names)),
        (log_key, names) => Err(ConfigErrors(
            [log_key.err(), names.err()].into_iter().flatten().collect(),
        )),
    }
}

/// The entry that opens each run: what the gateway started with.
fn started_event(config: &Config, review: &Review, log_key: &LogKey) -> Event {
    use sha2::{Digest as _, Sha256};
    let config_sha256 = std::fs::read(&config.file)
        .map(|bytes| hex::encode(Sha256::digest(bytes)))
        .unwrap_or_default();
    Event::GatewayStarted {
        config_sha256,
        policies: config.policies.hashes(),
        token_key: review.tokens.kid().to_owned(),
        audit_key: log_key.vkey().to_owned(),
        tls_sha256: hex::encode(tls::reload::fingerprint(config)),
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound TCP listener has a local address")
}
