//! A `[policy.<HOLDER>.<REQUESTER>]` table as written, and its typing into
//! a [`PairPolicy`] with every bad key reported.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{EmergencyApproval, PairPolicy};
use crate::category::Category;
use crate::identity::Jurisdiction;

impl PairPolicy {
    /// Types a `[policy.<HOLDER>.<REQUESTER>]` table, reporting each bad key
    /// (relative to the table) through `error`.
    pub(crate) fn from_raw(
        holder: Jurisdiction,
        requester: Jurisdiction,
        raw: RawPairPolicy,
        error: &mut dyn FnMut(String, String),
    ) -> Option<Self> {
        let mut ok = true;
        let mut duration = |key: &str, value: Option<&str>, default: Duration| match value {
            None => default,
            Some(text) => crate::clock::parse_duration(text).unwrap_or_else(|e| {
                error(key.to_owned(), e);
                ok = false;
                default
            }),
        };
        const DAY: u64 = 86_400;
        let max_period = duration("max_period", Some(&raw.max_period), Duration::ZERO);
        let max_lifetime = duration("max_lifetime", Some(&raw.max_lifetime), Duration::ZERO);
        let max_lifetime_emergency = duration(
            "max_lifetime_emergency",
            raw.max_lifetime_emergency.as_deref(),
            max_lifetime,
        );
        let response_deadline = duration(
            "response_deadline",
            raw.response_deadline.as_deref(),
            Duration::from_secs(10 * DAY),
        );
        let response_deadline_emergency = duration(
            "response_deadline_emergency",
            raw.response_deadline_emergency.as_deref(),
            Duration::from_secs(8 * 3600),
        );
        let notification_deferral_max = duration(
            "notification_deferral_max",
            raw.notification_deferral_max.as_deref(),
            Duration::from_secs(90 * DAY),
        );
        let emergency_validation = duration(
            "emergency_validation",
            raw.emergency_validation.as_deref(),
            Duration::from_secs(48 * 3600),
        );

        let mut categories = |key: &str, list: &[String]| -> Vec<Category> {
            list.iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    c.parse()
                        .map_err(|e: crate::category::CategoryError| {
                            error(format!("{key}[{i}]"), e.to_string());
                            ok = false;
                        })
                        .ok()
                })
                .collect()
        };
        let allowed = categories("categories", &raw.categories);
        let forbidden = categories("forbidden_categories", &raw.forbidden_categories);
        let mut approvals = BTreeMap::new();
        for (c, n) in &raw.approvals {
            match c.parse::<Category>() {
                Ok(_) if *n == 0 => {
                    error(format!("approvals.{c}"), "at least 1 approver".to_owned());
                    ok = false;
                }
                Ok(category) => {
                    approvals.insert(category, *n);
                }
                Err(e) => {
                    error(format!("approvals.{c}"), e.to_string());
                    ok = false;
                }
            }
        }
        if let Some(both) = allowed.iter().find(|c| forbidden.contains(c)) {
            error(
                "forbidden_categories".into(),
                format!("`{both}` is also in `categories`"),
            );
            ok = false;
        }
        if raw.legal_bases.is_empty() {
            error(
                "legal_bases".into(),
                "no legal basis accepted: list at least one".into(),
            );
            ok = false;
        }
        if raw.max_targets == 0 {
            error("max_targets".into(), "must be at least 1".into());
            ok = false;
        }
        let emergency = match raw.emergency.as_deref() {
            None | Some("one_then_validate") => EmergencyApproval::OneThenValidate,
            Some("as_normal") => EmergencyApproval::AsNormal,
            Some(other) => {
                error(
                    "emergency".into(),
                    format!(
                        "`{other}` is not an emergency approval mode (one_then_validate, as_normal)"
                    ),
                );
                ok = false;
                EmergencyApproval::OneThenValidate
            }
        };
        let rate = match raw.rate {
            None => crate::ratelimit::Limits::default(),
            Some(r) => {
                let d = crate::ratelimit::Limits::default();
                let nz = |key: &str,
                          v: Option<u32>,
                          default: std::num::NonZeroU32,
                          error: &mut dyn FnMut(String, String)| {
                    match v.map(std::num::NonZeroU32::new) {
                        None => Some(default),
                        Some(Some(n)) => Some(n),
                        Some(None) => {
                            error(format!("rate.{key}"), "must be at least 1".into());
                            None
                        }
                    }
                };
                let parts = (
                    nz(
                        "requests_per_second",
                        r.requests_per_second,
                        d.requests_per_second,
                        error,
                    ),
                    nz("request_burst", r.request_burst, d.request_burst, error),
                    nz(
                        "bytes_per_second",
                        r.bytes_per_second,
                        d.bytes_per_second,
                        error,
                    ),
                    nz("byte_burst", r.byte_burst, d.byte_burst, error),
                );
                match parts {
                    (Some(a), Some(b), Some(c), Some(e)) => {
                        crate::ratelimit::Limits::new(a, b, c, e).unwrap_or_else(|problem| {
                            error("rate.byte_burst".into(), problem);
                            ok = false;
                            d
                        })
                    }
                    _ => {
                        ok = false;
                        d
                    }
                }
            }
        };
        ok.then_some(Self {
            holder,
            requester,
            legal_bases: raw.legal_bases,
            categories: allowed,
            forbidden_categories: forbidden,
            max_targets: raw.max_targets,
            max_period,
            max_lifetime,
            max_lifetime_emergency,
            approvals,
            response_deadline,
            response_deadline_emergency,
            notification_deferral_max,
            emergency,
            emergency_validation,
            rate,
        })
    }
}

/// The `[policy.<HOLDER>.<REQUESTER>]` table as written in the config file.
#[derive(Deserialize)]
pub(crate) struct RawPairPolicy {
    pub legal_bases: Vec<String>,
    pub categories: Vec<String>,
    #[serde(default)]
    pub forbidden_categories: Vec<String>,
    pub max_targets: usize,
    pub max_period: String,
    pub max_lifetime: String,
    pub max_lifetime_emergency: Option<String>,
    #[serde(default)]
    pub approvals: BTreeMap<String, u32>,
    pub response_deadline: Option<String>,
    pub response_deadline_emergency: Option<String>,
    pub notification_deferral_max: Option<String>,
    pub emergency: Option<String>,
    pub emergency_validation: Option<String>,
    pub rate: Option<RawRate>,
}

/// `[policy.<HOLDER>.<REQUESTER>.rate]`: per peer and per grant.
#[derive(Deserialize)]
pub(crate) struct RawRate {
    pub requests_per_second: Option<u32>,
    pub request_burst: Option<u32>,
    /// Bytes per second, e.g. 67108864.
    pub bytes_per_second: Option<u32>,
    pub byte_burst: Option<u32>,
}
