//! `xborder audit` as an oversight body runs it: EE's gateway logged two
//! grants and their transfers; the auditor holds the export file, the log's
//! verifier key and a checkpoint kept from an earlier visit, and verifies,
//! lists and shows entries with the real binary. Then someone edits the
//! file, and the binary names the entry.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use serde_json::json;
use xborder::audit::checkpoint::{self, Checkpoint};
use xborder::audit::entry::{Entry, Event, FORMAT, Pseudonym};
use xborder::audit::export::{Export, Header};
use xborder::audit::merkle::{self, MemoryTree};
use xborder::clock::Timestamp;
use xborder::grant::GrantId;
use xborder::request::RequestId;
use xborder::transfer::receipt::{Receipt, TransferId};

const BIN: &str = env!("CARGO_BIN_EXE_xborder");
const ORIGIN: &str = "ee.xborder.test/audit";
const ANNA: &str = "spiffe://ee.xborder.test/reviewer/anna";
const BERT: &str = "spiffe://ee.xborder.test/reviewer/bert";
const POLICE: &str = "spiffe://fi.xborder.test/police";
const INTRUDER: &str = "spiffe://fi.xborder.test/intruder";
/// 2026-01-01T00:00:00Z; entry `i` is logged `i` minutes later.
const T0: i64 = 1_767_225_600_000;

fn id<T: std::str::FromStr>(prefix: &str, n: u32) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("{prefix}-0000-4000-8000-{n:012x}").parse().unwrap()
}

/// The ids the story uses.
struct Ids {
    r1: RequestId,
    r2: RequestId,
    g1: GrantId,
    g2: GrantId,
    t1: TransferId,
}

impl Ids {
    fn new() -> Self {
        Self {
            r1: id("aaaaaaaa", 1),
            r2: id("aaaaaaaa", 2),
            g1: id("bbbbbbbb", 1),
            g2: id("bbbbbbbb", 2),
            t1: id("cccccccc", 1),
        }
    }

    /// The receipt of transfer t1, entry 3.
    fn receipt(&self) -> Receipt {
        Receipt {
            transfer_id: self.t1,
            grant_id: self.g1,
            grantee: POLICE.to_owned(),
            route: "/v1/data/subscriber".to_owned(),
            category: "subscriber".to_owned(),
            target: "+372 5555 0101".to_owned(),
            plaintext_sha256: hex::encode([1; 32]),
            ciphertext_sha256: hex::encode([2; 32]),
            plaintext_bytes: 4096,
            ciphertext_bytes: 4310,
            started_at: Timestamp::from_unix_ms(T0 + 3 * 60_000 - 500),
            ended_at: Timestamp::from_unix_ms(T0 + 3 * 60_000),
            complete: true,
            incomplete: None,
            audit_index: Some(3),
            encrypted: true,
        }
    }

    fn events(&self) -> Vec<Event> {
        let denied = |peer: &str, code: &str, grant: GrantId| Event::TransferDenied {
            peer: peer.to_owned(),
            jurisdiction: "FI".to_owned(),
            code: code.to_owned(),
            grant: Some(grant),
            category: Some("subscriber".to_owned()),
            target: None,
        };
        let approval = |request, by: &str| Event::Approval {
            request,
            by: by.to_owned(),
            approvals: 1,
            required: 1,
            policy: "p1".to_owned(),
        };
        let issued = |grant, request| Event::GrantIssued {
            grant,
            request,
            grantee: POLICE.to_owned(),
            jurisdiction: "FI".to_owned(),
            categories: vec!["subscriber".to_owned()],
            approvers: vec![ANNA.to_owned()],
            expires_at: Timestamp::from_unix_ms(T0 + 86_400_000),
            validation_due: None,
            notice_due: None,
            max_bytes: None,
            max_transfers: Some(10),
            policy: "p1".to_owned(),
        };
        vec![
            approval(self.r1, ANNA),
            issued(self.g1, self.r1),
            Event::TransferAllowed {
                transfer: self.t1,
                grant: self.g1,
                grantee: POLICE.to_owned(),
                category: "subscriber".to_owned(),
                target: Pseudonym("ab".repeat(32)),
            },
            Event::transfer_completed(&self.receipt()),
            denied(INTRUDER, "token_not_bound", self.g1),
            approval(self.r2, BERT),
            issued(self.g2, self.r2),
            denied(POLICE, "rate_limited", self.g2),
            Event::GrantEnded {
                grant: self.g1,
                cause: "revoked".to_owned(),
                by: Some(ANNA.to_owned()),
                reason_sha256: None,
            },
            denied(POLICE, "grant_revoked", self.g1),
            Event::GrantEnded {
                grant: self.g2,
                cause: "expired".to_owned(),
                by: None,
                reason_sha256: None,
            },
            Event::TlsReloaded {
                tls_sha256: hex::encode([3; 32]),
                forced: true,
            },
        ]
    }
}

