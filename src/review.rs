//! Review: filing a request, evaluating it, approving or denying it, and
//! issuing, validating and revoking the grant that results.
//!
//! This is where policy, store, tokens and the clock meet; the border and
//! admin listeners are thin adapters over it. Every decision is taken
//! against the store in one transaction, so a crash leaves either the whole
//! decision or none of it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::audit::entry::Pseudonymiser;
use crate::clock::{Clock, Timestamp};
use crate::grant::token::{TokenError, Tokens};
use crate::grant::{Cause, Grant, GrantEnded, GrantId, GrantState, Quotas};
use crate::identity::{Jurisdiction, PeerIdentity, SpiffeId};
use crate::policy::{Evaluation, Finding, Policies};
use crate::request::{Approval, FieldError, Request, RequestBody, RequestId, RequestState};
use crate::store::{Approved, Decision, SignReceipt, Store, StoreError};

/// The terms an approver sets: how long the grant lives, what it may move,
/// and how long its data subjects' notification is deferred. When several
/// approvers are needed, the terms of the one whose approval grants win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Terms {
    /// `None`: the longest the policy allows.
    pub lifetime: Option<Duration>,
    pub quotas: Quotas,
    /// How long after the grant is issued its data-subject notice falls
    /// due. `None`: the longest the policy allows (`notification_deferral_max`),
    /// which is what an investigation usually needs; zero: at once.
    pub notify_after: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the request body is invalid")]
    Invalid(Vec<FieldError>),
    #[error("the request is refused by policy")]
    Refused(Box<Request>),
    #[error("no such request")]
    RequestNotFound,
    #[error("no such grant")]
    GrantNotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("a lifetime of {asked} exceeds the policy's cap of {cap}")]
    LifetimeExceedsPolicy { asked: String, cap: String },
    #[error("deferring notification by {asked} exceeds the policy's cap of {cap}")]
    DeferralExceedsPolicy { asked: String, cap: String },
    #[error("the grant token could not be signed")]
    Token(#[from] TokenError),
    #[error("the store failed")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ReviewError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(why) => Self::Conflict(why),
            other => Self::Store(other),
        }
    }
}

pub struct Review {
    pub store: Arc<dyn Store>,
    pub policies: Policies,
    pub tokens: Arc<Tokens>,
    /// Pseudonymises targets in audit entries written outside the store
    /// (denied transfers); the store holds the same key.
    pub pseudonyms: Pseudonymiser,
    pub clock: Clock,
    /// Our jurisdiction: the holder of the data.
    pub holder: Jurisdiction,
    /// Wakes the expiry scheduler when a grant with a new due time exists.
    pub rearm: Arc<Notify>,
    /// Wakes the notifier when a grant, and so its notice, is issued.
    pub notices: Arc<Notify>,
    pub ended: broadcast::Sender<GrantEnded>,
}

impl Review {
    /// Files a request for `peer`. A request failing a hard rule is stored as
    /// `refused` and returned as [`ReviewError::Refused`].
    pub async fn file(
        &self,
        peer: &PeerIdentity,
        body: RequestBody,
    ) -> Result<Request, ReviewError> {
        let scope = body.validate().map_err(ReviewError::Invalid)?;
        let now = self.clock.now();
        let evaluation = self
            .policies
            .evaluate(&self.holder, &peer.jurisdiction, &scope, now);
        let state = if evaluation.refused() {
            RequestState::Refused
        } else {
            RequestState::Pending
        };
        let request = Request {
            id: RequestId::new(),
            requester: peer.spiffe_id.clone(),
            requester_jurisdiction: peer.jurisdiction.clone(),
            holder: self.holder.clone(),
            thumbprint: peer.thumbprint.x5t_s256(),
            scope,
            state,
            findings: evaluation.findings,
            policy_hash: evaluation.policy_hash,
            filed_at: now,
            deadline: evaluation.deadline,
            approvals: Vec::new(),
            decided_at: (state == RequestState::Refused).then_some(now),
            decided_by: None,
            reason: None,
            grant_id: None,
        };
        self.store.insert_request(&request).await?;
        tracing::info!(request_id = %request.id, requester = %request.requester, state = state.as_str(), "request filed");
        if state == RequestState::Refused {
            return Err(ReviewError::Refused(Box::new(request)));
        }
        Ok(request)
    }

    /// The current policy's view of a stored request.
    fn evaluate(&self, request: &Request) -> Evaluation {
        self.policies.evaluate(
            &request.holder,
            &request.requester_jurisdiction,
            &request.scope,
            request.filed_at,
        )
    }

