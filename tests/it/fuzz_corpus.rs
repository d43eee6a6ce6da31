//! The fuzz targets' committed inputs, replayed on stable as ordinary tests:
//! every seed (`fuzz/seeds/<target>/`) and every input that once crashed a
//! target (`fuzz/regressions/<target>/`) goes through the same
//! `xborder::fuzzing` function the fuzzer calls, which panics on a broken
//! invariant.
//!
//! `XBORDER_WRITE_SEEDS=1 cargo test --test it fuzz_corpus::write_seeds -- --ignored`
//! regenerates the seeds that need our fixed keys (tokens, audit exports).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xborder::audit::LogKey;
use xborder::audit::entry::{Entry, Event, FORMAT};
use xborder::audit::export::{Export, Header};
use xborder::audit::merkle::{MemoryTree, leaf_hash};
use xborder::clock::Timestamp;
use xborder::fuzzing;
use xborder::grant::token::{TokenKeys, TokenSettings, Tokens};
use xborder::grant::{Grant, GrantId, GrantState, Quotas};
use xborder::request::{Period, RequestId, Scope, Urgency};

/// A target's name and the function its fuzz target calls.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 4] = [
    ("token", fuzzing::token),
    ("filing", fuzzing::filing),
    ("config", fuzzing::config),
    ("audit", fuzzing::audit),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    match fs::read_dir(fuzz_dir().join(kind).join(target)) {
        Ok(dir) => dir
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.ends_with(".gitkeep"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn every_seed_and_past_crash_replays_through_its_target() {
    for (target, run) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(seeds.len() >= 3, "{target}: the seed corpus is missing");
        for path in seeds.iter().chain(&inputs("regressions", target)) {
            let data = fs::read(path).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                panic!("{target}: {} broke an invariant", path.display());
            }
        }
    }
}

/// The signed seeds are what they claim: the fuzzer starts from a live
/// token and a log that verifies, not from refusals only.
#[test]
fn the_signed_seeds_are_genuine() {
    let seed = |target: &str, name: &str| {
        fs::read(fuzz_dir().join("seeds").join(target).join(name)).unwrap()
    };
    let token = seed("token", "valid");
    let token = std::str::from_utf8(&token[1..]).unwrap();
    assert!(
        fuzz_tokens()
            .verify(token, &fuzzing::thumbprint(), fuzzing::NOW)
            .is_ok()
    );
    let verify = |name: &str| {
        let export = Export::read_from(&seed("audit", name)[..]).unwrap();
        xborder::audit::verify::verify(&export, &fuzzing::audit_vkey(), None)
    };
    assert_eq!(verify("valid").unwrap().size, 6);
    assert!(verify("tampered").is_err());
}

fn fuzz_tokens() -> Tokens {
    Tokens::new(
        TokenKeys::from_signing_key(fuzzing::signing_key()),
        TokenSettings {
            issuer: fuzzing::GATEWAY.into(),
            audience: fuzzing::GATEWAY.into(),
            leeway: Duration::ZERO,
        },
    )
}

/// The seeds that are not plain text: a live token and a signed export.
#[test]
#[ignore = "writes fuzz/seeds; run with XBORDER_WRITE_SEEDS=1"]
fn write_seeds() {
    if std::env::var_os("XBORDER_WRITE_SEEDS").is_none() {
        return;
    }
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    };

    let tokens = fuzz_tokens();
    let token = tokens.issue(&grant()).unwrap();
    assert!(
        tokens
            .verify(&token, &fuzzing::thumbprint(), fuzzing::NOW)
            .is_ok()
    );
    write("token", "valid", &[b"\0", token.as_bytes()].concat());
    let payload = base64_payload(&token);
    write("token", "claims", &[&[1u8][..], &payload].concat());
    write(
        "token",
        "receipt-claims",
        &[
            &[3u8][..],
            br#"{"iss":"spiffe://ee.xborder.test/gateway","iat":1000000000}"#,
        ]
        .concat(),
    );
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{}.",
        token.split('.').nth(1).unwrap()
    );
    write("token", "alg-none", &[b"\0", none.as_bytes()].concat());

    write("audit", "valid", &export(6, false));
    write("audit", "tampered", &export(6, true));
    write("audit", "empty-log", &export(0, false));
}

fn base64_payload(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap()
}

fn grant() -> Grant {
    Grant {
        id: GrantId::new(),
        request_id: RequestId::new(),
        grantee: "spiffe://fi.xborder.test/police".parse().unwrap(),
        grantee_jurisdiction: "FI".parse().unwrap(),
        holder: "EE".parse().unwrap(),
        thumbprint: fuzzing::thumbprint().x5t_s256(),
        scope: Scope {
            legal_basis: "eu-2023-1543".into(),
            purpose: "fraud investigation".into(),
            categories: vec!["subscriber".parse().unwrap()],
            targets: vec!["+3725550123".into()],
            period: Period {
                from: Timestamp::parse("2001-01-01T00:00:00Z").unwrap(),
                to: Timestamp::parse("2001-06-30T00:00:00Z").unwrap(),
            },
            urgency: Urgency::Normal,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "needed".into(),
        },
        quotas: Quotas {
            max_bytes: Some(1 << 20),
            max_transfers: Some(10),
        },
        used_bytes: 0,
        used_transfers: 0,
        approvers: Vec::new(),
        issued_at: fuzzing::NOW,
        expires_at: fuzzing::NOW.saturating_add(Duration::from_secs(7 * 86_400)),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: String::new(),
    }
}

/// An export of `n` entries signed by the fuzz log key; `tamper` changes
/// a byte of the first entry after signing.
fn export(n: u64, tamper: bool) -> Vec<u8> {
    let mut tree = MemoryTree::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let grant: GrantId = format!("00000000-0000-4000-8000-{i:012x}").parse().unwrap();
        let event = if i % 2 == 0 {
            Event::GrantValidated {
                grant,
                by: "spiffe://ee.xborder.test/staff/anna".into(),
            }
        } else {
            Event::TransferDenied {
                peer: "spiffe://fi.xborder.test/police".into(),
                jurisdiction: "FI".into(),
                code: "grant_expired".into(),
                grant: Some(grant),
                category: Some("subscriber".into()),
                target: None,
            }
        };
        let entry = Entry {
            v: FORMAT,
            index: i,
            at: Timestamp::from_unix_ms(1_767_225_600_000 + 1000 * i as i64),
            prev: hex::encode(tree.root()),
            event,
        };
        let line = entry.to_bytes();
        tree.append(leaf_hash(&line));
        lines.push(line);
    }
    let key = LogKey::new(fuzzing::ORIGIN, fuzzing::signing_key()).unwrap();
    assert_eq!(key.vkey(), fuzzing::audit_vkey());
    if tamper && !lines.is_empty() {
        let at = lines[0].len() / 2;
        lines[0][at] ^= 1;
    }
    let export = Export {
        header: Header {
            origin: fuzzing::ORIGIN.into(),
            size: tree.size(),
            checkpoint: key.sign(tree.size(), tree.root()),
        },
        entries: lines,
    };
    let mut out = Vec::new();
    export.write_to(&mut out).unwrap();
    out
}
