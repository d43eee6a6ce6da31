//! Someone with write access to the gateway's store edits the audit log:
//! flips a byte of an entry, deletes one, swaps two. The oversight body
//! exports the log with the real `xborder audit export` from the running
//! gateway and checks it with `xborder audit verify`, which fails and names
//! the entry each time; with the log restored it verifies again, consistent
//! with the tree head the auditor kept from before. A grantee checks its
//! receipt's inclusion with `xborder audit verify --receipt`.

use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use rusqlite::{Connection, params};
use xborder::audit::entry::Entry;
use xborder::store::sqlite::SqliteStore;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");

/// Runs the binary with `args`, as EE's auditor for commands that need the
/// admin listener; success, stdout, stderr.
async fn xborder(
    world: &World,
    admin: std::net::SocketAddr,
    args: &[&str],
) -> (bool, String, String) {
    let issued = world
        .ee
        .issue(&xborder::pki::LeafSpec::client(spiffe(
            "spiffe://ee.xborder.test/admin/olga",
        )))
        .unwrap();
    world.write("auditor/olga.pem", &issued.cert_pem());
    world.write("auditor/olga-key.pem", &issued.key_pem());
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("XBORDER_ADMIN", admin.to_string())
        .env("XBORDER_CA", world.path("ee/ca.pem"))
        .env("XBORDER_CERT", world.path("auditor/olga.pem"))
        .env("XBORDER_KEY", world.path("auditor/olga-key.pem"))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

struct Auditor<'w> {
    world: &'w World,
    admin: std::net::SocketAddr,
    vkey: PathBuf,
}

impl Auditor<'_> {
    fn path(&self, name: &str) -> PathBuf {
        self.world.path(&format!("auditor/{name}"))
    }

    async fn export(&self, name: &str) -> PathBuf {
        let out = self.path(name);
        let (ok, stdout, stderr) = xborder(
            self.world,
            self.admin,
            &["audit", "export", "--out", out.to_str().unwrap()],
        )
        .await;
        assert!(ok, "export: {stdout}{stderr}");
        out
    }

    /// `xborder audit verify`; success and what it printed.
    async fn verify(&self, export: &Path, since: Option<&Path>) -> (bool, String) {
        let mut args = vec![
            "audit",
            "verify",
            export.to_str().unwrap(),
            "--vkey-file",
            self.vkey.to_str().unwrap(),
        ];
        if let Some(since) = since {
            args.extend(["--since", since.to_str().unwrap()]);
        }
        let (ok, stdout, stderr) = xborder(self.world, self.admin, &args).await;
        (ok, format!("{stdout}{stderr}"))
    }

    async fn assert_names(&self, what: &str, entry: u64) {
        let export = self.export(&format!("{what}.jsonl")).await;
        let (ok, said) = self.verify(&export, None).await;
        assert!(!ok, "{what}: a tampered log verified: {said}");
        assert!(
            said.contains(&format!("entry {entry}")),
            "{what}: verify should name entry {entry}: {said}"
        );
    }
}

/// The store's file, opened beside the running gateway (WAL allows it).
fn store_file(world: &World) -> Connection {
    Connection::open(world.path("ee/data").join(SqliteStore::FILE_NAME)).unwrap()
}

fn entry_bytes(db: &Connection, index: u64) -> Vec<u8> {
    db.query_row(
        "SELECT entry FROM audit_entries WHERE idx = ?1",
        [index as i64],
        |row| row.get(0),
    )
    .unwrap()
}

