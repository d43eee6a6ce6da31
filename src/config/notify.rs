//! `[notify]`: where data-subject notices go and how failed deliveries are
//! retried (see `crate::notify`).

use std::time::Duration;

use super::{Validator, raw};
use crate::notify::NotifySettings;

impl Validator<'_> {
    pub(super) fn notify(&mut self, raw: Option<raw::Notify>) -> Option<NotifySettings> {
        let defaults = NotifySettings::default();
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let mut duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Some(default),
            Some(text) => self.duration(&format!("notify.{key}"), &text),
        };
        let timeout = duration("timeout", raw.timeout, defaults.timeout);
        let retry_min = duration("retry_min", raw.retry_min, defaults.retry_min);
        let retry_max = duration("retry_max", raw.retry_max, defaults.retry_max);
        if let (Some(min), Some(max)) = (retry_min, retry_max)
            && min > max
        {
            self.errors.push(
                "notify.retry_max",
                format!(
                    "{} is shorter than `notify.retry_min` ({})",
                    humantime::format_duration(max),
                    humantime::format_duration(min)
                ),
            );
        }
        let webhook = match raw.webhook {
            None => None,
            Some(text) => Some(self.webhook(&text)?),
        };
        Some(NotifySettings {
            webhook,
            timeout: timeout?,
            retry_min: retry_min?,
            retry_max: retry_max?,
        })
    }

    fn webhook(&mut self, text: &str) -> Option<http::Uri> {
        let key = "notify.webhook";
        let uri = match text.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => {
                self.errors.push(key, format!("`{text}` is not a URL: {e}"));
                return None;
            }
        };
        let problem = match (uri.scheme_str(), uri.authority()) {
            (Some("https"), _) => Some(
                "https is not supported: the receiver is the data holder's own notification \
                 service; reach it with http:// on loopback or a private network (or through a \
                 local proxy that originates TLS)"
                    .to_owned(),
            ),
            (Some("http"), Some(authority)) if authority.as_str().contains('@') => Some(
                "credentials do not belong in the URL (secrets are never written inline in the \
                 configuration)"
                    .to_owned(),
            ),
            (Some("http"), Some(authority)) if !authority.host().is_empty() => None,
            _ => Some(format!("`{text}` is not an http:// URL with a host")),
        };
        match problem {
            Some(problem) => {
                self.errors.push(key, problem);
                None
            }
            None => Some(uri),
        }
    }
}
