//! Where requests, findings, approvals, grants, quota counters, transfers
//! with their receipts, data-subject notices, and the audit log live.
//!
//! [`Store`] is the one interface the rest of the gateway uses; the embedded
//! default is [`sqlite::SqliteStore`] (one file under `data_dir`, WAL,
//! synchronous commits); [`postgres::PostgresStore`] is shared by replicas. Every method is one transaction: a change is either
//! wholly written or not at all, and an acknowledged write survives a crash.
//! State transitions are checked inside the transaction (a request is
//! approved only while pending, a grant ends only while active), so two
//! replicas racing on the same record cannot both win. What each write
//! checks, changes and logs is decided once, in `transaction`, for both
//! drivers; a driver only reads the rows under its locks and carries the
//! plan out with its own statements.
//!
//! The audit log is kept here for the same reason: every method that changes
//! state appends the entries that record the change in the same transaction
//! (see `audit::entry::Event` for what each says), so there is no change
//! without its entry and no entry without its change. Events that change no
//! stored state (a denied transfer, a start, a reload) go through
//! [`Store::record`].

use std::time::Duration;

use async_trait::async_trait;

use crate::audit::entry::Event;
use crate::audit::merkle::Hash;
use crate::clock::Timestamp;
use crate::grant::{Cause, Grant, GrantId, GrantState};
use crate::identity::SpiffeId;
use crate::notice::{Notice, NoticeCounts, NoticeId, NoticeState, NoticeView};
use crate::request::{Approval, Request, RequestId, RequestState};
use crate::transfer::receipt::{Receipt, TransferId, TransferOpen};

mod columns;
#[cfg(test)]
mod fixtures;
pub mod postgres;
pub mod sqlite;
mod transaction;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such record")]
    NotFound,
    /// The record is not in a state that allows the change.
    #[error("{0}")]
    Conflict(String),
    /// A transfer cannot open: the grant has used all its transfers. The
    /// grant itself is still active; ending it (as exhausted) is the caller's
    /// decision, so that it is audited like every other ending.
    #[error("grant {grant} has used all {max_transfers} of its transfers (exhausted)")]
    QuotaExhausted { grant: GrantId, max_transfers: u64 },
    /// An audit index or size past the log's current size.
    #[error("{index} is out of range for an audit log of size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Whether `receipt` says one thing: complete exactly when no cause of
/// incompleteness is given. Checked before anything is read.
pub(crate) fn check_receipt(receipt: &Receipt) -> Result<(), StoreError> {
    if receipt.is_consistent() {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "the receipt of transfer {} is inconsistent: complete = {}, incomplete = {:?}",
        receipt.transfer_id, receipt.complete, receipt.incomplete
    )))
}

/// Whether a receiver's `status` records notice `id` as delivered: a 2xx.
/// Checked before anything is read.
pub(crate) fn check_delivery(id: NoticeId, status: u16) -> Result<(), StoreError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "notice {id} is delivered only on a 2xx answer, not {status}"
    )))
}

/// Whether `receipt` may close the transfer stored in `state` as `opened`,
/// read under its lock: still open (a receipt is written once) and the same
/// transfer as opened. Both stores call it, so they refuse alike.
pub(crate) fn admit_close(
    receipt: &Receipt,
    state: &str,
    opened: &TransferOpen,
) -> Result<(), StoreError> {
    let id = receipt.transfer_id;
    if state != "open" {
        return Err(StoreError::Conflict(format!(
            "transfer {id} is {state}: its receipt is written once"
        )));
    }
    if !receipt.closes(opened) {
        return Err(StoreError::Conflict(format!(
            "the receipt of transfer {id} does not match how it was opened"
        )));
    }
    Ok(())
}

