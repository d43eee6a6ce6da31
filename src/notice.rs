//! A data-subject notice: what the subjects of a grant are told, and where
//! each notice is in its delivery. The store keeps the outbox; the notifier
//! ([`crate::notify`]) delivers it.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::category::Category;
use crate::clock::Timestamp;
use crate::identity::{Jurisdiction, SpiffeId};
use crate::request::Period;

use crate::id::{GrantId, RequestId};

pub use crate::id::NoticeId;

/// Where a notice is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeState {
    /// Not yet accepted by the receiver (not due yet, or being retried).
    Pending,
    /// The receiver answered 2xx; recorded in the audit log.
    Delivered,
}

impl NoticeState {
    pub const ALL: [Self; 2] = [Self::Pending, Self::Delivered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
        }
    }
}

impl FromStr for NoticeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            other => Err(format!(
                "`{other}` is not a notice state (pending, delivered)"
            )),
        }
    }
}

impl fmt::Display for NoticeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notice, with what its receiver needs to tell the subjects. Serialised,
/// it is the webhook's JSON body (less `attempts`, so that every attempt
/// sends the same bytes under the same key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    #[serde(rename = "notice_id")]
    pub id: NoticeId,
    pub grant_id: GrantId,
    pub request_id: RequestId,
    /// The foreign authority the data went to (the grantee).
    pub requester: SpiffeId,
    pub requester_jurisdiction: Jurisdiction,
    /// Ours: the data holder's jurisdiction.
    pub holder: Jurisdiction,
    pub legal_basis: String,
    pub categories: Vec<Category>,
    /// The subjects' identifiers, in clear.
    pub targets: Vec<String>,
    /// The time range of the data the grant covers.
    pub period: Period,
    #[serde(rename = "grant_issued_at")]
    pub issued_at: Timestamp,
    #[serde(rename = "grant_expires_at")]
    pub expires_at: Timestamp,
    /// When notification was allowed to go out: issue plus deferral.
    pub due_at: Timestamp,
    /// Failed delivery attempts so far.
    #[serde(skip)]
    pub attempts: u32,
}

impl Notice {
    /// The webhook body: compact JSON, the same on every attempt.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a notice always serialises")
    }
}

/// A notice with its delivery state, as `GET /v1/notices` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoticeView {
    #[serde(flatten)]
    pub notice: Notice,
    pub state: NoticeState,
    /// Recorded delivery attempts, the successful one included.
    pub attempts: u32,
    /// While pending: when the notifier tries next.
    pub next_attempt_at: Option<Timestamp>,
    pub last_attempt_at: Option<Timestamp>,
    /// Why the last failed attempt failed.
    pub last_error: Option<String>,
    pub delivered_at: Option<Timestamp>,
    /// The receiver's 2xx status when it accepted the notice.
    pub status: Option<u16>,
}

/// How many notices the store holds, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeCounts {
    pub pending: u64,
    pub delivered: u64,
}
