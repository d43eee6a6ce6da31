//! Policy per jurisdiction pair (holder → requester), and its findings.
//!
//! A request is evaluated rule by rule; each rule gives a [`Finding`] with a
//! verdict: `pass`, `fail` (a hard rule: the request is refused at filing,
//! with every failing finding listed) or `needs_review` (a point reviewers
//! must weigh). A pair with no policy is refused: deny by default.
//!
//! Defaults follow the EU e-Evidence Regulation (2023/1543): a response is
//! due within 10 days, 8 hours in an emergency; an emergency grant given by
//! one approver must be validated by a second within 48 hours.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::category::Category;
use crate::clock::Timestamp;
use crate::identity::Jurisdiction;
use crate::request::{Scope, Urgency};

pub use crate::request::{Finding, Verdict};

/// How an emergency request may be approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyApproval {
    /// As many approvers as a normal request.
    AsNormal,
    /// One approver grants at once; a second distinct approver must validate
    /// within `emergency_validation`, else the grant is revoked.
    OneThenValidate,
}

/// The rules for one pair: data held in `holder`, requested from `requester`.
#[derive(Clone, Debug, Serialize)]
pub struct PairPolicy {
    pub holder: Jurisdiction,
    pub requester: Jurisdiction,
    pub legal_bases: Vec<String>,
    pub categories: Vec<Category>,
    /// Categories that may never leave the holder's jurisdiction (data localisation).
    pub forbidden_categories: Vec<Category>,
    pub max_targets: usize,
    #[serde(with = "secs")]
    pub max_period: Duration,
    #[serde(with = "secs")]
    pub max_lifetime: Duration,
    #[serde(with = "secs")]
    pub max_lifetime_emergency: Duration,
    /// Distinct approvers needed per category; 1 where not listed.
    pub approvals: BTreeMap<Category, u32>,
    #[serde(with = "secs")]
    pub response_deadline: Duration,
    #[serde(with = "secs")]
    pub response_deadline_emergency: Duration,
    #[serde(with = "secs")]
    pub notification_deferral_max: Duration,
    pub emergency: EmergencyApproval,
    #[serde(with = "secs")]
    pub emergency_validation: Duration,
    /// Rate limits on transfers for this pair. Operational, not a legal rule:
    /// left out of the policy's hash.
    #[serde(skip)]
    pub rate: crate::ratelimit::Limits,
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

/// What evaluating a request against policy decided.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub findings: Vec<Finding>,
    /// SHA-256 (hex) of the policy that decided; empty when no policy applied.
    pub policy_hash: String,
    /// When a response is due.
    pub deadline: Timestamp,
    /// Distinct approvers needed for a grant.
    pub approvals_required: u32,
    /// Approvers needed before a grant exists (1 for a validated emergency).
    pub approvals_to_grant: u32,
    pub max_lifetime: Duration,
    /// How long an emergency grant may go unvalidated.
    pub validation_window: Option<Duration>,
    /// The longest data-subject notification may be deferred after the
    /// grant is issued (the pair's `notification_deferral_max`).
    pub notification_deferral_max: Duration,
}

impl Evaluation {
    /// Whether a hard rule failed: the request is refused at filing.
    pub fn refused(&self) -> bool {
        self.findings.iter().any(|f| f.verdict == Verdict::Fail)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.verdict == Verdict::Fail)
    }
}

/// Every configured pair policy, each with its hash computed once.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    pairs: BTreeMap<(Jurisdiction, Jurisdiction), (PairPolicy, String)>,
}

