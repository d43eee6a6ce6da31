//! Offline verification of the audit log, as an oversight body runs it: no
//! trust in the operator, only in the log's verifier key (a C2SP vkey).
//!
//! [`verify`] checks an [`Export`] against its signed checkpoint and, when
//! the auditor kept an older checkpoint, that the log only grew since (a
//! consistency proof computed from the entries, then checked). Because every
//! entry carries `prev`, the root of the entries before it, a verifier that
//! finds a mismatch names the first entry that was changed, deleted or moved,
//! not only "the root differs".
//!
//! [`verify_receipt_inclusion`] checks that a transfer's receipt is backed by
//! its `transfer_completed` entry and that the entry is in the signed log.
//!
//! Pure: everything it needs is passed in. The errors' messages are written
//! for an auditor and the CLI prints them as they are.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;

use super::checkpoint::{self, Checkpoint, CheckpointError};
use super::entry::{self, Entry, Event};
use super::export::Export;
use super::merkle::{self, Hash, MemoryTree};
use crate::transfer::receipt::Receipt;

#[cfg(test)]
mod tests;

/// What a successful [`verify`] established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The log's origin, which is also the name of the key that signed.
    pub origin: String,
    /// The name of the key that signed the checkpoint.
    pub key_name: String,
    /// The number of entries, the checkpoint's size.
    pub size: u64,
    /// The root of all entries, the checkpoint's root.
    pub root: Hash,
    /// The older checkpoint the log was proved to extend, if one was given.
    pub since: Option<Checkpoint>,
}

/// Which signed note an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// The checkpoint in the export's header.
    Export,
    /// The older checkpoint the auditor kept.
    Since,
    /// The checkpoint an inclusion proof leads to.
    Proof,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Export => "the export's checkpoint",
            Self::Since => "the older checkpoint",
            Self::Proof => "the proof's checkpoint",
        })
    }
}

/// Why an export does not verify. Entry errors name the first bad entry by
/// its index (its position in the log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed verifier key: expected <name>+<8 hex digits>+<base64 Ed25519 key>")]
    VerifierKey,
    #[error("{note} is not validly signed by {key_name}: {why}")]
    CheckpointSignature {
        note: Note,
        key_name: String,
        why: CheckpointError,
    },
    #[error("{note} is for the log `{found}`, expected `{expected}`")]
    Origin {
        note: Note,
        expected: String,
        found: String,
    },
    #[error("entry {index}: not a valid audit entry: {why}")]
    Malformed { index: u64, why: String },
    #[error(
        "entry {index}: entry format version {found}; this verifier reads version {}",
        entry::FORMAT
    )]
    Version { index: u64, found: u32 },
    /// The entry at `position` carries another index: entries were moved.
    #[error(
        "entry {position}: out of order: the export has entry {found} where entry {position} belongs (entries were reordered, moved or duplicated)"
    )]
    IndexMismatch { position: u64, found: u64 },
    /// Entry `index` is nowhere in the export: it was deleted.
    #[error(
        "entry {index}: missing: the export has entry {found} where entry {index} belongs, and entry {index} nowhere (deleted)"
    )]
    Missing { index: u64, found: u64 },
    #[error("entry {index}: changed: {why}")]
    Changed { index: u64, why: String },
    /// A signed head of the empty log whose root is not the empty root.
    #[error("the checkpoint signs an empty log with a root that is not the empty log's")]
    EmptyRoot,
    #[error("{}", size_mismatch(*.checkpoint, *.entries))]
    CheckpointSize { checkpoint: u64, entries: u64 },
    #[error("the export's header says {header} entries, its checkpoint signs {checkpoint}")]
    HeaderSize { header: u64, checkpoint: u64 },
    #[error(
        "the older checkpoint signs {old_size} entries, more than the {new_size} of the export: the log lost entries since, or the checkpoints were mixed up"
    )]
    SinceLarger { old_size: u64, new_size: u64 },
    #[error(
        "fork: the log at size {new_size} does not extend the older checkpoint at size {old_size}; what was shown before is not a prefix of this log (its history was rewritten, or different auditors are shown different logs)"
    )]
    Fork { old_size: u64, new_size: u64 },
}

