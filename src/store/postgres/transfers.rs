//! Transfers as stored in PostgreSQL: one as opened, locked for closing it;
//! receipts; the transfers still open, and which replica opened each.
//! Opening and closing are planned in `store::transaction` and written by
//! [`super::apply`].

use tokio_postgres::Row;

use super::rows::Cols;
use super::{Tx, query, query_opt};
use crate::store::StoreError;
use crate::store::columns::{self, Columns as _, OPEN_COLUMNS};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

fn open_row(row: &Row) -> Result<TransferOpen, StoreError> {
    columns::transfer_open(&Cols {
        row,
        table: "transfers",
    })
}

/// The state of transfer `id` and how it was opened, its row locked until
/// the transaction ends; `None` if unknown.
pub(super) async fn opened(
    tx: &Tx<'_>,
    id: TransferId,
) -> Result<Option<(String, TransferOpen)>, StoreError> {
    let Some(row) = query_opt(
        tx,
        &format!("SELECT {OPEN_COLUMNS}, state FROM transfers WHERE id = $1 FOR UPDATE"),
        &[&id.to_string()],
    )
    .await?
    else {
        return Ok(None);
    };
    let state = Cols {
        row: &row,
        table: "transfers",
    }
    .text("state")?;
    Ok(Some((state, open_row(&row)?)))
}

/// See `Store::transfer_receipt`.
pub(super) async fn receipt(
    tx: &Tx<'_>,
    id: TransferId,
) -> Result<Option<(Receipt, String)>, StoreError> {
    let Some(row) = query_opt(
        tx,
        "SELECT receipt_json, jws FROM transfers WHERE id = $1 AND state = 'closed'",
        &[&id.to_string()],
    )
    .await?
    else {
        return Ok(None);
    };
    let c = Cols {
        row: &row,
        table: "transfers",
    };
    Ok(Some((c.json("receipt_json")?, c.text("jws")?)))
}

/// See `Store::open_transfers`.
pub(super) async fn open_transfers(tx: &Tx<'_>) -> Result<Vec<TransferOpen>, StoreError> {
    let rows = query(
        tx,
        &format!(
            "SELECT {OPEN_COLUMNS} FROM transfers WHERE state = 'open' ORDER BY started_at, seq"
        ),
        &[],
    )
    .await?;
    rows.iter().map(open_row).collect()
}

/// Open transfers with the liveness key of the replica that opened each.
pub(super) async fn open_transfers_by_opener(
    tx: &Tx<'_>,
) -> Result<Vec<(TransferOpen, i64)>, StoreError> {
    let rows = query(
        tx,
        &format!(
            "SELECT {OPEN_COLUMNS}, opened_by FROM transfers WHERE state = 'open' ORDER BY started_at, seq"
        ),
        &[],
    )
    .await?;
    rows.iter()
        .map(|row| Ok((open_row(row)?, row.try_get("opened_by")?)))
        .collect()
}
