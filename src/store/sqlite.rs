//! The embedded store: one SQLite file under the gateway's `data_dir`.
//!
//! Two connections. Writes go to one writer task ([`writer`]) that commits
//! the writes arriving together in one `BEGIN IMMEDIATE` transaction, each in
//! its own savepoint, and acknowledges them after its COMMIT: one fsync per
//! batch, not per write. The write lock is taken before any state check, so
//! a check and the change it guards cannot be split by another process
//! writing the same file. Reads use the second connection from
//! `spawn_blocking`, so a slow disk never stalls the async workers and a
//! read never waits for a batch (WAL). The file runs in WAL mode with
//! `synchronous = FULL`: an acknowledged write survives power loss.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;

use writer::Writer;

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
mod migrations;
mod notices;
mod rows;
#[cfg(test)]
mod tests;
mod transfers;
mod writer;

/// How long a call waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    /// Every write, group-committed (see [`writer`]).
    writer: Writer,
    /// Reads: a second connection, which WAL lets read while a batch is
    /// being written, and which sees only committed writes.
    reader: Arc<Mutex<Connection>>,
    /// Pseudonymises targets in the audit entries this store writes.
    names: Arc<Pseudonymiser>,
}

impl SqliteStore {
    /// The file name used under a gateway's data_dir.
    pub const FILE_NAME: &'static str = "xborder.sqlite3";

    /// Opens (creating if needed) `path`, sets WAL, synchronous=FULL,
    /// foreign_keys=ON, busy_timeout 5 s, and runs migrations. The parent
    /// directory must exist. A file whose schema is newer than this code
    /// knows is refused.
    /// `names` pseudonymises targets in the audit entries it writes.
    pub fn open(path: &Path, names: Pseudonymiser) -> Result<Self, StoreError> {
        let at = |source: StoreError| match source {
            StoreError::Backend(source) => StoreError::Backend(Box::new(OpenError {
                path: path.to_owned(),
                source,
            })),
            other => other,
        };
        let mut conn = Connection::open(path).map_err(|e| at(e.into()))?;
        configure(&conn).map_err(at)?;
        migrations::migrate(&mut conn).map_err(at)?;
        let reader = Connection::open(path).map_err(|e| at(e.into()))?;
        configure(&reader).map_err(at)?;
        Ok(Self {
            writer: Writer::new(conn),
            reader: Arc::new(Mutex::new(reader)),
            names: Arc::new(names),
        })
    }

    /// Appends `events`, all at `at`, in one transaction; returns the index
    /// of the last (`None` for none). For bulk imports and benchmarks: the
    /// gateway itself records each event with the change it belongs to.
    pub async fn record_all(
        &self,
        at: Timestamp,
        events: Vec<Event>,
    ) -> Result<Option<u64>, StoreError> {
        self.writer
            .write(move |conn| audit::append_all(conn, at, events))
            .await
    }

