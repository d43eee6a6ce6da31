//! Data-subject notification: the outbox of notices and the notifier that
//! delivers them.
//!
//! When a grant is issued, the store writes its [`Notice`] in the same
//! transaction as the grant and its audit entries (`Store::approve`), due at
//! the grant's `issued_at` plus the deferral the final approver set (bounded
//! by the pair's `notification_deferral_max`). So there is no grant without
//! its notice, and a notice outlives any crash.
//!
//! The [`Notifier`] sleeps until the earliest notice falls due (re-read at
//! start, so notices that fell due while the gateway was down go at once),
//! or until review wakes it because a grant was issued. It POSTs each due
//! notice as JSON to the configured webhook, one connection per attempt,
//! with `Idempotency-Key: <notice id>`. A 2xx answer marks the notice
//! delivered and appends `notice_delivered` to the audit log, in one
//! transaction; anything else (another status, a refused connection, no
//! answer within `notify.timeout`) is recorded as a failed attempt and
//! retried after a backoff that doubles from `notify.retry_min` up to
//! `notify.retry_max`. The notifier never gives up: a notice stays pending,
//! visible in `GET /v1/notices` and `xborder_notices{state="pending"}`,
//! until the receiver accepts it.
//!
//! Exactly once, as a receiver sees it: a stop (even SIGKILL) after the
//! receiver got a POST but before the store recorded the answer leaves the
//! notice pending, and it is POSTed again after restart, under the same key
//! and with the same bytes. A receiver that keeps the keys it has processed
//! and answers a repeat with 2xx without acting again sees every notice
//! exactly once; the audit log has exactly one `notice_delivered` per notice
//! because only the transition from pending records it. Replicas sharing a
//! store may both POST a notice that falls due; the key makes that harmless
//! too.
//!
//! No jitter on the backoff: jitter spreads many independent clients that
//! fail together, and here one notifier (or a few replicas) sends one POST
//! at a time to one receiver. A fixed schedule is easier to reason about in
//! `GET /v1/notices` and is tested to the millisecond.
//!
//! The body carries the targets in clear: the receiver is the data holder's
//! own notification service, which must reach the subjects, and the store
//! holds them in clear already. The audit log never does.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::category::Category;
use crate::clock::{Clock, Timestamp};
use crate::config::NotifySettings;
use crate::grant::GrantId;
use crate::identity::{Jurisdiction, SpiffeId};
use crate::metrics::NoticeMetrics;
use crate::request::{Period, RequestId};
use crate::store::{Store, StoreError};

mod webhook;

#[cfg(test)]
mod tests;

pub use crate::id::NoticeId;
pub use webhook::{ATTEMPT_HEADER, IDEMPOTENCY_KEY_HEADER};

/// How many due notices the notifier takes from the store at a time.
const BATCH: usize = 32;

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

/// The wait before the next attempt after `failures` failed ones:
/// `retry_min`, doubling with each further failure, at most `retry_max`.
pub fn backoff(failures: u32, retry_min: Duration, retry_max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    retry_min.saturating_mul(1 << doublings).min(retry_max)
}

/// Delivers due notices to the webhook until shut down.
pub struct Notifier {
    store: Arc<dyn Store>,
    clock: Clock,
    /// Poked by review when a grant (and so a notice) is issued.
    wake: Arc<Notify>,
    settings: NotifySettings,
    metrics: NoticeMetrics,
}

impl Notifier {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Clock,
        wake: Arc<Notify>,
        settings: NotifySettings,
        metrics: NoticeMetrics,
    ) -> Self {
        Self {
            store,
            clock,
            wake,
            settings,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled. Without a webhook it only says so:
    /// notices stay pending in the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(webhook) = self.settings.webhook.clone() else {
            tracing::warn!(
                "no `notify.webhook` configured: data-subject notices stay pending in the outbox"
            );
            return;
        };
        let webhook = webhook::Webhook::new(webhook, self.settings.timeout);
        tracing::info!(webhook = %webhook, "notifier started");
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = self.round(&webhook) => next,
            };
            let next = match next {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "notifier cannot reach the store; retrying in 1 s");
                    Some(self.clock.now().saturating_add(Duration::from_secs(1)))
                }
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(self.clock.instant_at(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// Attempts every notice due now; returns when the next one falls due.
    async fn round(&self, webhook: &webhook::Webhook) -> Result<Option<Timestamp>, StoreError> {
        loop {
            let due = self.store.due_notices(self.clock.now(), BATCH).await?;
            let more = due.len() == BATCH;
            for notice in due {
                self.deliver(webhook, notice).await?;
            }
            if !more {
                break;
            }
        }
        self.store.next_notice_due().await
    }

    /// One attempt at one notice, and its record.
    async fn deliver(&self, webhook: &webhook::Webhook, notice: Notice) -> Result<(), StoreError> {
        let attempt = notice.attempts.saturating_add(1);
        match webhook.post(&notice, attempt).await {
            Ok(status) => {
                let at = self.clock.now();
                let first = self
                    .store
                    .notice_delivered(notice.id, at, status.as_u16())
                    .await?;
                self.metrics.delivered();
                if first {
                    tracing::info!(notice_id = %notice.id, grant_id = %notice.grant_id, attempt, status = status.as_u16(), "notice delivered");
                } else {
                    tracing::info!(notice_id = %notice.id, grant_id = %notice.grant_id, "notice delivered again; it was already recorded as delivered");
                }
            }
            Err(failure) => {
                let at = self.clock.now();
                let next = at.saturating_add(backoff(
                    attempt,
                    self.settings.retry_min,
                    self.settings.retry_max,
                ));
                let error = failure.to_string();
                self.store
                    .notice_failed(notice.id, at, &error, next)
                    .await?;
                self.metrics.failed();
                tracing::warn!(notice_id = %notice.id, grant_id = %notice.grant_id, attempt, error, next_attempt_at = %next, "notice delivery failed; will retry");
            }
        }
        Ok(())
    }
}
