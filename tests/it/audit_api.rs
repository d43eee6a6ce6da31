//! The audit log through the gateway's own listeners, the way an oversight
//! body and a grantee use it: signed tree heads, entries and proofs on
//! admin (for the auditor role, which sees nothing else), and a grantee's
//! inclusion proof for its receipt on the border.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde_json::Value;
use xborder::audit::checkpoint;
use xborder::audit::entry::{Entry, Event, Pseudonymiser};
use xborder::audit::merkle::{self, Hash, MemoryTree};
use xborder::client::BorderClient;

use crate::support::{PSEUDONYM_KEY, Running, World, admin, get, grant_with, pull_raw, send_json};

async fn text(client: &BorderClient, addr: std::net::SocketAddr, path: &str) -> String {
    let (status, body) = get(client, addr, path).await.unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    String::from_utf8(body.to_vec()).unwrap()
}

fn hashes(value: &Value) -> Vec<Hash> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            STANDARD
                .decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

/// Every entry's bytes, fetched page by page as `xborder audit export` does.
async fn entries(client: &BorderClient, admin: std::net::SocketAddr, size: u64) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    while (out.len() as u64) < size {
        let page = text(
            client,
            admin,
            &format!("/v1/audit/entries?start={}&limit=3", out.len()),
        )
        .await;
        assert!(!page.is_empty());
        out.extend(page.lines().map(|l| l.as_bytes().to_vec()));
    }
    out.truncate(size as usize);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_checks_the_log_and_a_grantee_proves_its_receipt_is_in_it() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let auditor = admin(&world, "olga");

    // The auditor's view before anything happened: the start is logged.
    let vkey = text(&auditor, gateway.admin, "/v1/audit/vkey").await;
    let (key_name, key) = checkpoint::parse_vkey(vkey.trim()).unwrap();
    assert_eq!(key_name, "ee.xborder.test/audit");
    let first = checkpoint::open(
        &text(&auditor, gateway.admin, "/v1/audit/checkpoint").await,
        &key_name,
        &key,
    )
    .unwrap();
    assert_eq!(first.origin, "ee.xborder.test/audit");
    assert_eq!(first.size, 1);

    // One exchange, one denied transfer.
    let (token, grant_id) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
        serde_json::json!({}),
    )
    .await;
    let (status, transfer, _) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/subscriber/+3725550123",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let transfer = transfer.unwrap();
    let (status, _, _) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/subscriber/+3725559999",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The grantee's proof: its receipt's entry is in the log the gateway signed.
    let grantee = world.client(Some(&police));
    let path = format!("/v1/transfers/{transfer}/inclusion");
    let mut proof = Value::Null;
    for _ in 0..200 {
        let (status, body) =
            send_json(&grantee, gateway.border, Method::GET, &path, None, None).await;
        if status == StatusCode::OK {
            proof = body;
            break;
        }
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let border_vkey = text(&grantee, gateway.border, "/v1/audit/vkey").await;
    assert_eq!(border_vkey, vkey);
    let head = checkpoint::open(proof["checkpoint"].as_str().unwrap(), &key_name, &key).unwrap();
    let entry_line = proof["entry"].as_str().unwrap();
    let entry = Entry::parse(entry_line.as_bytes()).unwrap();
    let index = proof["index"].as_u64().unwrap();
    assert_eq!(entry.index, index);
    match &entry.event {
        Event::TransferCompleted {
            transfer: id,
            grant,
            complete,
            ..
        } => {
            assert_eq!(id.to_string(), transfer);
            assert_eq!(grant.to_string(), grant_id);
            assert!(complete);
        }
        other => panic!("the receipt's entry is {other:?}"),
    }
    merkle::verify_inclusion(
        index,
        head.size,
        &merkle::leaf_hash(entry_line.as_bytes()),
        &hashes(&proof["proof"]),
        &head.root,
    )
    .unwrap();
    let (status, receipt) = send_json(
        &grantee,
        gateway.border,
        Method::GET,
        &format!("/v1/transfers/{transfer}/receipt"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(receipt["receipt"]["audit_index"], index);
    // Another peer's transfer is not there for it.
    let stranger = world
        .fi
        .issue(&xborder::pki::LeafSpec::client(crate::support::spiffe(
            "spiffe://fi.xborder.test/police/other",
        )))
        .unwrap();
    let (status, body) = send_json(
        &world.client(Some(&stranger)),
        gateway.border,
        Method::GET,
        &path,
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("transfer_not_found"))
    );

    // The auditor rebuilds the tree from the entries and checks it against
    // the signed head, and that the head extends the first one.
    let now = checkpoint::open(
        &text(&auditor, gateway.admin, "/v1/audit/checkpoint").await,
        &key_name,
        &key,
    )
    .unwrap();
    let lines = entries(&auditor, gateway.admin, now.size).await;
    let mut tree = MemoryTree::new();
    let mut events = Vec::new();
    for line in &lines {
        let entry = Entry::parse(line).unwrap();
        assert_eq!(entry.prev_root(), Some(tree.root()));
        tree.append(merkle::leaf_hash(line));
        events.push(entry.event);
    }
    assert_eq!(tree.root(), now.root);
    let (status, consistency) = send_json(
        &auditor,
        gateway.admin,
        Method::GET,
        &format!(
            "/v1/audit/proofs/consistency?old={}&new={}",
            first.size, now.size
        ),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{consistency}");
    merkle::verify_consistency(
        first.size,
        now.size,
        &first.root,
        &now.root,
        &hashes(&consistency["proof"]),
    )
    .unwrap();
    let (status, inclusion) = send_json(
        &auditor,
        gateway.admin,
        Method::GET,
        &format!("/v1/audit/proofs/inclusion?index=0&size={}", now.size),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{inclusion}");
    merkle::verify_inclusion(
        0,
        now.size,
        &merkle::leaf_hash(&lines[0]),
        &hashes(&inclusion["proof"]),
        &now.root,
    )
    .unwrap();

    // What the log says happened, in order, with targets pseudonymised.
    let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    assert_eq!(kinds[0], "gateway_started");
    for kind in [
        "request_filed",
        "finding",
        "approval",
        "grant_issued",
        "transfer_allowed",
        "transfer_completed",
        "transfer_denied",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let names = Pseudonymiser::new(PSEUDONYM_KEY.to_vec()).unwrap();
    let denied = events
        .iter()
        .find_map(|e| match e {
            Event::TransferDenied {
                code,
                target,
                peer,
                grant,
                ..
            } => Some((code.clone(), target.clone(), peer.clone(), *grant)),
            _ => None,
        })
        .unwrap();
    assert_eq!(denied.0, "scope_target");
    assert_eq!(denied.1, Some(names.target("+3725559999")));
    assert_eq!(denied.2, "spiffe://fi.xborder.test/agency/police");
    assert_eq!(denied.3.map(|g| g.to_string()), Some(grant_id));
    let log = String::from_utf8(lines.concat()).unwrap();
    for clear in ["+3725550123", "+3725559999", "card fraud"] {
        assert!(!log.contains(clear), "`{clear}` is in the log in clear");
    }

    // Bad queries are named; the auditor reads nothing but the log.
    for (query, code) in [
        ("/v1/audit/proofs/inclusion?index=999", "audit_out_of_range"),
        ("/v1/audit/proofs/inclusion?index=x", "invalid_query"),
        ("/v1/audit/proofs/consistency", "invalid_query"),
        (
            "/v1/audit/proofs/consistency?old=2&new=99999",
            "audit_out_of_range",
        ),
    ] {
        let (status, body) =
            send_json(&auditor, gateway.admin, Method::GET, query, None, None).await;
        assert_eq!(body["code"], code, "{query}: {status} {body}");
    }
    for path in ["/v1/requests", "/v1/grants"] {
        let (status, body) =
            send_json(&auditor, gateway.admin, Method::GET, path, None, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("role_required"))
        );
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_start_is_logged_and_the_log_outlives_a_restart() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let auditor = admin(&world, "olga");
    let vkey = text(&auditor, gateway.admin, "/v1/audit/vkey").await;
    let (name, key) = checkpoint::parse_vkey(vkey.trim()).unwrap();
    let before = checkpoint::open(
        &text(&auditor, gateway.admin, "/v1/audit/checkpoint").await,
        &name,
        &key,
    )
    .unwrap();
    gateway.shutdown().await;

    let gateway = Running::start(&world).await;
    let after = checkpoint::open(
        &text(&auditor, gateway.admin, "/v1/audit/checkpoint").await,
        &name,
        &key,
    )
    .unwrap();
    assert_eq!(after.size, before.size + 1);
    let lines = entries(&auditor, gateway.admin, after.size).await;
    let last = Entry::parse(lines.last().unwrap()).unwrap();
    assert_eq!(last.event.kind(), "gateway_started");
    assert_eq!(last.prev_root(), Some(before.root));
    gateway.shutdown().await;
}
