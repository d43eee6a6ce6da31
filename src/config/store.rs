//! `[store]`: where requests, grants and the audit log live — the embedded
//! SQLite file under `data_dir` (the default), or a PostgreSQL database
//! shared by replicas (see `crate::store::postgres`).

use std::time::Duration;

use super::{Validator, raw};
use crate::store::postgres::PostgresSettings;

/// The store a gateway opens.
#[derive(Clone, Debug, Default)]
pub enum StoreSettings {
    /// One SQLite file under `data_dir`.
    #[default]
    Sqlite,
    /// A PostgreSQL database, shared by every replica that names it.
    Postgres(Box<PostgresSettings>),
}

const DEFAULT_POOL_SIZE: usize = 16;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Validator<'_> {
    pub(super) fn store(&mut self, raw: Option<raw::Store>) -> Option<StoreSettings> {
        let Some(raw) = raw else {
            return Some(StoreSettings::Sqlite);
        };
        match raw.backend.as_deref().unwrap_or("sqlite") {
            "sqlite" => {
                for (key, set) in [
                    ("url", raw.url.is_some()),
                    ("url_file", raw.url_file.is_some()),
                    ("pool_size", raw.pool_size.is_some()),
                    ("connect_timeout", raw.connect_timeout.is_some()),
                ] {
                    if set {
                        self.errors.push(
                            format!("store.{key}"),
                            "only for `store.backend = \"postgres\"` (the SQLite store lives in `data_dir`)",
                        );
                    }
                }
                Some(StoreSettings::Sqlite)
            }
            "postgres" => self
                .postgres(raw)
                .map(|pg| StoreSettings::Postgres(Box::new(pg))),
            other => {
                self.errors.push(
                    "store.backend",
                    format!("`{other}` is not a store (sqlite, postgres)"),
                );
                None
            }
        }
    }

    fn postgres(&mut self, raw: raw::Store) -> Option<PostgresSettings> {
        let pool_size = match raw.pool_size {
            None => Some(DEFAULT_POOL_SIZE),
            Some(n @ 1..=1000) => usize::try_from(n).ok(),
            Some(n) => {
                self.errors
                    .push("store.pool_size", format!("{n} is not between 1 and 1000"));
                None
            }
        };
        let connect_timeout = match raw.connect_timeout {
            None => Some(DEFAULT_CONNECT_TIMEOUT),
            Some(text) => self.duration("store.connect_timeout", &text),
        };
        let connection = match (raw.url, raw.url_file) {
            (Some(_), Some(_)) => {
                self.errors.push(
                    "store.url_file",
                    "give `store.url` or `store.url_file`, not both",
                );
                None
            }
            (None, None) => {
                self.errors.push(
                    "store.url_file",
                    "the postgres store needs `store.url_file` (a file holding the connection string) or `store.url`",
                );
                None
            }
            (Some(url), None) => match url.parse::<tokio_postgres::Config>() {
                Ok(config) if config.get_password().is_some() => {
                    self.errors.push(
                        "store.url",
                        "holds a password: secrets are never written inline; put the connection string in a file and name it in `store.url_file`",
                    );
                    None
                }
                // The parser's message never quotes the string it refused.
                Ok(config) => Some(config),
                Err(e) => {
                    self.errors.push(
                        "store.url",
                        format!("not a PostgreSQL connection string: {e}"),
                    );
                    None
                }
            },
            (None, Some(file)) => {
                let path = self.path(&file);
                match std::fs::read_to_string(&path) {
                    Ok(text) => match text.trim().parse::<tokio_postgres::Config>() {
                        Ok(config) => Some(config),
                        Err(e) => {
                            self.errors.push(
                                "store.url_file",
                                format!(
                                    "{} does not hold a PostgreSQL connection string: {e}",
                                    path.display()
                                ),
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.errors.push(
                            "store.url_file",
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                }
            }
        };
        Some(PostgresSettings {
            connection: connection?,
            pool_size: pool_size?,
            connect_timeout: connect_timeout?,
        })
    }
}
