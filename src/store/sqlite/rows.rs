//! Between rows and the gateway's types, and the statements on requests and
//! grants. Rows are read through [`Columns`], as in the PostgreSQL store.

use rusqlite::{Connection, Row, params};
use serde::Deserialize;
use serde::de::IntoDeserializer;

use crate::clock::Timestamp;
use crate::grant::{Grant, GrantId};
use crate::policy::{Finding, Verdict};
use crate::request::{Approval, Request, RequestId};
use crate::store::StoreError;
pub(super) use crate::store::columns::json_text;
use crate::store::columns::{self, Columns, GRANT_COLUMNS, REQUEST_COLUMNS};

/// One row of `table`, read column by column with errors that name the column.
pub(super) struct Cols<'r, 's> {
    pub(super) row: &'r Row<'s>,
    pub(super) table: &'static str,
}

impl Cols<'_, '_> {
    /// A column of any type the driver reads.
    pub(super) fn int<T: rusqlite::types::FromSql>(
        &self,
        column: &'static str,
    ) -> Result<T, StoreError> {
        self.row.get(column).map_err(|e| self.bad(column, e))
    }
}

impl Columns for Cols<'_, '_> {
    fn table(&self) -> &'static str {
        self.table
    }

    fn opt_int64(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        self.int(column)
    }

    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.row.get(column).map_err(|e| self.bad(column, e))
    }
}

/// `Verdict` has no `FromStr`; its serde form is its `as_str()` text, so
/// parse through serde rather than keep a second list of names here.
fn parse_verdict(text: &str) -> Result<Verdict, serde::de::value::Error> {
    Verdict::deserialize(text.into_deserializer())
}

/// A count or quota as SQLite's signed 64-bit integer; above `i64::MAX` is refused.
pub(super) fn sql_count(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n)
        .map_err(|_| StoreError::Backend(format!("{what} {n} is larger than SQLite stores").into()))
}

// ---------------------------------------------------------------------------
// requests

fn request_row(row: &Row<'_>) -> Result<Request, StoreError> {
    columns::request(&Cols {
        row,
        table: "requests",
    })
}

pub(super) fn insert_request(tx: &Connection, r: &Request) -> Result<(), StoreError> {
    let scope = json_text(&r.scope)?;
    tx.execute(
        &format!("INSERT INTO requests ({REQUEST_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
        params![
            r.id.to_string(),
            r.requester.as_str(),
            r.requester_jurisdiction.as_str(),
            r.holder.as_str(),
            r.thumbprint,
            scope,
            r.state.as_str(),
            r.policy_hash,
            r.filed_at.unix_ms(),
            r.deadline.unix_ms(),
            r.decided_at.map(Timestamp::unix_ms),
            r.decided_by.as_ref().map(|s| s.as_str()),
            r.reason,
            r.grant_id.map(|g| g.to_string()),
        ],
    )
    .map_err(|e| unique_to_conflict(e, || format!("request {} already exists", r.id)))?;
    let mut finding = tx.prepare_cached(
        "INSERT INTO findings (request_id, seq, rule, verdict, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (seq, f) in (0_i64..).zip(&r.findings) {
        finding.execute(params![
            r.id.to_string(),
            seq,
            f.rule,
            f.verdict.as_str(),
            f.reason
        ])?;
    }
    let mut approval = tx.prepare_cached(
        "INSERT OR IGNORE INTO approvals (request_id, approver, at) VALUES (?1, ?2, ?3)",
    )?;
    for a in &r.approvals {
        approval.execute(params![
            r.id.to_string(),
            a.approver.as_str(),
            a.at.unix_ms()
        ])?;
    }
    Ok(())
}

/// One request with its findings (in order) and approvals (in time order).
pub(super) fn request(conn: &Connection, id: RequestId) -> Result<Option<Request>, StoreError> {
    let found = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"
        ))?;
        let mut rows = stmt.query([id.to_string()])?;
        rows.next()?.map(request_row).transpose()?
    };
    let Some(mut request) = found else {
        return Ok(None);
    };
    complete_request(conn, &mut request)?;
    Ok(Some(request))
}

/// Requests newest first, all or in one state.
pub(super) fn requests(conn: &Connection, state: Option<&str>) -> Result<Vec<Request>, StoreError> {
    // Two statements rather than `?1 IS NULL OR state = ?1`, so the filtered
    // one can use `requests_by_state`.
    let order = "ORDER BY filed_at DESC, rowid DESC";
    let mut stmt = match state {
        Some(_) => conn.prepare_cached(&format!(
            "SELECT {REQUEST_COLUMNS} FROM requests WHERE state = ?1 {order}"
        ))?,
        None => conn.prepare_cached(&format!("SELECT {REQUEST_COLUMNS} FROM requests {order}"))?,
    };
    let mut rows = match state {
        Some(state) => stmt.query([state])?,
        None => stmt.query([])?,
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(request_row(row)?);
    }
    for request in &mut out {
        complete_request(conn, request)?;
    }
    Ok(out)
}

