//! The audit log in PostgreSQL: appending inside the caller's transaction,
//! in one order across replicas, and reading entries, roots and proofs.
//!
//! [`append`] first locks `audit_head`, the log's one-row size, and claims
//! the next index, so appends from every replica are serialised: each reads
//! the size and root the one before it committed, and the log never forks. The lock is held until the
//! change's transaction ends, so the change and its entry commit together.
//! Tree hashes are read through [`merkle::SparseTree`]: one query fetches
//! every subtree a root or proof needs.

use crate::audit::entry::{Entry, Event, FORMAT};
use crate::audit::merkle::{self, Hash, ProofError, SparseTree, SubtreeKey};
use crate::clock::Timestamp;
use crate::store::StoreError;

use super::{Tx, execute, query, query_one};

/// Appends `event` at `at` as the next entry; returns its index.
pub(super) async fn append(tx: &Tx<'_>, at: Timestamp, event: Event) -> Result<u64, StoreError> {
    // Takes the head's row lock and claims the next index in one round
    // trip: everything from here to the commit is serial across replicas.
    let row = query_one(
        tx,
        "UPDATE audit_head SET size = size + 1 WHERE id = 1 RETURNING size - 1",
        &[],
    )
    .await?;
    let index = to_index(row.try_get::<_, i64>(0)?)?;
    // The root before this entry, and the left siblings of the subtrees it
    // completes: both are in the tree of `index` leaves.
    let completed: Vec<(u32, u64)> = merkle::completed_by(index).collect();
    let (prev, lefts) = with_tree(tx, index, |t| {
        let prev = merkle::root(t);
        let lefts: Vec<Hash> = completed
            .iter()
            .map(|&(level, position)| {
                let left_start = (2 * position) << (level - 1);
                merkle::HashSource::subtree(t, left_start, level - 1)
            })
            .collect();
        (prev, lefts)
    })
    .await?;
    let entry = Entry {
        v: FORMAT,
        index,
        at,
        prev: hex::encode(prev),
        event,
    };
    let bytes = entry.to_bytes();
    let leaf = merkle::leaf_hash(&bytes);
    let sql_index = sql_index(index)?;
    let mut levels = vec![0_i32];
    let mut positions = vec![sql_index];
    let mut hashes = vec![leaf.to_vec()];
    let mut below = leaf;
    for (&(level, position), left) in completed.iter().zip(&lefts) {
        let node = merkle::node_hash(left, &below);
        levels.push(level as i32);
        positions.push(self::sql_index(position)?);
        hashes.push(node.to_vec());
        below = node;
    }
    // The entry and its tree nodes in one statement (one round trip).
    execute(
        tx,
        "WITH entry AS ( \
             INSERT INTO audit_entries (idx, at, kind, entry) VALUES ($1, $2, $3, $4)) \
         INSERT INTO audit_nodes (level, idx, hash) \
         SELECT * FROM unnest($5::integer[], $6::bigint[], $7::bytea[])",
        &[
            &sql_index,
            &at.unix_ms(),
            &entry.event.kind(),
            &bytes,
            &levels,
            &positions,
            &hashes,
        ],
    )
    .await?;
    Ok(index)
}

/// The number of entries, as of the transaction's snapshot.
pub(super) async fn size(tx: &Tx<'_>) -> Result<u64, StoreError> {
    let row = query_one(tx, "SELECT size FROM audit_head WHERE id = 1", &[]).await?;
    to_index(row.try_get::<_, i64>(0)?)
}

/// The size and root of the whole log, as one snapshot (the caller's
/// transaction is `REPEATABLE READ`).
pub(super) async fn head(tx: &Tx<'_>) -> Result<(u64, Hash), StoreError> {
    let size = size(tx).await?;
    Ok((size, with_tree(tx, size, merkle::root).await?))
}

pub(super) async fn entries(
    tx: &Tx<'_>,
    start: u64,
    limit: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let rows = query(
        tx,
        "SELECT entry FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
        &[
            &sql_index(start)?,
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
    )
    .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<_, Vec<u8>>(0)?))
        .collect()
}

pub(super) async fn inclusion_proof(
    tx: &Tx<'_>,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, StoreError> {
    let size = checked_size(tx, size).await?;
    with_tree(tx, size, |t| merkle::inclusion_proof(t, index))
        .await?
        .map_err(out_of_range)
}

pub(super) async fn consistency_proof(
    tx: &Tx<'_>,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, StoreError> {
    let new = checked_size(tx, new).await?;
    with_tree(tx, new, |t| merkle::consistency_proof(t, old))
        .await?
        .map_err(out_of_range)
}

pub(super) async fn root_at(tx: &Tx<'_>, size: u64) -> Result<Hash, StoreError> {
    let size = checked_size(tx, size).await?;
    with_tree(tx, size, merkle::root).await
}

async fn checked_size(tx: &Tx<'_>, size: u64) -> Result<u64, StoreError> {
    let current = self::size(tx).await?;
    if size > current {
        return Err(StoreError::OutOfRange {
            index: size,
            size: current,
        });
    }
    Ok(size)
}

/// Runs `compute` over the stored tree of `size` leaves, fetching the
/// subtrees it reads in one query.
async fn with_tree<T>(
    tx: &Tx<'_>,
    size: u64,
    compute: impl Fn(&SparseTree) -> T,
) -> Result<T, StoreError> {
    let mut tree = SparseTree::new(size);
    let missing = match tree.evaluate(&compute) {
        Ok(value) => return Ok(value),
        Err(missing) => missing,
    };
    for (key, hash) in subtrees(tx, &missing).await? {
        tree.insert(key, hash);
    }
    tree.evaluate(&compute).map_err(|still| {
        damaged(format!(
            "no hash for subtree {} at level {}",
            still[0].1, still[0].0
        ))
    })
}

async fn subtrees(tx: &Tx<'_>, keys: &[SubtreeKey]) -> Result<Vec<(SubtreeKey, Hash)>, StoreError> {
    let levels: Vec<i32> = keys.iter().map(|&(level, _)| level as i32).collect();
    let positions = keys
        .iter()
        .map(|&(_, position)| sql_index(position))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = query(
        tx,
        "SELECT n.level, n.idx, n.hash FROM audit_nodes n \
         JOIN unnest($1::integer[], $2::bigint[]) AS k(level, idx) \
           ON n.level = k.level AND n.idx = k.idx",
        &[&levels, &positions],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let level: i32 = row.try_get(0)?;
            let position: i64 = row.try_get(1)?;
            let hash: Vec<u8> = row.try_get(2)?;
            let key = (
                u32::try_from(level).map_err(|_| damaged(format!("level {level}")))?,
                to_index(position)?,
            );
            let hash: Hash = hash.try_into().map_err(|_| {
                damaged(format!(
                    "subtree {position} at level {level} is not 32 bytes"
                ))
            })?;
            Ok((key, hash))
        })
        .collect()
}

fn out_of_range(e: ProofError) -> StoreError {
    match e {
        ProofError::OutOfRange { index, size } => StoreError::OutOfRange { index, size },
        other => StoreError::Backend(Box::new(other)),
    }
}

fn to_index(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| damaged(format!("negative index {n}")))
}

fn sql_index(index: u64) -> Result<i64, StoreError> {
    i64::try_from(index).map_err(|_| damaged(format!("index {index} is past PostgreSQL's range")))
}

fn damaged(why: String) -> StoreError {
    StoreError::Backend(format!("the audit log is damaged: {why}").into())
}
