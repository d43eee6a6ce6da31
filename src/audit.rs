//! The audit log's cryptography: an RFC 9162 (Certificate Transparency v2)
//! Merkle tree over audit entries, with inclusion and consistency proofs, and
//! signed tree heads as C2SP checkpoints, so an auditor can check what the
//! gateway did with standard tooling and without seeing the entries.
//!
//! Storage of entries and tree levels comes with the store integration; this
//! module is pure: [`merkle`] runs over any [`merkle::HashSource`]. An
//! oversight body takes the log away as an [`export`] file and checks it
//! offline with [`verify`].

pub mod checkpoint;
pub mod entry;
pub mod export;
pub mod merkle;
pub mod verify;
