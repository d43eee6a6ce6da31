//! Transfers: opening one against a grant's quota, closing it with its
//! receipt. Each function is one whole `BEGIN IMMEDIATE` transaction, so the
//! quota check and the count it guards cannot be split by another writer.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::audit;
use super::rows::{self, Cols, json_text, sql_count, unique_to_conflict};
use crate::audit::entry::{Event, Pseudonymiser};
use crate::store::columns::{self, Columns as _, OPEN_COLUMNS};
use crate::store::{SignReceipt, StoreError, admit_close, admit_transfer, check_receipt};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

fn open_row(row: &Row<'_>) -> Result<TransferOpen, StoreError> {
    columns::transfer_open(&Cols {
        row,
        table: "transfers",
    })
}

/// See `Store::open_transfer`.
pub(super) fn open(
    conn: &Connection,
    open: &TransferOpen,
    names: &Pseudonymiser,
) -> Result<u64, StoreError> {
    let id = open.grant_id;
    let grant = rows::grant(conn, id)?.ok_or(StoreError::NotFound)?;
    let used_transfers = admit_transfer(&grant, open)?;
    conn.prepare_cached("UPDATE grants SET used_transfers = ?1 WHERE id = ?2")?
        .execute(params![
            sql_count(used_transfers, "used_transfers")?,
            id.to_string()
        ])?;
    conn.prepare_cached(&format!(
        "INSERT INTO transfers ({OPEN_COLUMNS}, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open')"
    ))?
    .execute(params![
        open.id.to_string(),
        id.to_string(),
        open.grantee,
        open.route,
        open.category,
        open.target,
        open.started_at.unix_ms(),
    ])
    .map_err(|e| unique_to_conflict(e, || format!("transfer {} already exists", open.id)))?;
    audit::append(conn, open.started_at, Event::transfer_allowed(open, names))?;
    Ok(grant.used_bytes)
}

/// See `Store::close_transfer`.
pub(super) fn close(
    conn: &Connection,
    mut receipt: Receipt,
    sign: SignReceipt,
) -> Result<(Receipt, String), StoreError> {
    let id = receipt.transfer_id;
    check_receipt(&receipt)?;
    let (state, opened) = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {OPEN_COLUMNS}, state FROM transfers WHERE id = ?1"
        ))?;
        let mut found = stmt.query([id.to_string()])?;
        let Some(row) = found.next()? else {
            return Err(StoreError::NotFound);
        };
        let state: String = Cols {
            row,
            table: "transfers",
        }
        .text("state")?;
        (state, open_row(row)?)
    };
    admit_close(&receipt, &state, &opened)?;
    let grant_id = opened.grant_id.to_string();
    let used_bytes: i64 = conn
        .prepare_cached("SELECT used_bytes FROM grants WHERE id = ?1")?
        .query_row([&grant_id], |row| row.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let used_bytes = u64::try_from(used_bytes)
        .ok()
        .and_then(|used| used.checked_add(receipt.plaintext_bytes))
        .ok_or_else(|| {
            StoreError::Backend(format!("grant {grant_id}'s byte count overflows").into())
        })?;
    conn.prepare_cached("UPDATE grants SET used_bytes = ?1 WHERE id = ?2")?
        .execute(params![sql_count(used_bytes, "used_bytes")?, grant_id])?;
    let index = audit::append(conn, receipt.ended_at, Event::transfer_completed(&receipt))?;
    receipt.audit_index = Some(index);
    let jws = sign(&receipt).map_err(StoreError::Backend)?;
    conn.prepare_cached(
        "UPDATE transfers SET state = 'closed', ended_at = ?1, complete = ?2, incomplete = ?3, \
         plaintext_bytes = ?4, ciphertext_bytes = ?5, plaintext_sha256 = ?6, ciphertext_sha256 = ?7, \
         receipt_json = ?8, jws = ?9 WHERE id = ?10 AND state = 'open'",
    )?
    .execute(params![
            receipt.ended_at.unix_ms(),
            receipt.complete,
            receipt.incomplete.map(|cause| cause.as_str()),
            sql_count(receipt.plaintext_bytes, "plaintext_bytes")?,
            sql_count(receipt.ciphertext_bytes, "ciphertext_bytes")?,
            receipt.plaintext_sha256,
            receipt.ciphertext_sha256,
            json_text(&receipt)?,
            jws,
            id.to_string(),
        ],
    )?;
    Ok((receipt, jws))
}

/// See `Store::transfer_receipt`.
pub(super) fn receipt(
    conn: &Connection,
    id: TransferId,
) -> Result<Option<(Receipt, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT receipt_json, jws FROM transfers WHERE id = ?1 AND state = 'closed'",
    )?;
    let mut rows = stmt.query([id.to_string()])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let c = Cols {
        row,
        table: "transfers",
    };
    Ok(Some((c.json("receipt_json")?, c.text("jws")?)))
}

/// Transfers still open, oldest first.
pub(super) const OPEN_TRANSFERS: &str = "SELECT id, grant_id, grantee, route, category, target, started_at FROM transfers \
     WHERE state = 'open' ORDER BY started_at, rowid";

/// See `Store::open_transfers`.
pub(super) fn open_transfers(conn: &Connection) -> Result<Vec<TransferOpen>, StoreError> {
    let mut stmt = conn.prepare_cached(OPEN_TRANSFERS)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(open_row(row)?);
    }
    Ok(out)
}
