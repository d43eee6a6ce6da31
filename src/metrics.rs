//! The gateway's Prometheus registry and the metric groups its components own.
//!
//! Components register their own metrics on an explicit [`Registry`]; there
//! is no global registry. Label values come from fixed sets (listener names,
//! results, problem codes, causes, states, the jurisdictions and certificate
//! keys of the configuration), never from a peer's input: no grant ids, no
//! SPIFFE IDs, no targets.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::error::Problem;
use crate::grant::Cause;
use crate::identity::Jurisdiction;
use crate::request::{Request, RequestState};
use crate::transfer::receipt::Incomplete;

/// Metrics of the TLS listeners.
#[derive(Clone)]
pub struct ListenerMetrics {
    /// `xborder_tls_handshakes_total{listener, result}`: ok, refused, timeout.
    pub handshakes: IntCounterVec,
    /// `xborder_open_connections{listener}`.
    pub open_connections: IntGaugeVec,
}

impl ListenerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let handshakes = IntCounterVec::new(
            Opts::new(
                "xborder_tls_handshakes_total",
                "TLS handshakes by listener and result.",
            ),
            &["listener", "result"],
        )?;
        let open_connections = IntGaugeVec::new(
            Opts::new("xborder_open_connections", "Open connections by listener."),
            &["listener"],
        )?;
        registry.register(Box::new(handshakes.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        Ok(Self {
            handshakes,
            open_connections,
        })
    }

    /// Starts every series of the listeners the gateway serves at zero, so a
    /// fresh gateway already answers the handshake-failure alert's ratio and
    /// the dashboard: each listener × result (ok, refused, timeout), and its
    /// open connections.
    pub fn known_listeners<'a>(&self, listeners: impl IntoIterator<Item = &'a str>) {
        for listener in listeners {
            for result in HANDSHAKE_RESULTS {
                self.handshakes.with_label_values(&[listener, result]);
            }
            self.open_connections.with_label_values(&[listener]);
        }
    }
}

/// Every `result` of a TLS handshake.
pub const HANDSHAKE_RESULTS: [&str; 3] = ["ok", "refused", "timeout"];

/// `xborder_build_info{version} 1`.
pub fn register_build_info(registry: &Registry) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new(
            "xborder_build_info",
            "Build information; the value is always 1.",
        ),
        &["version"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info))
}

/// The process collector's `process_*` metrics (CPU, memory, file
/// descriptors, threads, start time; Linux).
pub fn register_process(registry: &Registry) -> prometheus::Result<()> {
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}

/// How a transfer ended, as a label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything the upstream sent crossed.
    Complete,
    /// Opened, but cut or broken off (the receipt says why).
    Incomplete,
    /// Refused before it was opened (the problem code says why).
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Incomplete => "incomplete",
            Self::Refused => "refused",
        }
    }
}

/// Which side of the sealer bytes were counted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteKind {
    Plaintext,
    Ciphertext,
}

impl ByteKind {
    pub const ALL: [Self; 2] = [Self::Plaintext, Self::Ciphertext];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ciphertext => "ciphertext",
        }
    }
}

/// The `code` label of a complete transfer.
pub const CODE_OK: &str = "ok";

/// Transfer duration buckets, 1 ms … 10 min.
const DURATION_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Token verification buckets, 10 µs … 10 ms.
const VERIFY_BUCKETS: [f64; 10] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
];

/// The refusal codes whose `xborder_transfers_total` series exist from the
/// start: a grant's state and scope, the token's binding, rate limits and
/// policy — what an operator watches (the dashboard's refusal panel).
pub const REFUSAL_CODES: [&str; 10] = [
    "token_missing",
    "token_not_bound",
    "grant_revoked",
    "grant_expired",
    "grant_exhausted",
    "scope_category",
    "scope_target",
    "scope_period",
    "rate_limited",
    "policy_withdrawn",
];

