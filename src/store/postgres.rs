//! The shared store: PostgreSQL, for several replicas of one gateway.
//!
//! A pool of connections (deadpool); every `Store` method is one
//! transaction on one of them. Checks take row locks (`FOR UPDATE`) before
//! the change they guard, so replicas racing on a request, a grant's quota
//! or a notice are serialised by the database; every audit append locks the
//! log's head row, so the log has one order. Ending a grant sends a
//! `NOTIFY` in the same transaction, which [`listen`] turns into the
//! `ended` announcement on every other replica; so does any change of a
//! grant's due time (issuing, validating), which wakes every replica's
//! scheduler, so a sunset happens on time while any replica lives. While the database cannot
//! be reached every call fails with [`StoreError::Backend`]: the gateway
//! refuses what needs the store (fail closed) and recovers by itself, as
//! the pool reconnects on the next call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::transaction;
use super::{
    Approved, Decision, MAX_AUDIT_PAGE, SignReceipt, Store, StoreError, check_delivery,
    check_receipt,
};
use crate::audit::entry::{Event, Pseudonymiser};
use crate::audit::merkle::Hash;
use crate::clock::Timestamp;
use crate::grant::{Cause, Grant, GrantId, GrantState};
use crate::identity::SpiffeId;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::request::{Approval, Request, RequestId, RequestState};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

mod apply;
mod audit;
pub mod listen;
mod liveness;
mod migrations;
mod notices;
mod rows;
mod transfers;

/// The channel grant endings are announced on.
pub const ENDED_CHANNEL: &str = "xborder_grant_ended";

/// The channel new due times of grants are announced on: a grant issued,
/// an emergency grant validated. Any transaction that changes when a grant
/// falls due must notify here, or only its own replica's scheduler knows.
pub const DUE_CHANNEL: &str = "xborder_grant_due";

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresSettings {
    /// Host, port or socket directory, database, user, password.
    pub connection: tokio_postgres::Config,
    /// The most connections this replica holds.
    pub pool_size: usize,
    /// How long connecting, or waiting for a free connection, may take
    /// before the call fails (and the gateway answers 503).
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres redacts the password in its Debug.
        f.debug_struct("PostgresSettings")
            .field("connection", &self.connection)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

pub struct PostgresStore {
    pool: Pool,
    settings: PostgresSettings,
    /// Pseudonymises targets in the audit entries this store writes.
    names: Arc<Pseudonymiser>,
    /// This store's id in the endings it announces, so [`listen`] skips
    /// its own (the replica announced them already).
    origin: String,
    /// The lock that tells other replicas this one is running (see [`liveness`]).
    alive: liveness::Alive,
}

/// A transaction on a pooled connection (with its statement cache).
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;
type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl PostgresStore {
    /// Connects, runs the migrations, and keeps a pool of up to
    /// `settings.pool_size` connections. A database whose schema is newer
    /// than this code knows is refused.
    pub async fn open(
        settings: PostgresSettings,
        names: Pseudonymiser,
    ) -> Result<Self, StoreError> {
        let connection = named(&settings, "xborder");
        let (mut client, conn) =
            tokio::time::timeout(settings.connect_timeout, connection.connect(NoTls))
                .await
                .map_err(|_| unreachable_within(settings.connect_timeout))??;
        let task = tokio::spawn(conn);
        let migrated = migrations::migrate(&mut client).await;
        drop(client);
        let _ = task.await;
        migrated?;
        let alive = liveness::hold(&settings).await?;
        let manager = Manager::from_config(
            connection,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self {
            pool,
            settings,
            names: Arc::new(names),
            origin: uuid::Uuid::new_v4().to_string(),
            alive,
        })
    }

    /// The listener that announces other replicas' grant endings on
    /// `ended` and wakes the scheduler through `rearm` when they change a
    /// grant's due time (see [`listen`]).
    pub fn listener(
        &self,
        ended: tokio::sync::broadcast::Sender<crate::grant::GrantEnded>,
        rearm: Arc<tokio::sync::Notify>,
    ) -> listen::Listener {
        listen::Listener {
            settings: self.settings.clone(),
            origin: self.origin.clone(),
            ended,
            rearm,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(Box::new(Unavailable(format!(
                "cannot reach PostgreSQL: {e}"
            ))))
        })
    }
}

/// The database could not be reached; said once, without the connection string.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

