//! The outbox of data-subject notices in PostgreSQL: inserting one with its
//! grant, and the notifier's reads and records. A delivery locks its row,
//! so replicas racing on one notice record it once.

use tokio_postgres::Row;

use super::rows::{Cols, sql_count};
use super::{Tx, audit, execute, query, query_one, query_opt};
use crate::audit::entry::Event;
use crate::clock::Timestamp;
use crate::grant::Grant;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::store::columns::{self, Columns as _};
use crate::store::{StoreError, stored_error};

const SELECT: &str = "SELECT n.id, n.grant_id, n.request_id, n.due_at, n.state, n.attempts, \
     n.next_attempt_at, n.last_attempt_at, n.last_error, n.delivered_at, n.status, \
     g.grantee, g.grantee_jurisdiction, g.holder, g.scope_json, g.issued_at, g.expires_at \
     FROM notices n JOIN grants g ON g.id = n.grant_id";

fn notice_row(row: &Row) -> Result<NoticeView, StoreError> {
    let n = Cols {
        row,
        table: "notices",
    };
    let g = Cols {
        row,
        table: "grants",
    };
    columns::notice(&n, &g, n.get::<Option<i32>>("status")?.map(i64::from))
}

/// Puts `grant`'s notice in the outbox, pending, due at `due_at`.
pub(super) async fn insert(
    tx: &Tx<'_>,
    id: NoticeId,
    grant: &Grant,
    due_at: Timestamp,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO notices (id, grant_id, request_id, due_at, state, next_attempt_at) \
         VALUES ($1, $2, $3, $4, 'pending', $4)",
        &[
            &id.to_string(),
            &grant.id.to_string(),
            &grant.request_id.to_string(),
            &due_at.unix_ms(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn next_due(tx: &Tx<'_>) -> Result<Option<Timestamp>, StoreError> {
    let row = query_one(
        tx,
        "SELECT min(next_attempt_at) FROM notices WHERE state = 'pending'",
        &[],
    )
    .await?;
    Ok(row
        .try_get::<_, Option<i64>>(0)?
        .map(Timestamp::from_unix_ms))
}

pub(super) async fn due(
    tx: &Tx<'_>,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Notice>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = query(
        tx,
        &format!(
            "{SELECT} WHERE n.state = 'pending' AND n.next_attempt_at <= $1 \
             ORDER BY n.next_attempt_at, n.due_at, n.seq LIMIT $2"
        ),
        &[&now.unix_ms(), &limit],
    )
    .await?;
    rows.iter()
        .map(|row| notice_row(row).map(|view| view.notice))
        .collect()
}

pub(super) async fn delivered(
    tx: &Tx<'_>,
    id: NoticeId,
    at: Timestamp,
    status: u16,
) -> Result<bool, StoreError> {
    if !(200..300).contains(&status) {
        return Err(StoreError::Conflict(format!(
            "notice {id} is delivered only on a 2xx answer, not {status}"
        )));
    }
    let row = query_opt(
        tx,
        "SELECT state, grant_id, attempts FROM notices WHERE id = $1 FOR UPDATE",
        &[&id.to_string()],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    let c = Cols {
        row: &row,
        table: "notices",
    };
    if c.text("state")? != NoticeState::Pending.as_str() {
        return Ok(false);
    }
    let grant = c.parse("grant_id")?;
    let attempts = c
        .count("attempts")?
        .checked_add(1)
        .ok_or_else(|| c.bad("attempts", "overflows"))?;
    execute(
        tx,
        "UPDATE notices SET state = 'delivered', attempts = $1, last_attempt_at = $2, \
         delivered_at = $2, status = $3 WHERE id = $4",
        &[
            &sql_count(attempts, "attempts")?,
            &at.unix_ms(),
            &i32::from(status),
            &id.to_string(),
        ],
    )
    .await?;
    audit::append(
        tx,
        at,
        Event::NoticeDelivered {
            notice: id,
            grant,
            attempts,
            status,
        },
    )
    .await?;
    Ok(true)
}

pub(super) async fn failed(
    tx: &Tx<'_>,
    id: NoticeId,
    at: Timestamp,
    error: &str,
    next_attempt_at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = execute(
        tx,
        "UPDATE notices SET attempts = attempts + 1, last_attempt_at = $1, last_error = $2, \
         next_attempt_at = greatest($3, due_at) WHERE id = $4 AND state = 'pending'",
        &[
            &at.unix_ms(),
            &stored_error(error),
            &next_attempt_at.unix_ms(),
            &id.to_string(),
        ],
    )
    .await?;
    if changed == 0 {
        let exists = query_opt(
            tx,
            "SELECT 1 FROM notices WHERE id = $1",
            &[&id.to_string()],
        )
        .await?;
        return match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound),
        };
    }
    Ok(true)
}

pub(super) async fn list(
    tx: &Tx<'_>,
    state: Option<NoticeState>,
) -> Result<Vec<NoticeView>, StoreError> {
    let order = "ORDER BY n.due_at, n.seq";
    let rows = match state {
        Some(state) => {
            query(
                tx,
                &format!("{SELECT} WHERE n.state = $1 {order}"),
                &[&state.as_str()],
            )
            .await?
        }
        None => query(tx, &format!("{SELECT} {order}"), &[]).await?,
    };
    rows.iter().map(notice_row).collect()
}

pub(super) async fn counts(tx: &Tx<'_>) -> Result<NoticeCounts, StoreError> {
    let rows = query(
        tx,
        "SELECT state, count(*) FROM notices GROUP BY state",
        &[],
    )
    .await?;
    let mut counts = NoticeCounts::default();
    for row in &rows {
        let state: String = row.try_get(0)?;
        let n = u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0);
        match state.as_str() {
            "pending" => counts.pending = n,
            "delivered" => counts.delivered = n,
            _ => {}
        }
    }
    Ok(counts)
}
