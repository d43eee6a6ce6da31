//! The audit log as the gateway keeps it, in SQLite: append throughput and
//! proof time as the log grows to a million entries.
//!
//! Baselines, measured in the same run on the same disk:
//! - append: a bare SQLite transaction inserting one row of the entry's size
//!   (WAL, `synchronous = FULL`, through `spawn_blocking` like the store):
//!   the cost of any durable change. One `record` is one such transaction
//!   plus the entry's tree bookkeeping.
//! - proofs: one primary-key lookup, the unit a stored tree is read in.
//!   A proof reads O(log n) stored subtrees, so its time over the lookup's
//!   grows by a few units per doubling of the log, not with its size.
//!
//! `XBORDER_BENCH_AUDIT_N` sets the final size (default 1,000,000; the fill
//! runs in transactions of 10,000 entries).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use xborder::audit::entry::{Event, Pseudonymiser};
use xborder::clock::Timestamp;
use xborder::store::Store;
use xborder::store::sqlite::SqliteStore;

const PER_TX: u64 = 2_000;
const BATCH: u64 = 10_000;
const PROBES: u64 = 1_000;
const CONCURRENT: u64 = 64;

fn event(i: u64) -> Event {
    Event::TlsReloaded {
        tls_sha256: format!("{i:064x}"),
        forced: false,
    }
}

fn main() {
    let final_size: u64 = std::env::var("XBORDER_BENCH_AUDIT_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run(final_size));
}

async fn run(final_size: u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let names = Pseudonymiser::new(vec![7; 32]).expect("a 32-byte key");
    let store = SqliteStore::open(&dir.path().join(SqliteStore::FILE_NAME), names)
        .expect("the store opens");
    let at = Timestamp::from_unix_ms(1_767_225_600_000);
    let entry_len = serde_json::to_vec(&event(0)).expect("json").len() + 120;

    // Durable appends, one transaction each, against a bare transaction.
    let bare = bare_inserts(dir.path(), entry_len).await;
    let start = Instant::now();
    for i in 0..PER_TX {
        store.record(at, event(i)).await.expect("record");
    }
    let record = start.elapsed() / PER_TX as u32;
    println!("append, one durable transaction each ({PER_TX} appends):");
    println!("  bare SQLite insert transaction  {:>9.1} µs", micros(bare));
    println!(
        "  audit record                    {:>9.1} µs  = {:.2}× the bare transaction, {:.0} entries/s",
        micros(record),
        record.as_secs_f64() / bare.as_secs_f64(),
        1.0 / record.as_secs_f64()
    );

    // The same durable appends from 64 writers at once: group commit shares
    // each fsync among the writes that arrive while the last one is written.
    let store = Arc::new(store);
    let start = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..CONCURRENT {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for i in 0..PER_TX / CONCURRENT {
                store
                    .record(at, event(w * 1_000_000 + i))
                    .await
                    .expect("record");
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let concurrent = start.elapsed() / PER_TX as u32;
    println!(
        "  audit record, {CONCURRENT} writers    {:>9.1} µs  = {:.0} entries/s, {:.1}× one writer (group commit)",
        micros(concurrent),
        1.0 / concurrent.as_secs_f64(),
        record.as_secs_f64() / concurrent.as_secs_f64()
    );

    // Fill in batches, measuring proofs at sizes a factor of 32 apart.
    let lookup = lookup_time(dir.path()).await;
    println!(
        "\nproofs from the store (primary-key lookup {:.1} µs):",
        micros(lookup)
    );
    println!(
        "  {:>9}  {:>12}  {:>14}  {:>16}  {:>10}",
        "entries", "root µs", "inclusion µs", "consistency µs", "lookups"
    );
    let mut size = store.audit_head().await.expect("head").0;
    let mut fill = Duration::ZERO;
    let mut filled = 0;
    let mut checkpoints: Vec<u64> = [size, 32_768]
        .into_iter()
        .filter(|&s| s < final_size)
        .collect();
    checkpoints.push(final_size);
    for target in checkpoints {
        while size < target {
            let n = BATCH.min(target - size);
            let events = (size..size + n).map(event).collect();
            let start = Instant::now();
            store.record_all(at, events).await.expect("record_all");
            fill += start.elapsed();
            filled += n;
            size += n;
        }
        let root = per_op(PROBES, |_| async {
            store.audit_head().await.expect("head");
        })
        .await;
        let inclusion = per_op(PROBES, |k| {
            let index = (k * 7_919) % size;
            let store = &store;
            async move {
                store.inclusion_proof(index, size).await.expect("proof");
            }
        })
        .await;
        let consistency = per_op(PROBES, |k| {
            let old = 1 + (k * 7_919) % (size - 1);
            let store = &store;
            async move {
                store.consistency_proof(old, size).await.expect("proof");
            }
        })
        .await;
        println!(
            "  {size:>9}  {:>12.1}  {:>14.1}  {:>16.1}  {:>10.1}",
            micros(root),
            micros(inclusion),
            micros(consistency),
            inclusion.as_secs_f64() / lookup.as_secs_f64()
        );
    }
    if filled > 0 {
        println!(
            "\nbatched fill: {filled} entries in {:.1} s, {:.0} entries/s",
            fill.as_secs_f64(),
            filled as f64 / fill.as_secs_f64()
        );
    }
}

/// Mean time of a bare one-row insert transaction, as durable as the store's.
async fn bare_inserts(dir: &std::path::Path, len: usize) -> Duration {
    let conn = bare_connection(&dir.join("bare.sqlite3"));
    conn.lock()
        .expect("lock")
        .execute_batch("CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        .expect("create");
    let body = vec![b'x'; len];
    let start = Instant::now();
    for i in 0..PER_TX {
        let (conn, body) = (Arc::clone(&conn), body.clone());
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().expect("lock");
            let tx = conn.transaction().expect("begin");
            tx.execute("INSERT INTO rows VALUES (?1, ?2)", params![i as i64, body])
                .expect("insert");
            tx.commit().expect("commit");
        })
        .await
        .expect("join");
    }
    start.elapsed() / PER_TX as u32
}

/// Mean time of one primary-key lookup through `spawn_blocking`.
async fn lookup_time(dir: &std::path::Path) -> Duration {
    let conn = bare_connection(&dir.join("bare.sqlite3"));
    let start = Instant::now();
    for i in 0..PROBES {
        let conn = Arc::clone(&conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().expect("lock");
            let body: Vec<u8> = conn
                .prepare_cached("SELECT body FROM rows WHERE id = ?1")
                .expect("prepare")
                .query_row([(i % PER_TX) as i64], |row| row.get(0))
                .expect("row");
            std::hint::black_box(body);
        })
        .await
        .expect("join");
    }
    start.elapsed() / PROBES as u32
}

fn bare_connection(path: &std::path::Path) -> Arc<Mutex<Connection>> {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .expect("wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    Arc::new(Mutex::new(conn))
}

async fn per_op<F, Fut>(n: u64, mut op: F) -> Duration
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for k in 0..n {
        op(k).await;
    }
    start.elapsed() / n as u32
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