/// `settings`' connection, named `name` in `pg_stat_activity` unless the
/// operator's connection string names it already.
fn named(settings: &PostgresSettings, name: &str) -> tokio_postgres::Config {
    let mut config = settings.connection.clone();
    if config.get_application_name().is_none() {
        config.application_name(name);
    }
    config.connect_timeout(settings.connect_timeout);
    config
}

fn unreachable_within(timeout: Duration) -> StoreError {
    StoreError::Backend(Box::new(Unavailable(format!(
        "cannot reach PostgreSQL within {}",
        humantime::format_duration(timeout)
    ))))
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// A unique violation is a `Conflict` (the record exists); anything else
/// stays a backend failure.
pub(super) fn unique_to_conflict(e: StoreError, message: impl FnOnce() -> String) -> StoreError {
    if let StoreError::Backend(source) = &e
        && let Some(pg) = source.downcast_ref::<tokio_postgres::Error>()
        && pg.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    {
        return StoreError::Conflict(message());
    }
    e
}

pub(super) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

pub(super) async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

pub(super) async fn query_one(
    tx: &Tx<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Row, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_one(&statement, params).await?)
}

pub(super) async fn execute(tx: &Tx<'_>, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// Opens a write transaction (`READ COMMITTED`, rows locked as checked) on
/// `$client` as `$tx`, runs `$body`, and commits if it succeeded.
macro_rules! write {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client.transaction().await?;
        let value = $body;
        $tx.commit().await?;
        Ok(value)
    }};
}

