//! Metrics of data-subject notices: the outbox by state and the notifier's
//! delivery attempts.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// How a delivery attempt of a data-subject notice ended, as a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Another status, no connection, or no answer in time; retried.
    Failed,
}

impl DeliveryOutcome {
    pub const ALL: [Self; 2] = [Self::Delivered, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// Metrics of data-subject notices: the outbox, refreshed when `/metrics`
/// is scraped, and the notifier's delivery attempts.
#[derive(Clone)]
pub struct NoticeMetrics {
    /// `xborder_notices{state}`: pending, delivered.
    notices: IntGaugeVec,
    /// `xborder_notice_deliveries_total{outcome}`: delivered, failed.
    deliveries: IntCounterVec,
}

impl NoticeMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let notices = IntGaugeVec::new(
            Opts::new(
                "xborder_notices",
                "Data-subject notices in the outbox, by state (pending, delivered).",
            ),
            &["state"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "xborder_notice_deliveries_total",
                "Delivery attempts of data-subject notices to the webhook, by outcome \
                 (delivered, failed).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(notices.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        for state in crate::notice::NoticeState::ALL {
            notices.with_label_values(&[state.as_str()]);
        }
        for outcome in DeliveryOutcome::ALL {
            deliveries.with_label_values(&[outcome.as_str()]);
        }
        Ok(Self {
            notices,
            deliveries,
        })
    }

    /// Sets the outbox gauges from the store's counts.
    pub fn set(&self, counts: crate::notice::NoticeCounts) {
        for (state, count) in [
            (crate::notice::NoticeState::Pending, counts.pending),
            (crate::notice::NoticeState::Delivered, counts.delivered),
        ] {
            self.notices
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The receiver accepted a notice.
    pub fn delivered(&self) {
        self.attempt(DeliveryOutcome::Delivered);
    }

    /// An attempt failed; the notice will be retried.
    pub fn failed(&self) {
        self.attempt(DeliveryOutcome::Failed);
    }

    fn attempt(&self, outcome: DeliveryOutcome) {
        self.deliveries.with_label_values(&[outcome.as_str()]).inc();
    }
}