    /// Runs the read `f` on the read connection on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock is a bug; refuse to go on with
            // the connection rather than guess what it left behind.
            let mut conn = conn.lock().map_err(|_| {
                StoreError::Backend("the SQLite connection's lock is poisoned".into())
            })?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(
            format!("SQLite refused WAL mode (journal_mode is `{mode}`)").into(),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Every statement the store runs stays prepared: rusqlite's default of
    // 16 is fewer than one transfer's open and close use, and re-parsing
    // them was 8 % of a small transfer's CPU time (perf, `cargo bench --bench e2e`).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Distinct statements kept prepared per connection (the store has ~60).
const STATEMENT_CACHE: usize = 128;

/// Opening or migrating the file failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
struct OpenError {
    path: PathBuf,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// Every SQLite failure is a backend failure; callers that can tell a
/// conflict apart (a duplicate key) map it before this applies.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_request(&self, request: &Request) -> Result<(), StoreError> {
        let plan = transaction::insert_request(request, &self.names);
        self.writer.write(move |conn| apply::run(conn, plan)).await
    }

    async fn request(&self, id: RequestId) -> Result<Option<Request>, StoreError> {
        self.read(move |conn| {
            // A read transaction so the request, findings and approvals are one snapshot.
            let tx = conn.transaction()?;
            rows::request(&tx, id)
        })
        .await
    }

    async fn requests(&self, state: Option<RequestState>) -> Result<Vec<Request>, StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            rows::requests(&tx, state.map(RequestState::as_str))
        })
        .await
    }

    async fn approve(
        &self,
        id: RequestId,
        approval: Approval,
        required: usize,
        grant: Grant,
        decision: &Decision,
    ) -> Result<Approved, StoreError> {
        let decision = decision.clone();
        self.writer
            .write(move |conn| {
                let request = rows::request(conn, id)?;
                let plan = transaction::approve(id, request, approval, required, grant, &decision)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn deny(
        &self,
        id: RequestId,
        by: &SpiffeId,
        reason: &str,
        at: Timestamp,
    ) -> Result<Request, StoreError> {
        let by = by.clone();
        let reason = reason.to_owned();
        self.writer
            .write(move |conn| {
                let request = rows::request(conn, id)?;
                let plan = transaction::deny(id, request, &by, &reason, at)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        self.read(move |conn| rows::grant(conn, id)).await
    }

    async fn grants(&self, state: Option<GrantState>) -> Result<Vec<Grant>, StoreError> {
        self.read(move |conn| rows::grants(conn, state.map(GrantState::as_str)))
            .await
    }

    async fn validate_grant(
        &self,
        id: GrantId,
        by: &SpiffeId,
        at: Timestamp,
    ) -> Result<Grant, StoreError> {
        let by = by.clone();
        self.writer
            .write(move |conn| {
                let plan = transaction::validate_grant(rows::grant(conn, id)?, &by, at)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn end_grant(
        &self,
        id: GrantId,
        cause: Cause,
        by: Option<&SpiffeId>,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Option<Grant>, StoreError> {
        let by = by.cloned();
        let reason = reason.map(str::to_owned);
        self.writer
            .write(move |conn| {
                let grant = rows::grant(conn, id)?;
                let plan =
                    transaction::end_grant(grant, cause, by.as_ref(), reason.as_deref(), at)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(|conn| rows::next_due(conn)).await
    }

    async fn due(&self, now: Timestamp) -> Result<Vec<(GrantId, Cause)>, StoreError> {
        self.read(move |conn| {
            let candidates = rows::due_candidates(conn, now)?;
            // The SQL narrows; `due_cause` decides, so the scheduler and the
            // store cannot disagree on which cause wins.
            Ok(candidates
                .into_iter()
                .filter_map(|g| g.due_cause(now).map(|cause| (g.id, cause)))
                .collect())
        })
        .await
    }

    async fn open_transfer(&self, open: &TransferOpen) -> Result<u64, StoreError> {
        let open = open.clone();
        let names = Arc::clone(&self.names);
        self.writer
            .write(move |conn| {
                let grant = rows::grant(conn, open.grant_id)?;
                let plan = transaction::open_transfer(grant, &open, &names)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn close_transfer(
        &self,
        receipt: Receipt,
        sign: SignReceipt,
    ) -> Result<(Receipt, String), StoreError> {
        self.writer
            .write(move |conn| {
                check_receipt(&receipt)?;
                let found = transfers::opened(conn, receipt.transfer_id)?;
                let plan = transaction::close_transfer(receipt, found)?;
                let (receipt, index) = apply::run_indexed(conn, plan)?;
                apply::run(conn, transaction::seal(receipt, index, sign)?)
            })
            .await
    }

    async fn transfer_receipt(
        &self,
        id: TransferId,
    ) -> Result<Option<(Receipt, String)>, StoreError> {
        self.read(move |conn| transfers::receipt(conn, id)).await
    }

    async fn open_transfers(&self) -> Result<Vec<TransferOpen>, StoreError> {
        self.read(|conn| transfers::open_transfers(conn)).await
    }

    async fn next_notice_due(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(|conn| notices::next_due(conn)).await
    }

    async fn due_notices(&self, now: Timestamp, limit: usize) -> Result<Vec<Notice>, StoreError> {
        self.read(move |conn| {
            // One snapshot of the notices and the grants they join.
            let tx = conn.transaction()?;
            notices::due(&tx, now, limit)
        })
        .await
    }

    async fn notice_delivered(
        &self,
        id: NoticeId,
        at: Timestamp,
        status: u16,
    ) -> Result<bool, StoreError> {
        self.writer
            .write(move |conn| {
                check_delivery(id, status)?;
                let found = notices::attempts(conn, id)?;
                apply::run(conn, transaction::notice_delivered(id, found, at, status)?)
            })
            .await
    }

    async fn notice_failed(
        &self,
        id: NoticeId,
        at: Timestamp,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let error = error.to_owned();
        self.writer
            .write(move |conn| {
                let found = notices::attempts(conn, id)?;
                let plan = transaction::notice_failed(id, found, at, &error, next_attempt_at)?;
                apply::run(conn, plan)
            })
            .await
    }

    async fn notices(&self, state: Option<NoticeState>) -> Result<Vec<NoticeView>, StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            notices::list(&tx, state)
        })
        .await
    }

    async fn notice_counts(&self) -> Result<NoticeCounts, StoreError> {
        self.read(|conn| notices::counts(conn)).await
    }

    async fn record(&self, at: Timestamp, event: Event) -> Result<u64, StoreError> {
        self.writer
            .write(move |conn| {
                let index = audit::append(conn, at, event)?;
                Ok(index)
            })
            .await
    }

    async fn audit_head(&self) -> Result<(u64, Hash), StoreError> {
        self.read(|conn| {
            let tx = conn.transaction()?;
            audit::head(&tx)
        })
        .await
    }

    async fn audit_root(&self, size: u64) -> Result<Hash, StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            audit::root_at(&tx, size)
        })
        .await
    }

    async fn audit_entries(&self, start: u64, limit: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let limit = limit.min(MAX_AUDIT_PAGE);
        self.read(move |conn| audit::entries(conn, start, limit))
            .await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            audit::inclusion_proof(&tx, index, size)
        })
        .await
    }

    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        self.read(move |conn| {
            let tx = conn.transaction()?;
            audit::consistency_proof(&tx, old, new)
        })
        .await
    }
}
