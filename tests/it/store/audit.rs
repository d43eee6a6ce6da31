//! The audit log as every store keeps it: each change appends the entries
//! that record it, in the same transaction; a refused change appends
//! nothing; the head, the entries and the proofs agree with an independent
//! tree built from the entries' bytes. The SQLite-only failure injections
//! (a change and its entry fail together) are at the end.

use std::sync::Arc;

use xborder::audit::entry::{Entry, Event, Pseudonymiser};
use xborder::audit::merkle::{self, HashSource as _, MemoryTree};
use xborder::grant::Cause;
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Store, StoreError};

use super::{
    approval, approver, assert_conflict, at, close, decision, grant, granted, names, receipt,
    request, transfer,
};

store_suite!(sqlite, super::super::open_sqlite;
    every_change_appends_the_entries_that_record_it,
    a_refused_change_appends_nothing,
    proofs_agree_with_a_tree_built_from_the_entries,
);
store_suite!(postgres, super::super::open_postgres;
    every_change_appends_the_entries_that_record_it,
    a_refused_change_appends_nothing,
    proofs_agree_with_a_tree_built_from_the_entries,
);

/// Every entry's bytes, in index order.
async fn all_entries(store: &Arc<dyn Store>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let page = store.audit_entries(out.len() as u64, 7).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The entries parsed, after checking that each one's index is its place
/// and its `prev` the root of the entries before it, and that the store's
/// head is the root of them all.
async fn checked_log(store: &Arc<dyn Store>) -> Vec<Entry> {
    let bytes = all_entries(store).await;
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for (position, line) in bytes.iter().enumerate() {
        let entry = Entry::parse(line).unwrap();
        assert_eq!(entry.index, position as u64);
        assert_eq!(entry.prev_root(), Some(tree.root()), "entry {position}");
        assert_eq!(entry.to_bytes(), *line, "entry bytes are canonical");
        tree.append(merkle::leaf_hash(line));
        entries.push(entry);
    }
    assert_eq!(
        store.audit_head().await.unwrap(),
        (tree.size(), tree.root())
    );
    entries
}

fn kinds(entries: &[Entry]) -> Vec<&'static str> {
    entries.iter().map(|e| e.event.kind()).collect()
}

