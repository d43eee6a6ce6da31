//! What one audit entry says, and its exact bytes.
//!
//! An [`Entry`] is one decision or lifecycle event ([`Event`]) with its place
//! in the log: its `index`, when it happened, and `prev`, the root of the
//! tree of every entry before it. `prev` ties each entry to the whole history
//! it was appended to, so a verifier that finds the log and an entry
//! disagreeing can name the first entry that was changed, removed or moved
//! (see `audit::verify`).
//!
//! The leaf hashed into the Merkle tree is exactly the bytes of
//! [`Entry::to_bytes`] (one line of compact JSON), and those bytes are stored
//! and exported as they are: nobody ever re-serialises an entry to check it.
//!
//! Entries hold ids, codes, hashes and identities of peers and reviewers.
//! Targets (subject identifiers) are pseudonymised with
//! [`Pseudonymiser`] (see `audit::pseudonym`) and free-text reasons are hashed, so the log can be
//! published to an oversight body without naming anybody it concerns.

// The `zeroize` the token keys use, re-exported by `der`: no dependency of our own.
use serde::{Deserialize, Serialize};

use super::merkle::Hash;
pub use super::pseudonym::{Pseudonym, PseudonymKeyError, Pseudonymiser, text_hash};
use crate::clock::Timestamp;
use crate::grant::{Cause, Grant, GrantId};
use crate::notice::NoticeId;
use crate::policy::Finding;
use crate::request::{Request, RequestId};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

/// The version of the entry format; verifiers refuse other versions.
pub const FORMAT: u32 = 1;

/// One audit entry: an [`Event`] at its place in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The format version, [`FORMAT`].
    pub v: u32,
    /// Its leaf index in the log, from 0.
    pub index: u64,
    pub at: Timestamp,
    /// Lowercase hex of the root of the log's first `index` entries (the
    /// empty-tree root for entry 0).
    pub prev: String,
    pub event: Event,
}

impl Entry {
    /// The entry's bytes in the log: compact JSON, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry always serialises")
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn prev_root(&self) -> Option<Hash> {
        hex::decode(&self.prev).ok()?.try_into().ok()
    }
}

/// Every kind of event the log records. The variant is the entry's `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A request was filed; `state` is `pending` or `refused` (by policy).
    RequestFiled {
        request: RequestId,
        requester: String,
        /// The requester's jurisdiction.
        jurisdiction: String,
        /// Ours, the data holder's.
        holder: String,
        categories: Vec<String>,
        targets: Vec<Pseudonym>,
        urgency: String,
        state: String,
        /// The response deadline policy set.
        deadline: Timestamp,
        /// The hash of the policy version that decided it.
        policy: String,
    },
    /// One policy rule's verdict on a filed request.
    Finding {
        request: RequestId,
        rule: String,
        verdict: String,
        policy: String,
    },
    /// An approver approved; `approvals` of `required` distinct ones so far.
    Approval {
        request: RequestId,
        by: String,
        approvals: u64,
        required: u64,
        policy: String,
    },
    RequestDenied {
        request: RequestId,
        by: String,
        reason_sha256: String,
    },
    GrantIssued {
        grant: GrantId,
        request: RequestId,
        grantee: String,
        jurisdiction: String,
        categories: Vec<String>,
        approvers: Vec<String>,
        expires_at: Timestamp,
        validation_due: Option<Timestamp>,
        /// When the data-subject notice falls due: issue plus the deferral
        /// the final approver set. Absent only in entries written before
        /// notices existed, which must still parse and verify.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice_due: Option<Timestamp>,
        max_bytes: Option<u64>,
        max_transfers: Option<u64>,
        /// The hash of the policy version the final approval was taken under.
        policy: String,
    },
    /// A second approver validated an emergency grant.
    GrantValidated { grant: GrantId, by: String },
    /// A grant ended: expired, exhausted, validation missed or revoked.
    GrantEnded {
        grant: GrantId,
        cause: String,
        /// `None` when the gateway ended it on its own (a sunset, a quota).
        by: Option<String>,
        reason_sha256: Option<String>,
    },
    /// A transfer passed every check and opened.
    TransferAllowed {
        transfer: TransferId,
        grant: GrantId,
        grantee: String,
        category: String,
        target: Pseudonym,
    },
    /// A transfer was refused, with the problem's stable code.
    TransferDenied {
        peer: String,
        jurisdiction: String,
        code: String,
        grant: Option<GrantId>,
        category: Option<String>,
        target: Option<Pseudonym>,
    },
    /// A transfer ended, with what crossed (see its receipt).
    TransferCompleted {
        transfer: TransferId,
        grant: GrantId,
        complete: bool,
        incomplete: Option<String>,
        plaintext_sha256: String,
        ciphertext_sha256: String,
        plaintext_bytes: u64,
        ciphertext_bytes: u64,
        encrypted: bool,
    },
    /// The gateway started serving with this configuration.
    GatewayStarted {
        /// SHA-256 of the configuration file.
        config_sha256: String,
        /// Each pair's policy hash, keyed `holder>requester`.
        policies: std::collections::BTreeMap<String, String>,
        /// The `kid` of the token and receipt signing key.
        token_key: String,
        /// The audit log's verifier key (C2SP vkey).
        audit_key: String,
        /// SHA-256 over every certificate, key and CRL file it serves with.
        tls_sha256: String,
    },
    /// New certificates, keys or CRLs were loaded (a rotation), from a file
    /// change or, when `forced`, a SIGHUP.
    TlsReloaded { tls_sha256: String, forced: bool },
    /// The receiver accepted a grant's data-subject notice (answered
    /// `status`, a 2xx) after `attempts` recorded attempts. Once per notice.
    NoticeDelivered {
        notice: NoticeId,
        grant: GrantId,
        attempts: u64,
        status: u16,
    },
}

