//! Which replicas are running, so one that starts closes only the transfers
//! a stopped replica left open, never those another is streaming.
//!
//! Each store draws a random key and holds a session-level advisory lock on
//! it, on a dedicated connection, for as long as it lives; every transfer it
//! opens records the key (`transfers.opened_by`). PostgreSQL releases the
//! lock the moment that session ends — a clean stop, a crash, a lost network
//! — so "its opener's lock is free" is exactly "no one is streaming it". No
//! heartbeats, no clocks. When the dedicated connection is lost the holder
//! reconnects and takes the lock again; a replica that starts in that gap
//! would take the transfers as interrupted, and their opener's own close
//! then finds them closed (a logged conflict, the receipt already written).

use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{PostgresSettings, unreachable_within};
use crate::store::StoreError;

/// The wait between attempts to take the lock again after a lost connection.
const RETRY: Duration = Duration::from_millis(500);

/// This store's lock; dropping it ends the session that holds it.
pub(super) struct Alive {
    pub(super) key: i64,
    _held: DropGuard,
}

/// Takes the lock on a fresh random key before returning, then keeps it.
pub(super) async fn hold(settings: &PostgresSettings) -> Result<Alive, StoreError> {
    let alive = loop {
        let key: i64 = rand::random();
        // Collisions with another live replica's key (2^-64) or the
        // migration lock's constant are refused by the lock and redrawn.
        if let Some(session) = lock(settings, key).await? {
            let stop = CancellationToken::new();
            tokio::spawn(keep(settings.clone(), key, session, stop.clone()));
            break Alive {
                key,
                _held: stop.drop_guard(),
            };
        }
    };
    tracing::debug!(key = alive.key, "holding this replica's liveness lock");
    Ok(alive)
}

type Session = (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);

/// A new session holding the lock on `key`, or `None` if another holds it.
async fn lock(settings: &PostgresSettings, key: i64) -> Result<Option<Session>, StoreError> {
    let config = super::named(settings, "xborder-liveness");
    let (client, connection) =
        tokio::time::timeout(settings.connect_timeout, config.connect(NoTls))
            .await
            .map_err(|_| unreachable_within(settings.connect_timeout))??;
    let connection = tokio::spawn(connection);
    let taken: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .get(0);
    Ok(taken.then_some((client, connection)))
}

/// Holds the session until `stop`, taking the lock again whenever it is lost.
async fn keep(settings: PostgresSettings, key: i64, session: Session, stop: CancellationToken) {
    let mut session = Some(session);
    loop {
        if let Some((client, connection)) = session.take() {
            tokio::select! {
                _ = stop.cancelled() => return drop(client),
                _ = connection => {
                    tracing::warn!("lost the PostgreSQL session that marks this replica alive; taking it again");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
        match lock(&settings, key).await {
            Ok(Some(again)) => session = Some(again),
            // Someone holds our key: only a replica that judged us gone and
            // is closing our transfers, for an instant; try again.
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot take the liveness lock yet"),
        }
    }
}

/// Whether the replica that drew `key` is gone. Runs on `client` outside a
/// transaction: a session lock taken to test is released at once.
pub(super) async fn gone(client: &tokio_postgres::Client, key: i64) -> Result<bool, StoreError> {
    let free: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await?
        .get(0);
    if free {
        client
            .query_one("SELECT pg_advisory_unlock($1)", &[&key])
            .await?;
    }
    Ok(free)
}
