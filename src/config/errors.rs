//! What can be wrong with a configuration file: one keyed problem
//! ([`ConfigError`]), all of them ([`ConfigErrors`]), the outcome of a check
//! ([`Checked`]), and the collector the validator pushes them into.

use std::fmt;
use std::path::PathBuf;

use super::Config;

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// The dotted key, e.g. `timeouts.idle` or `trust.FI.ca`; empty for the whole file.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.problem)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.file.display(),
                self.key,
                self.problem
            )
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, err) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{err}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// What validating a file found: every problem, and a configuration whenever
/// the file had enough in it to build one. Where a value was bad its default
/// stands in, so the configuration is only fit for checking the files it
/// names (`xborder config check`), never for serving: [`Config::load`] and
/// [`Config::parse`] refuse it whenever `errors` is not empty.
#[derive(Debug)]
pub struct Checked {
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
}

impl Checked {
    pub(super) fn into_result(self) -> Result<Config, ConfigErrors> {
        match self.config {
            Some(config) if self.errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(self.errors)),
        }
    }
}

/// The problems found so far in one file.
pub(super) struct Errors {
    pub(super) file: PathBuf,
    pub(super) list: Vec<ConfigError>,
}

impl Errors {
    pub(super) fn push(&mut self, key: impl Into<String>, problem: impl fmt::Display) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            problem: problem.to_string(),
        });
    }
}
