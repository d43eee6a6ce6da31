//! The gateway's Prometheus registry and the metric groups its components own.
//!
//! Components register their own metrics on an explicit [`Registry`]; there
//! is no global registry. The services own theirs (`transfers::metrics`,
//! `grants::GrantMetrics`, `notify::metrics`); this module holds the
//! listeners', the store's, the audit log's and the certificates'. Label values come from fixed sets (listener names,
//! results, problem codes, causes, states, the jurisdictions and certificate
//! keys of the configuration), never from a peer's input: no grant ids, no
//! SPIFFE IDs, no targets.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::request::{Request, RequestState};

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
