//! Exact counts made publishable: noise (optional), then suppression.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use rand::Rng;

use super::{Outcome, RequestCell, TransferCell, TransferTotals, Transparency};
use crate::category::Category;
use crate::clock::Timestamp;
use crate::grant::Cause;

impl Transparency {
    /// The publishable form: noise first (if any), then suppression. The
    /// tables are complete grids, zeros included (see the module docs).
    pub fn publish(&self, publication: &Publication, rng: &mut impl Rng) -> Published {
        let mut count = |exact: u64| publication.count(exact, rng);

        let jurisdictions: BTreeSet<&str> = self
            .requests
            .keys()
            .map(|c| c.jurisdiction.as_str())
            .collect();
        let categories = with_standard(self.requests.keys().map(|c| c.category.as_str()));
        let mut requests = Vec::new();
        for jurisdiction in &jurisdictions {
            for category in &categories {
                for outcome in Outcome::ALL {
                    let cell = RequestCell {
                        jurisdiction: (*jurisdiction).to_owned(),
                        category: (*category).to_owned(),
                        outcome,
                    };
                    let exact = self.requests.get(&cell).copied().unwrap_or(0);
                    requests.push(PublishedRequests {
                        cell,
                        count: count(exact),
                    });
                }
            }
        }

        let causes: BTreeSet<&str> = CAUSES
            .iter()
            .map(|c| c.as_str())
            .chain(self.grants_ended.keys().map(String::as_str))
            .collect();
        let grants_ended = causes
            .into_iter()
            .map(|cause| PublishedEndings {
                cause: cause.to_owned(),
                count: count(self.grants_ended.get(cause).copied().unwrap_or(0)),
            })
            .collect();

        let jurisdictions: BTreeSet<&str> = self
            .transfers
            .keys()
            .map(|c| c.jurisdiction.as_str())
            .collect();
        let categories = with_standard(self.transfers.keys().map(|c| c.category.as_str()));
        let mut transfers = Vec::new();
        for jurisdiction in &jurisdictions {
            for category in &categories {
                let cell = TransferCell {
                    jurisdiction: (*jurisdiction).to_owned(),
                    category: (*category).to_owned(),
                };
                let exact = self.transfers.get(&cell).copied().unwrap_or_default();
                let complete = count(exact.complete);
                let incomplete = count(exact.incomplete);
                let plaintext_bytes = publication.bytes(&exact);
                transfers.push(PublishedTransfers {
                    cell,
                    complete,
                    incomplete,
                    plaintext_bytes,
                });
            }
        }

        Published {
            from: self.from,
            to: self.to,
            as_of: self.as_of,
            k: publication.k,
            epsilon: publication.epsilon,
            requests,
            grants_ended,
            transfers,
        }
    }
}

/// Every cause a grant can end with, listed even when none ended so.
const CAUSES: [Cause; 4] = [
    Cause::Expired,
    Cause::Exhausted,
    Cause::ValidationMissed,
    Cause::Manual,
];

/// The standard categories and any others seen, sorted.
fn with_standard<'a>(seen: impl Iterator<Item = &'a str>) -> BTreeSet<&'a str> {
    Category::STANDARD.into_iter().chain(seen).collect()
}

/// How a report is made publishable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Publication {
    /// Counts from 1 to `k - 1` are suppressed; 0 or 1 suppresses nothing.
    pub k: u64,
    /// Laplace noise of scale 1/ε on every count; `None`: exact counts.
    pub epsilon: Option<Epsilon>,
}

impl Default for Publication {
    fn default() -> Self {
        Self {
            k: Self::DEFAULT_K,
            epsilon: None,
        }
    }
}

impl Publication {
    pub const DEFAULT_K: u64 = 5;

    /// An exact count, noised if ε is set, then suppressed if small.
    fn count(&self, exact: u64, rng: &mut impl Rng) -> Cell {
        let shown = match self.epsilon {
            // Far beyond any count, the f64 -> u64 cast saturates.
            Some(epsilon) => (exact as f64 + laplace(epsilon.scale(), rng))
                .round()
                .max(0.0) as u64,
            None => exact,
        };
        if self.suppresses(shown) {
            Cell::Suppressed
        } else {
            Cell::Shown(shown)
        }
    }

    /// Bytes are withheld under noise (unbounded sensitivity) and suppressed
    /// when they sum fewer than k transfers.
    fn bytes(&self, exact: &TransferTotals) -> Cell {
        if self.epsilon.is_some() {
            Cell::Withheld
        } else if self.suppresses(exact.complete + exact.incomplete) {
            Cell::Suppressed
        } else {
            Cell::Shown(exact.plaintext_bytes)
        }
    }

    fn suppresses(&self, shown: u64) -> bool {
        shown > 0 && shown < self.k
    }
}

/// The differential-privacy parameter ε: finite and greater than 0. Smaller
/// is more private and noisier (the noise's mean absolute value is 1/ε).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Epsilon(f64);

impl Epsilon {
    /// `None` unless `value` is finite and greater than 0.
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && value > 0.0).then_some(Self(value))
    }

    pub fn value(self) -> f64 {
        self.0
    }

    /// The Laplace scale for a count (sensitivity 1): 1/ε.
    pub fn scale(self) -> f64 {
        1.0 / self.0
    }
}

impl FromStr for Epsilon {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<f64>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| format!("`{s}` is not a number greater than 0 (e.g. 0.5)"))
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One draw from Laplace(0, `scale`), by inverse CDF.
pub fn laplace(scale: f64, rng: &mut impl Rng) -> f64 {
    loop {
        // u in [-1/2, 1/2); at exactly -1/2 the inverse CDF is infinite.
        let u: f64 = rng.r#gen::<f64>() - 0.5;
        let tail = 1.0 - 2.0 * u.abs();
        if tail > 0.0 {
            return -scale * u.signum() * tail.ln();
        }
    }
}

/// A published value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    Shown(u64),
    /// Below k (a count), or summed over fewer than k transfers (bytes).
    Suppressed,
    /// Not published at all: bytes under noise.
    Withheld,
}

/// A report in publishable form; render it with `to_json`, `to_csv` or
/// `to_markdown`. Rows are sorted.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    pub from: Timestamp,
    pub to: Timestamp,
    pub as_of: Timestamp,
    pub k: u64,
    pub epsilon: Option<Epsilon>,
    pub requests: Vec<PublishedRequests>,
    pub grants_ended: Vec<PublishedEndings>,
    pub transfers: Vec<PublishedTransfers>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedRequests {
    pub cell: RequestCell,
    pub count: Cell,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedEndings {
    pub cause: String,
    pub count: Cell,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedTransfers {
    pub cell: TransferCell,
    pub complete: Cell,
    pub incomplete: Cell,
    pub plaintext_bytes: Cell,
}
