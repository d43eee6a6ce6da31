//! Receipts: the gateway's signed statement of a finished transfer.
//!
//! A [`Receipt`] says what crossed under which grant: SHA-256 and size of the
//! plaintext the upstream sent and of the ciphertext the grantee received,
//! when, and whether the transfer completed (and if not, why). The gateway
//! signs it as a compact JWS (`typ: xborder-receipt+jwt`, EdDSA, the grant
//! token key; see [`Tokens::sign_receipt`](crate::grant::token::Tokens::sign_receipt)),
//! and anyone holding the gateway's public keys can check it with
//! [`verify_receipt_with`](crate::grant::token::verify_receipt_with).
//!
//! A transfer is first opened in the store ([`TransferOpen`], which counts it
//! against the grant's transfer quota) and closed once, with its receipt
//! (which adds its bytes to the grant's byte count).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::id::GrantId;

pub use crate::id::TransferId;

#[cfg(test)]
mod tests;

/// Why a transfer did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incomplete {
    /// The grant's byte quota ran out mid-transfer.
    Exhausted,
    /// The grant was revoked mid-transfer.
    Revoked,
    /// The grant's sunset passed mid-transfer.
    Expired,
    /// An emergency grant was not validated in time, mid-transfer.
    ValidationMissed,
    /// The grantee went away before the end.
    ClientGone,
    /// The upstream failed or broke off.
    UpstreamFailed,
    /// The gateway was shutting down and its grace period ran out.
    ShuttingDown,
    /// The gateway stopped (a crash, a kill) while the transfer was open; it
    /// was closed when the gateway started again. Sizes and hashes are not
    /// known (see [`Receipt::interrupted`]).
    Interrupted,
}

impl Incomplete {
    pub const ALL: [Self; 8] = [
        Self::Exhausted,
        Self::Revoked,
        Self::Expired,
        Self::ValidationMissed,
        Self::ClientGone,
        Self::UpstreamFailed,
        Self::ShuttingDown,
        Self::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exhausted => "exhausted",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::ValidationMissed => "validation_missed",
            Self::ClientGone => "client_gone",
            Self::UpstreamFailed => "upstream_failed",
            Self::ShuttingDown => "shutting_down",
            Self::Interrupted => "interrupted",
        }
    }
}

impl FromStr for Incomplete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|cause| cause.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a cause of an incomplete transfer"))
    }
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gateway's statement of a finished transfer; signed, it is what the
/// grantee fetches and an auditor checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub transfer_id: TransferId,
    pub grant_id: GrantId,
    /// The grantee's SPIFFE ID.
    pub grantee: String,
    /// The route prefix the transfer went through.
    pub route: String,
    pub category: String,
    pub target: String,
    /// Lowercase hex; empty when not known (an [`Incomplete::Interrupted`] transfer).
    pub plaintext_sha256: String,
    /// Lowercase hex of exactly the bytes sent to the grantee; empty when not known.
    pub ciphertext_sha256: String,
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// `true` exactly when `incomplete` is `None`.
    pub complete: bool,
    pub incomplete: Option<Incomplete>,
    /// The transfer's entry in the audit log, once the log exists.
    pub audit_index: Option<u64>,
    /// `true`: age-encrypted by the gateway; `false`: passed through as the upstream sent it.
    pub encrypted: bool,
}

impl Receipt {
    /// The receipt of a transfer that a stop of the gateway left open, closed
    /// at `ended_at` (the next start). How much had crossed died with the
    /// process, so sizes are zero and hashes empty: the receipt vouches for
    /// nothing but the attempt, and no byte is added to the grant's count.
    pub fn interrupted(open: &TransferOpen, ended_at: Timestamp, encrypted: bool) -> Self {
        Self {
            transfer_id: open.id,
            grant_id: open.grant_id,
            grantee: open.grantee.clone(),
            route: open.route.clone(),
            category: open.category.clone(),
            target: open.target.clone(),
            plaintext_sha256: String::new(),
            ciphertext_sha256: String::new(),
            plaintext_bytes: 0,
            ciphertext_bytes: 0,
            started_at: open.started_at,
            ended_at,
            complete: false,
            incomplete: Some(Incomplete::Interrupted),
            audit_index: None,
            encrypted,
        }
    }

    /// Whether `complete` and `incomplete` agree: complete with no cause, or
    /// incomplete with one. The types cannot say it; the wire form keeps both
    /// fields so a reader need not infer one from the other.
    pub fn is_consistent(&self) -> bool {
        self.complete == self.incomplete.is_none()
    }

    /// Whether this receipt is the close of `open`: the same transfer, grant,
    /// grantee, route, category, target and start.
    pub fn closes(&self, open: &TransferOpen) -> bool {
        self.transfer_id == open.id
            && self.grant_id == open.grant_id
            && self.grantee == open.grantee
            && self.route == open.route
            && self.category == open.category
            && self.target == open.target
            && self.started_at == open.started_at
    }
}

/// A transfer as opened, before anything has crossed: what the store keeps
/// until the receipt closes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOpen {
    pub id: TransferId,
    pub grant_id: GrantId,
    /// The grantee's SPIFFE ID; must be the grant's.
    pub grantee: String,
    /// The route prefix.
    pub route: String,
    pub category: String,
    pub target: String,
    pub started_at: Timestamp,
}