    /// Records `approver`'s approval; grants once enough distinct approvers agree.
    pub async fn approve(
        &self,
        id: RequestId,
        approver: &SpiffeId,
        terms: Terms,
    ) -> Result<Approved, ReviewError> {
        let request = self
            .store
            .request(id)
            .await?
            .ok_or(ReviewError::RequestNotFound)?;
        if request.state != RequestState::Pending {
            return Err(ReviewError::Conflict(format!(
                "the request is {}, not pending",
                request.state.as_str()
            )));
        }
        let evaluation = self.evaluate(&request);
        if evaluation.refused() {
            let why: Vec<&str> = evaluation.failures().map(|f| f.reason.as_str()).collect();
            return Err(ReviewError::Conflict(format!(
                "policy no longer allows this request: {}",
                why.join("; ")
            )));
        }
        let lifetime = terms.lifetime.unwrap_or(evaluation.max_lifetime);
        if lifetime > evaluation.max_lifetime || lifetime.is_zero() {
            return Err(ReviewError::LifetimeExceedsPolicy {
                asked: humantime::format_duration(lifetime).to_string(),
                cap: humantime::format_duration(evaluation.max_lifetime).to_string(),
            });
        }
        let deferral_max = evaluation.notification_deferral_max;
        let notice_after = terms.notify_after.unwrap_or(deferral_max);
        if notice_after > deferral_max {
            return Err(ReviewError::DeferralExceedsPolicy {
                asked: span(notice_after),
                cap: span(deferral_max),
            });
        }
        let now = self.clock.now();
        let mut grant = Grant {
            id: GrantId::new(),
            request_id: request.id,
            grantee: request.requester.clone(),
            grantee_jurisdiction: request.requester_jurisdiction.clone(),
            holder: request.holder.clone(),
            thumbprint: request.thumbprint.clone(),
            scope: request.scope.clone(),
            quotas: terms.quotas,
            used_bytes: 0,
            used_transfers: 0,
            approvers: vec![approver.clone()],
            issued_at: now,
            expires_at: now.saturating_add(lifetime),
            validation_due: evaluation.validation_window.map(|w| now.saturating_add(w)),
            validated_by: None,
            state: GrantState::Active,
            ending: None,
            token: String::new(),
        };
        grant.token = self.tokens.issue(&grant)?;
        let approval = Approval {
            approver: approver.clone(),
            at: now,
        };
        let decision = Decision {
            policy: evaluation.policy_hash,
            notice_after,
        };
        let outcome = self
            .store
            .approve(
                id,
                approval,
                evaluation.approvals_to_grant as usize,
                grant,
                &decision,
            )
            .await?;
        match &outcome {
            Approved::Granted(grant) => {
                let notice_due = grant.issued_at.saturating_add(notice_after);
                tracing::info!(request_id = %id, grant_id = %grant.id, expires_at = %grant.expires_at, notice_due = %notice_due, "grant issued");
                self.rearm.notify_one();
                self.notices.notify_one();
            }
            Approved::Pending {
                approvals,
                required,
            } => {
                tracing::info!(request_id = %id, approvals, required, "approval recorded");
            }
        }
        Ok(outcome)
    }

    pub async fn deny(
        &self,
        id: RequestId,
        by: &SpiffeId,
        reason: &str,
    ) -> Result<Request, ReviewError> {
        let request = self
            .store
            .deny(id, by, reason, self.clock.now())
            .await
            .map_err(not_found_request)?;
        tracing::info!(request_id = %id, by = %by, "request denied");
        Ok(request)
    }

    pub async fn validate(&self, id: GrantId, by: &SpiffeId) -> Result<Grant, ReviewError> {
        let grant = self
            .store
            .validate_grant(id, by, self.clock.now())
            .await
            .map_err(not_found_grant)?;
        tracing::info!(grant_id = %id, by = %by, "emergency grant validated");
        self.rearm.notify_one();
        Ok(grant)
    }

    /// Ends an active grant by hand.
    pub async fn revoke(
        &self,
        id: GrantId,
        by: &SpiffeId,
        reason: &str,
    ) -> Result<Grant, ReviewError> {
        self.end(id, Cause::Manual, Some(by), Some(reason))
            .await?
            .ok_or_else(|| ReviewError::Conflict("the grant has already ended".into()))
    }

    /// Ends an active grant with `cause`; `None` if it had already ended.
    pub async fn end(
        &self,
        id: GrantId,
        cause: Cause,
        by: Option<&SpiffeId>,
        reason: Option<&str>,
    ) -> Result<Option<Grant>, ReviewError> {
        let ended = self
            .store
            .end_grant(id, cause, by, reason, self.clock.now())
            .await
            .map_err(not_found_grant)?;
        if ended.is_some() {
            tracing::info!(grant_id = %id, cause = cause.as_str(), by = ?by.map(SpiffeId::as_str), "grant ended");
            // Nobody listening is fine: no transfer streams under it.
            let _ = self.ended.send(GrantEnded {
                id,
                cause,
                remote: false,
            });
        }
        Ok(ended)
    }

    /// Whether the pair's policy still allows `grant` to be used.
    pub fn still_allowed(&self, grant: &Grant) -> Result<(), Vec<Finding>> {
        let evaluation = self.policies.evaluate(
            &grant.holder,
            &grant.grantee_jurisdiction,
            &grant.scope,
            grant.issued_at,
        );
        if evaluation.refused() {
            return Err(evaluation.failures().cloned().collect());
        }
        Ok(())
    }

    /// Signs a receipt with the current token key, for `Store::close_transfer`.
    pub fn receipt_signer(&self) -> SignReceipt {
        let tokens = Arc::clone(&self.tokens);
        Box::new(move |receipt| Ok(tokens.sign_receipt(receipt)?))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A deferral as an approver writes it: whole days as `90d` (humantime
/// would say `2months 29days 3h 27m 12s`), anything else as humantime does.
fn span(d: Duration) -> String {
    const DAY: u64 = 86_400;
    if d.subsec_nanos() == 0 && d.as_secs() >= DAY && d.as_secs().is_multiple_of(DAY) {
        format!("{}d", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

fn not_found_request(e: StoreError) -> ReviewError {
    match e {
        StoreError::NotFound => ReviewError::RequestNotFound,
        other => other.into(),
    }
}

fn not_found_grant(e: StoreError) -> ReviewError {
    match e {
        StoreError::NotFound => ReviewError::GrantNotFound,
        other => other.into(),
    }
}
