//! Metrics of transfers: the border's refusals by problem code, the
//! streams' endings, bytes and durations, and grant token verification.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::error::Problem;
use crate::identity::Jurisdiction;
use crate::transfer::receipt::Incomplete;

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