fn complete_request(conn: &Connection, request: &mut Request) -> Result<(), StoreError> {
    let id = request.id.to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT rule, verdict, reason FROM findings WHERE request_id = ?1 ORDER BY seq",
    )?;
    let mut rows = stmt.query([&id])?;
    while let Some(row) = rows.next()? {
        let c = Cols {
            row,
            table: "findings",
        };
        let verdict = c.text("verdict")?;
        request.findings.push(Finding {
            rule: c.text("rule")?,
            verdict: parse_verdict(&verdict).map_err(|e| c.bad("verdict", e))?,
            reason: c.text("reason")?,
        });
    }
    request.approvals = approvals(conn, &id)?;
    Ok(())
}

/// A request's approvals in the order they were given.
pub(super) fn approvals(conn: &Connection, request_id: &str) -> Result<Vec<Approval>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT approver, at FROM approvals WHERE request_id = ?1 ORDER BY at, rowid",
    )?;
    let mut rows = stmt.query([request_id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let c = Cols {
            row,
            table: "approvals",
        };
        out.push(Approval {
            approver: c.parse("approver")?,
            at: c.time("at")?,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// grants

fn grant_row(row: &Row<'_>) -> Result<Grant, StoreError> {
    columns::grant(&Cols {
        row,
        table: "grants",
    })
}

pub(super) fn insert_grant(tx: &Connection, g: &Grant) -> Result<(), StoreError> {
    let scope = json_text(&g.scope)?;
    let approvers = json_text(&g.approvers)?;
    let ending = g.ending.as_ref();
    tx.execute(
        &format!(
            "INSERT INTO grants ({GRANT_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ),
        params![
            g.id.to_string(),
            g.request_id.to_string(),
            g.grantee.as_str(),
            g.grantee_jurisdiction.as_str(),
            g.holder.as_str(),
            g.thumbprint,
            scope,
            g.quotas.max_bytes.map(|n| sql_count(n, "max_bytes")).transpose()?,
            g.quotas.max_transfers.map(|n| sql_count(n, "max_transfers")).transpose()?,
            sql_count(g.used_bytes, "used_bytes")?,
            sql_count(g.used_transfers, "used_transfers")?,
            approvers,
            g.issued_at.unix_ms(),
            g.expires_at.unix_ms(),
            g.validation_due.map(Timestamp::unix_ms),
            g.validated_by.as_ref().map(|s| s.as_str()),
            g.state.as_str(),
            ending.map(|e| e.cause.as_str()),
            ending.map(|e| e.at.unix_ms()),
            ending.and_then(|e| e.by.as_ref()).map(|s| s.as_str()),
            ending.and_then(|e| e.reason.as_deref()),
            g.token,
        ],
    )
    .map_err(|e| unique_to_conflict(e, || format!("grant {} or a grant for request {} already exists", g.id, g.request_id)))?;
    Ok(())
}

pub(super) fn grant(conn: &Connection, id: GrantId) -> Result<Option<Grant>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"))?;
    let mut rows = stmt.query([id.to_string()])?;
    rows.next()?.map(grant_row).transpose()
}

/// Grants newest first, all or in one state.
pub(super) fn grants(conn: &Connection, state: Option<&str>) -> Result<Vec<Grant>, StoreError> {
    let order = "ORDER BY issued_at DESC, rowid DESC";
    let mut stmt = match state {
        Some(_) => conn.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE state = ?1 {order}"
        ))?,
        None => conn.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants {order}"))?,
    };
    let mut rows = match state {
        Some(state) => stmt.query([state])?,
        None => stmt.query([])?,
    };
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(grant_row(row)?);
    }
    Ok(out)
}

/// Active grants due at `?1` by expiry or by a missed validation; two arms
/// so each can use its partial index.
pub(super) const DUE_IDS: &str = "\
    SELECT id FROM grants WHERE state = 'active' AND expires_at <= ?1 \
    UNION \
    SELECT id FROM grants WHERE state = 'active' AND validated_by IS NULL \
        AND validation_due IS NOT NULL AND validation_due <= ?1";

/// The earliest expiry or pending validation deadline among active grants.
pub(super) const NEXT_DUE: &str = "\
    SELECT min(due) FROM ( \
        SELECT min(expires_at) AS due FROM grants WHERE state = 'active' \
        UNION ALL \
        SELECT min(validation_due) FROM grants WHERE state = 'active' \
            AND validated_by IS NULL AND validation_due IS NOT NULL)";

/// Active grants that may be due at `now`, earliest first. The caller
/// decides the cause with `Grant::due_cause`.
pub(super) fn due_candidates(conn: &Connection, now: Timestamp) -> Result<Vec<Grant>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE id IN ({DUE_IDS}) \
         ORDER BY min(expires_at, coalesce(CASE WHEN validated_by IS NULL THEN validation_due END, expires_at)), id"
    ))?;
    let mut rows = stmt.query([now.unix_ms()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(grant_row(row)?);
    }
    Ok(out)
}

pub(super) fn next_due(conn: &Connection) -> Result<Option<Timestamp>, StoreError> {
    let ms: Option<i64> = conn
        .prepare_cached(NEXT_DUE)?
        .query_row([], |row| row.get(0))?;
    Ok(ms.map(Timestamp::from_unix_ms))
}

/// A primary-key or UNIQUE violation is a `Conflict` (the record exists);
/// anything else stays a backend failure.
pub(super) fn unique_to_conflict(
    e: rusqlite::Error,
    message: impl FnOnce() -> String,
) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Conflict(message())
        }
        _ => e.into(),
    }
}
