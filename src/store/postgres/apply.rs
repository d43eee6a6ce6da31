//! Carrying out a write transaction's [`Plan`] with PostgreSQL's
//! statements: its steps in order, each [`Change`] one statement, each
//! entry through [`audit::append`] (which locks the log's head row), then
//! the announcement with `NOTIFY`, which
//! PostgreSQL delivers to the other replicas when the transaction commits,
//! never before. The rows the plan was decided on were read `FOR UPDATE`.

use super::rows::{self, json_text, sql_count};
use super::unique_to_conflict;
use super::{DUE_CHANNEL, ENDED_CHANNEL, PostgresStore, Tx, audit, execute, listen};
use crate::store::StoreError;
use crate::store::columns::OPEN_COLUMNS;
use crate::store::transaction::{Announce, Change, Plan, Step};

impl PostgresStore {
    /// Takes `plan`'s steps in order and sends its announcement, in `tx`;
    /// returns its outcome.
    pub(super) async fn run<T>(&self, tx: &Tx<'_>, plan: Plan<T>) -> Result<T, StoreError> {
        Ok(self.run_indexed(tx, plan).await?.0)
    }

    /// [`Self::run`], also returning the index of the last entry appended.
    pub(super) async fn run_indexed<T>(
        &self,
        tx: &Tx<'_>,
        plan: Plan<T>,
    ) -> Result<(T, Option<u64>), StoreError> {
        let mut last = None;
        for step in plan.steps {
            match step {
                Step::Write(change) => apply(tx, &change, self.alive.key).await?,
                Step::Append(at, event) => last = Some(audit::append(tx, at, event).await?),
            }
        }
        if let Some(announce) = plan.announce {
            let (channel, payload) = match announce {
                Announce::Due(grant) => (DUE_CHANNEL, listen::due_payload(grant, &self.origin)),
                Announce::Ended(grant, cause) => {
                    (ENDED_CHANNEL, listen::payload(grant, cause, &self.origin))
                }
            };
            execute(tx, "SELECT pg_notify($1, $2)", &[&channel, &payload]).await?;
        }
        Ok((plan.outcome, last))
    }
}