/// A notice delivery's error as both stores keep it: at most 512 bytes, cut
/// at a character boundary — enough to say what went wrong, never a
/// receiver's whole error page.
pub(crate) fn stored_error(error: &str) -> &str {
    const MAX: usize = 512;
    if error.len() <= MAX {
        return error;
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// Whether `by` may validate `grant` at `at`, read under the grant's lock:
/// active, awaiting validation and not past its deadline or sunset, and
/// `by` not among its approvers. Both stores call it, so they refuse alike.
pub(crate) fn admit_validation(
    grant: &Grant,
    by: &SpiffeId,
    at: Timestamp,
) -> Result<(), StoreError> {
    let id = grant.id;
    if grant.state != GrantState::Active {
        return Err(StoreError::Conflict(format!(
            "grant {id} is {}, not active",
            grant.state.as_str()
        )));
    }
    let Some(due) = grant.validation_due else {
        return Err(StoreError::Conflict(format!(
            "grant {id} needs no validation"
        )));
    };
    if let Some(earlier) = &grant.validated_by {
        return Err(StoreError::Conflict(format!(
            "grant {id} is already validated by {earlier}"
        )));
    }
    if grant.approvers.contains(by) {
        return Err(StoreError::Conflict(format!(
            "{by} approved grant {id}, so a different approver must validate it"
        )));
    }
    // Past the deadline the scheduler ends the grant (`Grant::due_cause`);
    // a validation racing it must not revive it.
    match grant.due_cause(at) {
        None => Ok(()),
        Some(Cause::ValidationMissed) => Err(StoreError::Conflict(format!(
            "grant {id} had to be validated by {due}"
        ))),
        Some(_) => Err(StoreError::Conflict(format!(
            "grant {id} expired at {}",
            grant.expires_at
        ))),
    }
}

/// Whether `grant` admits the transfer `open`, read under the grant's lock:
/// active and not yet due to end at the transfer's start, granted to its
/// grantee, with a transfer left. Returns the grant's transfer count with
/// this one. Both stores call it, so they refuse alike.
pub(crate) fn admit_transfer(grant: &Grant, open: &TransferOpen) -> Result<u64, StoreError> {
    let id = grant.id;
    if grant.state != GrantState::Active {
        return Err(StoreError::Conflict(format!(
            "grant {id} is {}, not active",
            grant.state.as_str()
        )));
    }
    // The scheduler may not have ended a grant that is due already; the
    // transfer must not slip into that gap.
    match grant.due_cause(open.started_at) {
        None => {}
        Some(Cause::ValidationMissed) => {
            return Err(StoreError::Conflict(format!(
                "grant {id} is not active: it had to be validated by {}",
                grant.validation_due.unwrap_or(grant.expires_at)
            )));
        }
        Some(_) => {
            return Err(StoreError::Conflict(format!(
                "grant {id} is not active: it expired at {}",
                grant.expires_at
            )));
        }
    }
    if grant.grantee.as_str() != open.grantee {
        return Err(StoreError::Conflict(format!(
            "grant {id} is not a grant to {}",
            open.grantee
        )));
    }
    if let Some(max_transfers) = grant.quotas.max_transfers
        && grant.used_transfers >= max_transfers
    {
        return Err(StoreError::QuotaExhausted {
            grant: id,
            max_transfers,
        });
    }
    grant
        .used_transfers
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend(format!("grant {id}'s transfer count overflows").into()))
}

/// Signs a receipt once the store has set its `audit_index`; runs inside
/// the closing transaction, so a receipt that cannot be signed is not stored.
pub type SignReceipt =
    Box<dyn FnOnce(&Receipt) -> Result<String, Box<dyn std::error::Error + Send + Sync>> + Send>;

/// The most entries one read of the audit log returns.
pub const MAX_AUDIT_PAGE: u64 = 10_000;

/// What an approval is taken under, beyond the approval itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The hash of the policy version the approval is taken under.
    pub policy: String,
    /// How long after the grant is issued its data-subject notice falls due
    /// (already checked against the policy). Only the approval that grants
    /// uses it: the final approver's terms win, as for the lifetime.
    pub notice_after: Duration,
}

