//! The audit log: an RFC 9162 (Certificate Transparency v2) Merkle tree over
//! audit entries, with inclusion and consistency proofs, and signed tree
//! heads as C2SP checkpoints, so an oversight body can check what the
//! gateway did with standard tooling, without trusting the operator and
//! without seeing any payload.
//!
//! [`entry`] says what one entry records and how it is pseudonymised;
//! [`merkle`] and [`checkpoint`] are the pure cryptography; the store appends
//! entries in the same transaction as the change each records; [`LogKey`]
//! signs the heads the admin API hands out. An oversight body takes the log
//! away as an [`export`] file and checks it offline with [`verify`].

use std::path::Path;

use ed25519_dalek::SigningKey;
use pkcs8::DecodePrivateKey as _;

use checkpoint::{Checkpoint, CheckpointError};
use merkle::Hash;

pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod merkle;
pub mod pseudonym;
pub mod verify;

/// The log's name and the Ed25519 key that signs its tree heads. The key's
/// name in the signed notes is the origin, as C2SP recommends.
pub struct LogKey {
    origin: String,
    key: SigningKey,
    vkey: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LogKeyError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an Ed25519 private key in PKCS#8 PEM ({why})")]
    Malformed { path: String, why: String },
    #[error("audit origin `{origin}`: {source}")]
    Origin {
        origin: String,
        #[source]
        source: CheckpointError,
    },
}

impl LogKey {
    pub fn new(origin: &str, key: SigningKey) -> Result<Self, LogKeyError> {
        let vkey = checkpoint::format_vkey(origin, &key.verifying_key()).map_err(|source| {
            LogKeyError::Origin {
                origin: origin.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            origin: origin.to_owned(),
            key,
            vkey,
        })
    }

    /// Reads the key from a PKCS#8 PEM file.
    pub fn load(path: &Path, origin: &str) -> Result<Self, LogKeyError> {
        let shown = path.display().to_string();
        let pem = std::fs::read_to_string(path).map_err(|source| LogKeyError::Read {
            path: shown.clone(),
            source,
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| LogKeyError::Malformed {
            path: shown,
            why: e.to_string(),
        })?;
        Self::new(origin, key)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key in C2SP `vkey` form: what an auditor needs.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The signed checkpoint of the log at `size` with `root`.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let head = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        checkpoint::sign(&head, &self.origin, &self.key)
            .expect("the origin was checked when the key was made")
    }
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey")
            .field("origin", &self.origin)
            .field("vkey", &self.vkey)
            .finish_non_exhaustive()
    }
}