impl Event {
    /// Every kind [`Event::kind`] returns, for tools that filter by kind.
    pub const KINDS: [&'static str; 13] = [
        "request_filed",
        "finding",
        "approval",
        "request_denied",
        "grant_issued",
        "grant_validated",
        "grant_ended",
        "transfer_allowed",
        "transfer_denied",
        "transfer_completed",
        "gateway_started",
        "tls_reloaded",
        "notice_delivered",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::RequestFiled { .. } => "request_filed",
            Self::Finding { .. } => "finding",
            Self::Approval { .. } => "approval",
            Self::RequestDenied { .. } => "request_denied",
            Self::GrantIssued { .. } => "grant_issued",
            Self::GrantValidated { .. } => "grant_validated",
            Self::GrantEnded { .. } => "grant_ended",
            Self::TransferAllowed { .. } => "transfer_allowed",
            Self::TransferDenied { .. } => "transfer_denied",
            Self::TransferCompleted { .. } => "transfer_completed",
            Self::GatewayStarted { .. } => "gateway_started",
            Self::TlsReloaded { .. } => "tls_reloaded",
            Self::NoticeDelivered { .. } => "notice_delivered",
        }
    }

    /// The request filed, followed by one entry per finding.
    pub fn request_filed(request: &Request, names: &Pseudonymiser) -> Vec<Event> {
        let mut events = vec![Event::RequestFiled {
            request: request.id,
            requester: request.requester.to_string(),
            jurisdiction: request.requester_jurisdiction.to_string(),
            holder: request.holder.to_string(),
            categories: request
                .scope
                .categories
                .iter()
                .map(ToString::to_string)
                .collect(),
            targets: request
                .scope
                .targets
                .iter()
                .map(|t| names.target(t))
                .collect(),
            urgency: request.scope.urgency.as_str().to_owned(),
            state: request.state.as_str().to_owned(),
            deadline: request.deadline,
            policy: request.policy_hash.clone(),
        }];
        events.extend(request.findings.iter().map(|f: &Finding| Event::Finding {
            request: request.id,
            rule: f.rule.clone(),
            verdict: f.verdict.as_str().to_owned(),
            policy: request.policy_hash.clone(),
        }));
        events
    }

    /// A grant issued under `policy`, its notice due at `notice_due`.
    pub fn grant_issued(grant: &Grant, policy: &str, notice_due: Timestamp) -> Event {
        Event::GrantIssued {
            grant: grant.id,
            request: grant.request_id,
            grantee: grant.grantee.to_string(),
            jurisdiction: grant.grantee_jurisdiction.to_string(),
            categories: grant
                .scope
                .categories
                .iter()
                .map(ToString::to_string)
                .collect(),
            approvers: grant.approvers.iter().map(ToString::to_string).collect(),
            expires_at: grant.expires_at,
            validation_due: grant.validation_due,
            notice_due: Some(notice_due),
            max_bytes: grant.quotas.max_bytes,
            max_transfers: grant.quotas.max_transfers,
            policy: policy.to_owned(),
        }
    }

    pub fn grant_ended(
        grant: GrantId,
        cause: Cause,
        by: Option<&str>,
        reason: Option<&str>,
    ) -> Event {
        Event::GrantEnded {
            grant,
            cause: cause.as_str().to_owned(),
            by: by.map(str::to_owned),
            reason_sha256: reason.map(text_hash),
        }
    }

    pub fn transfer_allowed(open: &TransferOpen, names: &Pseudonymiser) -> Event {
        Event::TransferAllowed {
            transfer: open.id,
            grant: open.grant_id,
            grantee: open.grantee.clone(),
            category: open.category.clone(),
            target: names.target(&open.target),
        }
    }

    pub fn transfer_completed(receipt: &Receipt) -> Event {
        Event::TransferCompleted {
            transfer: receipt.transfer_id,
            grant: receipt.grant_id,
            complete: receipt.complete,
            incomplete: receipt.incomplete.map(|i| i.as_str().to_owned()),
            plaintext_sha256: receipt.plaintext_sha256.clone(),
            ciphertext_sha256: receipt.ciphertext_sha256.clone(),
            plaintext_bytes: receipt.plaintext_bytes,
            ciphertext_bytes: receipt.ciphertext_bytes,
            encrypted: receipt.encrypted,
        }
    }

    /// The grant this event concerns, if any.
    pub fn grant(&self) -> Option<GrantId> {
        match self {
            Self::GrantIssued { grant, .. }
            | Self::GrantValidated { grant, .. }
            | Self::GrantEnded { grant, .. }
            | Self::TransferAllowed { grant, .. }
            | Self::TransferCompleted { grant, .. }
            | Self::NoticeDelivered { grant, .. } => Some(*grant),
            Self::TransferDenied { grant, .. } => *grant,
            _ => None,
        }
    }

    /// The request this event concerns, if any.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Self::RequestFiled { request, .. }
            | Self::Finding { request, .. }
            | Self::Approval { request, .. }
            | Self::RequestDenied { request, .. }
            | Self::GrantIssued { request, .. } => Some(*request),
            _ => None,
        }
    }

    /// The transfer this event concerns, if any.
    pub fn transfer(&self) -> Option<TransferId> {
        match self {
            Self::TransferAllowed { transfer, .. } | Self::TransferCompleted { transfer, .. } => {
                Some(*transfer)
            }
            _ => None,
        }
    }

    /// The identities this event names: the peer it concerns and whoever acted.
    pub fn identities(&self) -> Vec<&str> {
        match self {
            Self::RequestFiled { requester, .. } => vec![requester],
            Self::Approval { by, .. }
            | Self::RequestDenied { by, .. }
            | Self::GrantValidated { by, .. } => vec![by],
            Self::GrantIssued {
                grantee, approvers, ..
            } => std::iter::once(grantee.as_str())
                .chain(approvers.iter().map(String::as_str))
                .collect(),
            Self::GrantEnded { by, .. } => by.iter().map(String::as_str).collect(),
            Self::TransferAllowed { grantee, .. } => vec![grantee],
            Self::TransferDenied { peer, .. } => vec![peer],
            _ => Vec::new(),
        }
    }

    /// The event's code: a denial's problem code, an ending's cause, a
    /// finding's verdict, an incomplete transfer's cause, a filing's state.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::RequestFiled { state, .. } => Some(state),
            Self::Finding { verdict, .. } => Some(verdict),
            Self::GrantEnded { cause, .. } => Some(cause),
            Self::TransferDenied { code, .. } => Some(code),
            Self::TransferCompleted { incomplete, .. } => incomplete.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_is_a_variant() {
        for kind in Event::KINDS {
            // A known tag fails on its missing fields, an unknown one on the tag.
            let err = serde_json::from_str::<Event>(&format!(r#"{{"kind":"{kind}"}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.contains("missing field"), "{kind}: {err}");
        }
    }

    #[test]
    fn a_grant_issued_before_notices_existed_still_parses_to_the_same_bytes() {
        let grant = GrantId::new();
        let request = RequestId::new();
        let old = format!(
            r#"{{"v":1,"index":0,"at":"2026-01-01T00:00:00Z","prev":"{}","event":{{"kind":"grant_issued","grant":"{grant}","request":"{request}","grantee":"spiffe://fi.example/police","jurisdiction":"FI","categories":["subscriber"],"approvers":[],"expires_at":"2026-02-01T00:00:00Z","validation_due":null,"max_bytes":null,"max_transfers":null,"policy":"p"}}}}"#,
            "00".repeat(32)
        );
        let entry = Entry::parse(old.as_bytes()).unwrap();
        match &entry.event {
            Event::GrantIssued { notice_due, .. } => assert_eq!(*notice_due, None),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            entry.to_bytes(),
            old.as_bytes(),
            "verifiers hash the bytes as written"
        );

        let mut new = entry.clone();
        if let Event::GrantIssued { notice_due, .. } = &mut new.event {
            *notice_due = Some(Timestamp::from_unix_ms(1_800_000_000_000));
        }
        let text = String::from_utf8(new.to_bytes()).unwrap();
        assert!(
            text.contains(
                r#""validation_due":null,"notice_due":"2027-01-15T08:00:00Z","max_bytes""#
            ),
            "{text}"
        );
        assert_eq!(Entry::parse(text.as_bytes()).unwrap(), new);
    }

    #[test]
    fn entry_bytes_round_trip_and_carry_the_kind() {
        let entry = Entry {
            v: FORMAT,
            index: 3,
            at: Timestamp::from_unix_ms(1_700_000_000_000),
            prev: hex::encode([7u8; 32]),
            event: Event::GrantEnded {
                grant: GrantId::new(),
                cause: "manual".into(),
                by: Some("spiffe://ee.example/reviewer/anna".into()),
                reason_sha256: Some(text_hash("incident 42")),
            },
        };
        let bytes = entry.to_bytes();
        assert!(!bytes.contains(&b'\n'));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""kind":"grant_ended""#), "{text}");
        assert!(!text.contains("incident 42"));
        assert_eq!(Entry::parse(&bytes).unwrap(), entry);
        assert_eq!(entry.prev_root(), Some([7u8; 32]));
    }
}