/// What an approval led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approved {
    /// Recorded; more distinct approvers are needed. Holds the count so far.
    Pending { approvals: usize, required: usize },
    /// The approval completed the review: the grant now exists.
    Granted(Box<Grant>),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a newly filed request (any state) with its findings; audited
    /// as `request_filed` and one `finding` each.
    async fn insert_request(&self, request: &Request) -> Result<(), StoreError>;

    async fn request(&self, id: RequestId) -> Result<Option<Request>, StoreError>;

    /// Requests, newest first, optionally in one state.
    async fn requests(&self, state: Option<RequestState>) -> Result<Vec<Request>, StoreError>;

    /// Records `approval` on a pending request (the same approver twice counts
    /// once). When the distinct approvals reach `required`, in the same
    /// transaction: stores `grant` (with every approver so far), marks the
    /// request approved, and puts the grant's data-subject notice in the
    /// outbox, pending and due at `grant.issued_at + decision.notice_after`.
    /// `Conflict` unless the request is pending. Audited as `approval`, and
    /// `grant_issued` (with `notice_due`) when it grants, both under
    /// `decision.policy`.
    async fn approve(
        &self,
        id: RequestId,
        approval: Approval,
        required: usize,
        grant: Grant,
        decision: &Decision,
    ) -> Result<Approved, StoreError>;

    /// Denies a pending request. `Conflict` unless it is pending.
    async fn deny(
        &self,
        id: RequestId,
        by: &SpiffeId,
        reason: &str,
        at: Timestamp,
    ) -> Result<Request, StoreError>;

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;

    /// Grants, newest first, optionally in one state.
    async fn grants(&self, state: Option<GrantState>) -> Result<Vec<Grant>, StoreError>;

    /// Validates an active emergency grant awaiting validation. `Conflict` if
    /// it is not active, needs no validation, is already validated, or `by`
    /// is one of its approvers.
    async fn validate_grant(
        &self,
        id: GrantId,
        by: &SpiffeId,
        at: Timestamp,
    ) -> Result<Grant, StoreError>;

    /// Ends an active grant with `cause`. `Ok(None)` if it had already ended
    /// (the first ending wins and is kept).
    async fn end_grant(
        &self,
        id: GrantId,
        cause: Cause,
        by: Option<&SpiffeId>,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Result<Option<Grant>, StoreError>;

    /// The earliest moment an active grant falls due (expiry, or validation
    /// deadline while unvalidated).
    async fn next_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Active grants due at `now`, with the cause each must end with.
    async fn due(&self, now: Timestamp) -> Result<Vec<(GrantId, Cause)>, StoreError>;

    /// Opens a transfer under an active grant: checks the grant is active at
    /// `open.started_at` (state, sunset, validation deadline) and is
    /// `open.grantee`'s, and if it has `max_transfers`, that
    /// `used_transfers < max_transfers`; then counts the transfer in
    /// `used_transfers` and stores it as open. Returns the grant's
    /// `used_bytes` at that moment (the caller seeds its byte counter with it).
    /// `QuotaExhausted` when the transfers are used up; `Conflict` when the
    /// grant is not active, not the grantee's, or the transfer id exists;
    /// `NotFound` when the grant is unknown.
    async fn open_transfer(&self, open: &TransferOpen) -> Result<u64, StoreError>;

    /// Closes an open transfer with its receipt, and adds
    /// `receipt.plaintext_bytes` to the grant's `used_bytes`, whatever state
    /// the grant is in by now (the bytes crossed). The close is audited as
    /// `transfer_completed`; the receipt gets that entry's index as its
    /// `audit_index` and is then signed with `sign`, all in one transaction.
    /// Returns the stored receipt and its JWS. `NotFound` for an unknown
    /// transfer; `Conflict` if it is already closed (a receipt is written
    /// once), or the receipt does not match the opening (another grant,
    /// grantee, route, category, target or start) or is inconsistent.
    async fn close_transfer(
        &self,
        receipt: Receipt,
        sign: SignReceipt,
    ) -> Result<(Receipt, String), StoreError>;

    /// The receipt of a closed transfer and its JWS; `None` if the transfer is
    /// unknown or still open. The grantee is `receipt.grantee`.
    async fn transfer_receipt(
        &self,
        id: TransferId,
    ) -> Result<Option<(Receipt, String)>, StoreError>;

    /// Transfers still open, oldest first, on every gateway sharing the store.
    async fn open_transfers(&self) -> Result<Vec<TransferOpen>, StoreError>;

    /// The open transfers no running gateway is streaming: those a stop or a
    /// crash left open. At start, before serving, the caller closes each with
    /// a signed [`Receipt::interrupted`]. An embedded store has one gateway,
    /// so at its start every open transfer is one; a shared store must leave
    /// alone those of replicas still running.
    async fn interrupted_transfers(&self) -> Result<Vec<TransferOpen>, StoreError> {
        self.open_transfers().await
    }

    /// The earliest moment a pending notice is due for an attempt (its due
    /// time, or after a failed attempt the time of the next).
    async fn next_notice_due(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Up to `limit` pending notices whose next attempt is due at `now`,
    /// the longest waiting first.
    async fn due_notices(&self, now: Timestamp, limit: usize) -> Result<Vec<Notice>, StoreError>;

    /// Marks a pending notice delivered (the receiver answered `status`, a
    /// 2xx) and appends `notice_delivered`, in one transaction. `false`, and
    /// no entry, if it was already delivered (another replica, or a repeat
    /// after a crash); `NotFound` for an unknown notice; `Conflict` for a
    /// status outside 2xx.
    async fn notice_delivered(
        &self,
        id: NoticeId,
        at: Timestamp,
        status: u16,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt on a pending notice: counts it, keeps
    /// `error`, and sets the next attempt (never before the due time). Not
    /// audited: failures are operational (they show in `notices`, the logs
    /// and the metrics); the delivery is the decision the log records, once.
    /// `false` if the notice is no longer pending; `NotFound` if unknown.
    async fn notice_failed(
        &self,
        id: NoticeId,
        at: Timestamp,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Notices in the order they fall due, optionally in one state.
    async fn notices(&self, state: Option<NoticeState>) -> Result<Vec<NoticeView>, StoreError>;

    /// How many notices are pending and delivered.
    async fn notice_counts(&self) -> Result<NoticeCounts, StoreError>;

    /// Appends an entry for an event that changes no stored state; returns
    /// its index.
    async fn record(&self, at: Timestamp, event: Event) -> Result<u64, StoreError>;

    /// The audit log's size and root, as one snapshot.
    async fn audit_head(&self) -> Result<(u64, Hash), StoreError>;

    /// The root of the audit log when it had `size` entries.
    async fn audit_root(&self, size: u64) -> Result<Hash, StoreError>;

    /// Up to `limit` (at most [`MAX_AUDIT_PAGE`]) entries' exact bytes from
    /// index `start`, in index order.
    async fn audit_entries(&self, start: u64, limit: u64) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The inclusion proof of entry `index` in the log at `size`.
    /// `OutOfRange` unless `index < size <= current size`.
    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError>;

    /// The consistency proof from the log at `old` to the log at `new`.
    /// `OutOfRange` unless `old <= new <= current size`.
    async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError>;

    /// Whether the store can be used now (`/readyz`): an embedded store
    /// always can; a database must answer.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Appends the events that change no stored state (a denied transfer, a TLS
/// reload): the event happened whatever the log says, so a failure to log it
/// is reported loudly (an error line and
/// `xborder_audit_append_failures_total`) rather than undoing anything.
#[derive(Clone)]
pub struct Recorder {
    pub store: std::sync::Arc<dyn Store>,
    pub clock: crate::clock::Clock,
    pub failures: prometheus::IntCounter,
}

impl Recorder {
    pub async fn record(&self, event: Event) {
        let kind = event.kind();
        if let Err(e) = self.store.record(self.clock.now(), event).await {
            self.failures.inc();
            tracing::error!(error = %e, kind, "cannot append to the audit log");
        }
    }
}
