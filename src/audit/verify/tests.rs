//! A real log of 20 entries, signed with a real Ed25519 key, exported,
//! then tampered with in each way an operator could: every failure must
//! name the first entry (or the sizes) that gives it away.

use ed25519_dalek::SigningKey;

use super::*;
use crate::audit::checkpoint::{format_vkey, sign};
use crate::audit::export::Header;
use crate::audit::merkle::{inclusion_proof, leaf_hash, root_at};
use crate::clock::Timestamp;
use crate::grant::GrantId;
use crate::transfer::receipt::{Incomplete, TransferId};

const ORIGIN: &str = "ee.xborder.test/audit";
const SIZE: u64 = 20;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn vkey() -> String {
    format_vkey(ORIGIN, &key().verifying_key()).unwrap()
}

fn grant(i: u64) -> GrantId {
    format!("00000000-0000-4000-8000-{i:012x}").parse().unwrap()
}

fn transfer(i: u64) -> TransferId {
    format!("11111111-0000-4000-8000-{i:012x}").parse().unwrap()
}

fn receipt(i: u64, audit_index: u64) -> Receipt {
    Receipt {
        transfer_id: transfer(i),
        grant_id: grant(i / 4),
        grantee: "spiffe://fi.xborder.test/police".to_owned(),
        route: "/v1/data/subscriber".to_owned(),
        category: "subscriber".to_owned(),
        target: "+372 5555 0101".to_owned(),
        plaintext_sha256: hex::encode([i as u8; 32]),
        ciphertext_sha256: hex::encode([i as u8 + 1; 32]),
        plaintext_bytes: 1000 + i,
        ciphertext_bytes: 1200 + i,
        started_at: Timestamp::from_unix_ms(1_767_225_600_000),
        ended_at: Timestamp::from_unix_ms(1_767_225_601_000),
        complete: true,
        incomplete: None,
        audit_index: Some(audit_index),
        encrypted: true,
    }
}

/// The event of entry `i`: four kinds in turn.
fn event(i: u64) -> Event {
    match i % 4 {
        0 => Event::GrantValidated {
            grant: grant(i / 4),
            by: "spiffe://ee.xborder.test/reviewer/anna".to_owned(),
        },
        1 => Event::TransferDenied {
            peer: "spiffe://fi.xborder.test/police".to_owned(),
            jurisdiction: "FI".to_owned(),
            code: "grant_expired".to_owned(),
            grant: Some(grant(i / 4)),
            category: Some("subscriber".to_owned()),
            target: None,
        },
        2 => Event::transfer_completed(&receipt(i, i)),
        _ => Event::GrantEnded {
            grant: grant(i / 4),
            cause: "expired".to_owned(),
            by: None,
            reason_sha256: None,
        },
    }
}

/// A log as the gateway keeps it: exact entry lines and the tree over them.
#[derive(Clone)]
struct Log {
    tree: MemoryTree,
    lines: Vec<Vec<u8>>,
}

impl Log {
    fn new() -> Self {
        Self {
            tree: MemoryTree::new(),
            lines: Vec::new(),
        }
    }

    /// The log of `n` entries, `event(0)` to `event(n - 1)`.
    fn of(n: u64) -> Self {
        let mut log = Self::new();
        for i in 0..n {
            log.append(event(i));
        }
        log
    }

    fn append(&mut self, event: Event) {
        let index = self.tree.size();
        let entry = Entry {
            v: entry::FORMAT,
            index,
            at: Timestamp::from_unix_ms(1_767_225_600_000 + 1000 * index as i64),
            prev: hex::encode(self.tree.root()),
            event,
        };
        let line = entry.to_bytes();
        self.tree.append(leaf_hash(&line));
        self.lines.push(line);
    }

    /// The signed note of the head at `size`.
    fn note(&self, size: u64) -> String {
        let head = Checkpoint {
            origin: ORIGIN.to_owned(),
            size,
            root: root_at(&self.tree, size).unwrap(),
        };
        sign(&head, ORIGIN, &key()).unwrap()
    }

