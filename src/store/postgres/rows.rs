//! Between rows and the gateway's types, and the statements on requests and
//! grants. Rows are read through [`Columns`], as in the SQLite store.

use serde::Deserialize;
use serde::de::IntoDeserializer;
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::{Tx, execute, query, query_opt, unique_to_conflict};
use crate::clock::Timestamp;
use crate::grant::{Grant, GrantId};
use crate::policy::{Finding, Verdict};
use crate::request::{Approval, Request, RequestId};
use crate::store::StoreError;
pub(super) use crate::store::columns::json_text;
use crate::store::columns::{self, Columns, GRANT_COLUMNS, REQUEST_COLUMNS};

/// One row of `table`, read column by column with errors that name the column.
pub(super) struct Cols<'r> {
    pub(super) row: &'r Row,
    pub(super) table: &'static str,
}

impl Cols<'_> {
    /// A column of any type the driver reads.
    pub(super) fn get<'a, T: FromSql<'a>>(&'a self, column: &'static str) -> Result<T, StoreError> {
        self.row.try_get(column).map_err(|e| self.bad(column, e))
    }
}

impl Columns for Cols<'_> {
    fn table(&self) -> &'static str {
        self.table
    }

    fn opt_int64(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        self.get(column)
    }

    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }
}

fn parse_verdict(text: &str) -> Result<Verdict, serde::de::value::Error> {
    Verdict::deserialize(text.into_deserializer())
}

/// A count or quota as PostgreSQL's `BIGINT`; above `i64::MAX` is refused.
pub(super) fn sql_count(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| {
        StoreError::Backend(format!("{what} {n} is larger than PostgreSQL stores").into())
    })
}

// ---------------------------------------------------------------------------
// requests

fn request_row(row: &Row) -> Result<Request, StoreError> {
    columns::request(&Cols {
        row,
        table: "requests",
    })
}

pub(super) async fn insert_request(tx: &Tx<'_>, r: &Request) -> Result<(), StoreError> {
    let scope = json_text(&r.scope)?;
    let id = r.id.to_string();
    execute(
        tx,
        &format!(
            "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            &id,
            &r.requester.as_str(),
            &r.requester_jurisdiction.as_str(),
            &r.holder.as_str(),
            &r.thumbprint,
            &scope,
            &r.state.as_str(),
            &r.policy_hash,
            &r.filed_at.unix_ms(),
            &r.deadline.unix_ms(),
            &r.decided_at.map(Timestamp::unix_ms),
            &r.decided_by.as_ref().map(|s| s.as_str()),
            &r.reason,
            &r.grant_id.map(|g| g.to_string()),
        ],
    )
    .await
    .map_err(|e| unique_to_conflict(e, || format!("request {} already exists", r.id)))?;
    for (seq, f) in (0_i64..).zip(&r.findings) {
        execute(
            tx,
            "INSERT INTO findings (request_id, seq, rule, verdict, reason) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &seq, &f.rule, &f.verdict.as_str(), &f.reason],
        )
        .await?;
    }
    for a in &r.approvals {
        insert_approval(tx, &id, a).await?;
    }
    Ok(())
}

/// Records an approval; the same approver twice counts once.
pub(super) async fn insert_approval(
    tx: &Tx<'_>,
    request_id: &str,
    a: &Approval,
) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO approvals (request_id, approver, at) VALUES ($1, $2, $3) \
         ON CONFLICT (request_id, approver) DO NOTHING",
        &[&request_id, &a.approver.as_str(), &a.at.unix_ms()],
    )
    .await?;
    Ok(())
}

/// One request with its findings and approvals; with `lock`, its row stays
/// locked until the transaction ends, so a check on it and the change it
/// guards are not split by a replica.
pub(super) async fn request(
    tx: &Tx<'_>,
    id: RequestId,
    lock: bool,
) -> Result<Option<Request>, StoreError> {
    let sql = if lock {
        format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = $1")
    };
    let Some(row) = query_opt(tx, &sql, &[&id.to_string()]).await? else {
        return Ok(None);
    };
    let mut request = request_row(&row)?;
    complete_request(tx, &mut request).await?;
    Ok(Some(request))
}

