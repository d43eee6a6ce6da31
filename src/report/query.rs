//! The admin API's report query, and the answer the admin listener sends.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::{Epsilon, Publication, Published, Transparency};
use crate::audit::entry::Entry;
use crate::clock::Timestamp;
use crate::request::FieldError;

/// Where the admin listener serves reports: `GET` with a [`ReportQuery`].
pub const ADMIN_PATH: &str = "/v1/reports/transparency";

/// A rendering of a [`Published`] report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Markdown,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Csv => "csv",
            Self::Markdown => "markdown",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8; header=present",
            Self::Markdown => "text/markdown; charset=utf-8",
        }
    }

    pub fn render(self, report: &Published) -> String {
        match self {
            Self::Json => report.to_json(),
            Self::Csv => report.to_csv(),
            Self::Markdown => report.to_markdown(),
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            "markdown" | "md" => Ok(Self::Markdown),
            other => Err(format!("`{other}` is not a format (json, csv, markdown)")),
        }
    }
}

/// The admin API's query: `from` and `to` (RFC 3339, required), `format`
/// (default json), `k` and `epsilon` (default: the deployment's).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportQuery {
    pub from: Timestamp,
    pub to: Timestamp,
    pub format: Format,
    pub k: Option<u64>,
    pub epsilon: Option<Epsilon>,
}

/// Every problem with a [`ReportQuery`], one per parameter; the admin
/// listener answers them as field errors under the code
/// `epsilon_out_of_range` when `epsilon` was outside its range, else
/// `invalid_request`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| format!("{}: {}", e.field, e.problem)).collect::<Vec<_>>().join("; "))]
pub struct ReportQueryError(pub Vec<FieldError>, EpsilonRange);

/// Whether a query's `epsilon` was outside [`Epsilon::MIN`]..=[`Epsilon::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum EpsilonRange {
    #[default]
    Within,
    Outside,
}

impl ReportQueryError {
    /// `epsilon` was given, and is not a number within the documented range.
    pub fn epsilon_out_of_range(&self) -> bool {
        self.1 == EpsilonRange::Outside
    }
}

impl ReportQuery {
    /// Parses a URL query string (without the `?`). Values may be
    /// percent-encoded; `+` is kept as `+` (a UTC offset, not a space).
    pub fn parse(query: &str) -> Result<Self, ReportQueryError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, problem: String| {
            errors.push(FieldError {
                field: field.to_owned(),
                problem,
            });
        };
        let mut values: BTreeMap<&str, String> = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = ["from", "to", "format", "k", "epsilon"]
                .into_iter()
                .find(|known| *known == name)
            else {
                bad(
                    &percent_decode(name).unwrap_or_else(|| name.to_owned()),
                    "unknown parameter (known: from, to, format, k, epsilon)".to_owned(),
                );
                continue;
            };
            let Some(value) = percent_decode(raw) else {
                bad(name, "is not valid percent-encoded UTF-8".to_owned());
                continue;
            };
            if values.contains_key(name) {
                bad(name, "is given more than once".to_owned());
            } else {
                values.insert(name, value);
            }
        }
        let mut time = |name: &str| match values.get(name) {
            None => {
                bad(
                    name,
                    "is required (RFC 3339, e.g. 2026-01-01T00:00:00Z)".to_owned(),
                );
                None
            }
            Some(text) => Timestamp::parse(text)
                .map_err(|_| bad(name, format!("`{text}` is not an RFC 3339 time")))
                .ok(),
        };
        let from = time("from");
        let to = time("to");
        let format = match values.get("format") {
            None => Some(Format::Json),
            Some(text) => text.parse().map_err(|e| bad("format", e)).ok(),
        };
        let k = match values.get("k") {
            None => Some(None),
            Some(text) => text
                .parse::<u64>()
                .map(Some)
                .map_err(|_| bad("k", format!("`{text}` is not a whole number")))
                .ok(),
        };
        let mut range = EpsilonRange::Within;
        let epsilon = match values.get("epsilon") {
            None => Some(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e| {
                    range = EpsilonRange::Outside;
                    bad("epsilon", e)
                })
                .ok(),
        };
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            bad(
                "to",
                format!("the period is empty: `to` ({to}) is not after `from` ({from})"),
            );
        }
        match (from, to, format, k, epsilon) {
            (Some(from), Some(to), Some(format), Some(k), Some(epsilon)) if errors.is_empty() => {
                Ok(Self {
                    from,
                    to,
                    format,
                    k,
                    epsilon,
                })
            }
            _ => Err(ReportQueryError(errors, range)),
        }
    }

    /// The query string that [`Self::parse`] reads back as `self`.
    pub fn to_query_string(&self) -> String {
        let mut query = format!(
            "from={}&to={}&format={}",
            percent_encode(&self.from.to_string()),
            percent_encode(&self.to.to_string()),
            self.format.as_str()
        );
        if let Some(k) = self.k {
            query.push_str(&format!("&k={k}"));
        }
        if let Some(epsilon) = self.epsilon {
            query.push_str(&format!("&epsilon={epsilon}"));
        }
        query
    }

    /// The deployment's defaults where the query is silent.
    pub fn publication(&self, defaults: &Publication) -> Publication {
        Publication {
            k: self.k.unwrap_or(defaults.k),
            epsilon: self.epsilon.or(defaults.epsilon),
        }
    }
}

/// The admin listener's report: `(content type, body)`. Noise, if any, is
/// drawn from the thread's CSPRNG. Refuses a period that starts after `now`.
pub fn render(
    entries: Vec<Entry>,
    query: &ReportQuery,
    now: Timestamp,
    defaults: &Publication,
) -> Result<(&'static str, String), ReportQueryError> {
    if query.from > now {
        return Err(ReportQueryError(
            vec![FieldError {
                field: "from".to_owned(),
                problem: format!("the period starts after now ({now})"),
            }],
            EpsilonRange::Within,
        ));
    }
    let report = Transparency::from_entries(entries, query.from, query.to, now)
        .publish(&query.publication(defaults), &mut rand::thread_rng());
    Ok((query.format.content_type(), query.format.render(&report)))
}

/// `%XX` decoding; `None` on a bad escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
