//! Each write transaction of the store, decided once for both drivers.
//!
//! A driver reads, under the locks the transaction needs, the rows it names
//! (typed: a [`Request`], a [`Grant`], an opened transfer, a
//! [`NoticeAttempts`]) and hands them to the function here named after the
//! [`Store`](super::Store) method. That function decides, with the shared
//! checks (`admit_*`): it refuses, with the same error for either database,
//! or returns a [`Plan`]: the row changes and the audit entries recording
//! them, in order; whom other replicas must hear of; and what the method
//! returns. The driver takes the steps in order, each change with its own
//! statements and each entry with its own audit append, in the one
//! transaction. The functions are plain and synchronous, so the SQLite
//! writer thread and the async PostgreSQL store run the same code, and the
//! log's order cannot differ between them.

use crate::audit::entry::{Event, Pseudonymiser, text_hash};
use crate::clock::Timestamp;
use crate::grant::{Cause, Ending, Grant, GrantId, GrantState};
use crate::identity::SpiffeId;
use crate::notice::{NoticeId, NoticeState};
use crate::request::{Approval, Request, RequestId, RequestState};
use crate::transfer::receipt::{Receipt, TransferOpen};

use super::{
    Approved, Decision, SignReceipt, StoreError, admit_close, admit_transfer, admit_validation,
    stored_error,
};

/// What one write transaction does once its checks have passed.
#[derive(Debug)]
pub(crate) struct Plan<T> {
    /// The row changes and the audit entries that record them, in the
    /// order the transaction makes them.
    pub(crate) steps: Vec<Step>,
    /// What other gateways sharing the store must hear of once this commits.
    pub(crate) announce: Option<Announce>,
    /// What the `Store` method returns.
    pub(crate) outcome: T,
}

impl<T> Plan<T> {
    /// A plan that changes nothing and returns `outcome`.
    fn nothing(outcome: T) -> Self {
        Self {
            steps: Vec::new(),
            announce: None,
            outcome,
        }
    }
}

/// One step of a [`Plan`].
#[derive(Debug)]
pub(crate) enum Step {
    /// Write a row change.
    Write(Change),
    /// Append an entry to the audit log, at this time.
    Append(Timestamp, Event),
}

/// One row change, as both schemas hold it.
#[derive(Debug)]
pub(crate) enum Change {
    /// A newly filed request with its findings and approvals.
    InsertRequest(Box<Request>),
    /// An approval of a request by an approver not yet among its approvals.
    InsertApproval {
        request: RequestId,
        approval: Approval,
    },
    /// A pending request approved by `by` at `at`, granted as `grant`.
    ApproveRequest {
        id: RequestId,
        by: SpiffeId,
        at: Timestamp,
        grant: GrantId,
    },
    /// A pending request denied by `by` at `at` for `reason`.
    DenyRequest {
        id: RequestId,
        by: SpiffeId,
        at: Timestamp,
        reason: String,
    },
    InsertGrant(Box<Grant>),
    /// An active grant validated by `by` at `at`.
    ValidateGrant {
        id: GrantId,
        by: SpiffeId,
        at: Timestamp,
    },
    /// An active grant ended, in the state its cause ends it in.
    EndGrant {
        id: GrantId,
        ending: Ending,
    },
    /// A grant's count of transfers, the opening one included.
    CountTransfer {
        grant: GrantId,
        used_transfers: u64,
    },
    /// A transfer stored as open.
    OpenTransfer(TransferOpen),
    /// A closing transfer's plaintext bytes added to its grant's count.
    AddBytes {
        grant: GrantId,
        bytes: u64,
    },
    /// An open transfer closed with its receipt and the receipt's JWS.
    CloseTransfer {
        receipt: Box<Receipt>,
        jws: String,
    },
    /// A grant's data-subject notice in the outbox, pending, due at `due_at`.
    InsertNotice {
        id: NoticeId,
        grant: GrantId,
        request: RequestId,
        due_at: Timestamp,
    },
    /// A pending notice delivered at `at`, its receiver answering `status`.
    NoticeDelivered {
        id: NoticeId,
        attempts: u64,
        at: Timestamp,
        status: u16,
    },
    /// A failed attempt on a pending notice, and when to try next.
    NoticeFailed {
        id: NoticeId,
        attempts: u64,
        at: Timestamp,
        error: String,
        next_attempt_at: Timestamp,
    },
}

/// What a transaction tells the other gateways sharing the store, once it
/// has committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Announce {
    /// When the grant falls due changed (it was issued or validated).
    Due(GrantId),
    /// The grant ended with this cause.
    Ended(GrantId, Cause),
}

/// A notice's delivery state, as the notifier's records read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NoticeAttempts {
    pub(crate) state: NoticeState,
    pub(crate) grant: GrantId,
    pub(crate) attempts: u64,
    pub(crate) due_at: Timestamp,
}

