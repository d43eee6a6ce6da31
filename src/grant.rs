//! Grants: what an approval lets a requester take, until when, and why it ended.
//!
//! A grant is `active` from approval until it ends, once, in one of three
//! states: `expired` (its sunset passed), `exhausted` (a quota was used up)
//! or `revoked` (an emergency grant not validated in time, or by hand). The
//! cause, time and acting identity are recorded with the end. The grant's
//! token ([`token`]) is what the requester presents on every transfer.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::identity::{Jurisdiction, SpiffeId};
use crate::request::{RequestId, Scope};

pub use crate::id::GrantId;

pub mod token;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    Expired,
    Exhausted,
    Revoked,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Exhausted => "exhausted",
            Self::Revoked => "revoked",
        }
    }
}

impl FromStr for GrantState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "expired" => Ok(Self::Expired),
            "exhausted" => Ok(Self::Exhausted),
            "revoked" => Ok(Self::Revoked),
            other => Err(format!(
                "`{other}` is not a grant state (active, expired, exhausted, revoked)"
            )),
        }
    }
}

/// Why a grant ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Its sunset passed.
    Expired,
    /// A quota was used up.
    Exhausted,
    /// An emergency grant was not validated by a second approver in time.
    ValidationMissed,
    /// An operator or approver revoked it.
    Manual,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Exhausted => "exhausted",
            Self::ValidationMissed => "validation_missed",
            Self::Manual => "manual",
        }
    }

    /// The state a grant ends in for this cause.
    pub fn end_state(self) -> GrantState {
        match self {
            Self::Expired => GrantState::Expired,
            Self::Exhausted => GrantState::Exhausted,
            Self::ValidationMissed | Self::Manual => GrantState::Revoked,
        }
    }
}

impl FromStr for Cause {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "expired" => Ok(Self::Expired),
            "exhausted" => Ok(Self::Exhausted),
            "validation_missed" => Ok(Self::ValidationMissed),
            "manual" => Ok(Self::Manual),
            other => Err(format!("`{other}` is not a revocation cause")),
        }
    }
}

/// Limits on what may cross under one grant; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_bytes: Option<u64>,
    pub max_transfers: Option<u64>,
}

/// How a grant ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ending {
    pub cause: Cause,
    pub at: Timestamp,
    /// Who ended it; `None` when the gateway did (expiry, exhaustion, missed validation).
    pub by: Option<SpiffeId>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    pub request_id: RequestId,
    pub grantee: SpiffeId,
    pub grantee_jurisdiction: Jurisdiction,
    pub holder: Jurisdiction,
    /// `x5t#S256` of the certificate the grant token is bound to.
    pub thumbprint: String,
    pub scope: Scope,
    pub quotas: Quotas,
    pub used_bytes: u64,
    pub used_transfers: u64,
    pub approvers: Vec<SpiffeId>,
    pub issued_at: Timestamp,
    /// The sunset: the grant is expired from this moment on.
    pub expires_at: Timestamp,
    /// An emergency grant must be validated by this time, else it is revoked.
    pub validation_due: Option<Timestamp>,
    pub validated_by: Option<SpiffeId>,
    pub state: GrantState,
    pub ending: Option<Ending>,
    /// The signed grant token (JWT).
    pub token: String,
}

impl Grant {
    /// When the scheduler must next act on this grant, if it is active.
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.state != GrantState::Active {
            return None;
        }
        match self.validation_due {
            Some(due) if self.validated_by.is_none() => Some(due.min(self.expires_at)),
            _ => Some(self.expires_at),
        }
    }

    /// The cause the scheduler ends this grant with at `now`, if it is due.
    pub fn due_cause(&self, now: Timestamp) -> Option<Cause> {
        if self.state != GrantState::Active {
            return None;
        }
        if now >= self.expires_at {
            return Some(Cause::Expired);
        }
        match self.validation_due {
            Some(due) if self.validated_by.is_none() && now >= due => Some(Cause::ValidationMissed),
            _ => None,
        }
    }
}

/// A grant ending, as announced to whoever streams under it.
#[derive(Clone, Debug)]
pub struct GrantEnded {
    pub id: GrantId,
    pub cause: Cause,
    /// Ended by another replica sharing the store (announced here by the
    /// store's listener); counted in that replica's metrics, not ours.
    pub remote: bool,
}
