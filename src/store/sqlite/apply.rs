//! Carrying out a write transaction's [`Plan`] with SQLite's statements:
//! its steps in order, each [`Change`] one statement (or a few), each
//! entry through [`audit::append`]. Runs inside the writer's transaction (see
//! [`super::writer`]), which holds the file's write lock from before the
//! plan's rows were read. There are no other gateways to tell, so a plan's
//! announcement is not sent.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit;
use super::rows::{self, json_text, sql_count, unique_to_conflict};
use crate::store::StoreError;
use crate::store::columns::OPEN_COLUMNS;
use crate::store::transaction::{Change, Plan, Step};

/// Takes `plan`'s steps in order; returns its outcome.
pub(super) fn run<T>(conn: &Connection, plan: Plan<T>) -> Result<T, StoreError> {
    run_indexed(conn, plan).map(|(outcome, _)| outcome)
}

/// [`run`], also returning the index of the last entry appended.
pub(super) fn run_indexed<T>(
    conn: &Connection,
    plan: Plan<T>,
) -> Result<(T, Option<u64>), StoreError> {
    let mut last = None;
    for step in plan.steps {
        match step {
            Step::Write(change) => apply(conn, &change)?,
            Step::Append(at, event) => last = Some(audit::append(conn, at, event)?),
        }
    }
    Ok((plan.outcome, last))
}

fn apply(conn: &Connection, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::InsertRequest(request) => rows::insert_request(conn, request)?,
        Change::InsertApproval { request, approval } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO approvals (request_id, approver, at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                request.to_string(),
                approval.approver.as_str(),
                approval.at.unix_ms()
            ])?;
        }
        Change::ApproveRequest { id, by, at, grant } => {
            conn.execute(
                "UPDATE requests SET state = 'approved', decided_at = ?1, decided_by = ?2, grant_id = ?3 \
                 WHERE id = ?4",
                params![at.unix_ms(), by.as_str(), grant.to_string(), id.to_string()],
            )?;
        }
        Change::DenyRequest { id, by, at, reason } => {
            conn.execute(
                "UPDATE requests SET state = 'denied', decided_at = ?1, decided_by = ?2, reason = ?3 \
                 WHERE id = ?4",
                params![at.unix_ms(), by.as_str(), reason, id.to_string()],
            )?;
        }
        Change::InsertGrant(grant) => rows::insert_grant(conn, grant)?,
        Change::ValidateGrant { id, by, at } => {
            conn.execute(
                "UPDATE grants SET validated_by = ?1, validated_at = ?2 WHERE id = ?3",
                params![by.as_str(), at.unix_ms(), id.to_string()],
            )?;
        }
        Change::EndGrant { id, ending } => {
            conn.execute(
                "UPDATE grants SET state = ?1, ended_cause = ?2, ended_at = ?3, ended_by = ?4, \
                 ended_reason = ?5 WHERE id = ?6",
                params![
                    ending.cause.end_state().as_str(),
                    ending.cause.as_str(),
                    ending.at.unix_ms(),
                    ending.by.as_ref().map(|by| by.as_str()),
                    ending.reason,
                    id.to_string(),
                ],
            )?;
        }
        Change::CountTransfer {
            grant,
            used_transfers,
        } => {
            conn.prepare_cached("UPDATE grants SET used_transfers = ?1 WHERE id = ?2")?
                .execute(params![
                    sql_count(*used_transfers, "used_transfers")?,
                    grant.to_string()
                ])?;
        }
        Change::OpenTransfer(open) => {
            conn.prepare_cached(&format!(
                "INSERT INTO transfers ({OPEN_COLUMNS}, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open')"
            ))?
            .execute(params![
                open.id.to_string(),
                open.grant_id.to_string(),
                open.grantee,
                open.route,
                open.category,
                open.target,
                open.started_at.unix_ms(),
            ])
            .map_err(|e| {
                unique_to_conflict(e, || format!("transfer {} already exists", open.id))
            })?;
        }
        Change::AddBytes { grant, bytes } => {
            let grant = grant.to_string();
            let used_bytes: i64 = conn
                .prepare_cached("SELECT used_bytes FROM grants WHERE id = ?1")?
                .query_row([&grant], |row| row.get(0))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let used_bytes = u64::try_from(used_bytes)
                .ok()
                .and_then(|used| used.checked_add(*bytes))
                .ok_or_else(|| {
                    StoreError::Backend(format!("grant {grant}'s byte count overflows").into())
                })?;
            conn.prepare_cached("UPDATE grants SET used_bytes = ?1 WHERE id = ?2")?
                .execute(params![sql_count(used_bytes, "used_bytes")?, grant])?;
        }
        Change::CloseTransfer { receipt, jws } => {
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
                json_text(receipt)?,
                jws,
                receipt.transfer_id.to_string(),
            ])?;
        }
        Change::InsertNotice {
            id,
            grant,
            request,
            due_at,
        } => {
            conn.prepare_cached(
                "INSERT INTO notices (id, grant_id, request_id, due_at, state, next_attempt_at) \
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?4)",
            )?
            .execute(params![
                id.to_string(),
                grant.to_string(),
                request.to_string(),
                due_at.unix_ms(),
            ])?;
        }
        Change::NoticeDelivered {
            id,
            attempts,
            at,
            status,
        } => {
            conn.execute(
                "UPDATE notices SET state = 'delivered', attempts = ?1, last_attempt_at = ?2, \
                 delivered_at = ?2, status = ?3 WHERE id = ?4",
                params![
                    sql_count(*attempts, "attempts")?,
                    at.unix_ms(),
                    status,
                    id.to_string()
                ],
            )?;
        }
        Change::NoticeFailed {
            id,
            attempts,
            at,
            error,
            next_attempt_at,
        } => {
            conn.execute(
                "UPDATE notices SET attempts = ?1, last_attempt_at = ?2, last_error = ?3, \
                 next_attempt_at = ?4 WHERE id = ?5",
                params![
                    sql_count(*attempts, "attempts")?,
                    at.unix_ms(),
                    error,
                    next_attempt_at.unix_ms(),
                    id.to_string()
                ],
            )?;
        }
    }
    Ok(())
}