/// A read-only `REPEATABLE READ` transaction: one snapshot for all it reads.
macro_rules! read {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let value = $body;
        $tx.commit().await?;
        Ok(value)
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_request(&self, request: &Request) -> Result<(), StoreError> {
        let plan = transaction::insert_request(request, &self.names);
        write!(self, |tx| self.run(&tx, plan).await?)
    }

    async fn request(&self, id: RequestId) -> Result<Option<Request>, StoreError> {
        read!(self, |tx| rows::request(&tx, id, false).await?)
    }

    async fn requests(&self, state: Option<RequestState>) -> Result<Vec<Request>, StoreError> {
        read!(self, |tx| rows::requests(
            &tx,
            state.map(RequestState::as_str)
        )
        .await?)
    }

    async fn approve(
        &self,
        id: RequestId,
        approval: Approval,
        required: usize,
        grant: Grant,
        decision: &Decision,
    ) -> Result<Approved, StoreError> {
        write!(self, |tx| {
            let request = rows::request(&tx, id, true).await?;
            let plan = transaction::approve(id, request, approval, required, grant, decision)?;
            self.run(&tx, plan).await?
        })
    }

    async fn deny(
        &self,
        id: RequestId,
        by: &SpiffeId,
        reason: &str,
        at: Timestamp,
    ) -> Result<Request, StoreError> {
        write!(self, |tx| {
            let request = rows::request(&tx, id, true).await?;
            let plan = transaction::deny(id, request, by, reason, at)?;
            self.run(&tx, plan).await?
        })
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        read!(self, |tx| rows::grant(&tx, id, false).await?)
    }

    async fn grants(&self, state: Option<GrantState>) -> Result<Vec<Grant>, StoreError> {
        read!(self, |tx| rows::grants(&tx, state.map(GrantState::as_str))
            .await?)
    }

    async fn validate_grant(
        &self,
        id: GrantId,
        by: &SpiffeId,
        at: Timestamp,
    ) -> Result<Grant, StoreError> {
        write!(self, |tx| {
            let grant = rows::grant(&tx, id, true).await?;
            let plan = transaction::validate_grant(grant, by, at)?;
            self.run(&tx, plan).await?
        })
    }

    async fn end_grant(
        &self,
        id: GrantId,
        cause: Cause,
        by: Option<&SpiffeId>,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Option<Grant>, StoreError> {
        write!(self, |tx| {
            // First writer wins: a second ending (another replica's scheduler
            // at the same sunset) waits for the row, then finds it ended.
            let grant = rows::grant(&tx, id, true).await?;
            let plan = transaction::end_grant(grant, cause, by, reason, at)?;
            self.run(&tx, plan).await?
        })
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        read!(self, |tx| rows::next_due(&tx).await?)
    }

    async fn due(&self, now: Timestamp) -> Result<Vec<(GrantId, Cause)>, StoreError> {
        read!(self, |tx| rows::due_candidates(&tx, now)
            .await?
            .into_iter()
            .filter_map(|g| g.due_cause(now).map(|cause| (g.id, cause)))
            .collect())
    }

    async fn open_transfer(&self, open: &TransferOpen) -> Result<u64, StoreError> {
        write!(self, |tx| {
            // Locked before the quota is checked, so racing opens on any
            // number of replicas are counted one at a time.
            let grant = rows::grant(&tx, open.grant_id, true).await?;
            let plan = transaction::open_transfer(grant, open, &self.names)?;
            self.run(&tx, plan).await?
        })
    }

    async fn close_transfer(
        &self,
        receipt: Receipt,
        sign: SignReceipt,
    ) -> Result<(Receipt, String), StoreError> {
        write!(self, |tx| {
            check_receipt(&receipt)?;
            let found = transfers::opened(&tx, receipt.transfer_id).await?;
            let plan = transaction::close_transfer(receipt, found)?;
            let (receipt, index) = self.run_indexed(&tx, plan).await?;
            let plan = transaction::seal(receipt, index, sign)?;
            self.run(&tx, plan).await?
        })
    }

    async fn transfer_receipt(
        &self,
        id: TransferId,
    ) -> Result<Option<(Receipt, String)>, StoreError> {
        read!(self, |tx| transfers::receipt(&tx, id).await?)
    }

    async fn open_transfers(&self) -> Result<Vec<TransferOpen>, StoreError> {
        read!(self, |tx| transfers::open_transfers(&tx).await?)
    }

    async fn interrupted_transfers(&self) -> Result<Vec<TransferOpen>, StoreError> {
        let open: Result<Vec<(TransferOpen, i64)>, StoreError> =
            async { read!(self, |tx| transfers::open_transfers_by_opener(&tx).await?) }.await;
        let client = self.client().await?;
        let mut gone = std::collections::HashMap::new();
        let mut interrupted = Vec::new();
        for (transfer, opener) in open? {
            let opener_gone = match gone.get(&opener) {
                Some(&known) => known,
                None => {
                    let known = opener != self.alive.key && liveness::gone(&client, opener).await?;
                    gone.insert(opener, known);
                    known
                }
            };
            if opener_gone {
                interrupted.push(transfer);
            }
        }
        Ok(interrupted)
    }

    async fn next_notice_due(&self) -> Result<Option<Timestamp>, StoreError> {
        read!(self, |tx| notices::next_due(&tx).await?)
    }

    async fn due_notices(&self, now: Timestamp, limit: usize) -> Result<Vec<Notice>, StoreError> {
        read!(self, |tx| notices::due(&tx, now, limit).await?)
    }

    async fn notice_delivered(
        &self,
        id: NoticeId,
        at: Timestamp,
        status: u16,
    ) -> Result<bool, StoreError> {
        write!(self, |tx| {
            check_delivery(id, status)?;
            let found = notices::attempts(&tx, id).await?;
            let plan = transaction::notice_delivered(id, found, at, status)?;
            self.run(&tx, plan).await?
        })
    }

    async fn notice_failed(
        &self,
        id: NoticeId,
        at: Timestamp,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<bool, StoreError> {
        write!(self, |tx| {
            let found = notices::attempts(&tx, id).await?;
            let plan = transaction::notice_failed(id, found, at, error, next_attempt_at)?;
            self.run(&tx, plan).await?
        })
    }

    async fn notices(&self, state: Option<NoticeState>) -> Result<Vec<NoticeView>, StoreError> {
        read!(self, |tx| notices::list(&tx, state).await?)
    }

    async fn notice_counts(&self) -> Result<NoticeCounts, StoreError> {
        read!(self, |tx| notices::counts(&tx).await?)
    }

    async fn record(&self, at: Timestamp, event: Event) -> Result<u64, StoreError> {
        write!(self, |tx| audit::append(&tx, at, event).await?)
    }

    async fn audit_head(&self) -> Result<(u64, Hash), StoreError> {
        read!(self, |tx| audit::head(&tx).await?)
    }

    async fn audit_root(&self, size: u64) -> Result<Hash, StoreError> {
        read!(self, |tx| audit::root_at(&tx, size).await?)
    }

    async fn audit_entries(&self, start: u64, limit: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let limit = limit.min(MAX_AUDIT_PAGE);
        read!(self, |tx| audit::entries(&tx, start, limit).await?)
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        read!(self, |tx| audit::inclusion_proof(&tx, index, size).await?)
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        read!(self, |tx| audit::consistency_proof(&tx, old, new).await?)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}