/// Metrics of transfers: the border's refusals and the transfers' endings.
#[derive(Clone)]
pub struct TransferMetrics {
    /// `xborder_transfers_total{jurisdiction, outcome, code}`.
    transfers: IntCounterVec,
    /// `xborder_transfer_bytes_total{kind}`.
    bytes: IntCounterVec,
    /// `xborder_transfer_duration_seconds{outcome}`: complete, incomplete.
    duration: HistogramVec,
    /// `xborder_token_verification_duration_seconds`.
    pub token_verification: Histogram,
    /// `xborder_rate_limited_total{jurisdiction}`.
    rate_limited: IntCounterVec,
}

impl TransferMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let transfers = IntCounterVec::new(
            Opts::new(
                "xborder_transfers_total",
                "Transfers by the peer's jurisdiction, outcome (complete, incomplete, refused) \
                 and code (ok, the incomplete cause, or the problem code of the refusal).",
            ),
            &["jurisdiction", "outcome", "code"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "xborder_transfer_bytes_total",
                "Bytes moved by transfers, plaintext from the upstream and ciphertext to the peer.",
            ),
            &["kind"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "xborder_transfer_duration_seconds",
                "Duration of transfers from opening to closing, by outcome.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let token_verification = Histogram::with_opts(
            HistogramOpts::new(
                "xborder_token_verification_duration_seconds",
                "Time to verify a grant token's signature and claims.",
            )
            .buckets(VERIFY_BUCKETS.to_vec()),
        )?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "xborder_rate_limited_total",
                "Transfers refused by a rate limit, by the peer's jurisdiction.",
            ),
            &["jurisdiction"],
        )?;
        registry.register(Box::new(transfers.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(token_verification.clone()))?;
        registry.register(Box::new(rate_limited.clone()))?;
        for kind in ByteKind::ALL {
            bytes.with_label_values(&[kind.as_str()]);
        }
        for outcome in [Outcome::Complete, Outcome::Incomplete] {
            duration.with_label_values(&[outcome.as_str()]);
        }
        Ok(Self {
            transfers,
            bytes,
            duration,
            token_verification,
            rate_limited,
        })
    }

    /// Starts the per-jurisdiction series at zero for the peers the
    /// configuration knows, so dashboards and `absent()`-style alerts see
    /// them before the first event. Per jurisdiction (the trust anchors' and
    /// the policies' requesters): `xborder_rate_limited_total`, and
    /// `xborder_transfers_total` for `complete`/`ok`, `incomplete` × every
    /// cause, and `refused` × [`REFUSAL_CODES`] — about twenty series each.
    /// Other refusal codes (a malformed token, say) appear on first use.
    pub fn known_jurisdictions<'a>(
        &self,
        jurisdictions: impl IntoIterator<Item = &'a Jurisdiction>,
    ) {
        for jurisdiction in jurisdictions {
            let j = jurisdiction.as_str();
            self.rate_limited.with_label_values(&[j]);
            self.transfers
                .with_label_values(&[j, Outcome::Complete.as_str(), CODE_OK]);
            for cause in Incomplete::ALL {
                self.transfers.with_label_values(&[
                    j,
                    Outcome::Incomplete.as_str(),
                    cause.as_str(),
                ]);
            }
            for code in REFUSAL_CODES {
                self.transfers
                    .with_label_values(&[j, Outcome::Refused.as_str(), code]);
            }
        }
    }

    /// A transfer refused with `problem` on a route, for a peer of `jurisdiction`.
    pub fn refused(&self, jurisdiction: &Jurisdiction, problem: &Problem) {
        self.transfers
            .with_label_values(&[
                jurisdiction.as_str(),
                Outcome::Refused.as_str(),
                problem.code(),
            ])
            .inc();
        if matches!(problem, Problem::RateLimited(_)) {
            self.rate_limited
                .with_label_values(&[jurisdiction.as_str()])
                .inc();
        }
    }

    /// A transfer that was opened has closed: complete, or incomplete for the cause.
    pub fn closed(
        &self,
        jurisdiction: &Jurisdiction,
        incomplete: Option<Incomplete>,
        plaintext_bytes: u64,
        ciphertext_bytes: u64,
        duration: Duration,
    ) {
        let (outcome, code) = match incomplete {
            None => (Outcome::Complete, CODE_OK),
            Some(cause) => (Outcome::Incomplete, cause.as_str()),
        };
        self.transfers
            .with_label_values(&[jurisdiction.as_str(), outcome.as_str(), code])
            .inc();
        self.bytes
            .with_label_values(&[ByteKind::Plaintext.as_str()])
            .inc_by(plaintext_bytes);
        self.bytes
            .with_label_values(&[ByteKind::Ciphertext.as_str()])
            .inc_by(ciphertext_bytes);
        self.duration
            .with_label_values(&[outcome.as_str()])
            .observe(duration.as_secs_f64());
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

/// Every state a request can be in.
const REQUEST_STATES: [RequestState; 4] = [
    RequestState::Pending,
    RequestState::Approved,
    RequestState::Denied,
    RequestState::Refused,
];

/// Gauges of what the store holds, refreshed when `/metrics` is scraped.
#[derive(Clone)]
pub struct StoreMetrics {
    /// `xborder_requests{state}`.
    requests: IntGaugeVec,
    /// `xborder_requests_overdue`.
    overdue: IntGauge,
    /// `xborder_grants_active`.
    grants_active: IntGauge,
}

impl StoreMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntGaugeVec::new(
            Opts::new(
                "xborder_requests",
                "Requests in the store, by state (pending, approved, denied, refused).",
            ),
            &["state"],
        )?;
        let overdue = IntGauge::new(
            "xborder_requests_overdue",
            "Pending requests past their response deadline.",
        )?;
        let grants_active = IntGauge::new("xborder_grants_active", "Active grants.")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(overdue.clone()))?;
        registry.register(Box::new(grants_active.clone()))?;
        for state in REQUEST_STATES {
            requests.with_label_values(&[state.as_str()]);
        }
        Ok(Self {
            requests,
            overdue,
            grants_active,
        })
    }

    /// Sets the gauges from every request in the store and the active grants' count.
    pub fn set(&self, requests: &[Request], grants_active: usize, now: crate::clock::Timestamp) {
        for state in REQUEST_STATES {
            let count = requests.iter().filter(|r| r.state == state).count();
            self.requests
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
        let overdue = requests.iter().filter(|r| r.is_overdue(now)).count();
        self.overdue.set(overdue as i64);
        self.grants_active.set(grants_active as i64);
    }
}

