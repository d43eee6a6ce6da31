//! The gateway's Prometheus registry and the metrics of its listeners.
//!
//! Components register their own metrics on an explicit [`Registry`]; there
//! is no global registry. Label values come from fixed sets (listener names,
//! results), never from a peer's input.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

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
}

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

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}
