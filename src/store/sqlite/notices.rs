//! The outbox of data-subject notices: inserting one with its grant, and the
//! notifier's reads and records.
//!
//! A notice row holds the delivery's state; what the receiver is told about
//! the grant (grantee, scope, issue and expiry) is joined from `grants`, so
//! it is stored once.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::audit;
use super::rows::{Cols, sql_count};
use crate::audit::entry::Event;
use crate::clock::Timestamp;
use crate::grant::Grant;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::store::columns;
use crate::store::{StoreError, stored_error};

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

/// Puts `grant`'s notice in the outbox, pending, due at `due_at`; inside
/// the transaction that issues the grant.
pub(super) fn insert(
    tx: &Connection,
    id: NoticeId,
    grant: &Grant,
    due_at: Timestamp,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO notices (id, grant_id, request_id, due_at, state, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?4)",
    )?
    .execute(params![
        id.to_string(),
        grant.id.to_string(),
        grant.request_id.to_string(),
        due_at.unix_ms(),
    ])?;
    Ok(())
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

/// See `Store::notice_delivered`.
pub(super) fn delivered(
    conn: &Connection,
    id: NoticeId,
    at: Timestamp,
    status: u16,
) -> Result<bool, StoreError> {
    if !(200..300).contains(&status) {
        return Err(StoreError::Conflict(format!(
            "notice {id} is delivered only on a 2xx answer, not {status}"
        )));
    }
    let found: Option<(String, String, i64)> = conn
        .prepare_cached("SELECT state, grant_id, attempts FROM notices WHERE id = ?1")?
        .query_row([id.to_string()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((state, grant, attempts)) = found else {
        return Err(StoreError::NotFound);
    };
    if state != NoticeState::Pending.as_str() {
        return Ok(false);
    }
    let grant = grant
        .parse()
        .map_err(|e| StoreError::Backend(format!("notices.grant_id: {e}").into()))?;
    let attempts = u64::try_from(attempts)
        .ok()
        .and_then(|a| a.checked_add(1))
        .ok_or_else(|| StoreError::Backend(format!("notice {id}'s attempt count").into()))?;
    conn.execute(
        "UPDATE notices SET state = 'delivered', attempts = ?1, last_attempt_at = ?2, \
         delivered_at = ?2, status = ?3 WHERE id = ?4",
        params![
            sql_count(attempts, "attempts")?,
            at.unix_ms(),
            status,
            id.to_string()
        ],
    )?;
    audit::append(
        conn,
        at,
        Event::NoticeDelivered {
            notice: id,
            grant,
            attempts,
            status,
        },
    )?;
    Ok(true)
}

/// See `Store::notice_failed`.
pub(super) fn failed(
    conn: &Connection,
    id: NoticeId,
    at: Timestamp,
    error: &str,
    next_attempt_at: Timestamp,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE notices SET attempts = attempts + 1, last_attempt_at = ?1, last_error = ?2, \
         next_attempt_at = max(?3, due_at) WHERE id = ?4 AND state = 'pending'",
        params![
            at.unix_ms(),
            stored_error(error),
            next_attempt_at.unix_ms(),
            id.to_string()
        ],
    )?;
    if changed == 0 {
        let exists: Option<i64> = conn
            .prepare_cached("SELECT 1 FROM notices WHERE id = ?1")?
            .query_row([id.to_string()], |row| row.get(0))
            .optional()?;
        return match exists {
            Some(_) => Ok(false),
            None => Err(StoreError::NotFound),
        };
    }
    Ok(true)
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
