//! An oversight body recomputes a transparency report from an audit export
//! with `xborder report transparency --export`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use xborder::audit::entry::{Entry, Event, FORMAT};
use xborder::clock::Timestamp;
use xborder::grant::GrantId;
use xborder::request::RequestId;
use xborder::transfer::receipt::TransferId;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");

fn t(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap()
}

fn entry(index: usize, at: &str, event: Event) -> Entry {
    Entry {
        v: FORMAT,
        index: index as u64,
        at: t(at),
        prev: "00".repeat(32),
        event,
    }
}

fn filed(
    request: RequestId,
    jurisdiction: &str,
    categories: &[&str],
    state: &str,
    deadline: &str,
) -> Event {
    Event::RequestFiled {
        request,
        requester: format!(
            "spiffe://{}.xborder.test/agency",
            jurisdiction.to_lowercase()
        ),
        jurisdiction: jurisdiction.to_owned(),
        holder: "EE".to_owned(),
        categories: categories.iter().map(|c| (*c).to_owned()).collect(),
        targets: Vec::new(),
        urgency: "normal".to_owned(),
        state: state.to_owned(),
        deadline: t(deadline),
        policy: "p".to_owned(),
    }
}

fn issued(grant: GrantId, request: RequestId) -> Event {
    Event::GrantIssued {
        grant,
        request,
        grantee: "spiffe://fi.xborder.test/agency".to_owned(),
        jurisdiction: "FI".to_owned(),
        categories: vec!["subscriber".to_owned()],
        approvers: vec!["spiffe://ee.xborder.test/reviewer/anna".to_owned()],
        expires_at: t("2026-01-20T00:00:00Z"),
        validation_due: None,
        notice_due: None,
        max_bytes: None,
        max_transfers: None,
        policy: "p".to_owned(),
    }
}

/// January 2026: FI files four requests, US one; one grant, one transfer.
fn history() -> Vec<Entry> {
    let later = "2026-03-01T00:00:00Z";
    let (a, b, c, d, e, old) = (
        RequestId::new(),
        RequestId::new(),
        RequestId::new(),
        RequestId::new(),
        RequestId::new(),
        RequestId::new(),
    );
    let (ga, gb, transfer) = (GrantId::new(), GrantId::new(), TransferId::new());
    let events = [
        (
            "2025-12-30T10:00:00Z",
            filed(old, "FI", &["subscriber"], "pending", later),
        ),
        (
            "2026-01-02T10:00:00Z",
            filed(a, "FI", &["subscriber", "content"], "pending", later),
        ),
        ("2026-01-03T10:00:00Z", issued(ga, a)),
        (
            "2026-01-04T10:00:00Z",
            filed(b, "FI", &["subscriber"], "pending", later),
        ),
        ("2026-01-05T10:00:00Z", issued(gb, b)),
        (
            "2026-01-06T10:00:00Z",
            Event::RequestDenied {
                request: c,
                by: "spiffe://ee.xborder.test/reviewer/anna".to_owned(),
                reason_sha256: "r".to_owned(),
            },
        ),
        (
            "2026-01-05T12:00:00Z",
            filed(c, "FI", &["content"], "pending", later),
        ),
        (
            "2026-01-07T10:00:00Z",
            filed(d, "FI", &["traffic"], "refused", later),
        ),
        (
            "2026-01-08T10:00:00Z",
            filed(e, "US", &["subscriber"], "pending", "2026-01-18T10:00:00Z"),
        ),
        (
            "2026-01-09T10:00:00Z",
            Event::TransferAllowed {
                transfer,
                grant: ga,
                grantee: "spiffe://fi.xborder.test/agency".to_owned(),
                category: "content".to_owned(),
                target: xborder::audit::entry::Pseudonym("ab".repeat(32)),
            },
        ),
        (
            "2026-01-09T10:01:00Z",
            Event::TransferCompleted {
                transfer,
                grant: ga,
                complete: true,
                incomplete: None,
                plaintext_sha256: "00".repeat(32),
                ciphertext_sha256: "00".repeat(32),
                plaintext_bytes: 1234,
                ciphertext_bytes: 1434,
                encrypted: true,
            },
        ),
        (
            "2026-01-20T00:00:00Z",
            Event::GrantEnded {
                grant: ga,
                cause: "expired".to_owned(),
                by: None,
                reason_sha256: None,
            },
        ),
        (
            "2026-02-01T00:00:00Z",
            filed(RequestId::new(), "FI", &["content"], "pending", later),
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (at, event))| entry(i, at, event))
        .collect()
}

