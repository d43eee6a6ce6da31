//! Reading a stored row column by column, as both stores do: reading is
//! parsing, every text column goes through the type's `FromStr` (or serde,
//! for JSON values), and a value that does not parse is a
//! [`StoreError::Backend`] naming `table.column`, never a panic. Such a row
//! means the database was edited by hand or by a newer, incompatible writer.
//!
//! Each store reads the raw values with its driver ([`Columns::opt_int64`],
//! [`Columns::opt_text`]); the conversions on top, and the readers of the
//! rows both schemas share (requests, grants, open transfers, notices), are
//! written once here, so the two stores read a row the same way.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::DeserializeOwned;

use super::StoreError;
use super::transaction::NoticeAttempts;
use crate::clock::Timestamp;
use crate::grant::{Ending, Grant, Quotas};
use crate::notice::{Notice, NoticeState, NoticeView};
use crate::request::{Request, Scope};
use crate::transfer::receipt::TransferOpen;

/// A column whose value does not parse as the type it holds.
#[derive(Debug, thiserror::Error)]
#[error("{table}.{column} does not hold a valid value: {problem}")]
pub(crate) struct BadColumn {
    table: &'static str,
    column: &'static str,
    problem: String,
}

/// One row of a table, read column by column.
pub(crate) trait Columns {
    /// The table the row is from, for errors.
    fn table(&self) -> &'static str;
    /// A 64-bit integer column (counts and times are stored as these).
    fn opt_int64(&self, column: &'static str) -> Result<Option<i64>, StoreError>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError>;

    fn bad(&self, column: &'static str, problem: impl Display) -> StoreError {
        StoreError::Backend(Box::new(BadColumn {
            table: self.table(),
            column,
            problem: problem.to_string(),
        }))
    }

    fn int64(&self, column: &'static str) -> Result<i64, StoreError> {
        self.opt_int64(column)?
            .ok_or_else(|| self.bad(column, "is NULL"))
    }

    fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.opt_text(column)?
            .ok_or_else(|| self.bad(column, "is NULL"))
    }

    /// A count or quota: a signed 64-bit integer that must not be negative.
    fn count(&self, column: &'static str) -> Result<u64, StoreError> {
        let n = self.int64(column)?;
        u64::try_from(n).map_err(|_| self.bad(column, format!("{n} is negative")))
    }

    fn opt_count(&self, column: &'static str) -> Result<Option<u64>, StoreError> {
        self.opt_int64(column)?
            .map(|n| u64::try_from(n).map_err(|_| self.bad(column, format!("{n} is negative"))))
            .transpose()
    }

    fn parse<T>(&self, column: &'static str) -> Result<T, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.text(column)?.parse().map_err(|e| self.bad(column, e))
    }

    fn opt_parse<T>(&self, column: &'static str) -> Result<Option<T>, StoreError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.opt_text(column)?
            .map(|text| text.parse().map_err(|e| self.bad(column, e)))
            .transpose()
    }

    /// A time, stored as Unix milliseconds.
    fn time(&self, column: &'static str) -> Result<Timestamp, StoreError> {
        self.int64(column).map(Timestamp::from_unix_ms)
    }

    fn opt_time(&self, column: &'static str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.opt_int64(column)?.map(Timestamp::from_unix_ms))
    }

    fn json<T: DeserializeOwned>(&self, column: &'static str) -> Result<T, StoreError> {
        serde_json::from_str(&self.text(column)?).map_err(|e| self.bad(column, e))
    }
}

/// The columns [`request`] reads, in the order both schemas list them.
pub(crate) const REQUEST_COLUMNS: &str = "id, requester, requester_jurisdiction, holder, thumbprint, scope_json, \
     state, policy_hash, filed_at, deadline, decided_at, decided_by, reason, grant_id";

/// A request row without its findings and approvals, which come from their own tables.
pub(crate) fn request(c: &impl Columns) -> Result<Request, StoreError> {
    Ok(Request {
        id: c.parse("id")?,
        requester: c.parse("requester")?,
        requester_jurisdiction: c.parse("requester_jurisdiction")?,
        holder: c.parse("holder")?,
        thumbprint: c.text("thumbprint")?,
        scope: c.json("scope_json")?,
        state: c.parse("state")?,
        findings: Vec::new(),
        policy_hash: c.text("policy_hash")?,
        filed_at: c.time("filed_at")?,
        deadline: c.time("deadline")?,
        approvals: Vec::new(),
        decided_at: c.opt_time("decided_at")?,
        decided_by: c.opt_parse("decided_by")?,
        reason: c.opt_text("reason")?,
        grant_id: c.opt_parse("grant_id")?,
    })
}