/// Why a receipt is not backed by the signed log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    #[error("malformed verifier key: expected <name>+<8 hex digits>+<base64 Ed25519 key>")]
    VerifierKey,
    #[error("{note} is not validly signed by {key_name}: {why}")]
    CheckpointSignature {
        note: Note,
        key_name: String,
        why: CheckpointError,
    },
    #[error("{note} is for the log `{found}`, expected `{expected}`")]
    Origin {
        note: Note,
        expected: String,
        found: String,
    },
    #[error("entry {index}: not a valid audit entry: {why}")]
    Malformed { index: u64, why: String },
    #[error(
        "entry {index}: entry format version {found}; this verifier reads version {}",
        entry::FORMAT
    )]
    Version { index: u64, found: u32 },
    #[error("entry {index}: the entry says it is entry {found}")]
    EntryIndex { index: u64, found: u64 },
    #[error("the receipt names no audit entry (issued before the gateway kept an audit log)")]
    NoAuditIndex,
    #[error("the receipt names audit entry {receipt}, the proof is for entry {proof}")]
    ReceiptIndex { receipt: u64, proof: u64 },
    #[error("entry {index}: a {kind} event, not transfer_completed")]
    NotATransfer { index: u64, kind: &'static str },
    #[error("entry {index}: its {field} is {entry}, the receipt's is {receipt}")]
    Differs {
        index: u64,
        field: &'static str,
        entry: String,
        receipt: String,
    },
    #[error("entry {index}: not in the checkpoint's log of {size} entries")]
    OutOfRange { index: u64, size: u64 },
    #[error(
        "entry {index}: the inclusion proof does not lead to the root of the checkpoint at size {size}; the entry is not in the log as signed"
    )]
    NotIncluded { index: u64, size: u64 },
}

/// Verifies `export` under the log's verifier key `vkey`, and, given the
/// signed note of an older tree head the auditor kept (`since`), that the
/// log at the export's size extends it.
///
/// Checks, in order: the export's checkpoint is signed by `vkey` for the
/// log the key names and the header names; every entry, in order, is a
/// well-formed entry of this format at its own index whose `prev` is the root
/// of the entries before it; the checkpoint signs exactly these entries
/// (size and root); then `since`. The first failure is returned.
pub fn verify(export: &Export, vkey: &str, since: Option<&str>) -> Result<Verified, VerifyError> {
    let (key_name, key) = checkpoint::parse_vkey(vkey).map_err(|_| VerifyError::VerifierKey)?;
    let head = open(&export.header.checkpoint, Note::Export, &key_name, &key)?;
    if head.origin != export.header.origin {
        return Err(VerifyError::Origin {
            note: Note::Export,
            expected: export.header.origin.clone(),
            found: head.origin,
        });
    }

    let tree = walk(&export.entries)?;
    let entries = tree.size();
    if entries != head.size {
        return Err(VerifyError::CheckpointSize {
            checkpoint: head.size,
            entries,
        });
    }
    let root = tree.root();
    if !merkle::same_hash(&root, &head.root) {
        // Every entry chained to the one before: whatever changed is not
        // covered by any later `prev`, which is the last entry (or a
        // rewrite that re-chained everything after the change).
        let Some(last) = entries.checked_sub(1) else {
            return Err(VerifyError::EmptyRoot);
        };
        return Err(VerifyError::Changed {
            index: last,
            why: format!(
                "the entries chain, but their root {} is not the checkpoint's {} (the last entry was altered, or every entry after an altered one was re-chained)",
                STANDARD.encode(root),
                STANDARD.encode(head.root)
            ),
        });
    }
    if export.header.size != head.size {
        return Err(VerifyError::HeaderSize {
            header: export.header.size,
            checkpoint: head.size,
        });
    }

    let since = since
        .map(|note| consistent(&tree, &head, note, &key_name, &key))
        .transpose()?;
    Ok(Verified {
        origin: head.origin,
        key_name,
        size: head.size,
        root,
        since,
    })
}

