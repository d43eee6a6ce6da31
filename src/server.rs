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
use tokio_util::task::TaskTracker;

use crate::audit::LogKey;
use crate::audit::entry::{Event, Pseudonymiser};
use crate::clock::Clock;
use crate::config::{self, Config, ConfigErrors, StoreSettings};
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

/// What the files a configuration names hold, once all of them are read.
struct Files {
    tls: ServerTls,
    tokens: Tokens,
    log_key: LogKey,
    pseudonyms: Pseudonymiser,
    /// The outbound TLS of the local listener, if there is one.
    client: Option<Arc<rustls::ClientConfig>>,
}

impl Files {
    /// Reads every file; the problems of all of them, if any, at once.
    fn load(config: &Config) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let tls = ServerTls::load(config).map_err(|e| errors.extend(e)).ok();
        let tokens = load_tokens(config).map_err(|e| errors.extend(e.0)).ok();
        let keys = load_audit_keys(config).map_err(|e| errors.extend(e.0)).ok();
        let client = match config.listeners.local {
            Some(_) => tls::client_config(config)
                .map_err(|e| errors.extend(e))
                .ok(),
            None => None,
        };
        match (tls, tokens, keys) {
            (Some(tls), Some(tokens), Some((log_key, pseudonyms))) if errors.is_empty() => {
                Ok(Self {
                    tls,
                    tokens,
                    log_key,
                    pseudonyms,
                    client,
                })
            }
            _ => Err(ConfigErrors(errors)),
        }
    }
}

impl Gateway {
    /// Checks every file `config` names (reporting every problem at once),
    /// prepares the data directory, opens the store, closes the transfers a
    /// previous stop left open, and builds every service. Binds nothing.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let files = Files::load(&config)?;
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
                    files.pseudonyms.clone(),
                )?),
                None,
            ),
            StoreSettings::Postgres(settings) => {
                let store =
                    PostgresStore::open((**settings).clone(), files.pseudonyms.clone()).await?;
                let endings = store.listener(ended.clone(), rearm.clone());
                (Arc::new(store), Some(endings))
            }
        };
        let review = Arc::new(Review {
            store,
            policies: config.policies.clone(),
            tokens: Arc::new(files.tokens),
            pseudonyms: files.pseudonyms,
            clock: Clock::system(),
            holder: config.jurisdiction.clone(),
            rearm,
            notices: Arc::new(tokio::sync::Notify::new()),
            ended,
        });
        let relay = files.client.map(|client| {
            Arc::new(local::Relay::new(
                crate::client::BorderClient::new(client),
                config.peers.clone(),
            ))
        });

        let registry = prometheus::Registry::new();
        metrics::register_build_info(&registry)?;
        metrics::register_process(&registry)?;
        let listener_metrics = ListenerMetrics::register(&registry)?;
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
        let closing = CancellationToken::new();
        let transfers = Arc::new(Transfers {
            review: review.clone(),
            quotas: Default::default(),
            metrics: transfer_metrics,
            closing: closing.clone(),
            tasks: TaskTracker::new(),
        });
        let (tls_tx, tls_rx) = watch::channel(Arc::new(files.tls));
        let upstream = proxy::Upstream::new(config.timeouts.upstream_connect, config.timeouts.idle);
        let services = Arc::new(Services {
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
            log_key: files.log_key,
            audit,
            audit_metrics,
            transfers,
            limiters,
            draining: CancellationToken::new(),
            closing,
        });
        Ok(Self {
            services,
            tls_tx,
            relay,
            hangup: tls::reload::listen_for_hangup(),
            endings,
        })
    }

    /// Records the start in the audit log, then serves on `listeners` until
    /// `shutdown` resolves, drains within the grace period, and returns once
    /// every transfer has its receipt.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let Self {
            services,
            tls_tx,
            relay,
            hangup,
            endings,
        } = self;
        let Listeners {
            border,
            admin,
            ops,
            local,
        } = listeners;
        let local = match (local, relay) {
            (Some(listener), Some(relay)) => Some((listener, relay)),
            (Some(_), None) => return Err(StartError::LocalUnconfigured),
            (None, _) => None,
        };
        let review = &services.review;
        let started = started_event(&services.config, review, &services.log_key);
        review.store.record(review.now(), started).await?;
        services.listener_metrics.known_listeners(
            std::iter::once(Listener::Border)
                .chain(admin.as_ref().map(|_| Listener::Admin))
                .map(Listener::name),
        );
        let stop_accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let acceptors = TaskTracker::new();
        // Subscribed before the scheduler starts, so no ending is missed; it
        // counts through the drain and stops when `serve` returns.
        let count_endings = tokio::spawn(grants::count_endings(
            services.review.ended.subscribe(),
            services.grant_metrics.clone(),
        ));

        // Runs until every connection is done, so transfers still draining
        // are cut when another replica ends their grant.
        let stop_listening = CancellationToken::new();
        let listening = endings.map(|l| tokio::spawn(l.run(stop_listening.clone(), None)));
        tracing::info!(listener = "border", addr = %local_addr(&border), "listening");
        acceptors.spawn(conn::accept_loop(
            border,
            Listener::Border,
            services.clone(),
            stop_accepting.clone(),
            connections.clone(),
        ));
        if let Some(admin) = admin {
            tracing::info!(listener = "admin", addr = %local_addr(&admin), "listening");
            acceptors.spawn(conn::accept_loop(
                admin,
                Listener::Admin,
                services.clone(),
                stop_accepting.clone(),
                connections.clone(),
            ));
        }
        if let Some(ops) = ops {
            tracing::info!(listener = "ops", addr = %local_addr(&ops), "listening");
            acceptors.spawn(ops::serve(ops, services.clone(), stop_accepting.clone()));
        }
        if let Some((listener, relay)) = local {
            tracing::info!(listener = "local", addr = %local_addr(&listener), "listening");
            acceptors.spawn(local::serve(listener, relay, stop_accepting.clone()));
        }
        acceptors.spawn(grants::run(services.review.clone(), stop_accepting.clone()));
        let notifier = Notifier::new(
            services.review.store.clone(),
            services.review.clock.clone(),
            services.review.notices.clone(),
            services.config.notify.clone(),
            services.notice_metrics.clone(),
        );
        acceptors.spawn(notifier.run(stop_accepting.clone()));
        acceptors.spawn(forget_idle_rate_keys(
            services.clone(),
            stop_accepting.clone(),
        ));
        acceptors.spawn(tls::reload::run(
            services.config.clone(),
            tls_tx,
            hangup,
            services.audit.clone(),
            stop_accepting.clone(),
        ));

        shutdown.await;
        let grace = services.config.timeouts.shutdown_grace;
        // Stop accepting first (the listeners close when their loops end),
        // then say so: whoever reads the log may rely on it.
        stop_accepting.cancel();
        services.draining.cancel();
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
            services.closing.cancel();
            connections.wait().await;
        } else {
            tracing::info!("drained; all exchanges finished");
        }
        // Every transfer that ran is closed with its receipt before the
        // process may exit; a store that stays away leaves them open, to be
        // closed as interrupted at the next start.
        let tasks = &services.transfers.tasks;
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "transfers not closed within the grace period; the next start closes them as interrupted"
            );
        }
        count_endings.abort();
        stop_listening.cancel();
        if let Some(listening) = listening {
            let _ = listening.await;
        }
        Ok(())
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
async fn forget_idle_rate_keys(services: Arc<Services>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => services.limiters.values().for_each(|l| l.forget_idle()),
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