async fn every_change_appends_the_entries_that_record_it(store: Arc<dyn Store>) {
    assert_eq!(store.audit_head().await.unwrap(), (0, merkle::empty_root()));

    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let proposed = grant(&request, 100_000, None);
    store
        .approve(
            request.id,
            approval("anna", 2_000),
            2,
            proposed.clone(),
            &decision("p1"),
        )
        .await
        .unwrap();
    let Approved::Granted(granted) = store
        .approve(
            request.id,
            approval("bert", 2_500),
            2,
            proposed,
            &decision("p2"),
        )
        .await
        .unwrap()
    else {
        panic!("two approvers of two grant");
    };
    let open = transfer(&granted, 3_000);
    store.open_transfer(&open).await.unwrap();
    let (closed, _) = close(&store, &receipt(&open, 42, 3_500)).await.unwrap();
    store
        .end_grant(
            granted.id,
            Cause::Manual,
            Some(&approver("carl")),
            Some("incident 7 at the holder"),
            at(4_000),
        )
        .await
        .unwrap();
    let denied = super::request(5_000);
    store.insert_request(&denied).await.unwrap();
    store
        .deny(
            denied.id,
            &approver("anna"),
            "no legal basis given",
            at(6_000),
        )
        .await
        .unwrap();
    let recorded = Event::TlsReloaded {
        tls_sha256: "ab".repeat(32),
        forced: true,
    };
    let index = store.record(at(7_000), recorded.clone()).await.unwrap();

    let entries = checked_log(&store).await;
    assert_eq!(
        kinds(&entries),
        [
            "request_filed",
            "finding",
            "finding",
            "finding",
            "approval",
            "approval",
            "grant_issued",
            "transfer_allowed",
            "transfer_completed",
            "grant_ended",
            "request_filed",
            "finding",
            "finding",
            "finding",
            "request_denied",
            "tls_reloaded",
        ]
    );
    assert_eq!(index, 15);
    assert_eq!(entries[15].event, recorded);
    assert_eq!(entries[15].at, at(7_000));

    // Who acted, under which policy, and what the receipt says of its entry.
    match &entries[5].event {
        Event::Approval {
            by,
            approvals,
            required,
            policy,
            ..
        } => {
            assert_eq!(by, approver("bert").as_str());
            assert_eq!((*approvals, *required), (2, 2));
            assert_eq!(policy, "p2");
        }
        other => panic!("{other:?}"),
    }
    match &entries[6].event {
        Event::GrantIssued {
            grant,
            approvers,
            policy,
            ..
        } => {
            assert_eq!(*grant, granted.id);
            assert_eq!(approvers.len(), 2);
            assert_eq!(policy, "p2");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(closed.audit_index, Some(8));
    assert_eq!(
        store.transfer_receipt(open.id).await.unwrap().unwrap().0,
        closed
    );
    match &entries[8].event {
        Event::TransferCompleted {
            transfer,
            plaintext_bytes,
            plaintext_sha256,
            complete,
            ..
        } => {
            assert_eq!(*transfer, open.id);
            assert_eq!(*plaintext_bytes, 42);
            assert_eq!(*plaintext_sha256, closed.plaintext_sha256);
            assert!(*complete);
        }
        other => panic!("{other:?}"),
    }
    match &entries[9].event {
        Event::GrantEnded {
            cause,
            by,
            reason_sha256,
            ..
        } => {
            assert_eq!(cause, "manual");
            assert_eq!(by.as_deref(), Some(approver("carl").as_str()));
            assert!(reason_sha256.is_some());
        }
        other => panic!("{other:?}"),
    }

    // Targets are pseudonyms under the store's key; no target and no free
    // text is ever in the log in clear.
    let expected = names();
    match &entries[0].event {
        Event::RequestFiled { targets, .. } => assert_eq!(
            *targets,
            request
                .scope
                .targets
                .iter()
                .map(|t| expected.target(t))
                .collect::<Vec<_>>()
        ),
        other => panic!("{other:?}"),
    }
    let log = String::from_utf8(all_entries(&store).await.concat()).unwrap();
    for secret in request.scope.targets.iter().map(String::as_str).chain([
        "incident 7",
        "no legal basis",
        request.scope.purpose.as_str(),
        request.scope.justification.as_str(),
    ]) {
        assert!(!log.contains(secret), "`{secret}` is in the log in clear");
    }
}

async fn a_refused_change_appends_nothing(store: Arc<dyn Store>) {
    let grant = granted(&store, 100_000, None).await;
    let before = store.audit_head().await.unwrap();

    // Approving a decided request, ending an ended grant, opening under a
    // stranger's identity, closing twice: each refused, none logged.
    let request_id = grant.request_id;
    assert_conflict(
        store
            .approve(
                request_id,
                approval("zoe", 3_000),
                1,
                super::grant(&request(1_000), 100_000, None),
                &decision("p"),
            )
            .await,
        "",
    );
    let mut stranger = transfer(&grant, 3_000);
    stranger.grantee = "spiffe://us.xborder.test/agency".into();
    assert_conflict(store.open_transfer(&stranger).await, "not");
    assert_eq!(store.audit_head().await.unwrap(), before);

    let open = transfer(&grant, 3_000);
    store.open_transfer(&open).await.unwrap();
    close(&store, &receipt(&open, 1, 3_100)).await.unwrap();
    let before = store.audit_head().await.unwrap();
    assert_conflict(
        close(&store, &receipt(&open, 1, 3_200)).await,
        "written once",
    );
    store
        .end_grant(grant.id, Cause::Expired, None, None, at(5_000))
        .await
        .unwrap()
        .unwrap();
    let after_end = store.audit_head().await.unwrap();
    assert_eq!(after_end.0, before.0 + 1, "the first ending is logged");
    assert!(
        store
            .end_grant(grant.id, Cause::Manual, None, Some("late"), at(6_000))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store.audit_head().await.unwrap(),
        after_end,
        "a second ending changes nothing, so logs nothing"
    );
    checked_log(&store).await;
}

async fn proofs_agree_with_a_tree_built_from_the_entries(store: Arc<dyn Store>) {
    for i in 0..37 {
        store
            .record(
                at(i),
                Event::TlsReloaded {
                    tls_sha256: format!("{i:064x}"),
                    forced: false,
                },
            )
            .await
            .unwrap();
    }
    let mut tree = MemoryTree::new();
    for line in all_entries(&store).await {
        tree.append(merkle::leaf_hash(&line));
    }
    for size in [1, 2, 3, 8, 13, 16, 36, 37] {
        let root = store.audit_root(size).await.unwrap();
        assert_eq!(root, merkle::root_at(&tree, size).unwrap(), "size {size}");
        for index in [0, size / 2, size - 1] {
            let proof = store.inclusion_proof(index, size).await.unwrap();
            assert_eq!(
                proof,
                merkle::inclusion_proof_at(&tree, index, size).unwrap()
            );
            merkle::verify_inclusion(index, size, &tree.leaf(index), &proof, &root).unwrap();
        }
        for old in [0, 1, size / 3, size] {
            let proof = store.consistency_proof(old, size).await.unwrap();
            let old_root = merkle::root_at(&tree, old).unwrap();
            merkle::verify_consistency(old, size, &old_root, &root, &proof).unwrap();
        }
    }
    for out_of_range in [
        store.inclusion_proof(37, 37).await,
        store.inclusion_proof(0, 38).await,
        store.consistency_proof(5, 38).await,
        store.consistency_proof(9, 8).await,
    ] {
        assert!(
            matches!(out_of_range, Err(StoreError::OutOfRange { .. })),
            "{out_of_range:?}"
        );
    }
    assert!(matches!(
        store.audit_root(38).await,
        Err(StoreError::OutOfRange {
            index: 38,
            size: 37
        })
    ));
}

// ---------------------------------------------------------------------------
// SQLite: a failure between a change and its entry fails both.

fn sqlite_with_file() -> (tempfile::TempDir, std::path::PathBuf, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store = SqliteStore::open(&path, names()).unwrap();
    (dir, path, Arc::new(store))
}

/// Runs `sql` on the file from a second connection, as a fault injector.
fn inject(path: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[tokio::test]
async fn sqlite_a_change_whose_entry_cannot_be_appended_is_not_made() {
    let (_dir, path, store) = sqlite_with_file();
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let before = store.audit_head().await.unwrap();

    inject(
        &path,
        "CREATE TRIGGER fail_audit BEFORE INSERT ON audit_entries \
         BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END;",
    );
    let result = store
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant(&request, 100_000, None),
            &decision("p"),
        )
        .await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    let stored = store.request(request.id).await.unwrap().unwrap();
    assert!(stored.approvals.is_empty(), "no approval without its entry");
    assert_eq!(stored.state.as_str(), "pending");
    assert!(store.grants(None).await.unwrap().is_empty(), "no grant");
    let other = super::request(1_500);
    assert!(store.insert_request(&other).await.is_err());
    assert!(store.request(other.id).await.unwrap().is_none());

    inject(&path, "DROP TRIGGER fail_audit;");
    assert_eq!(store.audit_head().await.unwrap(), before);
    store
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant(&request, 100_000, None),
            &decision("p"),
        )
        .await
        .unwrap();
    checked_log(&store).await;
}

#[tokio::test]
async fn sqlite_an_entry_whose_change_fails_is_not_kept() {
    let (_dir, path, store) = sqlite_with_file();
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let before = store.audit_head().await.unwrap();

    // The approval's entry is appended before the grant row; the grant fails.
    inject(
        &path,
        "CREATE TRIGGER fail_grant BEFORE INSERT ON grants \
         BEGIN SELECT RAISE(ABORT, 'injected grant failure'); END;",
    );
    let result = store
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant(&request, 100_000, None),
            &decision("p"),
        )
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        store.audit_head().await.unwrap(),
        before,
        "no entry without its change"
    );
    inject(&path, "DROP TRIGGER fail_grant;");

    // A receipt that cannot be signed: the transfer stays open, no entry.
    let granted = match store
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant(&request, 100_000, None),
            &decision("p"),
        )
        .await
        .unwrap()
    {
        Approved::Granted(grant) => *grant,
        other => panic!("{other:?}"),
    };
    let open = transfer(&granted, 3_000);
    store.open_transfer(&open).await.unwrap();
    let before = store.audit_head().await.unwrap();
    let result = store
        .close_transfer(
            receipt(&open, 5, 3_100),
            Box::new(|_| Err("the signing key is gone".into())),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(store.audit_head().await.unwrap(), before);
    assert_eq!(
        store.open_transfers().await.unwrap(),
        std::slice::from_ref(&open)
    );
    assert_eq!(
        store.grant(granted.id).await.unwrap().unwrap().used_bytes,
        0
    );
    checked_log(&store).await;
}

#[tokio::test]
async fn sqlite_the_log_is_the_same_after_reopening() {
    let (_dir, path, store) = sqlite_with_file();
    granted(&store, 100_000, None).await;
    let head = store.audit_head().await.unwrap();
    drop(store);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, Pseudonymiser::new(vec![1; 32]).unwrap()).unwrap());
    assert_eq!(store.audit_head().await.unwrap(), head);
    store
        .record(
            at(9),
            Event::TlsReloaded {
                tls_sha256: String::new(),
                forced: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(checked_log(&store).await.len() as u64, head.0 + 1);
}