/// See `Store::insert_request`.
pub(crate) fn insert_request(request: &Request, names: &Pseudonymiser) -> Plan<()> {
    let mut steps = vec![Step::Write(Change::InsertRequest(Box::new(
        request.clone(),
    )))];
    let at = request.filed_at;
    steps.extend(
        Event::request_filed(request, names)
            .into_iter()
            .map(|event| Step::Append(at, event)),
    );
    Plan {
        steps,
        announce: None,
        outcome: (),
    }
}

/// See `Store::approve`; `request` is request `id` as read under its lock.
pub(crate) fn approve(
    id: RequestId,
    request: Option<Request>,
    approval: Approval,
    required: usize,
    mut grant: Grant,
    decision: &Decision,
) -> Result<Plan<Approved>, StoreError> {
    let request = pending(id, request)?;
    if grant.request_id != id {
        return Err(StoreError::Conflict(format!(
            "grant {} is for request {}, not {id}",
            grant.id, grant.request_id
        )));
    }
    let mut steps = Vec::new();
    let mut approvals = request.approvals;
    // The same approver twice counts once.
    if !approvals.iter().any(|a| a.approver == approval.approver) {
        steps.push(Step::Write(Change::InsertApproval {
            request: id,
            approval: approval.clone(),
        }));
        approvals.push(approval.clone());
        // In the order the stores read them back: by time, then as recorded
        // (the sort is stable, and the new one was recorded last).
        approvals.sort_by_key(|a| a.at);
    }
    steps.push(Step::Append(
        approval.at,
        Event::Approval {
            request: id,
            by: approval.approver.to_string(),
            approvals: approvals.len() as u64,
            required: required as u64,
            policy: decision.policy.clone(),
        },
    ));
    if approvals.len() < required {
        return Ok(Plan {
            steps,
            announce: None,
            outcome: Approved::Pending {
                approvals: approvals.len(),
                required,
            },
        });
    }
    grant.approvers = approvals.into_iter().map(|a| a.approver).collect();
    let notice_due = grant.issued_at.saturating_add(decision.notice_after);
    steps.extend([
        Step::Write(Change::InsertGrant(Box::new(grant.clone()))),
        Step::Write(Change::ApproveRequest {
            id,
            by: approval.approver,
            at: approval.at,
            grant: grant.id,
        }),
        Step::Write(Change::InsertNotice {
            id: NoticeId::new(),
            grant: grant.id,
            request: id,
            due_at: notice_due,
        }),
        Step::Append(
            approval.at,
            Event::grant_issued(&grant, &decision.policy, notice_due),
        ),
    ]);
    Ok(Plan {
        steps,
        announce: Some(Announce::Due(grant.id)),
        outcome: Approved::Granted(Box::new(grant)),
    })
}

/// See `Store::deny`; `request` is request `id` as read under its lock.
pub(crate) fn deny(
    id: RequestId,
    request: Option<Request>,
    by: &SpiffeId,
    reason: &str,
    at: Timestamp,
) -> Result<Plan<Request>, StoreError> {
    let mut request = pending(id, request)?;
    request.state = RequestState::Denied;
    request.decided_at = Some(at);
    request.decided_by = Some(by.clone());
    request.reason = Some(reason.to_owned());
    Ok(Plan {
        steps: vec![
            Step::Write(Change::DenyRequest {
                id,
                by: by.clone(),
                at,
                reason: reason.to_owned(),
            }),
            Step::Append(
                at,
                Event::RequestDenied {
                    request: id,
                    by: by.to_string(),
                    reason_sha256: text_hash(reason),
                },
            ),
        ],
        announce: None,
        outcome: request,
    })
}

/// The request if it exists and is pending; `NotFound` or `Conflict` otherwise.
fn pending(id: RequestId, request: Option<Request>) -> Result<Request, StoreError> {
    let request = request.ok_or(StoreError::NotFound)?;
    if request.state != RequestState::Pending {
        return Err(StoreError::Conflict(format!(
            "request {id} is {}, not pending",
            request.state.as_str()
        )));
    }
    Ok(request)
}

/// See `Store::validate_grant`; `grant` as read under its lock.
pub(crate) fn validate_grant(
    grant: Option<Grant>,
    by: &SpiffeId,
    at: Timestamp,
) -> Result<Plan<Grant>, StoreError> {
    let mut grant = grant.ok_or(StoreError::NotFound)?;
    admit_validation(&grant, by, at)?;
    let id = grant.id;
    grant.validated_by = Some(by.clone());
    Ok(Plan {
        steps: vec![
            Step::Write(Change::ValidateGrant {
                id,
                by: by.clone(),
                at,
            }),
            Step::Append(
                at,
                Event::GrantValidated {
                    grant: id,
                    by: by.to_string(),
                },
            ),
        ],
        announce: Some(Announce::Due(id)),
        outcome: grant,
    })
}