pub(super) async fn requests(tx: &Tx<'_>, state: Option<&str>) -> Result<Vec<Request>, StoreError> {
    let order = "ORDER BY filed_at DESC, seq DESC";
    let rows = match state {
        Some(state) => {
            query(
                tx,
                &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE state = $1 {order}"),
                &[&state],
            )
            .await?
        }
        None => {
            query(
                tx,
                &format!("SELECT {REQUEST_COLUMNS} FROM requests {order}"),
                &[],
            )
            .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut request = request_row(row)?;
        complete_request(tx, &mut request).await?;
        out.push(request);
    }
    Ok(out)
}

async fn complete_request(tx: &Tx<'_>, request: &mut Request) -> Result<(), StoreError> {
    let id = request.id.to_string();
    let rows = query(
        tx,
        "SELECT rule, verdict, reason FROM findings WHERE request_id = $1 ORDER BY seq",
        &[&id],
    )
    .await?;
    for row in &rows {
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
    request.approvals = approvals(tx, &id).await?;
    Ok(())
}

pub(super) async fn approvals(tx: &Tx<'_>, request_id: &str) -> Result<Vec<Approval>, StoreError> {
    let rows = query(
        tx,
        "SELECT approver, at FROM approvals WHERE request_id = $1 ORDER BY at, seq",
        &[&request_id],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let c = Cols {
                row,
                table: "approvals",
            };
            Ok(Approval {
                approver: c.parse("approver")?,
                at: c.time("at")?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// grants

pub(super) fn grant_row(row: &Row) -> Result<Grant, StoreError> {
    columns::grant(&Cols {
        row,
        table: "grants",
    })
}

pub(super) async fn insert_grant(tx: &Tx<'_>, g: &Grant) -> Result<(), StoreError> {
    let scope = json_text(&g.scope)?;
    let approvers = json_text(&g.approvers)?;
    let ending = g.ending.as_ref();
    execute(
        tx,
        &format!(
            "INSERT INTO grants ({GRANT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
        ),
        &[
            &g.id.to_string(),
            &g.request_id.to_string(),
            &g.grantee.as_str(),
            &g.grantee_jurisdiction.as_str(),
            &g.holder.as_str(),
            &g.thumbprint,
            &scope,
            &g.quotas
                .max_bytes
                .map(|n| sql_count(n, "max_bytes"))
                .transpose()?,
            &g.quotas
                .max_transfers
                .map(|n| sql_count(n, "max_transfers"))
                .transpose()?,
            &sql_count(g.used_bytes, "used_bytes")?,
            &sql_count(g.used_transfers, "used_transfers")?,
            &approvers,
            &g.issued_at.unix_ms(),
            &g.expires_at.unix_ms(),
            &g.validation_due.map(Timestamp::unix_ms),
            &g.validated_by.as_ref().map(|s| s.as_str()),
            &g.state.as_str(),
            &ending.map(|e| e.cause.as_str()),
            &ending.map(|e| e.at.unix_ms()),
            &ending.and_then(|e| e.by.as_ref()).map(|s| s.as_str()),
            &ending.and_then(|e| e.reason.as_deref()),
            &g.token,
        ],
    )
    .await
    .map_err(|e| {
        unique_to_conflict(e, || {
            format!(
                "grant {} or a grant for request {} already exists",
                g.id, g.request_id
            )
        })
    })?;
    Ok(())
}

/// One grant; with `lock`, its row stays locked until the transaction ends,
/// so a check on it and the change it guards are not split by a replica.
pub(super) async fn grant(
    tx: &Tx<'_>,
    id: GrantId,
    lock: bool,
) -> Result<Option<Grant>, StoreError> {
    let sql = if lock {
        format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1 FOR UPDATE")
    } else {
        format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1")
    };
    query_opt(tx, &sql, &[&id.to_string()])
        .await?
        .map(|row| grant_row(&row))
        .transpose()
}

pub(super) async fn grants(tx: &Tx<'_>, state: Option<&str>) -> Result<Vec<Grant>, StoreError> {
    let order = "ORDER BY issued_at DESC, seq DESC";
    let rows = match state {
        Some(state) => {
            query(
                tx,
                &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE state = $1 {order}"),
                &[&state],
            )
            .await?
        }
        None => {
            query(
                tx,
                &format!("SELECT {GRANT_COLUMNS} FROM grants {order}"),
                &[],
            )
            .await?
        }
    };
    rows.iter().map(grant_row).collect()
}

/// Active grants that may be due at `now`, earliest first; the caller
/// decides the cause with `Grant::due_cause`.
pub(super) async fn due_candidates(tx: &Tx<'_>, now: Timestamp) -> Result<Vec<Grant>, StoreError> {
    let rows = query(
        tx,
        &format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE state = 'active' AND (expires_at <= $1 \
               OR (validated_by IS NULL AND validation_due IS NOT NULL AND validation_due <= $1)) \
             ORDER BY least(expires_at, coalesce(CASE WHEN validated_by IS NULL THEN validation_due END, expires_at)), id"
        ),
        &[&now.unix_ms()],
    )
    .await?;
    rows.iter().map(grant_row).collect()
}

pub(super) async fn next_due(tx: &Tx<'_>) -> Result<Option<Timestamp>, StoreError> {
    let row = query(
        tx,
        "SELECT least( \
            (SELECT min(expires_at) FROM grants WHERE state = 'active'), \
            (SELECT min(validation_due) FROM grants WHERE state = 'active' \
                AND validated_by IS NULL AND validation_due IS NOT NULL))",
        &[],
    )
    .await?;
    let ms: Option<i64> = row.first().map(|r| r.try_get(0)).transpose()?.flatten();
    Ok(ms.map(Timestamp::from_unix_ms))
}
