//! Data categories of the EU e-Evidence Regulation, open to deployment-specific ones.

use std::fmt;
use std::str::FromStr;

/// A data category: `subscriber`, `ip_identification`, `traffic`, `content`,
/// or a deployment's own (lower-case letters, digits and `_`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Category(String);

impl Category {
    /// The categories the e-Evidence Regulation names.
    pub const STANDARD: [&'static str; 4] =
        ["subscriber", "ip_identification", "traffic", "content"];

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Category {
    type Err = CategoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(CategoryError(s.to_owned()))
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a data category (lower-case letters, digits and `_`, e.g. subscriber)")]
pub struct CategoryError(String);
serde_as_string!(Category);