fn set_entry(db: &Connection, index: u64, bytes: &[u8]) {
    db.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE idx = ?2",
        params![bytes, index as i64],
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_entry_someone_changed_deleted_or_moved_in_the_store() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (token, _) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
        serde_json::json!({}),
    )
    .await;
    let mut transfers = Vec::new();
    for target in ["+3725550123", "+3725550124"] {
        let (status, transfer, _) = pull_raw(
            &world,
            gateway.border,
            &police,
            Some(&token),
            &format!("/v1/data/subscriber/{target}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        transfers.push(transfer.unwrap());
    }
    // The receipts are written when the streams end.
    let grantee = world.client(Some(&police));
    let mut receipt = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = send_json(
            &grantee,
            gateway.border,
            Method::GET,
            &format!("/v1/transfers/{}/receipt", transfers[1]),
            None,
            None,
        )
        .await;
        if status == StatusCode::OK {
            receipt = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(receipt.is_object(), "the second receipt never came");

    let (status, vkey) = get(&grantee, gateway.border, "/v1/audit/vkey")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    world.write("auditor/vkey.txt", std::str::from_utf8(&vkey).unwrap());
    let auditor = Auditor {
        world: &world,
        admin: gateway.admin,
        vkey: world.path("auditor/vkey.txt"),
    };

    // A first visit: the export verifies; the auditor keeps its tree head.
    let first = auditor.export("first.jsonl").await;
    let (ok, said) = auditor.verify(&first, None).await;
    assert!(ok, "{said}");
    assert!(said.starts_with("ok: "), "{said}");
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&first)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    world.write("auditor/kept.txt", header["checkpoint"].as_str().unwrap());
    let kept = auditor.path("kept.txt");

    // The grantee proves its receipt is in the log.
    let (status, proof) = send_json(
        &grantee,
        gateway.border,
        Method::GET,
        &format!("/v1/transfers/{}/inclusion", transfers[1]),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{proof}");
    world.write("auditor/receipt.jws", receipt["jws"].as_str().unwrap());
    world.write("auditor/proof.json", &proof.to_string());
    let (ok, stdout, stderr) = xborder(
        &world,
        gateway.admin,
        &[
            "audit",
            "verify",
            "--receipt",
            auditor.path("receipt.jws").to_str().unwrap(),
            "--proof",
            auditor.path("proof.json").to_str().unwrap(),
            "--vkey-file",
            auditor.vkey.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{stdout}{stderr}");

    // The log grows; what is in the middle of it is what gets edited.
    let db = store_file(&world);
    let size: u64 = db
        .query_row("SELECT COUNT(*) FROM audit_entries", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap() as u64;
    assert!(size >= 12, "only {size} entries");
    let target = (1..size - 1)
        .find(|&i| Entry::parse(&entry_bytes(&db, i)).unwrap().event.kind() == "transfer_completed")
        .unwrap();

    // 1. One byte of a hash flipped, the JSON still valid.
    let original = entry_bytes(&db, target);
    let text = String::from_utf8(original.clone()).unwrap();
    let at = text.find("\"plaintext_sha256\":\"").unwrap() + "\"plaintext_sha256\":\"".len();
    let mut flipped = original.clone();
    flipped[at] = if flipped[at] == b'0' { b'1' } else { b'0' };
    set_entry(&db, target, &flipped);
    auditor.assert_names("flipped", target).await;
    set_entry(&db, target, &original);

    // 2. An entry deleted.
    let row: (i64, String, Vec<u8>) = db
        .query_row(
            "SELECT at, kind, leaf FROM audit_entries WHERE idx = ?1",
            [target as i64],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    db.execute("DELETE FROM audit_entries WHERE idx = ?1", [target as i64])
        .unwrap();
    auditor.assert_names("deleted", target).await;
    db.execute(
        "INSERT INTO audit_entries (idx, at, kind, entry, leaf) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![target as i64, row.0, row.1, original, row.2],
    )
    .unwrap();

    // 3. Two entries swapped.
    let (a, b) = (target - 1, target);
    let (bytes_a, bytes_b) = (entry_bytes(&db, a), entry_bytes(&db, b));
    set_entry(&db, a, &bytes_b);
    set_entry(&db, b, &bytes_a);
    auditor.assert_names("swapped", a).await;
    set_entry(&db, a, &bytes_a);
    set_entry(&db, b, &bytes_b);

    // Restored, the log verifies and extends the head kept at the first visit.
    let last = auditor.export("restored.jsonl").await;
    let (ok, said) = auditor.verify(&last, Some(&kept)).await;
    assert!(ok, "{said}");
    assert!(said.contains("consistent"), "{said}");
    gateway.shutdown().await;
}