/// Verifies that `entry_line` is entry `index` of the log whose signed
/// checkpoint is `checkpoint_note` (by the inclusion `proof`), and that the
/// entry records exactly the transfer `receipt` states. The receipt's own
/// signature is not checked here (`xborder fetch` does that). Returns the
/// checkpoint the entry is included in.
pub fn verify_receipt_inclusion(
    entry_line: &[u8],
    index: u64,
    proof: &[Hash],
    checkpoint_note: &str,
    vkey: &str,
    receipt: &Receipt,
) -> Result<Checkpoint, InclusionError> {
    let (key_name, key) = checkpoint::parse_vkey(vkey).map_err(|_| InclusionError::VerifierKey)?;
    let head = checkpoint::open(checkpoint_note, &key_name, &key).map_err(|why| {
        InclusionError::CheckpointSignature {
            note: Note::Proof,
            key_name: key_name.clone(),
            why,
        }
    })?;
    if head.origin != key_name {
        return Err(InclusionError::Origin {
            note: Note::Proof,
            expected: key_name,
            found: head.origin,
        });
    }

    let entry = Entry::parse(entry_line).map_err(|e| InclusionError::Malformed {
        index,
        why: e.to_string(),
    })?;
    if entry.v != entry::FORMAT {
        return Err(InclusionError::Version {
            index,
            found: entry.v,
        });
    }
    if entry.index != index {
        return Err(InclusionError::EntryIndex {
            index,
            found: entry.index,
        });
    }
    match receipt.audit_index {
        None => return Err(InclusionError::NoAuditIndex),
        Some(named) if named != index => {
            return Err(InclusionError::ReceiptIndex {
                receipt: named,
                proof: index,
            });
        }
        Some(_) => {}
    }
    same_transfer(&entry.event, index, receipt)?;

    if index >= head.size {
        return Err(InclusionError::OutOfRange {
            index,
            size: head.size,
        });
    }
    merkle::verify_inclusion(
        index,
        head.size,
        &merkle::leaf_hash(entry_line),
        proof,
        &head.root,
    )
    .map_err(|_| InclusionError::NotIncluded {
        index,
        size: head.size,
    })?;
    Ok(head)
}

