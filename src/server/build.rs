//! Building a gateway: every file the configuration names read at once,
//! the store opened, the transfers a previous stop left open closed, and
//! every service and metric made ready. Nothing is bound here.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Gateway, Services, StartError, local, proxy};
use crate::audit::LogKey;
use crate::audit::entry::{Event, Pseudonymiser};
use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, StoreSettings};
use crate::grant::token::{TokenKeys, TokenSettings, Tokens};
use crate::grants::GrantMetrics;
use crate::identity::Jurisdiction;
use crate::metrics::{self, AuditMetrics, CertificateMetrics, ListenerMetrics, StoreMetrics};
use crate::notify::NoticeMetrics;
use crate::ratelimit::RateLimiter;
use crate::review::Review;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Recorder, Store, StoreError};
use crate::tls::{self, ServerTls};
use crate::transfer::receipt::Receipt;
use crate::transfers::TransferMetrics;
use crate::transfers::stream::Transfers;

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
    /// `client`: also the outbound TLS identity (the local listener's).
    fn load(config: &Config, client: bool) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let tls = ServerTls::load(config).map_err(|e| errors.extend(e)).ok();
        let tokens = load_tokens(config).map_err(|e| errors.extend(e.0)).ok();
        let keys = load_audit_keys(config).map_err(|e| errors.extend(e.0)).ok();
        let client = client
            .then(|| {
                tls::client_config(config)
                    .map_err(|e| errors.extend(e))
                    .ok()
            })
            .flatten();
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

/// The problems of every file `config` names (certificates, keys, CRLs,
/// token and audit keys, the outbound identity if one is configured), all at
/// once: what `xborder config check` reports, read as a start reads them.
pub fn check_files(config: &Config) -> Result<(), ConfigErrors> {
    Files::load(config, config.identity.client_certificate.is_some()).map(drop)
}

impl Gateway {
    /// Checks every file `config` names (reporting every problem at once),
    /// prepares the data directory, opens the store, closes the transfers a
    /// previous stop left open, and builds every service. Binds nothing.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let files = Files::load(&config, config.listeners.local.is_some())?;
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
            store: review.store.clone(),
            clock: review.clock.clone(),
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
}

/// Closes the transfers a stop left open, with receipts that say so.
pub(super) async fn close_interrupted(
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

/// The grant token keys and settings `config` names.
fn load_tokens(config: &Config) -> Result<Tokens, ConfigErrors> {
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
fn load_audit_keys(config: &Config) -> Result<(LogKey, Pseudonymiser), ConfigErrors> {
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
pub(super) fn started_event(config: &Config, review: &Review, log_key: &LogKey) -> Event {
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