impl Policies {
    pub fn new(pairs: impl IntoIterator<Item = PairPolicy>) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|p| {
                    let hash = p.hash();
                    ((p.holder.clone(), p.requester.clone()), (p, hash))
                })
                .collect(),
        }
    }

    pub fn pair(&self, holder: &Jurisdiction, requester: &Jurisdiction) -> Option<&PairPolicy> {
        self.pairs
            .get(&(holder.clone(), requester.clone()))
            .map(|(policy, _)| policy)
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn pairs(&self) -> impl Iterator<Item = &PairPolicy> {
        self.pairs.values().map(|(policy, _)| policy)
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Each pair as `holder>requester`, with its policy's hash.
    pub fn hashes(&self) -> std::collections::BTreeMap<String, String> {
        self.pairs
            .iter()
            .map(|((holder, requester), (_, hash))| (format!("{holder}>{requester}"), hash.clone()))
            .collect()
    }

    /// Evaluates `scope` filed at `now` for data of `holder` by `requester`.
    pub fn evaluate(
        &self,
        holder: &Jurisdiction,
        requester: &Jurisdiction,
        scope: &Scope,
        now: Timestamp,
    ) -> Evaluation {
        match self.pairs.get(&(holder.clone(), requester.clone())) {
            Some((policy, hash)) => Evaluation {
                policy_hash: hash.clone(),
                ..policy.evaluate(scope, now)
            },
            None => Evaluation {
                findings: vec![Finding::new(
                    "pair_policy",
                    Verdict::Fail,
                    format!(
                        "no policy allows {holder} data to go to {requester}: denied by default"
                    ),
                )],
                policy_hash: String::new(),
                deadline: now,
                approvals_required: 1,
                approvals_to_grant: 1,
                max_lifetime: Duration::ZERO,
                validation_window: None,
                notification_deferral_max: Duration::ZERO,
            },
        }
    }
}

impl PairPolicy {
    /// The policy's fingerprint, recorded with every decision it made.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// The findings of this policy on `scope`. The evaluation's
    /// `policy_hash` is left empty: [`Policies`] fills it from its cache.
    pub fn evaluate(&self, scope: &Scope, now: Timestamp) -> Evaluation {
        use Verdict::*;
        let pair = format!("{} → {}", self.holder, self.requester);
        let mut findings = vec![Finding::new(
            "pair_policy",
            Pass,
            format!("a policy covers {pair}"),
        )];

        findings.push(
            if self.legal_bases.iter().any(|b| b == &scope.legal_basis) {
                Finding::new(
                    "legal_basis",
                    Pass,
                    format!("`{}` is an accepted legal basis", scope.legal_basis),
                )
            } else {
                Finding::new(
                    "legal_basis",
                    Fail,
                    format!(
                        "`{}` is not an accepted legal basis for {pair} (accepted: {})",
                        scope.legal_basis,
                        self.legal_bases.join(", ")
                    ),
                )
            },
        );

        for category in &scope.categories {
            let rule = format!("category.{category}");
            findings.push(if self.forbidden_categories.contains(category) {
                Finding::new(
                    rule,
                    Fail,
                    format!(
                        "`{category}` data may not leave {} (data localisation)",
                        self.holder
                    ),
                )
            } else if !self.categories.contains(category) {
                Finding::new(
                    rule,
                    Fail,
                    format!("`{category}` is not a category {pair} allows"),
                )
            } else {
                Finding::new(rule, Pass, format!("`{category}` is allowed"))
            });
        }

        let n = scope.targets.len();
        findings.push(if n > self.max_targets {
            Finding::new(
                "targets",
                Fail,
                format!("{n} targets; at most {} per request", self.max_targets),
            )
        } else {
            Finding::new(
                "targets",
                Pass,
                format!("{n} target(s), within {}", self.max_targets),
            )
        });

        let length = scope.period.from.until(scope.period.to);
        findings.push(if length > self.max_period {
            Finding::new(
                "period",
                Fail,
                format!(
                    "the period spans {}; at most {}",
                    days(length),
                    days(self.max_period)
                ),
            )
        } else {
            Finding::new(
                "period",
                Pass,
                format!(
                    "the period spans {}, within {}",
                    days(length),
                    days(self.max_period)
                ),
            )
        });

        let approvals_required = scope
            .categories
            .iter()
            .map(|c| self.approvals.get(c).copied().unwrap_or(1))
            .max()
            .unwrap_or(1)
            .max(1);
        if approvals_required > 1 {
            let strict: Vec<_> = scope
                .categories
                .iter()
                .filter(|c| self.approvals.get(*c).copied().unwrap_or(1) > 1)
                .map(|c| format!("`{c}`"))
                .collect();
            findings.push(Finding::new(
                "approvals",
                NeedsReview,
                format!(
                    "{} need(s) {approvals_required} distinct approvers",
                    strict.join(", ")
                ),
            ));
        }

        let emergency = scope.urgency == Urgency::Emergency;
        let (deadline, max_lifetime) = if emergency {
            (
                self.response_deadline_emergency,
                self.max_lifetime_emergency,
            )
        } else {
            (self.response_deadline, self.max_lifetime)
        };
        let one_then_validate = emergency
            && self.emergency == EmergencyApproval::OneThenValidate
            && approvals_required > 1;
        if emergency {
            let how = if one_then_validate {
                format!(
                    "one approver may grant at once; a second must validate within {} or the grant is revoked",
                    hours(self.emergency_validation)
                )
            } else {
                format!("{approvals_required} approver(s), as for a normal request")
            };
            findings.push(Finding::new(
                "emergency",
                NeedsReview,
                format!(
                    "emergency request: response due within {}; {how}",
                    hours(deadline)
                ),
            ));
        }

        Evaluation {
            findings,
            policy_hash: String::new(),
            deadline: now.saturating_add(deadline),
            approvals_required,
            approvals_to_grant: if one_then_validate {
                1
            } else {
                approvals_required
            },
            max_lifetime,
            validation_window: one_then_validate.then_some(self.emergency_validation),
            notification_deferral_max: self.notification_deferral_max,
        }
    }
}

fn days(d: Duration) -> String {
    let days = d.as_secs_f64() / 86_400.0;
    if days >= 1.0 {
        format!("{days:.0} day(s)")
    } else {
        hours(d)
    }
}

fn hours(d: Duration) -> String {
    let h = d.as_secs() / 3600;
    if h > 0 && d.as_secs().is_multiple_of(3600) {
        format!("{h} hour(s)")
    } else {
        humantime::format_duration(d).to_string()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<12} {:<24} {}",
            self.verdict.as_str().to_uppercase(),
            self.rule,
            self.reason
        )
    }
}

mod raw;

pub(crate) use raw::RawPairPolicy;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
