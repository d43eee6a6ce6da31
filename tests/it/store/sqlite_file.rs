//! SQLite's file, which only the SQLite store has: reopened, it finds
//! every request, grant, open transfer and receipt again; it refuses a
//! schema newer than it knows; and two gateways on one file (two
//! connections) still create one grant per review and respect a transfer
//! quota.

use std::sync::Arc;

use xborder::grant::Quotas;
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Store, StoreError};

use super::{
    approval, assert_quota_exhausted, at, close, decision, grant, granted, granted_with, jws,
    names, receipt, request, transfer,
};

#[tokio::test]
async fn sqlite_finds_everything_again_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let pending = request(500);
    store.insert_request(&pending).await.unwrap();
    let grant = granted(&store, 100_000, Some(50_000)).await;
    let approved = store.request(grant.request_id).await.unwrap().unwrap();
    drop(store);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    assert_eq!(store.request(pending.id).await.unwrap(), Some(pending));
    assert_eq!(store.request(approved.id).await.unwrap(), Some(approved));
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(grant));
    assert_eq!(store.next_due().await.unwrap(), Some(at(50_000)));
}

#[tokio::test]
async fn sqlite_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    drop(SqliteStore::open(&path, names()).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();

    match SqliteStore::open(&path, names()) {
        Ok(_) => panic!("a schema from the future must be refused"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("999"),
                "`{message}` should name the version"
            );
            assert!(
                message.contains(SqliteStore::FILE_NAME),
                "`{message}` should name the file"
            );
        }
    }
}

/// Two gateways on one file (two connections) race to complete the same
/// review: exactly one grant is created, the other approval is turned away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_approvals_create_one_grant() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());

    for round in 0..20 {
        let request = request(1_000 + round);
        a.insert_request(&request).await.unwrap();
        let decision = decision("policy-hash");
        let (first, second) = tokio::join!(
            a.approve(
                request.id,
                approval("anna", 2_000),
                1,
                grant(&request, 100_000, None),
                &decision,
            ),
            b.approve(
                request.id,
                approval("bert", 2_000),
                1,
                grant(&request, 100_000, None),
                &decision,
            ),
        );
        let granted = [&first, &second]
            .iter()
            .filter(|o| matches!(o, Ok(Approved::Granted(_))))
            .count();
        let refused = [&first, &second]
            .iter()
            .filter(|o| matches!(o, Err(StoreError::Conflict(_))))
            .count();
        assert_eq!(
            (granted, refused),
            (1, 1),
            "round {round}: {first:?} / {second:?}"
        );
        let stored = a.request(request.id).await.unwrap().unwrap();
        assert_eq!(
            stored.approvals.len(),
            1,
            "the losing approval is not recorded"
        );
    }
    assert_eq!(b.grants(None).await.unwrap().len(), 20);
}

/// Two gateways on one file race to open transfers under a grant with two
/// left: exactly two open, whichever connection they come through.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_racing_opens_on_two_connections_respect_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let grant = granted_with(
        &a,
        Quotas {
            max_bytes: None,
            max_transfers: Some(2),
        },
    )
    .await;

    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let open = transfer(&grant, 3_000 + i);
            tokio::spawn(async move { store.open_transfer(&open).await })
        })
        .collect();
    let mut opened = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => opened += 1,
            refused => assert_quota_exhausted(refused, grant.id),
        }
    }
    assert_eq!(opened, 2);
    assert_eq!(b.grant(grant.id).await.unwrap().unwrap().used_transfers, 2);
}

#[tokio::test]
async fn sqlite_finds_open_transfers_and_receipts_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let grant = granted(&store, 100_000, None).await;
    let left_open = transfer(&grant, 3_000);
    let closed = transfer(&grant, 3_100);
    store.open_transfer(&left_open).await.unwrap();
    store.open_transfer(&closed).await.unwrap();
    let receipt = receipt(&closed, 42, 3_500);
    let (receipt, _) = close(&store, &receipt).await.unwrap();
    drop(store);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    assert_eq!(store.open_transfers().await.unwrap(), [left_open]);
    assert_eq!(
        store.transfer_receipt(closed.id).await.unwrap(),
        Some((receipt.clone(), jws(&receipt)))
    );
    let stored = store.grant(grant.id).await.unwrap().unwrap();
    assert_eq!((stored.used_bytes, stored.used_transfers), (42, 2));
}
