//! The outbox of data-subject notices: the notifier's reads. Inserting a
//! notice with its grant and recording attempts are planned in
//! `store::transaction` and written by [`super::apply`].
//!
//! A notice row holds the delivery's state; what the receiver is told about
//! the grant (grantee, scope, issue and expiry) is joined from `grants`, so
//! it is stored once.

use rusqlite::{Connection, Row, params};

use super::rows::Cols;
use crate::clock::Timestamp;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::store::StoreError;
use crate::store::columns::{self, ATTEMPTS_COLUMNS};
use crate::store::transaction::NoticeAttempts;

const SELECT: &str = "SELECT n.id, n.grant_id, n.request_id, n.due_at, n.state, n.attempts, \
     n.next_attempt_at, n.last_attempt_at, n.last_error, n.delivered_at, n.status, \
     g.grantee, g.grantee_jurisdiction, g.holder, g.scope_json, g.issued_at, g.expires_at \
     FROM notices n JOIN grants g ON g.id = n.grant_id";

/// Pending notices whose next attempt is due at `?1`, longest waiting first.
pub(super) const DUE: &str = "SELECT id FROM notices \
     WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, due_at, rowid LIMIT ?2";

/// The earliest next attempt among pending notices.
pub(super) const NEXT_DUE: &str =
    "SELECT min(next_attempt_at) FROM notices WHERE state = 'pending'";

fn notice_row(row: &Row<'_>) -> Result<NoticeView, StoreError> {
    let n = Cols {
        row,
        table: "notices",
    };
    let g = Cols {
        row,
        table: "grants",
    };
    columns::notice(&n, &g, n.int::<Option<i64>>("status")?)
}

fn collect(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<NoticeView>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(notice_row(row)?);
    }
    Ok(out)
}

/// See `Store::next_notice_due`.
pub(super) fn next_due(conn: &Connection) -> Result<Option<Timestamp>, StoreError> {
    let ms: Option<i64> = conn
        .prepare_cached(NEXT_DUE)?
        .query_row([], |row| row.get(0))?;
    Ok(ms.map(Timestamp::from_unix_ms))
}

/// See `Store::due_notices`.
pub(super) fn due(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<Notice>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql =
        format!("{SELECT} WHERE n.id IN ({DUE}) ORDER BY n.next_attempt_at, n.due_at, n.rowid");
    Ok(collect(conn, &sql, params![now.unix_ms(), limit])?
        .into_iter()
        .map(|view| view.notice)
        .collect())
}

/// Notice `id`'s delivery state; `None` if unknown.
pub(super) fn attempts(
    conn: &Connection,
    id: NoticeId,
) -> Result<Option<NoticeAttempts>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ATTEMPTS_COLUMNS} FROM notices WHERE id = ?1"
    ))?;
    let mut found = stmt.query([id.to_string()])?;
    found
        .next()?
        .map(|row| {
            columns::notice_attempts(&Cols {
                row,
                table: "notices",
            })
        })
        .transpose()
}

/// See `Store::notices`.
pub(super) fn list(
    conn: &Connection,
    state: Option<NoticeState>,
) -> Result<Vec<NoticeView>, StoreError> {
    let order = "ORDER BY n.due_at, n.rowid";
    match state {
        Some(state) => collect(
            conn,
            &format!("{SELECT} WHERE n.state = ?1 {order}"),
            [state.as_str()],
        ),
        None => collect(conn, &format!("{SELECT} {order}"), []),
    }
}

/// See `Store::notice_counts`.
pub(super) fn counts(conn: &Connection) -> Result<NoticeCounts, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM notices GROUP BY state")?;
    let mut rows = stmt.query([])?;
    let mut counts = NoticeCounts::default();
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let n = u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0);
        match state.as_str() {
            "pending" => counts.pending = n,
            "delivered" => counts.delivered = n,
            _ => {}
        }
    }
    Ok(counts)
}