/// EE's log, signed with its audit key.
struct Log {
    key: SigningKey,
    tree: MemoryTree,
    lines: Vec<Vec<u8>>,
}

impl Log {
    fn new(events: Vec<Event>) -> Self {
        let mut log = Self {
            key: SigningKey::from_bytes(&[42; 32]),
            tree: MemoryTree::new(),
            lines: Vec::new(),
        };
        for event in events {
            let index = log.tree.size();
            let line = Entry {
                v: FORMAT,
                index,
                at: Timestamp::from_unix_ms(T0 + 60_000 * index as i64),
                prev: hex::encode(log.tree.root()),
                event,
            }
            .to_bytes();
            log.tree.append(merkle::leaf_hash(&line));
            log.lines.push(line);
        }
        log
    }

    fn vkey(&self) -> String {
        checkpoint::format_vkey(ORIGIN, &self.key.verifying_key()).unwrap()
    }

    fn note(&self, size: u64) -> String {
        let head = Checkpoint {
            origin: ORIGIN.to_owned(),
            size,
            root: merkle::root_at(&self.tree, size).unwrap(),
        };
        checkpoint::sign(&head, ORIGIN, &self.key).unwrap()
    }

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

/// The auditor's desk: a directory with the files the commands read.
struct Desk {
    dir: tempfile::TempDir,
}

impl Desk {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn export(&self, name: &str, export: &Export) -> PathBuf {
        let mut file = Vec::new();
        export.write_to(&mut file).unwrap();
        self.write(name, file)
    }
}

fn audit(args: &[&str]) -> Output {
    Command::new(BIN).arg("audit").args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `audit verify` and returns (success, stdout, stderr).
fn verify(args: &[&str]) -> (bool, String, String) {
    let out = audit(&[&["verify"], args].concat());
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn verify_accepts_a_genuine_export_and_the_checkpoint_kept_from_before() {
    let log = Log::new(Ids::new().events());
    let desk = Desk::new();
    let file = desk.export("audit.jsonl", &log.export());
    let vkey = log.vkey();

    let (ok, stdout, stderr) = verify(&[path(&file), "--vkey", &vkey]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        format!(
            "ok: 12 entries, root {}, checkpoint signed by {ORIGIN}\n",
            STANDARD.encode(log.tree.root())
        )
    );

    let vkey_file = desk.write("audit.vkey", format!("{vkey}\n"));
    let kept = desk.write("checkpoint-7.txt", log.note(7));
    let (ok, stdout, stderr) = verify(&[
        path(&file),
        "--vkey-file",
        path(&vkey_file),
        "--since",
        path(&kept),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.ends_with(", consistent with the older checkpoint at size 7\n"),
        "{stdout}"
    );
}

#[test]
fn verify_names_the_entry_an_edit_gave_away() {
    let log = Log::new(Ids::new().events());
    let desk = Desk::new();
    let vkey = log.vkey();

    // Someone softens entry 4's denial code in the file.
    let mut softened = log.export();
    let line = String::from_utf8(softened.entries[4].clone()).unwrap();
    softened.entries[4] = line.replace("token_not_bound", "rate_limited").into_bytes();
    let file = desk.export("softened.jsonl", &softened);
    let (ok, stdout, stderr) = verify(&[path(&file), "--vkey", &vkey]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.starts_with("error: entry 4: changed: entry 5 records the log before it as "),
        "{stderr}"
    );

    // Someone deletes entry 9, the denial under the revoked grant.
    let mut pruned = log.export();
    pruned.entries.remove(9);
    let file = desk.export("pruned.jsonl", &pruned);
    let (ok, _, stderr) = verify(&[path(&file), "--vkey", &vkey]);
    assert!(!ok);
    assert!(stderr.starts_with("error: entry 9: missing: "), "{stderr}");

    // A whole other history, signed by the same key: the kept checkpoint
    // of the log the auditor saw before gives it away.
    let mut events = Ids::new().events();
    events.truncate(5);
    events.extend(Ids::new().events().into_iter().skip(6));
    let rewritten = Log::new(events);
    let file = desk.export("rewritten.jsonl", &rewritten.export());
    let kept = desk.write("checkpoint-7.txt", log.note(7));
    let (ok, _, stderr) = verify(&[path(&file), "--vkey", &vkey]);
    assert!(ok, "on its own the rewritten log is consistent: {stderr}");
    let (ok, _, stderr) = verify(&[path(&file), "--vkey", &vkey, "--since", path(&kept)]);
    assert!(!ok);
    assert!(
        stderr.starts_with(
            "error: fork: the log at size 11 does not extend the older checkpoint at size 7"
        ),
        "{stderr}"
    );

    // Another gateway's key.
    let stranger = checkpoint::format_vkey(
        "fi.xborder.test/audit",
        &SigningKey::from_bytes(&[9; 32]).verifying_key(),
    )
    .unwrap();
    let file = desk.export("audit.jsonl", &log.export());
    let (ok, _, stderr) = verify(&[path(&file), "--vkey", &stranger]);
    assert!(!ok);
    assert!(
        stderr.starts_with(
            "error: the export's checkpoint is not validly signed by fi.xborder.test/audit"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the export is of the log `ee.xborder.test/audit`"),
        "{stderr}"
    );

    // A file cut short in the middle of a line.
    let whole = std::fs::read(&file).unwrap();
    let cut = desk.write("cut.jsonl", &whole[..whole.len() - 10]);
    let (ok, _, stderr) = verify(&[path(&cut), "--vkey", &vkey]);
    assert!(!ok);
    assert!(
        stderr.contains("line 13: ends without a newline"),
        "{stderr}"
    );
}

/// The INDEX column of `audit list`.
fn listed(file: &Path, filters: &[&str]) -> Vec<u64> {
    let out = audit(&[&["list", path(file)], filters].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn list_filters_by_grant_request_peer_code_kind_and_time() {
    let ids = Ids::new();
    let log = Log::new(ids.events());
    let desk = Desk::new();
    let file = desk.export("audit.jsonl", &log.export());

    let out = audit(&["list", path(&file)]);
    let stdout = text(&out.stdout);
    let header = stdout.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "INDEX",
            "TIME",
            "KIND",
            "GRANT",
            "REQUEST",
            "CODE",
            "IDENTITIES"
        ]
    );
    let row = stdout.lines().nth(5).unwrap();
    for cell in [
        "4",
        "2026-01-01T00:04:00Z",
        "transfer_denied",
        &ids.g1.to_string(),
        "token_not_bound",
        INTRUDER,
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    assert_eq!(listed(&file, &[]), (0..12).collect::<Vec<_>>());

    let g1 = ids.g1.to_string();
    assert_eq!(listed(&file, &["--grant", &g1]), [1, 2, 3, 4, 8, 9]);
    assert_eq!(listed(&file, &["--request", &ids.r2.to_string()]), [5, 6]);
    assert_eq!(listed(&file, &["--peer", ANNA]), [0, 1, 6, 8]);
    assert_eq!(listed(&file, &["--code", "grant_revoked"]), [9]);
    assert_eq!(listed(&file, &["--kind", "transfer_denied"]), [4, 7, 9]);
    assert_eq!(
        listed(&file, &["--kind", "transfer_denied", "--grant", &g1]),
        [4, 9]
    );
    assert_eq!(
        listed(
            &file,
            &[
                "--from",
                "2026-01-01T00:03:00Z",
                "--to",
                "2026-01-01T00:06:00Z"
            ]
        ),
        [3, 4, 5]
    );

    let out = audit(&["list", path(&file), "--code", "rate_limited", "--json"]);
    assert_eq!(
        out.stdout,
        [&log.lines[7][..], b"\n"].concat(),
        "{}",
        text(&out.stdout)
    );

    let out = audit(&["list", path(&file), "--kind", "grant_issud"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("grant_issued"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn show_prints_an_entry_with_its_leaf_hash() {
    let log = Log::new(Ids::new().events());
    let desk = Desk::new();
    let file = desk.export("audit.jsonl", &log.export());

    let out = audit(&["show", path(&file), "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let leaf = merkle::leaf_hash(&log.lines[3]);
    assert!(
        stdout.contains(&format!("leaf hash           {}\n", hex::encode(leaf))),
        "{stdout}"
    );
    assert!(stdout.contains(&STANDARD.encode(leaf)), "{stdout}");
    assert!(stdout.contains("  \"index\": 3,\n"), "{stdout}");
    assert!(
        stdout.contains("    \"kind\": \"transfer_completed\",\n"),
        "{stdout}"
    );

    let out = audit(&["show", path(&file), "12"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no entry 12 (it holds 12 entries)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn verify_receipt_checks_that_the_log_records_the_transfer() {
    let ids = Ids::new();
    let log = Log::new(ids.events());
    let desk = Desk::new();
    let vkey = log.vkey();
    let jws = |receipt: &Receipt| {
        let mut claims = serde_json::to_value(receipt).unwrap();
        claims["iss"] = json!("https://ee.xborder.test");
        claims["iat"] = json!(receipt.ended_at.unix_seconds());
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","typ":"xborder-receipt+jwt","kid":"k1"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        )
    };
    let proof = json!({
        "index": 3,
        "entry": String::from_utf8(log.lines[3].clone()).unwrap(),
        "checkpoint": log.note(12),
        "proof": merkle::inclusion_proof(&log.tree, 3)
            .unwrap()
            .iter()
            .map(|h| STANDARD.encode(h))
            .collect::<Vec<_>>(),
    });
    let proof = desk.write("proof.json", proof.to_string());

    let receipt = desk.write("receipt.jws", jws(&ids.receipt()));
    let (ok, stdout, stderr) = verify(&[
        "--receipt",
        path(&receipt),
        "--proof",
        path(&proof),
        "--vkey",
        &vkey,
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "ok: transfer {} under grant {} is entry 3 of {ORIGIN}, in the checkpoint at size 12",
            ids.t1, ids.g1
        )),
        "{stdout}"
    );

    let mut inflated = ids.receipt();
    inflated.plaintext_bytes = 40_960;
    let receipt = desk.write("inflated.jws", jws(&inflated));
    let (ok, _, stderr) = verify(&[
        "--receipt",
        path(&receipt),
        "--proof",
        path(&proof),
        "--vkey",
        &vkey,
    ]);
    assert!(!ok);
    assert_eq!(
        stderr,
        "error: entry 3: its plaintext_bytes is 4096, the receipt's is 40960\n"
    );
}
