//! Transparency reports: what requests were filed over a period and what
//! became of them, which grants ended and why, and what crossed the border.
//!
//! A report is computed from audit entries alone ([`Transparency::from_entries`]),
//! never from the store, so an oversight body can recompute it from a
//! verified export (`xborder report transparency --export FILE`) and compare.
//!
//! # What is counted
//!
//! - **Requests** filed in `[from, to)`, per requester jurisdiction, data
//!   category and [`Outcome`] as of the report's `as_of` time. A request for
//!   several categories is counted once under each of them, so a jurisdiction's
//!   row total can exceed the number of requests it filed.
//! - **Grants ended** in `[from, to)`, per cause (`expired`, `exhausted`,
//!   `validation_missed`, `manual`).
//! - **Transfers completed** in `[from, to)`, per grantee jurisdiction and
//!   category: how many completed, how many were cut short, and the plaintext
//!   bytes of both. Complete and incomplete partition the transfers (there is
//!   no separate total) so neither can be recovered from the other.
//!
//! Entries after `as_of` are ignored, so a report is reproducible from a
//! longer export.
//!
//! # Publishing: suppression and noise
//!
//! [`Transparency::publish`] turns exact counts into publishable ones under a
//! [`Publication`]:
//!
//! - **Small-count suppression** (k-anonymity style, `k` default 5): a count
//!   from 1 to k−1 is shown as `<k`, and a byte sum over fewer than k
//!   transfers is suppressed with it. Zero is shown as 0. Tables are complete
//!   grids (every jurisdiction that appears × the standard categories and any
//!   other that appears × every outcome or cause), so whether a row appears
//!   does not tell which categories a jurisdiction asked for.
//!   *Protects*: a reader of one report cannot tell how small a small group
//!   is, e.g. whether one or four requests of a kind were denied.
//!   *Does not protect*: the group's existence (`<5` is not 0); anything
//!   learned by differencing — with a total published elsewhere, with the
//!   report of an overlapping or adjacent period, or with the same report
//!   before and after one more request — can reveal a suppressed count
//!   exactly. Suppression alone is no formal privacy guarantee.
//! - **Discrete Laplace noise** (off by default; on with an [`Epsilon`],
//!   0.01 ≤ ε ≤ 10): each count, zeros included, gets an integer noise drawn
//!   from the discrete Laplace distribution of scale 1/ε, is clamped at 0
//!   (a count never shows negative, and never wraps past 2⁶⁴ − 1), and only
//!   then suppressed. One event (a request in one
//!   category, one grant ending, one transfer) changes one count by 1, so
//!   each published count is ε-differentially private for that event.
//!   *Protects*: whether any single request, ending or transfer is in a
//!   count, against a reader with any side knowledge, differencing included.
//!   *Does not protect*: more than one event at a time — a request for three
//!   categories that was approved and used for ten transfers touches 3 + 1 +
//!   10 counts and is protected at ε × 14 only; composition — every report
//!   drawn with fresh noise spends ε again, for overlapping or adjacent periods
//!   and for the same period drawn twice (averaging many draws recovers the
//!   exact counts), so publish one draw per period; the row labels themselves
//!   (which jurisdictions and non-standard categories appear). Plaintext
//!   bytes are not differentially private (one transfer's size has no bound),
//!   so with noise on they are **withheld**, not published.
//!
//! # The noise and its range
//!
//! The noise is drawn exactly, with integers and fair coins only
//! ([`discrete_laplace`]): `P(x) = (1 − p)/(1 + p) · p^|x|` with
//! `p = exp(−ε)`, mean 0, variance `2p/(1 − p)²`. It follows Canonne, Kamath
//! and Steinke, "The Discrete Gaussian for Differential Privacy" (2020),
//! Algorithms 1 and 2, with ε taken as the exact fraction its `f64` is. A
//! floating-point Laplace sample rounded to an integer is not used: its
//! distribution has gaps and float artefacts that leak the exact count
//! (Mironov, "On Significance of the Least Significant Bits for Differential
//! Privacy", 2012), and at tiny ε it overflows (ε = 1e-300 once showed every
//! count as 2⁶⁴ − 1).
//!
//! ε must lie within [`Epsilon::MIN`] (0.01, noise of scale 100) and
//! [`Epsilon::MAX`] (10, noise that is 0 in all but about one draw in 11 000); the
//! CLI's `--epsilon`, the config's `reports.epsilon` and the admin API's
//! `epsilon` parameter (problem code `epsilon_out_of_range`) refuse anything
//! else. Noise comes from a caller-supplied [`rand::Rng`], so tests are
//! deterministic; the gateway uses a CSPRNG.

mod noise;
mod publish;
mod query;
mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::audit::entry::{Entry, Event};
use crate::clock::Timestamp;
use crate::grant::GrantId;
use crate::request::RequestId;
use crate::transfer::receipt::TransferId;

pub use noise::{Epsilon, discrete_laplace, noisy_count, range_problem as epsilon_range_problem};
pub use publish::{
    Cell, Publication, Published, PublishedEndings, PublishedRequests, PublishedTransfers,
};
pub use query::{ADMIN_PATH, Format, ReportQuery, ReportQueryError, render};

/// The label of a transfer whose grant or category the entries do not show
/// (an export that starts after the grant was issued).
pub const UNKNOWN: &str = "unknown";

