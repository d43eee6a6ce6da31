//! The grant service's clock: it ends grants exactly when they fall due (at
//! expiry, or when an emergency grant's validation window closes
//! unvalidated), and counts every ending announced on the endings broadcast.
//!
//! No polling sweep: the scheduler sleeps until the earliest due time the
//! store knows (re-read at start, so grants that fell due while the gateway
//! was down end at once), and is woken early when a new grant or validation
//! changes that time. Several replicas may run it: `end_grant` only ends an
//! active grant, so the first to act wins and the others find nothing to do.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::grant::GrantEnded;
use prometheus::{IntCounterVec, Opts, Registry};

use crate::grant::Cause;
use crate::review::Review;

/// Runs until `shutdown` is cancelled.
pub async fn run(review: Arc<Review>, shutdown: CancellationToken) {
    loop {
        let next = match sweep(&review).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "grant scheduler cannot reach the store; retrying in 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(review.clock.instant_at(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = review.rearm.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Ends every grant due now; returns when the next one falls due.
async fn sweep(
    review: &Review,
) -> Result<Option<crate::clock::Timestamp>, crate::review::ReviewError> {
    let now = review.now();
    for (id, cause) in review.store.due(now).await? {
        review.end(id, cause, None, None).await?;
    }
    Ok(review.store.next_due().await?)
}

/// Counts grant endings by cause as `review` announces them.
pub async fn count_endings(
    mut ended: tokio::sync::broadcast::Receiver<GrantEnded>,
    metrics: GrantMetrics,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match ended.recv().await {
            Ok(ending) if ending.remote => {}
            Ok(ending) => metrics.ended(ending.cause),
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "grant endings not counted in the metrics: too many at once"
                )
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Every cause a grant can end with.
const CAUSES: [Cause; 4] = [
    Cause::Expired,
    Cause::Exhausted,
    Cause::ValidationMissed,
    Cause::Manual,
];

/// Metrics of grant endings, counted from `Review::ended`.
#[derive(Clone)]
pub struct GrantMetrics {
    /// `xborder_grant_revocations_total{cause}`.
    revocations: IntCounterVec,
}

impl GrantMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let revocations = IntCounterVec::new(
            Opts::new(
                "xborder_grant_revocations_total",
                "Grants ended, by cause (expired, exhausted, validation_missed, manual).",
            ),
            &["cause"],
        )?;
        registry.register(Box::new(revocations.clone()))?;
        for cause in CAUSES {
            revocations.with_label_values(&[cause.as_str()]);
        }
        Ok(Self { revocations })
    }

    pub fn ended(&self, cause: Cause) {
        self.revocations.with_label_values(&[cause.as_str()]).inc();
    }
}

#[cfg(test)]
mod tests;
