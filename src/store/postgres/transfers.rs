//! Transfers: opening one against a grant's quota, closing it with its
//! receipt. The grant's row is locked (`FOR UPDATE`) before the quota is
//! checked, so racing opens on any number of replicas are counted one at a
//! time and never past `max_transfers`.

use tokio_postgres::Row;

use super::rows::{self, Cols, json_text, sql_count};
use super::{Tx, audit, execute, query, query_opt, unique_to_conflict};
use crate::audit::entry::{Event, Pseudonymiser};
use crate::store::columns::{self, Columns as _, OPEN_COLUMNS};
use crate::store::{SignReceipt, StoreError, admit_close, admit_transfer, check_receipt};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

fn open_row(row: &Row) -> Result<TransferOpen, StoreError> {
    columns::transfer_open(&Cols {
        row,
        table: "transfers",
    })
}

/// See `Store::open_transfer`.
pub(super) async fn open(
    tx: &Tx<'_>,
    open: &TransferOpen,
    opened_by: i64,
    names: &Pseudonymiser,
) -> Result<u64, StoreError> {
    let id = open.grant_id;
    let grant = rows::grant(tx, id, true)
        .await?
        .ok_or(StoreError::NotFound)?;
    let used_transfers = admit_transfer(&grant, open)?;
    execute(
        tx,
        "UPDATE grants SET used_transfers = $1 WHERE id = $2",
        &[
            &sql_count(used_transfers, "used_transfers")?,
            &id.to_string(),
        ],
    )
    .await?;
    execute(
        tx,
        &format!(
            "INSERT INTO transfers ({OPEN_COLUMNS}, opened_by, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open')"
        ),
        &[
            &open.id.to_string(),
            &id.to_string(),
            &open.grantee,
            &open.route,
            &open.category,
            &open.target,
            &open.started_at.unix_ms(),
            &opened_by,
        ],
    )
    .await
    .map_err(|e| unique_to_conflict(e, || format!("transfer {} already exists", open.id)))?;
    audit::append(tx, open.started_at, Event::transfer_allowed(open, names)).await?;
    Ok(grant.used_bytes)
}

/// See `Store::close_transfer`.
pub(super) async fn close(
    tx: &Tx<'_>,
    mut receipt: Receipt,
    sign: SignReceipt,
) -> Result<(Receipt, String), StoreError> {
    let id = receipt.transfer_id;
    check_receipt(&receipt)?;
    let row = query_opt(
        tx,
        &format!("SELECT {OPEN_COLUMNS}, state FROM transfers WHERE id = $1 FOR UPDATE"),
        &[&id.to_string()],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    let state = Cols {
        row: &row,
        table: "transfers",
    }
    .text("state")?;
    let opened = open_row(&row)?;
    admit_close(&receipt, &state, &opened)?;
    let grant_id = opened.grant_id.to_string();
    let added = sql_count(receipt.plaintext_bytes, "plaintext_bytes")?;
    // Added in place: other replicas' closes under the same grant are not lost.
    let changed = execute(
        tx,
        "UPDATE grants SET used_bytes = used_bytes + $1 WHERE id = $2",
        &[&added, &grant_id],
    )
    .await?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    let index = audit::append(tx, receipt.ended_at, Event::transfer_completed(&receipt)).await?;
    receipt.audit_index = Some(index);
    let jws = sign(&receipt).map_err(StoreError::Backend)?;
    execute(
        tx,
        "UPDATE transfers SET state = 'closed', ended_at = $1, complete = $2, incomplete = $3, \
         plaintext_bytes = $4, ciphertext_bytes = $5, plaintext_sha256 = $6, ciphertext_sha256 = $7, \
         receipt_json = $8, jws = $9 WHERE id = $10 AND state = 'open'",
        &[
            &receipt.ended_at.unix_ms(),
            &receipt.complete,
            &receipt.incomplete.map(|cause| cause.as_str()),
            &added,
            &sql_count(receipt.ciphertext_bytes, "ciphertext_bytes")?,
            &receipt.plaintext_sha256,
            &receipt.ciphertext_sha256,
            &json_text(&receipt)?,
            &jws,
            &id.to_string(),
        ],
    )
    .await?;
    Ok((receipt, jws))
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
