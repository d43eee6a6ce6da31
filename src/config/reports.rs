//! `[reports]`: the defaults of published transparency reports — the
//! k-anonymity threshold and the optional noise (see `crate::report`).

use super::{Validator, raw};
use crate::report::Epsilon;

/// Defaults of published transparency reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReportSettings {
    /// Counts below this (and above zero) are suppressed; 0 or 1: none are.
    pub k_anonymity: u64,
    /// Discrete Laplace noise of scale 1/epsilon on each count, within
    /// [`Epsilon::MIN`]..=[`Epsilon::MAX`]; `None`: no noise.
    pub epsilon: Option<f64>,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            k_anonymity: 5,
            epsilon: None,
        }
    }
}

impl Validator<'_> {
    pub(super) fn reports(&mut self, raw: Option<raw::Reports>) -> ReportSettings {
        let mut settings = ReportSettings::default();
        let Some(raw) = raw else {
            return settings;
        };
        if let Some(k) = raw.k_anonymity {
            settings.k_anonymity = k;
        }
        if let Some(epsilon) = raw.epsilon {
            match Epsilon::new(epsilon) {
                Some(_) => settings.epsilon = Some(epsilon),
                None => self.errors.push(
                    "reports.epsilon",
                    format!(
                        "{} (leave it out for no noise)",
                        crate::report::epsilon_range_problem(&epsilon.to_string())
                    ),
                ),
            }
        }
        settings
    }
}