/// The columns [`grant`] reads.
pub(crate) const GRANT_COLUMNS: &str = "id, request_id, grantee, grantee_jurisdiction, holder, thumbprint, scope_json, \
     max_bytes, max_transfers, used_bytes, used_transfers, approvers_json, issued_at, expires_at, \
     validation_due, validated_by, state, ended_cause, ended_at, ended_by, ended_reason, token";

pub(crate) fn grant(c: &impl Columns) -> Result<Grant, StoreError> {
    let ending = match c.opt_parse("ended_cause")? {
        None => None,
        Some(cause) => Some(Ending {
            cause,
            at: c
                .opt_time("ended_at")?
                .ok_or_else(|| c.bad("ended_at", "missing for an ended grant"))?,
            by: c.opt_parse("ended_by")?,
            reason: c.opt_text("ended_reason")?,
        }),
    };
    Ok(Grant {
        id: c.parse("id")?,
        request_id: c.parse("request_id")?,
        grantee: c.parse("grantee")?,
        grantee_jurisdiction: c.parse("grantee_jurisdiction")?,
        holder: c.parse("holder")?,
        thumbprint: c.text("thumbprint")?,
        scope: c.json("scope_json")?,
        quotas: Quotas {
            max_bytes: c.opt_count("max_bytes")?,
            max_transfers: c.opt_count("max_transfers")?,
        },
        used_bytes: c.count("used_bytes")?,
        used_transfers: c.count("used_transfers")?,
        approvers: c.json("approvers_json")?,
        issued_at: c.time("issued_at")?,
        expires_at: c.time("expires_at")?,
        validation_due: c.opt_time("validation_due")?,
        validated_by: c.opt_parse("validated_by")?,
        state: c.parse("state")?,
        ending,
        token: c.text("token")?,
    })
}

/// The columns [`transfer_open`] reads: a transfer as it was opened.
pub(crate) const OPEN_COLUMNS: &str = "id, grant_id, grantee, route, category, target, started_at";

pub(crate) fn transfer_open(c: &impl Columns) -> Result<TransferOpen, StoreError> {
    Ok(TransferOpen {
        id: c.parse("id")?,
        grant_id: c.parse("grant_id")?,
        grantee: c.text("grantee")?,
        route: c.text("route")?,
        category: c.text("category")?,
        target: c.text("target")?,
        started_at: c.time("started_at")?,
    })
}

/// A notice from the notice's columns `n` and its grant's `g` (one joined
/// row), with its receiver's last HTTP status as the driver reads it.
pub(crate) fn notice(
    n: &impl Columns,
    g: &impl Columns,
    status: Option<i64>,
) -> Result<NoticeView, StoreError> {
    let scope: Scope = g.json("scope_json")?;
    let attempts = n.count("attempts")?;
    let attempts = u32::try_from(attempts).map_err(|_| n.bad("attempts", "too large"))?;
    let state: NoticeState = n.parse("state")?;
    let status = status
        .map(|s| u16::try_from(s).map_err(|_| n.bad("status", format!("{s} is not a status"))))
        .transpose()?;
    Ok(NoticeView {
        notice: Notice {
            id: n.parse("id")?,
            grant_id: n.parse("grant_id")?,
            request_id: n.parse("request_id")?,
            requester: g.parse("grantee")?,
            requester_jurisdiction: g.parse("grantee_jurisdiction")?,
            holder: g.parse("holder")?,
            legal_basis: scope.legal_basis,
            categories: scope.categories,
            targets: scope.targets,
            period: scope.period,
            issued_at: g.time("issued_at")?,
            expires_at: g.time("expires_at")?,
            due_at: n.time("due_at")?,
            attempts,
        },
        state,
        attempts,
        next_attempt_at: match state {
            NoticeState::Pending => Some(n.time("next_attempt_at")?),
            NoticeState::Delivered => None,
        },
        last_attempt_at: n.opt_time("last_attempt_at")?,
        last_error: n.opt_text("last_error")?,
        delivered_at: n.opt_time("delivered_at")?,
        status,
    })
}

/// The columns [`notice_attempts`] reads.
pub(crate) const ATTEMPTS_COLUMNS: &str = "state, grant_id, attempts, due_at";

/// A notice's delivery state, for recording an attempt.
pub(crate) fn notice_attempts(c: &impl Columns) -> Result<NoticeAttempts, StoreError> {
    Ok(NoticeAttempts {
        state: c.parse("state")?,
        grant: c.parse("grant_id")?,
        attempts: c.count("attempts")?,
        due_at: c.time("due_at")?,
    })
}

/// A value as the JSON text a `*_json` column holds.
pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(Box::new(e)))
}
