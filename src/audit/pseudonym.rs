//! Pseudonyms: subject identifiers and free-text reasons as they appear in
//! the audit log. Targets are keyed hashes under the gateway's pseudonym key
//! (a secret kept in one zeroizing copy), reasons plain hashes, so the log
//! can be published without naming anybody it concerns.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A pseudonym: lowercase hex of HMAC-SHA-256 under the gateway's
/// pseudonym key. The same value always gives the same pseudonym, so an
/// auditor can count and link entries about one subject without learning who
/// it is; without the key nobody can test a guess.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pseudonym(pub String);

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keyed hashing of subject identifiers. The key is at least 32 bytes, read
/// from a file as hex.
///
/// Cloning shares the one key (an `Arc<PseudonymKey>`): the stores and the
/// review service each hold a `Pseudonymiser`, and none of them holds a copy
/// of the key's bytes.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Arc<PseudonymKey>,
}

/// The pseudonym key's bytes: never cloned, never shown by `Debug`, and
/// zeroized when the last [`Pseudonymiser`] holding it is dropped.
struct PseudonymKey(Zeroizing<Vec<u8>>);

impl fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

/// The key file is unreadable or not 32 or more bytes of hex.
#[derive(Debug, thiserror::Error)]
pub enum PseudonymKeyError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the pseudonym key must be hex of at least 32 bytes (64 hex digits)")]
    Malformed { path: String },
}

impl Pseudonymiser {
    pub const MIN_KEY_LEN: usize = 32;

    /// `None` when the key is shorter than [`Self::MIN_KEY_LEN`]. The bytes
    /// are zeroized when dropped, a refused key's at once.
    pub fn new(key: Vec<u8>) -> Option<Self> {
        Self::from_secret(Zeroizing::new(key))
    }

    fn from_secret(key: Zeroizing<Vec<u8>>) -> Option<Self> {
        (key.len() >= Self::MIN_KEY_LEN).then(|| Self {
            key: Arc::new(PseudonymKey(key)),
        })
    }

    /// Reads the key as hex (surrounding white space ignored). The file's
    /// text and the decoded bytes live only in buffers zeroized on drop.
    pub fn from_file(path: &Path) -> Result<Self, PseudonymKeyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| PseudonymKeyError::Read {
                path: shown.clone(),
                source,
            })?;
        let digits = text.trim();
        // Decoded in place into its final buffer: no intermediate `Vec`.
        let mut key = Zeroizing::new(vec![0; digits.len() / 2]);
        hex::decode_to_slice(digits, key.as_mut_slice())
            .ok()
            .and_then(|()| Self::from_secret(key))
            .ok_or(PseudonymKeyError::Malformed { path: shown })
    }

    /// The pseudonym of a subject identifier (a target).
    pub fn target(&self, value: &str) -> Pseudonym {
        // Domain-separated, so a pseudonym of one kind of value can never be
        // mistaken for another's should more kinds be added.
        self.mac(b"xborder-target\0", value.as_bytes())
    }

    fn mac(&self, domain: &[u8], value: &[u8]) -> Pseudonym {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key.0).expect("HMAC takes keys of any length");
        mac.update(domain);
        mac.update(value);
        Pseudonym(hex::encode(mac.finalize().into_bytes()))
    }
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymiser(..)")
    }
}

/// Lowercase hex SHA-256 of a free text (a reason), so the log proves what
/// was written without publishing it.
pub fn text_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = Pseudonymiser::new(vec![1; 32]).unwrap();
        let b = Pseudonymiser::new(vec![2; 32]).unwrap();
        assert_eq!(a.target("+372 5555 0101"), a.target("+372 5555 0101"));
        assert_ne!(a.target("+372 5555 0101"), a.target("+372 5555 0102"));
        assert_ne!(a.target("+372 5555 0101"), b.target("+372 5555 0101"));
        assert!(!a.target("+372 5555 0101").0.contains("5555"));
        assert_eq!(a.target("x").0.len(), 64);
    }

    #[test]
    fn short_or_malformed_keys_are_refused() {
        assert!(Pseudonymiser::new(vec![0; 31]).is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "abcd").unwrap();
        let e = Pseudonymiser::from_file(&path).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(Pseudonymiser::from_file(&path).is_ok());
    }

    #[test]
    fn the_key_is_never_shown_and_a_clone_shares_it() {
        let key = [0xa7; 32];
        let names = Pseudonymiser::new(key.to_vec()).unwrap();
        let copy = names.clone();
        for shown in [
            format!("{names:?}"),
            format!("{copy:#?}"),
            format!("{:?}", names.key),
        ] {
            // Neither as hex nor as `Debug` of bytes (0xa7 is 167).
            assert!(!shown.contains("a7") && !shown.contains("167"), "{shown}");
        }
        assert!(Arc::ptr_eq(&names.key, &copy.key), "no copy of the key");
        assert_eq!(
            names.target("+372 5555 0101"),
            copy.target("+372 5555 0101")
        );
    }

    #[test]
    fn a_key_file_gives_the_pseudonyms_of_its_bytes_and_bad_files_are_refused() {
        let key: Vec<u8> = (0..40).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("  {}\n", hex::encode_upper(&key))).unwrap();
        let from_file = Pseudonymiser::from_file(&path).unwrap();
        let from_bytes = Pseudonymiser::new(key).unwrap();
        assert_eq!(
            from_file.target("+372 5555 0101"),
            from_bytes.target("+372 5555 0101")
        );
        for bad in [
            "ab".repeat(31),
            format!("{}a", "ab".repeat(32)),
            format!("{}zz", "ab".repeat(32)),
            format!("{} {}", "ab".repeat(16), "ab".repeat(16)),
            String::new(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let e = Pseudonymiser::from_file(&path).unwrap_err();
            assert!(
                matches!(e, PseudonymKeyError::Malformed { .. }),
                "{bad:?}: {e}"
            );
        }
        let e = Pseudonymiser::from_file(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, PseudonymKeyError::Read { .. }), "{e}");
    }
}
