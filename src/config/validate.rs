//! The walk from the file as written (`raw::Config`) to a [`Config`]: the
//! `Validator` that collects every problem, its helpers for typed values and
//! paths, and the checks that span sections. Each section's own checks are
//! an `impl Validator` block in that section's file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, Errors, raw};
use crate::clock::parse_duration;
use crate::identity::Jurisdiction;

/// How often certificate, key and CRL files are checked unless `reload.interval` says.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Turns the raw file into typed values, collecting every error.
pub(super) struct Validator<'a> {
    pub(super) base: &'a Path,
    pub(super) errors: &'a mut Errors,
}

impl Validator<'_> {
    pub(super) fn config(&mut self, raw: raw::Config) -> Option<Config> {
        let jurisdiction = self.parse::<Jurisdiction>("jurisdiction", &raw.jurisdiction);
        let listeners = self.listeners(raw.listeners);
        let identity = self.identity(&raw.identity);
        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default());
        let reload_interval = raw
            .reload
            .and_then(|r| r.interval)
            .map_or(Some(DEFAULT_RELOAD_INTERVAL), |s| {
                self.duration("reload.interval", &s)
            });
        let trust = self.trust(raw.trust);
        let admins = self.admins(raw.admin.unwrap_or_default(), jurisdiction.as_ref(), &trust);
        let routes = self.routes(raw.routes);
        let own_domain = jurisdiction
            .as_ref()
            .and_then(|j| trust.get(j))
            .map(|a| a.trust_domain.clone());
        let tokens = self.tokens(raw.tokens, own_domain.as_ref(), jurisdiction.is_some());
        let audit = self.audit(raw.audit, own_domain.as_ref(), jurisdiction.is_some());
        let reports = self.reports(raw.reports);
        let notify = self.notify(raw.notify);
        let store = self.store(raw.store);
        let policies = self.policies(raw.policy);
        let peers = self.peers(raw.peers);
        if listeners.as_ref().is_some_and(|l| l.local.is_some())
            && raw.identity.client_certificate.is_none()
        {
            self.errors.push(
                "identity.client_certificate",
                "the local listener calls foreign gateways: it needs our client certificate",
            );
        }

        if let Some(j) = &jurisdiction
            && listeners.as_ref().is_some_and(|l| l.admin.is_some())
            && !trust.contains_key(j)
        {
            self.errors.push(
                format!("trust.{j}"),
                "the admin listener needs a trust anchor for our own jurisdiction",
            );
        }
        // A bad value has been reported by now; where it has a default, the
        // default stands in, so that the files the rest names can still be
        // checked (see `Checked`). Without a jurisdiction, a border address or
        // the token and audit tables there is nothing to check them against.
        Some(Config {
            file: PathBuf::new(),
            jurisdiction: jurisdiction?,
            data_dir: self.path(&raw.data_dir),
            listeners: listeners?,
            identity,
            timeouts: timeouts.unwrap_or_default(),
            reload_interval: reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL),
            trust,
            admins,
            routes,
            tokens: tokens?,
            audit: audit?,
            reports,
            notify: notify.unwrap_or_default(),
            store: store.unwrap_or_default(),
            policies,
            peers,
        })
    }

    pub(super) fn parse<T>(&mut self, key: &str, value: &str) -> Option<T>
    where
        T: std::str::FromStr,
        T::Err: fmt::Display,
    {
        value
            .parse()
            .map_err(|e| self.errors.push(key, format!("{e}")))
            .ok()
    }

    pub(super) fn path(&self, value: &str) -> PathBuf {
        self.base.join(value)
    }

    pub(super) fn duration(&mut self, key: &str, value: &str) -> Option<Duration> {
        parse_duration(value)
            .map_err(|e| self.errors.push(key, e))
            .ok()
    }
}