/// The audit log: `xborder_audit_log_entries` (its size, refreshed when
/// `/metrics` is scraped) and `xborder_audit_append_failures_total` (events
/// that happened but could not be logged: a denial, a reload; page on it).
#[derive(Clone)]
pub struct AuditMetrics {
    pub entries: IntGauge,
    pub append_failures: prometheus::IntCounter,
}

impl AuditMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let entries = IntGauge::new(
            "xborder_audit_log_entries",
            "Entries in the audit log (its tree size).",
        )?;
        let append_failures = prometheus::IntCounter::new(
            "xborder_audit_append_failures_total",
            "Events that happened but could not be appended to the audit log.",
        )?;
        registry.register(Box::new(entries.clone()))?;
        registry.register(Box::new(append_failures.clone()))?;
        Ok(Self {
            entries,
            append_failures,
        })
    }
}

/// `xborder_certificate_expiry_timestamp_seconds{certificate}`, from the
/// current TLS snapshot.
#[derive(Clone)]
pub struct CertificateMetrics {
    expiry: IntGaugeVec,
}

impl CertificateMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let expiry = IntGaugeVec::new(
            Opts::new(
                "xborder_certificate_expiry_timestamp_seconds",
                "notAfter of each certificate the gateway serves or trusts, by its config key, \
                 in Unix seconds.",
            ),
            &["certificate"],
        )?;
        registry.register(Box::new(expiry.clone()))?;
        Ok(Self { expiry })
    }

    /// Replaces every sample with `expiries` (config key, `notAfter`), so a
    /// certificate a reload removed disappears.
    pub fn set(&self, expiries: &[(String, i64)]) {
        self.expiry.reset();
        for (key, not_after) in expiries {
            self.expiry
                .with_label_values(&[key.as_str()])
                .set(*not_after);
        }
    }
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

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
