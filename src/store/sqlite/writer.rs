//! Group commit: one task owns the write connection and commits the
//! writes that arrive together in one transaction, with one fsync.
//!
//! Each write runs in its own SAVEPOINT inside the batch's `BEGIN IMMEDIATE`
//! transaction: a write that fails (a conflict, a broken invariant) is rolled
//! back to its savepoint alone, and the others go on. Nobody hears back until
//! the batch's COMMIT has returned, so an acknowledged write is as durable as
//! before (`synchronous = FULL`), and a write that fails to commit is
//! reported as failed even if its own statements ran. One write alone is one
//! transaction, as before; under load, a batch costs one fsync instead of one
//! per write, which is what bounds the rate of durable writes on one disk.
//!
//! Writes are still serialised (SQLite has one writer anyway); they just
//! share the wait for the disk. Reads use their own connection and never
//! wait for a batch (WAL).

use std::sync::Mutex;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::store::StoreError;

/// The most writes one transaction commits.
const MAX_BATCH: usize = 128;

/// What a job tells the writer: keep its savepoint or roll it back, and how
/// to hand its caller the outcome once the batch is committed (or not).
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write; `None` when the batch could not even begin or take a savepoint.
type Job = Box<dyn FnOnce(Option<&Connection>) -> (bool, Finish) + Send>;

pub(super) struct Writer {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    /// The connection and the queue until the first write starts the task
    /// that owns them (on the runtime of that write: opening a store needs
    /// none).
    idle: Mutex<Option<(Connection, UnboundedReceiver<Job>)>>,
}

impl Writer {
    /// A writer on `conn`; its task starts with the first write and stops
    /// when the `Writer` is dropped, after the writes already sent.
    pub(super) fn new(conn: Connection) -> Self {
        let (jobs, queue) = tokio::sync::mpsc::unbounded_channel();
        Self {
            jobs,
            idle: Mutex::new(Some((conn, queue))),
        }
    }

    /// Runs `f` in the next batch; its result once the batch is committed.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let idle = self
            .idle
            .lock()
            .map_err(|_| StoreError::Backend("the SQLite writer's lock is poisoned".into()))?
            .take();
        if let Some((conn, queue)) = idle {
            tokio::spawn(run(conn, queue));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Some(conn) => f(conn),
                None => Err(StoreError::Backend(
                    "the write could not start a transaction".into(),
                )),
            };
            let keep = result.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let outcome = match committed {
                    Ok(()) => result,
                    // A refused write stays refused; a good one is lost with the batch.
                    Err(why) if keep => Err(StoreError::Backend(
                        format!("the transaction did not commit: {why}").into(),
                    )),
                    Err(_) => result,
                };
                // The caller may have gone away; the outcome is durable either way.
                let _ = reply.send(outcome);
            });
            (keep, finish)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer stopped mid-write".into()))?
    }
}

/// Takes the writes that are waiting, commits them on the blocking pool (so
/// a slow disk never stalls the async workers, and paused-time tests see
/// the write in flight), and goes on with the connection it gets back.
async fn run(mut conn: Connection, mut queue: UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        conn = match tokio::task::spawn_blocking(move || {
            commit(&mut conn, batch);
            conn
        })
        .await
        {
            Ok(conn) => conn,
            Err(e) => {
                // A write panicked: its batch's callers hear that the writer
                // stopped; refuse to go on with a connection in an unknown state.
                tracing::error!(error = %e, "the SQLite writer stopped");
                return;
            }
        };
    }
}

/// Runs `batch` in one transaction, each job in its own savepoint, then
/// tells every job how the commit went.
fn commit(conn: &mut Connection, batch: Vec<Job>) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let why = e.to_string();
            for job in batch {
                let (_, finish) = job(None);
                finish(Err(why.clone()));
            }
            return;
        }
    };
    let mut finishes = Vec::with_capacity(batch.len());
    for job in batch {
        let mut savepoint = match tx.savepoint() {
            Ok(savepoint) => savepoint,
            Err(e) => {
                let (_, finish) = job(None);
                finish(Err(e.to_string()));
                continue;
            }
        };
        let (keep, finish) = job(Some(&savepoint));
        if keep {
            if let Err(e) = savepoint.commit() {
                finish(Err(e.to_string()));
                continue;
            }
        } else if let Err(e) = savepoint.rollback() {
            // The batch cannot be trusted once a rollback fails: undo it all.
            tracing::error!(error = %e, "cannot roll back a failed write; abandoning its batch");
            finishes.push(finish);
            let why = format!("rolling back a failed write: {e}");
            drop(savepoint);
            drop(tx);
            for finish in finishes {
                finish(Err(why.clone()));
            }
            return;
        }
        finishes.push(finish);
    }
    let committed = tx.commit().map_err(|e| e.to_string());
    for finish in finishes {
        finish(committed.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL UNIQUE)")
            .unwrap();
        (dir, Writer::new(conn), path)
    }

    fn rows(path: &std::path::Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn insert(x: i64) -> impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            // A second statement, so a rollback has something to undo.
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x + 1000])?;
            Ok(x)
        }
    }

    /// Writes that arrive while another is being written commit together;
    /// the one that fails is undone alone, both its statements.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_batch_is_rolled_back_alone() {
        let (_dir, writer, path) = table();
        let writer = std::sync::Arc::new(writer);
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        release.recv().unwrap();
                        insert(1)(conn)
                    })
                    .await
            }
        });
        // While the first holds the writer, queue three: the middle one's
        // first row (-997) goes in, its second (3) collides with the row
        // the write before it in the batch made.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = [3, -997, 4].map(|x| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.write(insert(x)).await })
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        hold.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        let mut outcomes = Vec::new();
        for task in queued {
            outcomes.push(task.await.unwrap().map_err(|e| e.to_string()));
        }
        // The runtime may queue the two colliding writes either way round;
        // whichever comes second fails, and only its rows are undone.
        let collided = |e: &Result<i64, String>| e.as_ref().is_err_and(|e| e.contains("UNIQUE"));
        assert_eq!(outcomes[2], Ok(4), "{outcomes:?}");
        if outcomes[0] == Ok(3) {
            assert!(collided(&outcomes[1]), "{outcomes:?}");
            assert_eq!(rows(&path), [1, 3, 4, 1001, 1003, 1004]);
        } else {
            assert!(collided(&outcomes[0]), "{outcomes:?}");
            assert_eq!(outcomes[1], Ok(-997));
            assert_eq!(rows(&path), [-997, 1, 3, 4, 1001, 1004]);
        }
    }
}