    /// What `xborder audit export` writes for the whole log.
    fn export(&self) -> Export {
        Export {
            header: Header {
                origin: ORIGIN.to_owned(),
                size: self.tree.size(),
                checkpoint: self.note(self.tree.size()),
            },
            entries: self.lines.clone(),
        }
    }
}

/// One byte of entry `k`'s event changed, the JSON still valid: the first
/// digit after `"event":` becomes the next digit.
fn alter(export: &mut Export, k: usize) {
    let line = &mut export.entries[k];
    let event = find(line, b"\"event\":");
    let digit = line[event..]
        .iter()
        .position(u8::is_ascii_digit)
        .expect("every event has a digit in an id")
        + event;
    line[digit] = b'0' + (line[digit] - b'0' + 1) % 10;
    assert!(Entry::parse(line).is_ok(), "still a valid entry");
}

fn find(line: &[u8], needle: &[u8]) -> usize {
    line.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in line")
}

fn check(export: &Export) -> Result<Verified, VerifyError> {
    verify(export, &vkey(), None)
}

#[test]
fn a_genuine_export_verifies_after_a_round_trip_through_its_file() {
    let log = Log::of(SIZE);
    let mut file = Vec::new();
    log.export().write_to(&mut file).unwrap();
    let export = Export::read_from(&file[..]).unwrap();
    assert_eq!(
        check(&export),
        Ok(Verified {
            origin: ORIGIN.to_owned(),
            key_name: ORIGIN.to_owned(),
            size: SIZE,
            root: log.tree.root(),
            since: None,
        })
    );
    // The empty log verifies too, but not with a head of another root.
    assert_eq!(check(&Log::new().export()).map(|v| v.size), Ok(0));
    let mut empty = Log::new().export();
    let bogus = Checkpoint {
        origin: ORIGIN.to_owned(),
        size: 0,
        root: [0; 32],
    };
    empty.header.checkpoint = sign(&bogus, ORIGIN, &key()).unwrap();
    assert_eq!(check(&empty), Err(VerifyError::EmptyRoot));
}

#[test]
fn a_changed_entry_is_named_by_the_next_entrys_prev() {
    for k in [0, 7, 13, 18] {
        let mut export = Log::of(SIZE).export();
        alter(&mut export, k);
        let err = check(&export).unwrap_err();
        assert!(
            matches!(err, VerifyError::Changed { index, .. } if index == k as u64),
            "{k}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "entry {k}: changed: entry {} records the log before it as ",
                k + 1
            )),
            "{text}"
        );
    }
}

#[test]
fn a_broken_entry_is_named_as_malformed() {
    let mut export = Log::of(SIZE).export();
    let line = &mut export.entries[7];
    let colon = find(line, b"\"event\":") + 7;
    line[colon] = b';';
    let err = check(&export).unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { index: 7, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("entry 7: not a valid audit entry: "),
        "{err}"
    );
}

#[test]
fn a_deleted_entry_is_named_missing() {
    for k in [0, 7] {
        let mut export = Log::of(SIZE).export();
        export.entries.remove(k);
        let err = check(&export).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Missing {
                index: k as u64,
                found: k as u64 + 1
            }
        );
        assert!(
            err.to_string().starts_with(&format!(
                "entry {k}: missing: the export has entry {}",
                k + 1
            )),
            "{err}"
        );
    }
}

#[test]
fn swapped_moved_or_duplicated_entries_are_named_by_position() {
    let mut swapped = Log::of(SIZE).export();
    swapped.entries.swap(5, 9);
    assert_eq!(
        check(&swapped),
        Err(VerifyError::IndexMismatch {
            position: 5,
            found: 9
        })
    );

    let mut moved = Log::of(SIZE).export();
    let third = moved.entries.remove(3);
    moved.entries.push(third);
    assert_eq!(
        check(&moved),
        Err(VerifyError::IndexMismatch {
            position: 3,
            found: 4
        })
    );

    let mut duplicated = Log::of(SIZE).export();
    let fourth = duplicated.entries[4].clone();
    duplicated.entries.insert(5, fourth);
    let err = check(&duplicated).unwrap_err();
    assert_eq!(
        err,
        VerifyError::IndexMismatch {
            position: 5,
            found: 4
        }
    );
    assert!(
        err.to_string().starts_with("entry 5: out of order: "),
        "{err}"
    );
}