/// See `Store::end_grant`; `grant` as read under its lock. The first
/// ending wins: a grant no longer active is left as it is.
pub(crate) fn end_grant(
    grant: Option<Grant>,
    cause: Cause,
    by: Option<&SpiffeId>,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<Plan<Option<Grant>>, StoreError> {
    let mut grant = grant.ok_or(StoreError::NotFound)?;
    if grant.state != GrantState::Active {
        return Ok(Plan::nothing(None));
    }
    let id = grant.id;
    let ending = Ending {
        cause,
        at,
        by: by.cloned(),
        reason: reason.map(str::to_owned),
    };
    grant.state = cause.end_state();
    grant.ending = Some(ending.clone());
    Ok(Plan {
        steps: vec![
            Step::Write(Change::EndGrant { id, ending }),
            Step::Append(
                at,
                Event::grant_ended(id, cause, by.map(SpiffeId::as_str), reason),
            ),
        ],
        announce: Some(Announce::Ended(id, cause)),
        outcome: Some(grant),
    })
}

/// See `Store::open_transfer`; `grant` is `open`'s grant as read under its
/// lock. Returns the grant's `used_bytes`.
pub(crate) fn open_transfer(
    grant: Option<Grant>,
    open: &TransferOpen,
    names: &Pseudonymiser,
) -> Result<Plan<u64>, StoreError> {
    let grant = grant.ok_or(StoreError::NotFound)?;
    let used_transfers = admit_transfer(&grant, open)?;
    Ok(Plan {
        steps: vec![
            Step::Write(Change::CountTransfer {
                grant: grant.id,
                used_transfers,
            }),
            Step::Write(Change::OpenTransfer(open.clone())),
            Step::Append(open.started_at, Event::transfer_allowed(open, names)),
        ],
        announce: None,
        outcome: grant.used_bytes,
    })
}

/// See `Store::close_transfer`, up to the completion entry; `found` is the
/// transfer's state and how it was opened, as read under its lock (after
/// `check_receipt`). Returns the receipt, which [`seal`] finishes once the
/// entry's index is known.
pub(crate) fn close_transfer(
    receipt: Receipt,
    found: Option<(String, TransferOpen)>,
) -> Result<Plan<Receipt>, StoreError> {
    let (state, opened) = found.ok_or(StoreError::NotFound)?;
    admit_close(&receipt, &state, &opened)?;
    Ok(Plan {
        steps: vec![
            Step::Write(Change::AddBytes {
                grant: opened.grant_id,
                bytes: receipt.plaintext_bytes,
            }),
            Step::Append(receipt.ended_at, Event::transfer_completed(&receipt)),
        ],
        announce: None,
        outcome: receipt,
    })
}

/// The rest of `Store::close_transfer`: the receipt names its completion
/// entry (`index`, the last entry [`close_transfer`] planned), is signed,
/// and is stored with its JWS. A receipt that cannot be signed is not stored.
pub(crate) fn seal(
    mut receipt: Receipt,
    index: Option<u64>,
    sign: SignReceipt,
) -> Result<Plan<(Receipt, String)>, StoreError> {
    receipt.audit_index = index;
    let jws = sign(&receipt).map_err(StoreError::Backend)?;
    Ok(Plan {
        steps: vec![Step::Write(Change::CloseTransfer {
            receipt: Box::new(receipt.clone()),
            jws: jws.clone(),
        })],
        announce: None,
        outcome: (receipt, jws),
    })
}

/// See `Store::notice_delivered`; `found` is notice `id` as read under its
/// lock (after `check_delivery`).
pub(crate) fn notice_delivered(
    id: NoticeId,
    found: Option<NoticeAttempts>,
    at: Timestamp,
    status: u16,
) -> Result<Plan<bool>, StoreError> {
    let notice = found.ok_or(StoreError::NotFound)?;
    if notice.state != NoticeState::Pending {
        return Ok(Plan::nothing(false));
    }
    let attempts = one_more(id, notice.attempts)?;
    Ok(Plan {
        steps: vec![
            Step::Write(Change::NoticeDelivered {
                id,
                attempts,
                at,
                status,
            }),
            Step::Append(
                at,
                Event::NoticeDelivered {
                    notice: id,
                    grant: notice.grant,
                    attempts,
                    status,
                },
            ),
        ],
        announce: None,
        outcome: true,
    })
}

/// See `Store::notice_failed`; `found` is notice `id` as read under its
/// lock. Not audited.
pub(crate) fn notice_failed(
    id: NoticeId,
    found: Option<NoticeAttempts>,
    at: Timestamp,
    error: &str,
    next_attempt_at: Timestamp,
) -> Result<Plan<bool>, StoreError> {
    let notice = found.ok_or(StoreError::NotFound)?;
    if notice.state != NoticeState::Pending {
        return Ok(Plan::nothing(false));
    }
    Ok(Plan {
        steps: vec![Step::Write(Change::NoticeFailed {
            id,
            attempts: one_more(id, notice.attempts)?,
            at,
            error: stored_error(error).to_owned(),
            // Never before the notice is due.
            next_attempt_at: next_attempt_at.max(notice.due_at),
        })],
        announce: None,
        outcome: true,
    })
}

fn one_more(id: NoticeId, attempts: u64) -> Result<u64, StoreError> {
    attempts
        .checked_add(1)
        .ok_or_else(|| StoreError::Backend(format!("notice {id}'s attempt count overflows").into()))
}

#[cfg(test)]
mod tests;
