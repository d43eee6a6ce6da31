//! The audit log in SQLite: appending entries inside the caller's
//! transaction, and reading entries, roots and proofs.
//!
//! [`append`] takes the transaction of the change it records, so the change
//! and its entry commit or roll back together. The tree's complete subtrees
//! are stored as they complete ([`merkle::completed_by`]), so appending,
//! the root and every proof read O(log n) rows.

use std::cell::RefCell;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::entry::{Entry, Event, FORMAT};
use crate::audit::merkle::{self, Hash, HashSource, ProofError};
use crate::clock::Timestamp;
use crate::store::StoreError;

/// Appends `event` at `at` as the next entry; returns its index.
pub(super) fn append(conn: &Connection, at: Timestamp, event: Event) -> Result<u64, StoreError> {
    let index = size(conn)?;
    let prev = SqlTree::new(conn, index).finish(merkle::root)?;
    let entry = Entry {
        v: FORMAT,
        index,
        at,
        prev: hex::encode(prev),
        event,
    };
    let bytes = entry.to_bytes();
    let leaf = merkle::leaf_hash(&bytes);
    conn.prepare_cached(
        "INSERT INTO audit_entries (idx, at, kind, entry, leaf) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        sql_index(index)?,
        at.unix_ms(),
        entry.event.kind(),
        bytes,
        leaf.as_slice()
    ])?;
    let mut below = leaf;
    for (level, position) in merkle::completed_by(index) {
        // The right child is the node just written (or the leaf); the left
        // one is its completed sibling.
        let left = subtree_row(conn, level - 1, 2 * position)?;
        let node = merkle::node_hash(&left, &below);
        conn.prepare_cached("INSERT INTO audit_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?
            .execute(params![level, sql_index(position)?, node.as_slice()])?;
        below = node;
    }
    Ok(index)
}

/// Appends several events in order; returns the index of the last.
pub(super) fn append_all(
    conn: &Connection,
    at: Timestamp,
    events: impl IntoIterator<Item = Event>,
) -> Result<Option<u64>, StoreError> {
    let mut last = None;
    for event in events {
        last = Some(append(conn, at, event)?);
    }
    Ok(last)
}

/// The number of entries.
pub(super) fn size(conn: &Connection) -> Result<u64, StoreError> {
    let last: Option<i64> = conn
        .prepare_cached("SELECT idx FROM audit_entries ORDER BY idx DESC LIMIT 1")?
        .query_row([], |row| row.get(0))
        .optional()?;
    match last {
        None => Ok(0),
        Some(last) => u64::try_from(last)
            .map(|last| last + 1)
            .map_err(|_| damaged(format!("negative index {last}"))),
    }
}

/// The size and root of the whole log, read as one snapshot.
pub(super) fn head(conn: &Connection) -> Result<(u64, Hash), StoreError> {
    let size = size(conn)?;
    Ok((size, SqlTree::new(conn, size).finish(merkle::root)?))
}

/// Up to `limit` entries' bytes from index `start`, in order.
pub(super) fn entries(
    conn: &Connection,
    start: u64,
    limit: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM audit_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2")?;
    let rows = stmt.query_map(
        params![sql_index(start)?, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| row.get::<_, Vec<u8>>(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The inclusion proof of entry `index` in the log at `size`.
pub(super) fn inclusion_proof(
    conn: &Connection,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, StoreError> {
    let tree = SqlTree::new(conn, checked_size(conn, size)?);
    tree.finish(|t| merkle::inclusion_proof(t, index))?
        .map_err(out_of_range)
}

/// The consistency proof from the log at `old` to the log at `new`.
pub(super) fn consistency_proof(
    conn: &Connection,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, StoreError> {
    let tree = SqlTree::new(conn, checked_size(conn, new)?);
    tree.finish(|t| merkle::consistency_proof(t, old))?
        .map_err(out_of_range)
}

/// The root of the log at `size`.
pub(super) fn root_at(conn: &Connection, size: u64) -> Result<Hash, StoreError> {
    SqlTree::new(conn, checked_size(conn, size)?).finish(merkle::root)
}

fn checked_size(conn: &Connection, size: u64) -> Result<u64, StoreError> {
    let current = self::size(conn)?;
    if size > current {
        return Err(StoreError::OutOfRange {
            index: size,
            size: current,
        });
    }
    Ok(size)
}

fn out_of_range(e: ProofError) -> StoreError {
    match e {
        ProofError::OutOfRange { index, size } => StoreError::OutOfRange { index, size },
        other => StoreError::Backend(Box::new(other)),
    }
}

/// The tree as stored, limited to its first `size` leaves.
///
/// [`HashSource`] is infallible (the proof algorithms stay pure); a failed
/// read is kept here, answered with a dummy hash, and [`SqlTree::finish`]
/// returns the first failure instead of whatever was computed from it.
struct SqlTree<'c> {
    conn: &'c Connection,
    size: u64,
    failed: RefCell<Option<StoreError>>,
}

impl<'c> SqlTree<'c> {
    fn new(conn: &'c Connection, size: u64) -> Self {
        Self {
            conn,
            size,
            failed: RefCell::new(None),
        }
    }

    fn finish<T>(self, compute: impl FnOnce(&Self) -> T) -> Result<T, StoreError> {
        let value = compute(&self);
        match self.failed.into_inner() {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

impl HashSource for SqlTree<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn leaf(&self, index: u64) -> Hash {
        self.subtree(index, 0)
    }

    fn subtree(&self, start: u64, level: u32) -> Hash {
        match subtree_row(self.conn, level, start >> level) {
            Ok(hash) => hash,
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e);
                [0; 32]
            }
        }
    }
}

/// The stored hash of subtree `position` at `level` (0: a leaf).
fn subtree_row(conn: &Connection, level: u32, position: u64) -> Result<Hash, StoreError> {
    let index = sql_index(position)?;
    let hash: Option<Vec<u8>> = if level == 0 {
        conn.prepare_cached("SELECT leaf FROM audit_entries WHERE idx = ?1")?
            .query_row([index], |row| row.get(0))
            .optional()?
    } else {
        conn.prepare_cached("SELECT hash FROM audit_nodes WHERE level = ?1 AND idx = ?2")?
            .query_row(params![level, index], |row| row.get(0))
            .optional()?
    };
    hash.and_then(|h| h.try_into().ok())
        .ok_or_else(|| damaged(format!("no hash for subtree {position} at level {level}")))
}

fn sql_index(index: u64) -> Result<i64, StoreError> {
    i64::try_from(index).map_err(|_| damaged(format!("index {index} is past SQLite's range")))
}

fn damaged(why: String) -> StoreError {
    StoreError::Backend(format!("the audit log is damaged: {why}").into())
}