#[test]
fn a_changed_last_entry_is_caught_by_the_checkpoint() {
    let mut export = Log::of(SIZE).export();
    alter(&mut export, SIZE as usize - 1);
    let err = check(&export).unwrap_err();
    assert!(
        matches!(err, VerifyError::Changed { index: 19, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("is not the checkpoint's"), "{err}");
}

#[test]
fn a_truncated_export_names_the_missing_entries() {
    let mut export = Log::of(SIZE).export();
    export.entries.truncate(17);
    let err = check(&export).unwrap_err();
    assert_eq!(
        err,
        VerifyError::CheckpointSize {
            checkpoint: 20,
            entries: 17
        }
    );
    assert_eq!(
        err.to_string(),
        "the checkpoint signs 20 entries but the export holds 17: entries 17 to 19 are missing (a truncated export)"
    );
}

#[test]
fn a_checkpoint_of_another_size_is_refused() {
    let log = Log::of(SIZE);
    // A genuine head of the same log, at 15: the export has 5 entries more.
    let mut export = log.export();
    export.header.checkpoint = log.note(15);
    export.header.size = 15;
    assert_eq!(
        check(&export),
        Err(VerifyError::CheckpointSize {
            checkpoint: 15,
            entries: 20
        })
    );
    // The unsigned header disagreeing with the signed head.
    let mut export = log.export();
    export.header.size = 21;
    assert_eq!(
        check(&export),
        Err(VerifyError::HeaderSize {
            header: 21,
            checkpoint: 20
        })
    );
}

#[test]
fn the_wrong_key_or_log_is_refused() {
    let export = Log::of(SIZE).export();
    let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key();
    for vkey in [
        format_vkey(ORIGIN, &stranger).unwrap(),
        format_vkey("fi.xborder.test/audit", &key().verifying_key()).unwrap(),
    ] {
        let err = verify(&export, &vkey, None).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::CheckpointSignature {
                    note: Note::Export,
                    why: CheckpointError::NotSigned,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("the export's checkpoint is not validly signed by "),
            "{err}"
        );
    }
    assert_eq!(
        verify(&export, "not a key", None),
        Err(VerifyError::VerifierKey)
    );

    let mut renamed = export.clone();
    renamed.header.origin = "fi.xborder.test/audit".to_owned();
    assert!(matches!(
        check(&renamed),
        Err(VerifyError::Origin {
            note: Note::Export,
            ..
        })
    ));
}

#[test]
fn a_genuine_older_head_is_consistent() {
    let log = Log::of(SIZE);
    let export = log.export();
    for old in [0, 1, 8, 13, 16, SIZE] {
        let verified = verify(&export, &vkey(), Some(&log.note(old))).unwrap();
        assert_eq!(verified.since.map(|c| c.size), Some(old), "{old}");
    }
}

#[test]
fn an_older_head_of_a_fork_is_named_a_fork() {
    let log = Log::of(SIZE);
    // Another log that shares the first 10 entries, then diverges.
    let mut fork = Log::of(10);
    for i in 10..SIZE {
        fork.append(event(i + 100));
    }
    let export = log.export();
    // The shared prefix is genuinely consistent.
    assert!(verify(&export, &vkey(), Some(&fork.note(10))).is_ok());
    for old in [11, 14, SIZE] {
        let err = verify(&export, &vkey(), Some(&fork.note(old))).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Fork {
                old_size: old,
                new_size: SIZE
            }
        );
        assert!(
            err.to_string().starts_with(&format!(
                "fork: the log at size 20 does not extend the older checkpoint at size {old}"
            )),
            "{err}"
        );
    }
}

#[test]
fn an_older_head_must_be_older_signed_and_of_this_log() {
    let log = Log::of(SIZE);
    let export = log.export();
    let longer = Log::of(SIZE + 5);
    assert_eq!(
        verify(&export, &vkey(), Some(&longer.note(25))),
        Err(VerifyError::SinceLarger {
            old_size: 25,
            new_size: 20
        })
    );
    let forged = sign(
        &Checkpoint {
            origin: ORIGIN.to_owned(),
            size: 5,
            root: root_at(&log.tree, 5).unwrap(),
        },
        ORIGIN,
        &SigningKey::from_bytes(&[9; 32]),
    )
    .unwrap();
    let err = verify(&export, &vkey(), Some(&forged)).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::CheckpointSignature {
                note: Note::Since,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the older checkpoint is not validly signed")
    );
}

/// Entry 10 is the `transfer_completed` of `receipt(10, 10)`.
fn inclusion(log: &Log, receipt: &Receipt, index: u64) -> Result<Checkpoint, InclusionError> {
    let proof = inclusion_proof(&log.tree, index).unwrap();
    verify_receipt_inclusion(
        &log.lines[index as usize],
        index,
        &proof,
        &log.note(log.tree.size()),
        &vkey(),
        receipt,
    )
}

#[test]
fn a_receipt_is_backed_by_its_entry_in_the_signed_log() {
    let log = Log::of(SIZE);
    let head = inclusion(&log, &receipt(10, 10), 10).unwrap();
    assert_eq!((head.size, head.root), (SIZE, log.tree.root()));
}

#[test]
fn a_receipt_that_differs_from_its_entry_names_the_field() {
    let log = Log::of(SIZE);
    let mut other = receipt(10, 10);
    other.ciphertext_sha256 = hex::encode([0xee; 32]);
    let err = inclusion(&log, &other, 10).unwrap_err();
    assert!(
        matches!(
            err,
            InclusionError::Differs {
                index: 10,
                field: "ciphertext_sha256",
                ..
            }
        ),
        "{err}"
    );
    let mut cut = receipt(10, 10);
    cut.complete = false;
    cut.incomplete = Some(Incomplete::Revoked);
    assert!(matches!(
        inclusion(&log, &cut, 10),
        Err(InclusionError::Differs {
            field: "complete",
            ..
        })
    ));
    assert_eq!(
        inclusion(&log, &receipt(10, 11), 10),
        Err(InclusionError::ReceiptIndex {
            receipt: 11,
            proof: 10
        })
    );
    let mut unlogged = receipt(10, 10);
    unlogged.audit_index = None;
    assert_eq!(
        inclusion(&log, &unlogged, 10),
        Err(InclusionError::NoAuditIndex)
    );
    assert_eq!(
        inclusion(&log, &receipt(10, 9), 9),
        Err(InclusionError::NotATransfer {
            index: 9,
            kind: "transfer_denied"
        })
    );
}

#[test]
fn an_entry_not_in_the_signed_log_is_refused() {
    let log = Log::of(SIZE);
    let note = log.note(SIZE);
    let receipt = receipt(10, 10);
    // The proof of another leaf.
    let wrong = inclusion_proof(&log.tree, 11).unwrap();
    assert_eq!(
        verify_receipt_inclusion(&log.lines[10], 10, &wrong, &note, &vkey(), &receipt),
        Err(InclusionError::NotIncluded {
            index: 10,
            size: SIZE
        })
    );
    // The same fields, other bytes (a trailing space): not the logged leaf.
    let proof = inclusion_proof(&log.tree, 10).unwrap();
    let mut spaced = log.lines[10].clone();
    spaced.push(b' ');
    let err = verify_receipt_inclusion(&spaced, 10, &proof, &note, &vkey(), &receipt).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("entry 10: the inclusion proof does not lead to the root"),
        "{err}"
    );
    // A head from before the entry.
    assert_eq!(
        verify_receipt_inclusion(&log.lines[10], 10, &proof, &log.note(8), &vkey(), &receipt),
        Err(InclusionError::OutOfRange { index: 10, size: 8 })
    );
    let stranger = format_vkey(ORIGIN, &SigningKey::from_bytes(&[8; 32]).verifying_key()).unwrap();
    assert!(matches!(
        verify_receipt_inclusion(&log.lines[10], 10, &proof, &note, &stranger, &receipt),
        Err(InclusionError::CheckpointSignature { .. })
    ));
}
