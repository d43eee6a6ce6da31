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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::store::{Store, StoreError};
pub use metrics::NoticeMetrics;

mod metrics;
mod webhook;

#[cfg(test)]
mod tests;

use crate::notice::Notice;
pub use webhook::{ATTEMPT_HEADER, IDEMPOTENCY_KEY_HEADER};

/// How many due notices the notifier takes from the store at a time.
const BATCH: usize = 32;

/// Delivery of data-subject notices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySettings {
    /// Where notices are POSTed (`http://` only). `None`: they stay pending
    /// in the outbox, and the gateway warns at start.
    pub webhook: Option<http::Uri>,
    /// An attempt must be answered (status line) within this.
    pub timeout: Duration,
    /// The wait after the first failed attempt; it doubles with each further one…
    pub retry_min: Duration,
    /// …up to this.
    pub retry_max: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            webhook: None,
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
        }
    }
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