fn write_export(path: &Path, entries: &[Entry]) {
    let mut text = String::from(r#"{"export":"xborder-audit","v":1}"#);
    text.push('\n');
    for e in entries {
        text.push_str(std::str::from_utf8(&e.to_bytes()).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn report(export: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(["report", "transparency", "--from", "2026-01-01T00:00:00Z"])
        .args([
            "--to",
            "2026-02-01T00:00:00Z",
            "--as-of",
            "2026-02-10T00:00:00Z",
        ])
        .arg("--export")
        .arg(export)
        .args(extra)
        .env_remove("XBORDER_ADMIN")
        .output()
        .unwrap()
}

/// `(section, jurisdiction, category, measure)` -> value.
fn csv_cells(stdout: &[u8]) -> BTreeMap<(String, String, String, String), String> {
    let text = String::from_utf8(stdout.to_vec()).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("from,to,section,jurisdiction,category,measure,value")
    );
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 7, "{line}");
            (
                (f[2].into(), f[3].into(), f[4].into(), f[5].into()),
                f[6].into(),
            )
        })
        .collect()
}

#[test]
fn an_auditor_recomputes_the_report_from_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    write_export(&export, &history());

    let out = report(&export, &["--format", "csv", "--k", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cells = csv_cells(&out.stdout);
    let value = |section: &str, j: &str, c: &str, m: &str| {
        cells
            .get(&(section.into(), j.into(), c.into(), m.into()))
            .unwrap_or_else(|| panic!("no {section},{j},{c},{m}"))
            .as_str()
    };
    assert_eq!(value("requests", "FI", "subscriber", "approved"), "2");
    assert_eq!(value("requests", "FI", "content", "approved"), "1");
    assert_eq!(value("requests", "FI", "content", "denied"), "1");
    assert_eq!(value("requests", "FI", "content", "pending"), "0");
    assert_eq!(value("requests", "FI", "traffic", "refused"), "1");
    assert_eq!(value("requests", "US", "subscriber", "overdue"), "1");
    assert_eq!(value("grants_ended", "", "", "expired"), "1");
    assert_eq!(value("grants_ended", "", "", "manual"), "0");
    assert_eq!(value("transfers", "FI", "content", "complete"), "1");
    assert_eq!(
        value("transfers", "FI", "content", "plaintext_bytes"),
        "1234"
    );
    let nonzero: u64 = cells
        .iter()
        .filter(|((section, ..), _)| section == "requests")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(nonzero, 6, "every request in the period, once per category");

    // Published as it would be: small counts suppressed.
    let out = report(&export, &["--format", "csv"]);
    let cells = csv_cells(&out.stdout);
    let key = |s: &str, j: &str, c: &str, m: &str| (s.into(), j.into(), c.into(), m.into());
    assert_eq!(
        cells[&key("requests", "FI", "subscriber", "approved")],
        "<5"
    );
    assert_eq!(
        cells[&key("transfers", "FI", "content", "plaintext_bytes")],
        "suppressed"
    );

    // An export with a damaged entry names the line.
    let mut text = std::fs::read_to_string(&export).unwrap();
    text = text.replacen("\"kind\":\"grant_issued\"", "\"kind\":\"grant_isued\"", 1);
    std::fs::write(&export, text).unwrap();
    let out = report(&export, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("export.jsonl:4: not an audit entry"),
        "{stderr}"
    );
}

/// Issue 15 (7): an ε that small once showed every count as 2⁶⁴ − 1.
#[test]
fn an_epsilon_outside_its_range_is_refused_and_noisy_counts_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    write_export(&export, &history());

    for bad in ["1e-300", "0.001", "100"] {
        let out = report(&export, &["--format", "csv", "--epsilon", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(stderr.contains("--epsilon"), "{stderr}");
        assert!(stderr.contains("0.01 ≤ ε ≤ 10"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("18446744073709551615"));
    }

    let out = report(
        &export,
        &["--format", "csv", "--k", "1", "--epsilon", "0.01"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ((section, _, _, measure), value) in csv_cells(&out.stdout) {
        if measure == "plaintext_bytes" {
            assert_eq!(value, "withheld");
            continue;
        }
        let count: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{section} {measure}: {value}"));
        // Noise of scale 100: never near a wrapped count.
        assert!(count < 100_000, "{section} {measure}: {count}");
    }
}
