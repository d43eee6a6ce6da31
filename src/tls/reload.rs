//! Hot reload of certificates, keys and CRLs.
//!
//! Files are polled (content, not mtime: Kubernetes swaps Secret mounts by
//! symlink, and editors replace files in ways mtimes miss) every
//! `reload.interval`, and at once on SIGHUP. A changed set is loaded whole as
//! a new [`ServerTls`]; only a snapshot that passes every check is published.
//! A half-written rotation (new certificate, old key) fails the key check and
//! is retried on the next tick, once the key has arrived too.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ServerTls;
use crate::audit::entry::Event;
use crate::config::{Config, ConfigErrors};
use crate::store::Recorder;

/// Installs the SIGHUP handler. Call it before the gateway announces itself:
/// a SIGHUP that arrives before a handler exists terminates the process.
pub fn listen_for_hangup() -> Option<Signal> {
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on the interval only");
            None
        }
    }
}

/// Polls the TLS files of `config` and publishes each good new snapshot on
/// `tx`; reloads at once on `hangup`. Each snapshot published is recorded
/// in the audit log (a key rotation is an audited event).
pub async fn run(
    config: Arc<Config>,
    tx: watch::Sender<Arc<ServerTls>>,
    mut hangup: Option<Signal>,
    audit: Recorder,
    shutdown: CancellationToken,
) {
    let mut seen = fingerprint(&config);
    let mut interval = tokio::time::interval(config.reload_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&config);
        if now == seen && !forced {
            continue;
        }
        // Remember bad states too, so a broken file is reported once, not every tick.
        seen = now;
        let started = std::time::Instant::now();
        match ServerTls::load(&config) {
            Ok(snapshot) => {
                tx.send_replace(Arc::new(snapshot));
                audit
                    .record(Event::TlsReloaded {
                        tls_sha256: hex::encode(now),
                        forced,
                    })
                    .await;
                tracing::info!(
                    forced,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "TLS certificates reloaded"
                );
            }
            Err(errors) => {
                tracing::warn!(
                    reason = %ConfigErrors(errors),
                    "TLS reload refused; still serving the previous certificates"
                );
            }
        }
    }
}

/// A hash of the contents of every TLS file (or of the error reading it).
pub fn fingerprint(config: &Config) -> [u8; 32] {
    let mut hash = Sha256::new();
    for path in ServerTls::files(config) {
        hash.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => {
                hash.update([1]);
                hash.update((bytes.len() as u64).to_be_bytes());
                hash.update(&bytes);
            }
            Err(e) => {
                hash.update([0]);
                hash.update(e.kind().to_string());
            }
        }
    }
    hash.finalize().into()
}
