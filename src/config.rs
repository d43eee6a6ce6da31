//! The gateway's configuration: one TOML file, parsed into typed values.
//!
//! Loading checks the structure of the file (unknown keys, durations,
//! addresses, identities, routes) and reports every problem at once, each
//! naming the file and the key. Files the configuration points to
//! (certificates, keys, CRLs) are read and checked by [`crate::tls`]; `xborder
//! config check` and `xborder serve` run both before any port is bound.
//! Relative paths are resolved against the directory of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identity::Role;
use crate::identity::{Jurisdiction, SpiffeId};
use crate::policy::Policies;
pub use crate::transfer::Route;

/// A validated gateway configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this was loaded from.
    pub file: PathBuf,
    /// Our own jurisdiction: the data holder's side of the border.
    pub jurisdiction: Jurisdiction,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    pub listeners: Listeners,
    pub identity: IdentityFiles,
    pub timeouts: Timeouts,
    /// How often certificate, key and CRL files are checked for changes.
    pub reload_interval: Duration,
    /// Trust anchors by jurisdiction.
    pub trust: BTreeMap<Jurisdiction, TrustAnchor>,
    /// Identities allowed on the admin listener, with their roles.
    pub admins: BTreeMap<SpiffeId, Vec<Role>>,
    pub routes: Vec<Route>,
    /// Grant token keys and claims.
    pub tokens: TokenFiles,
    /// The audit log's keys and origin.
    pub audit: AuditFiles,
    /// How transparency reports are published.
    pub reports: ReportSettings,
    /// Where and how data-subject notices are delivered.
    pub notify: NotifySettings,
    /// Which store holds the gateway's state: SQLite (default) or PostgreSQL.
    pub store: StoreSettings,
    /// Policy per jurisdiction pair.
    pub policies: Policies,
    /// Foreign gateways the `local` listener relays to, by jurisdiction.
    pub peers: BTreeMap<Jurisdiction, Peer>,
}

impl Config {
    /// Reads and validates `file`, reporting every problem found.
    pub fn load(file: &Path) -> Result<Self, ConfigErrors> {
        Self::check(file).into_result()
    }

    /// Reads and validates `file`; every problem, and the configuration as far
    /// as it could be built (see [`Checked`]).
    pub fn check(file: &Path) -> Checked {
        match std::fs::read_to_string(file) {
            Ok(text) => Self::check_text(file, &text),
            Err(e) => Checked {
                config: None,
                errors: vec![ConfigError {
                    file: file.to_owned(),
                    key: String::new(),
                    problem: format!("cannot read: {e}"),
                }],
            },
        }
    }

    /// Validates `text` as if read from `file` (which anchors relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigErrors> {
        Self::check_text(file, text).into_result()
    }

    /// [`Self::parse`], keeping the configuration as far as it could be built.
    pub fn check_text(file: &Path, text: &str) -> Checked {
        let mut errors = Errors {
            file: file.to_owned(),
            list: Vec::new(),
        };
        let mut unknown = Vec::new();
        let raw: Result<raw::Config, _> = toml::de::Deserializer::parse(text).and_then(|de| {
            // serde_ignored writes an optional table as `table.?.key`;
            // the file says `table.key`.
            serde_ignored::deserialize(de, |path| unknown.push(path.to_string().replace(".?", "")))
        });
        for key in unknown {
            errors.push(key, "unknown key");
        }
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                errors.push("", e.to_string().trim_end());
                return Checked {
                    config: None,
                    errors: errors.list,
                };
            }
        };
        let base = file.parent().unwrap_or(Path::new("."));
        let config = Validator {
            base,
            errors: &mut errors,
        }
        .config(raw);
        Checked {
            config: config.map(|config| Config {
                file: file.to_owned(),
                ..config
            }),
            errors: errors.list,
        }
    }

    /// The trust anchor for our own jurisdiction, which the admin listener uses.
    pub fn own_anchor(&self) -> Option<&TrustAnchor> {
        self.trust.get(&self.jurisdiction)
    }

    /// An error about `key` in this file, for checks that run after loading.
    pub fn error(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

mod errors;
mod keys;
mod listeners;
mod notify;
mod peers;
mod policies;
mod raw;
mod reports;
mod routes;
mod store;
mod trust;
mod validate;

pub use crate::notify::NotifySettings;
use errors::Errors;
pub use errors::{Checked, ConfigError, ConfigErrors};
pub use keys::{AuditFiles, IdentityFiles, TokenFiles};
pub use listeners::{Listeners, Timeouts};
pub use peers::Peer;
pub use reports::ReportSettings;
pub use store::StoreSettings;
pub use trust::TrustAnchor;
use validate::Validator;

#[cfg(test)]
mod tests;