/// Writes `change`; a transfer it opens is marked as opened by the replica
/// holding liveness key `opener`.
async fn apply(tx: &Tx<'_>, change: &Change, opener: i64) -> Result<(), StoreError> {
    match change {
        Change::InsertRequest(request) => rows::insert_request(tx, request).await?,
        Change::InsertApproval { request, approval } => {
            rows::insert_approval(tx, &request.to_string(), approval).await?;
        }
        Change::ApproveRequest { id, by, at, grant } => {
            execute(
                tx,
                "UPDATE requests SET state = 'approved', decided_at = $1, decided_by = $2, grant_id = $3 \
                 WHERE id = $4",
                &[&at.unix_ms(), &by.as_str(), &grant.to_string(), &id.to_string()],
            )
            .await?;
        }
        Change::DenyRequest { id, by, at, reason } => {
            execute(
                tx,
                "UPDATE requests SET state = 'denied', decided_at = $1, decided_by = $2, reason = $3 \
                 WHERE id = $4",
                &[&at.unix_ms(), &by.as_str(), reason, &id.to_string()],
            )
            .await?;
        }
        Change::InsertGrant(grant) => rows::insert_grant(tx, grant).await?,
        Change::ValidateGrant { id, by, at } => {
            execute(
                tx,
                "UPDATE grants SET validated_by = $1, validated_at = $2 WHERE id = $3",
                &[&by.as_str(), &at.unix_ms(), &id.to_string()],
            )
            .await?;
        }
        Change::EndGrant { id, ending } => {
            execute(
                tx,
                "UPDATE grants SET state = $1, ended_cause = $2, ended_at = $3, ended_by = $4, \
                 ended_reason = $5 WHERE id = $6",
                &[
                    &ending.cause.end_state().as_str(),
                    &ending.cause.as_str(),
                    &ending.at.unix_ms(),
                    &ending.by.as_ref().map(|by| by.as_str()),
                    &ending.reason,
                    &id.to_string(),
                ],
            )
            .await?;
        }
        Change::CountTransfer {
            grant,
            used_transfers,
        } => {
            execute(
                tx,
                "UPDATE grants SET used_transfers = $1 WHERE id = $2",
                &[
                    &sql_count(*used_transfers, "used_transfers")?,
                    &grant.to_string(),
                ],
            )
            .await?;
        }
        Change::OpenTransfer(open) => {
            execute(
                tx,
                &format!(
                    "INSERT INTO transfers ({OPEN_COLUMNS}, opened_by, state) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open')"
                ),
                &[
                    &open.id.to_string(),
                    &open.grant_id.to_string(),
                    &open.grantee,
                    &open.route,
                    &open.category,
                    &open.target,
                    &open.started_at.unix_ms(),
                    &opener,
                ],
            )
            .await
            .map_err(|e| {
                unique_to_conflict(e, || format!("transfer {} already exists", open.id))
            })?;
        }
        Change::AddBytes { grant, bytes } => {
            // Added in place: other replicas' closes under the same grant are not lost.
            let changed = execute(
                tx,
                "UPDATE grants SET used_bytes = used_bytes + $1 WHERE id = $2",
                &[&sql_count(*bytes, "plaintext_bytes")?, &grant.to_string()],
            )
            .await?;
            if changed == 0 {
                return Err(StoreError::NotFound);
            }
        }
        Change::CloseTransfer { receipt, jws } => {
            execute(
                tx,
                "UPDATE transfers SET state = 'closed', ended_at = $1, complete = $2, incomplete = $3, \
                 plaintext_bytes = $4, ciphertext_bytes = $5, plaintext_sha256 = $6, ciphertext_sha256 = $7, \
                 receipt_json = $8, jws = $9 WHERE id = $10 AND state = 'open'",
                &[
                    &receipt.ended_at.unix_ms(),
                    &receipt.complete,
                    &receipt.incomplete.map(|cause| cause.as_str()),
                    &sql_count(receipt.plaintext_bytes, "plaintext_bytes")?,
                    &sql_count(receipt.ciphertext_bytes, "ciphertext_bytes")?,
                    &receipt.plaintext_sha256,
                    &receipt.ciphertext_sha256,
                    &json_text(receipt)?,
                    jws,
                    &receipt.transfer_id.to_string(),
                ],
            )
            .await?;
        }
        Change::InsertNotice {
            id,
            grant,
            request,
            due_at,
        } => {
            execute(
                tx,
                "INSERT INTO notices (id, grant_id, request_id, due_at, state, next_attempt_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $4)",
                &[
                    &id.to_string(),
                    &grant.to_string(),
                    &request.to_string(),
                    &due_at.unix_ms(),
                ],
            )
            .await?;
        }
        Change::NoticeDelivered {
            id,
            attempts,
            at,
            status,
        } => {
            execute(
                tx,
                "UPDATE notices SET state = 'delivered', attempts = $1, last_attempt_at = $2, \
                 delivered_at = $2, status = $3 WHERE id = $4",
                &[
                    &sql_count(*attempts, "attempts")?,
                    &at.unix_ms(),
                    &i32::from(*status),
                    &id.to_string(),
                ],
            )
            .await?;
        }
        Change::NoticeFailed {
            id,
            attempts,
            at,
            error,
            next_attempt_at,
        } => {
            execute(
                tx,
                "UPDATE notices SET attempts = $1, last_attempt_at = $2, last_error = $3, \
                 next_attempt_at = $4 WHERE id = $5",
                &[
                    &sql_count(*attempts, "attempts")?,
                    &at.unix_ms(),
                    error,
                    &next_attempt_at.unix_ms(),
                    &id.to_string(),
                ],
            )
            .await?;
        }
    }
    Ok(())
}
