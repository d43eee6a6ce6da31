//! Exact counts made publishable: noise (optional), then suppression.

use std::collections::BTreeSet;

use rand::Rng;

use super::noise::{Epsilon, noisy_count};
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
    /// Discrete Laplace noise of scale 1/ε on every count; `None`: exact counts.
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
            Some(epsilon) => noisy_count(exact, epsilon, rng),
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
