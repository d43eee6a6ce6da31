//! A foreign party's request for data, from the body it files to the decision.
//!
//! The requester is always the identity of the certificate it filed over,
//! never a field of the body. [`RequestBody::validate`] parses the body into
//! a [`Scope`], reporting every bad field at once. A request is `pending`
//! until enough distinct approvers approve it (then `approved`, with a grant)
//! or an approver denies it (`denied`); one that fails a hard policy rule is
//! `refused` at filing and stored as such, so reports can count it.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::category::Category;
use crate::clock::Timestamp;
use crate::id::GrantId;
use crate::identity::{Jurisdiction, SpiffeId};

pub use crate::id::RequestId;

/// What a policy rule found (see [`crate::policy`]): a request carries its
/// findings, so they are defined with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    NeedsReview,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::NeedsReview => "needs_review",
        }
    }
}

/// One rule's verdict on a request, with the reason in plain words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: String,
    pub verdict: Verdict,
    pub reason: String,
}

impl Finding {
    pub(crate) fn new(
        rule: impl Into<String>,
        verdict: Verdict,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            rule: rule.into(),
            verdict,
            reason: reason.into(),
        }
    }
}

/// Bounds on what one request may carry, whatever the policy says.
pub const MAX_TARGETS: usize = 1000;
pub const MAX_TARGET_LEN: usize = 256;
pub const MAX_TEXT_LEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Normal,
    /// Imminent threat to life, physical integrity or critical infrastructure.
    Emergency,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Emergency => "emergency",
        }
    }
}

/// The time range of the data asked for, `from` before `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Period {
    pub fn contains(&self, other: &Period) -> bool {
        self.from <= other.from && other.to <= self.to
    }
}

/// What a request asks for, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub legal_basis: String,
    pub purpose: String,
    pub categories: Vec<Category>,
    pub targets: Vec<String>,
    pub period: Period,
    pub urgency: Urgency,
    /// The requester's age X25519 recipient: payloads are encrypted to it.
    pub recipient: String,
    pub justification: String,
}

/// The body of `POST /v1/requests`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    pub legal_basis: String,
    pub purpose: String,
    pub categories: Vec<String>,
    pub targets: Vec<String>,
    pub period: PeriodBody,
    pub urgency: Urgency,
    pub recipient: String,
    pub justification: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodBody {
    pub from: String,
    pub to: String,
}

/// One bad field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl RequestBody {
    /// Parses every field, reporting every problem found.
    pub fn validate(self) -> Result<Scope, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, problem: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                problem,
            })
        };
        let text = |bad: &mut dyn FnMut(&str, String), field: &str, value: &str| {
            if value.trim().is_empty() {
                bad(field, "must not be empty".into());
            } else if value.len() > MAX_TEXT_LEN {
                bad(field, format!("longer than {MAX_TEXT_LEN} bytes"));
            }
        };
        text(&mut bad, "legal_basis", &self.legal_basis);
        text(&mut bad, "purpose", &self.purpose);
        text(&mut bad, "justification", &self.justification);

        let mut categories = Vec::new();
        if self.categories.is_empty() {
            bad("categories", "must name at least one category".into());
        }
        for (i, c) in self.categories.iter().enumerate() {
            match c.parse::<Category>() {
                Ok(c) if categories.contains(&c) => bad(
                    &format!("categories[{i}]"),
                    format!("`{c}` is listed twice"),
                ),
                Ok(c) => categories.push(c),
                Err(e) => bad(&format!("categories[{i}]"), e.to_string()),
            }
        }

        if self.targets.is_empty() {
            bad("targets", "must name at least one target".into());
        } else if self.targets.len() > MAX_TARGETS {
            bad("targets", format!("more than {MAX_TARGETS} targets"));
        }
        for (i, t) in self.targets.iter().enumerate().take(MAX_TARGETS) {
            if t.trim().is_empty() || t.len() > MAX_TARGET_LEN || t.chars().any(char::is_control) {
                bad(
                    &format!("targets[{i}]"),
                    format!("a target is 1 to {MAX_TARGET_LEN} bytes of printable text"),
                );
            }
        }

        let from = Timestamp::parse(&self.period.from)
            .map_err(|e| bad("period.from", format!("not an RFC 3339 time: {e}")))
            .ok();
        let to = Timestamp::parse(&self.period.to)
            .map_err(|e| bad("period.to", format!("not an RFC 3339 time: {e}")))
            .ok();
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            bad("period", "`from` must be before `to`".into());
        }

        if self.recipient.parse::<age::x25519::Recipient>().is_err() {
            bad("recipient", "not an age X25519 recipient (age1...)".into());
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(from), Some(to)) = (from, to) else {
            unreachable!("both period ends parsed when there are no errors");
        };
        Ok(Scope {
            legal_basis: self.legal_basis,
            purpose: self.purpose,
            categories,
            targets: self.targets,
            period: Period { from, to },
            urgency: self.urgency,
            recipient: self.recipient,
            justification: self.justification,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for review.
    Pending,
    /// Enough approvers approved; a grant exists.
    Approved,
    /// An approver denied it.
    Denied,
    /// It failed a hard policy rule at filing.
    Refused,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Refused => "refused",
        }
    }
}

impl FromStr for RequestState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "approved" => Ok(Self::Approved),
            "denied" => Ok(Self::Denied),
            "refused" => Ok(Self::Refused),
            other => Err(format!(
                "`{other}` is not a request state (pending, approved, denied, refused)"
            )),
        }
    }
}

/// One approver's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: SpiffeId,
    pub at: Timestamp,
}

/// A filed request and where its review stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub requester: SpiffeId,
    pub requester_jurisdiction: Jurisdiction,
    pub holder: Jurisdiction,
    /// `x5t#S256` of the certificate it was filed over; the grant token binds to it.
    pub thumbprint: String,
    pub scope: Scope,
    pub state: RequestState,
    pub findings: Vec<Finding>,
    /// SHA-256 of the policy that produced the findings.
    pub policy_hash: String,
    pub filed_at: Timestamp,
    /// When a response is due (e-Evidence: 10 days, 8 hours in emergencies).
    pub deadline: Timestamp,
    pub approvals: Vec<Approval>,
    pub decided_at: Option<Timestamp>,
    pub decided_by: Option<SpiffeId>,
    pub reason: Option<String>,
    pub grant_id: Option<GrantId>,
}

impl Request {
    /// Pending past its deadline.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.state == RequestState::Pending && now > self.deadline
    }
}