/// Opens a note under the key and checks that it is a head of the log the
/// key names (C2SP: the key name is the log's origin).
fn open(
    note: &str,
    which: Note,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<Checkpoint, VerifyError> {
    let head =
        checkpoint::open(note, key_name, key).map_err(|why| VerifyError::CheckpointSignature {
            note: which,
            key_name: key_name.to_owned(),
            why,
        })?;
    if head.origin != key_name {
        return Err(VerifyError::Origin {
            note: which,
            expected: key_name.to_owned(),
            found: head.origin,
        });
    }
    Ok(head)
}

/// Rebuilds the tree entry by entry, checking each against what it says of
/// itself and of the log before it; stops at the first bad entry.
fn walk(entries: &[Vec<u8>]) -> Result<MemoryTree, VerifyError> {
    let mut tree = MemoryTree::new();
    for line in entries {
        let position = tree.size();
        let entry = Entry::parse(line).map_err(|e| VerifyError::Malformed {
            index: position,
            why: e.to_string(),
        })?;
        if entry.v != entry::FORMAT {
            return Err(VerifyError::Version {
                index: position,
                found: entry.v,
            });
        }
        if entry.index != position {
            return Err(displaced(entries, position, entry.index));
        }
        let prev = entry.prev_root().ok_or_else(|| VerifyError::Malformed {
            index: position,
            why: "`prev` is not the hex of a 32-byte root".to_owned(),
        })?;
        let root = tree.root();
        if !merkle::same_hash(&prev, &root) {
            return Err(unchained(position, &prev, &root));
        }
        tree.append(merkle::leaf_hash(line));
    }
    Ok(tree)
}

/// Entry `found` sits where entry `position` belongs. If entry `position`
/// is nowhere later in the export it was deleted; otherwise entries moved.
fn displaced(entries: &[Vec<u8>], position: u64, found: u64) -> VerifyError {
    let later = usize::try_from(position + 1)
        .map_or(&[][..], |from| entries.get(from..).unwrap_or_default());
    let elsewhere = found < position
        || later
            .iter()
            .any(|line| Entry::parse(line).is_ok_and(|e| e.index == position));
    if elsewhere {
        VerifyError::IndexMismatch { position, found }
    } else {
        VerifyError::Missing {
            index: position,
            found,
        }
    }
}

/// Entry `position` was appended after a log whose root it records as
/// `prev`, but the entries before it hash to `root`. The entries before
/// `position - 1` all chained (or the walk would have stopped), so what
/// changed is entry `position - 1`; entry 0 has no entry before it to blame.
fn unchained(position: u64, prev: &Hash, root: &Hash) -> VerifyError {
    match position.checked_sub(1) {
        None => VerifyError::Changed {
            index: 0,
            why: format!(
                "its `prev` is {}, not the empty log's root {}",
                hex::encode(prev),
                hex::encode(root)
            ),
        },
        Some(before) => VerifyError::Changed {
            index: before,
            why: format!(
                "entry {position} records the log before it as {}, but entries 0 to {before} as exported hash to {}",
                hex::encode(prev),
                hex::encode(root)
            ),
        },
    }
}

/// Checks that the log in `tree` (at the checkpoint `head`) extends the
/// older checkpoint `note`, with a consistency proof made from the entries.
fn consistent(
    tree: &MemoryTree,
    head: &Checkpoint,
    note: &str,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<Checkpoint, VerifyError> {
    // `open` holds both heads to the key's name: they are of one log.
    let old = open(note, Note::Since, key_name, key)?;
    if old.size > head.size {
        return Err(VerifyError::SinceLarger {
            old_size: old.size,
            new_size: head.size,
        });
    }
    let proof = merkle::consistency_proof_at(tree, old.size, head.size)
        .expect("old.size <= head.size == tree.size(), checked above");
    merkle::verify_consistency(old.size, head.size, &old.root, &head.root, &proof).map_err(
        |_| VerifyError::Fork {
            old_size: old.size,
            new_size: head.size,
        },
    )?;
    Ok(old)
}

/// The entry records the receipt's transfer, field by field, so a mismatch
/// names the field.
fn same_transfer(event: &Event, index: u64, receipt: &Receipt) -> Result<(), InclusionError> {
    let Event::TransferCompleted {
        transfer,
        grant,
        complete,
        incomplete,
        plaintext_sha256,
        ciphertext_sha256,
        plaintext_bytes,
        ciphertext_bytes,
        encrypted,
    } = event
    else {
        return Err(InclusionError::NotATransfer {
            index,
            kind: event.kind(),
        });
    };
    let show = |v: Option<&str>| v.unwrap_or("none").to_owned();
    let fields = [
        (
            "transfer",
            transfer.to_string(),
            receipt.transfer_id.to_string(),
        ),
        ("grant", grant.to_string(), receipt.grant_id.to_string()),
        (
            "plaintext_sha256",
            plaintext_sha256.clone(),
            receipt.plaintext_sha256.clone(),
        ),
        (
            "ciphertext_sha256",
            ciphertext_sha256.clone(),
            receipt.ciphertext_sha256.clone(),
        ),
        (
            "plaintext_bytes",
            plaintext_bytes.to_string(),
            receipt.plaintext_bytes.to_string(),
        ),
        (
            "ciphertext_bytes",
            ciphertext_bytes.to_string(),
            receipt.ciphertext_bytes.to_string(),
        ),
        (
            "complete",
            complete.to_string(),
            receipt.complete.to_string(),
        ),
        (
            "incomplete",
            show(incomplete.as_deref()),
            show(receipt.incomplete.map(|i| i.as_str())),
        ),
        (
            "encrypted",
            encrypted.to_string(),
            receipt.encrypted.to_string(),
        ),
    ];
    for (field, entry, receipt) in fields {
        if entry != receipt {
            return Err(InclusionError::Differs {
                index,
                field,
                entry,
                receipt,
            });
        }
    }
    Ok(())
}

/// The message of [`VerifyError::CheckpointSize`].
fn size_mismatch(checkpoint: u64, entries: u64) -> String {
    let base = format!("the checkpoint signs {checkpoint} entries but the export holds {entries}");
    if entries < checkpoint {
        format!(
            "{base}: entries {entries} to {} are missing (a truncated export)",
            checkpoint - 1
        )
    } else {
        format!(
            "{base}: entries {checkpoint} to {} are not covered by the checkpoint",
            entries - 1
        )
    }
}