/// What became of a request, as of the report's `as_of` time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// A grant was issued for it.
    Approved,
    /// A reviewer denied it.
    Denied,
    /// Policy refused it when it was filed.
    Refused,
    /// Awaiting review, within its response deadline.
    Pending,
    /// Awaiting review past its response deadline.
    Overdue,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Self::Approved,
        Self::Denied,
        Self::Refused,
        Self::Pending,
        Self::Overdue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Refused => "refused",
            Self::Pending => "pending",
            Self::Overdue => "overdue",
        }
    }
}

/// One cell of the requests table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestCell {
    /// The requester's jurisdiction.
    pub jurisdiction: String,
    pub category: String,
    pub outcome: Outcome,
}

/// One row of the transfers table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferCell {
    /// The grantee's jurisdiction.
    pub jurisdiction: String,
    pub category: String,
}

/// Transfers completed under one [`TransferCell`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferTotals {
    pub complete: u64,
    /// Cut short: revoked, quota, upstream failure (see the receipt).
    pub incomplete: u64,
    /// Plaintext bytes of all of them, complete or not.
    pub plaintext_bytes: u64,
}

/// Exact counts over one period. Only non-zero counts are stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transparency {
    pub from: Timestamp,
    /// Excluded.
    pub to: Timestamp,
    /// The time outcomes are taken at; later entries are ignored.
    pub as_of: Timestamp,
    pub requests: BTreeMap<RequestCell, u64>,
    /// Per cause.
    pub grants_ended: BTreeMap<String, u64>,
    pub transfers: BTreeMap<TransferCell, TransferTotals>,
}

/// A filed request, as far as the report needs it.
struct Filed {
    jurisdiction: String,
    categories: BTreeSet<String>,
    refused: bool,
    deadline: Timestamp,
}

/// A completed transfer in the period, before joining its grant and category.
struct Completed {
    transfer: TransferId,
    grant: GrantId,
    complete: bool,
    plaintext_bytes: u64,
}

impl Transparency {
    /// Counts requests filed in `[from, to)` with their outcome as of `now`,
    /// and grant endings and completed transfers in `[from, to)`. Entries may
    /// come in any order; entries after `now` are ignored.
    pub fn from_entries(
        entries: impl IntoIterator<Item = Entry>,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
    ) -> Self {
        let in_period = |at: Timestamp| from <= at && at < to;
        let mut filed: HashMap<RequestId, Filed> = HashMap::new();
        let mut granted: BTreeSet<RequestId> = BTreeSet::new();
        let mut denied: BTreeSet<RequestId> = BTreeSet::new();
        let mut grant_jurisdiction: HashMap<GrantId, String> = HashMap::new();
        let mut transfer_category: HashMap<TransferId, String> = HashMap::new();
        let mut grants_ended: BTreeMap<String, u64> = BTreeMap::new();
        let mut completed: Vec<Completed> = Vec::new();

        for entry in entries.into_iter().filter(|e| e.at <= now) {
            match entry.event {
                Event::RequestFiled {
                    request,
                    jurisdiction,
                    categories,
                    state,
                    deadline,
                    ..
                } if in_period(entry.at) => {
                    let mut categories: BTreeSet<String> = categories.into_iter().collect();
                    if categories.is_empty() {
                        // Filing validates categories; should one ever be
                        // missing, the request still counts somewhere.
                        categories.insert(UNKNOWN.to_owned());
                    }
                    filed.insert(
                        request,
                        Filed {
                            jurisdiction,
                            categories,
                            refused: state == "refused",
                            deadline,
                        },
                    );
                }
                Event::RequestDenied { request, .. } => {
                    denied.insert(request);
                }
                Event::GrantIssued {
                    grant,
                    request,
                    jurisdiction,
                    ..
                } => {
                    granted.insert(request);
                    grant_jurisdiction.insert(grant, jurisdiction);
                }
                Event::GrantEnded { cause, .. } if in_period(entry.at) => {
                    *grants_ended.entry(cause).or_default() += 1;
                }
                Event::TransferAllowed {
                    transfer, category, ..
                } => {
                    transfer_category.insert(transfer, category);
                }
                Event::TransferCompleted {
                    transfer,
                    grant,
                    complete,
                    plaintext_bytes,
                    ..
                } if in_period(entry.at) => completed.push(Completed {
                    transfer,
                    grant,
                    complete,
                    plaintext_bytes,
                }),
                _ => {}
            }
        }

        let mut requests: BTreeMap<RequestCell, u64> = BTreeMap::new();
        for (id, request) in filed {
            let outcome = if request.refused {
                Outcome::Refused
            } else if granted.contains(&id) {
                Outcome::Approved
            } else if denied.contains(&id) {
                Outcome::Denied
            } else if now > request.deadline {
                Outcome::Overdue
            } else {
                Outcome::Pending
            };
            for category in request.categories {
                let cell = RequestCell {
                    jurisdiction: request.jurisdiction.clone(),
                    category,
                    outcome,
                };
                *requests.entry(cell).or_default() += 1;
            }
        }

        let mut transfers: BTreeMap<TransferCell, TransferTotals> = BTreeMap::new();
        for done in completed {
            let label = |found: Option<&String>| found.map_or(UNKNOWN, String::as_str).to_owned();
            let cell = TransferCell {
                jurisdiction: label(grant_jurisdiction.get(&done.grant)),
                category: label(transfer_category.get(&done.transfer)),
            };
            let totals = transfers.entry(cell).or_default();
            if done.complete {
                totals.complete += 1;
            } else {
                totals.incomplete += 1;
            }
            totals.plaintext_bytes = totals.plaintext_bytes.saturating_add(done.plaintext_bytes);
        }

        Self {
            from,
            to,
            as_of: now,
            requests,
            grants_ended,
            transfers,
        }
    }
}

#[cfg(test)]
mod tests;
