//! The outbox of data-subject notices in PostgreSQL: the notifier's reads.
//! Inserting a notice with its grant and recording attempts are planned in
//! `store::transaction` and written by [`super::apply`]; an attempt locks
//! the notice's row first, so replicas racing on one notice record it once.

use tokio_postgres::Row;

use super::rows::Cols;
use super::{Tx, query, query_one, query_opt};
use crate::clock::Timestamp;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::store::StoreError;
use crate::store::columns::{self, ATTEMPTS_COLUMNS};
use crate::store::transaction::NoticeAttempts;

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

/// Notice `id`'s delivery state, its row locked until the transaction
/// ends, so replicas racing on one notice record it once; `None` if unknown.
pub(super) async fn attempts(
    tx: &Tx<'_>,
    id: NoticeId,
) -> Result<Option<NoticeAttempts>, StoreError> {
    query_opt(
        tx,
        &format!("SELECT {ATTEMPTS_COLUMNS} FROM notices WHERE id = $1 FOR UPDATE"),
        &[&id.to_string()],
    )
    .await?
    .map(|row| {
        columns::notice_attempts(&Cols {
            row: &row,
            table: "notices",
        })
    })
    .transpose()
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
