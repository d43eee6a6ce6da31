//! Transfers as stored: one as opened (for closing it), receipts, and the
//! transfers still open. Opening and closing are planned in
//! `store::transaction` and written by [`super::apply`].

use rusqlite::{Connection, Row};

use super::rows::Cols;
use crate::store::StoreError;
use crate::store::columns::{self, Columns as _, OPEN_COLUMNS};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

fn open_row(row: &Row<'_>) -> Result<TransferOpen, StoreError> {
    columns::transfer_open(&Cols {
        row,
        table: "transfers",
    })
}

/// The state of transfer `id` and how it was opened; `None` if unknown.
pub(super) fn opened(
    conn: &Connection,
    id: TransferId,
) -> Result<Option<(String, TransferOpen)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {OPEN_COLUMNS}, state FROM transfers WHERE id = ?1"
    ))?;
    let mut found = stmt.query([id.to_string()])?;
    let Some(row) = found.next()? else {
        return Ok(None);
    };
    let state = Cols {
        row,
        table: "transfers",
    }
    .text("state")?;
    Ok(Some((state, open_row(row)?)))
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
