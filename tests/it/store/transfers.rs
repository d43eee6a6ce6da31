//! Transfers as every store keeps them: a transfer opens under an active
//! grant of its grantee, the transfer quota lets exactly its number open
//! (racing opens included), a transfer is closed once with a receipt that
//! matches it, closing adds its plaintext bytes to the grant, and the open
//! ones are listed.

use std::sync::Arc;

use xborder::grant::{Cause, GrantId, GrantState, Quotas};
use xborder::store::Store;
use xborder::transfer::receipt::{Incomplete, Receipt, TransferId};

use super::{
    assert_conflict, assert_not_found, assert_quota_exhausted, at, close, granted, granted_with,
    jws, receipt, transfer,
};

store_suite!(sqlite, super::super::open_sqlite;
    a_transfer_opens_and_closes_with_its_receipt,
    the_transfer_quota_lets_exactly_max_transfers_open,
    racing_opens_never_exceed_the_transfer_quota,
    closing_adds_the_plaintext_bytes_to_the_grant,
    a_transfer_is_closed_once_with_a_receipt_that_matches_it,
    only_an_active_grant_of_the_grantee_opens_transfers,
    open_transfers_lists_only_the_open_ones,
);
store_suite!(postgres, super::super::open_postgres;
    a_transfer_opens_and_closes_with_its_receipt,
    the_transfer_quota_lets_exactly_max_transfers_open,
    racing_opens_never_exceed_the_transfer_quota,
    closing_adds_the_plaintext_bytes_to_the_grant,
    a_transfer_is_closed_once_with_a_receipt_that_matches_it,
    only_an_active_grant_of_the_grantee_opens_transfers,
    open_transfers_lists_only_the_open_ones,
);

async fn a_transfer_opens_and_closes_with_its_receipt(store: Arc<dyn Store>) {
    let grant = granted(&store, 100_000, None).await;
    let open = transfer(&grant, 3_000);
    assert_eq!(store.open_transfer(&open).await.unwrap(), 0);
    assert_eq!(
        store.transfer_receipt(open.id).await.unwrap(),
        None,
        "an open transfer has no receipt yet"
    );

    let mut receipt = receipt(&open, 1_234, 4_000);
    receipt.audit_index = Some(17);
    let (receipt, _) = close(&store, &receipt).await.unwrap();
    assert_eq!(
        store.transfer_receipt(open.id).await.unwrap(),
        Some((receipt.clone(), jws(&receipt)))
    );
    assert_eq!(
        store.transfer_receipt(TransferId::new()).await.unwrap(),
        None
    );

    // An incomplete one keeps its cause.
    let cut = transfer(&grant, 5_000);
    store.open_transfer(&cut).await.unwrap();
    let mut receipt = self::receipt(&cut, 10, 6_000);
    receipt.complete = false;
    receipt.incomplete = Some(Incomplete::Revoked);
    let (receipt, _) = close(&store, &receipt).await.unwrap();
    let (stored, _) = store.transfer_receipt(cut.id).await.unwrap().unwrap();
    assert_eq!(stored, receipt);

    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().used_transfers,
        2
    );
}

async fn the_transfer_quota_lets_exactly_max_transfers_open(store: Arc<dyn Store>) {
    let grant = granted_with(
        &store,
        Quotas {
            max_bytes: None,
            max_transfers: Some(2),
        },
    )
    .await;
    store.open_transfer(&transfer(&grant, 3_000)).await.unwrap();
    store.open_transfer(&transfer(&grant, 3_001)).await.unwrap();
    let third = transfer(&grant, 3_002);
    assert_quota_exhausted(store.open_transfer(&third).await, grant.id);

    let stored = store.grant(grant.id).await.unwrap().unwrap();
    assert_eq!(stored.used_transfers, 2, "the refused one is not counted");
    assert_eq!(
        stored.state,
        GrantState::Active,
        "ending the grant is the caller's decision"
    );
    assert_eq!(store.open_transfers().await.unwrap().len(), 2);
    assert_eq!(store.transfer_receipt(third.id).await.unwrap(), None);

    // Closing a transfer gives no transfer back: the quota counts openings.
    let first = &store.open_transfers().await.unwrap()[0];
    let receipt = receipt(first, 1, 4_000);
    close(&store, &receipt).await.unwrap();
    assert_quota_exhausted(
        store.open_transfer(&transfer(&grant, 5_000)).await,
        grant.id,
    );
}

async fn racing_opens_never_exceed_the_transfer_quota(store: Arc<dyn Store>) {
    let grant = granted_with(
        &store,
        Quotas {
            max_bytes: None,
            max_transfers: Some(2),
        },
    )
    .await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = Arc::clone(&store);
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
    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().used_transfers,
        2
    );
    assert_eq!(store.open_transfers().await.unwrap().len(), 2);
}

async fn closing_adds_the_plaintext_bytes_to_the_grant(store: Arc<dyn Store>) {
    let grant = granted(&store, 100_000, None).await;
    let first = transfer(&grant, 3_000);
    let second = transfer(&grant, 3_500);
    assert_eq!(store.open_transfer(&first).await.unwrap(), 0);
    assert_eq!(store.open_transfer(&second).await.unwrap(), 0);

    let receipt1 = receipt(&first, 1_000, 4_000);
    close(&store, &receipt1).await.unwrap();
    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().used_bytes,
        1_000
    );

    // A receipt for a transfer cut short counts what crossed.
    let mut receipt2 = receipt(&second, 500, 4_500);
    receipt2.complete = false;
    receipt2.incomplete = Some(Incomplete::ClientGone);
    close(&store, &receipt2).await.unwrap();
    let stored = store.grant(grant.id).await.unwrap().unwrap();
    assert_eq!((stored.used_bytes, stored.used_transfers), (1_500, 2));

    // The next opening sees the count so far.
    assert_eq!(
        store.open_transfer(&transfer(&grant, 5_000)).await.unwrap(),
        1_500
    );

    // Bytes that crossed count even when the grant ended meanwhile.
    let last = transfer(&grant, 6_000);
    store.open_transfer(&last).await.unwrap();
    store
        .end_grant(grant.id, Cause::Manual, None, None, at(6_500))
        .await
        .unwrap();
    let mut receipt3 = receipt(&last, 250, 6_500);
    receipt3.complete = false;
    receipt3.incomplete = Some(Incomplete::Revoked);
    close(&store, &receipt3).await.unwrap();
    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().used_bytes,
        1_750
    );
}

async fn a_transfer_is_closed_once_with_a_receipt_that_matches_it(store: Arc<dyn Store>) {
    let grant = granted(&store, 100_000, None).await;
    let open = transfer(&grant, 3_000);
    store.open_transfer(&open).await.unwrap();

    // Receipts that are not this transfer's close are turned away.
    let mut other_grant = receipt(&open, 10, 4_000);
    other_grant.grant_id = GrantId::new();
    assert_conflict(close(&store, &other_grant).await, "does not match");
    let mut other_target = receipt(&open, 10, 4_000);
    other_target.target = "someone else".into();
    assert_conflict(close(&store, &other_target).await, "does not match");
    let mut inconsistent = receipt(&open, 10, 4_000);
    inconsistent.incomplete = Some(Incomplete::UpstreamFailed);
    assert_conflict(close(&store, &inconsistent).await, "inconsistent");
    assert!(store.transfer_receipt(open.id).await.unwrap().is_none());

    let first = receipt(&open, 10, 4_000);
    let (first, _) = close(&store, &first).await.unwrap();
    let mut second = receipt(&open, 99, 5_000);
    second.complete = false;
    second.incomplete = Some(Incomplete::ShuttingDown);
    assert_conflict(close(&store, &second).await, "written once");
    assert_eq!(
        store.transfer_receipt(open.id).await.unwrap(),
        Some((first.clone(), jws(&first))),
        "the first receipt is kept"
    );
    assert_eq!(
        store.grant(grant.id).await.unwrap().unwrap().used_bytes,
        10,
        "counted once"
    );

    let never_opened = receipt(&transfer(&grant, 3_000), 10, 4_000);
    assert_not_found(close(&store, &never_opened).await);
}

async fn only_an_active_grant_of_the_grantee_opens_transfers(store: Arc<dyn Store>) {
    let revoked = granted(&store, 100_000, None).await;
    store
        .end_grant(revoked.id, Cause::Manual, None, Some("incident"), at(2_500))
        .await
        .unwrap();
    assert_conflict(
        store.open_transfer(&transfer(&revoked, 3_000)).await,
        "revoked, not active",
    );
    let stored = store.grant(revoked.id).await.unwrap().unwrap();
    assert_eq!(stored.used_transfers, 0);

    // Past its sunset or its validation deadline, even before the scheduler ended it.
    let expiring = granted(&store, 10_000, None).await;
    assert_conflict(
        store.open_transfer(&transfer(&expiring, 10_000)).await,
        "expired",
    );
    let unvalidated = granted(&store, 100_000, Some(5_000)).await;
    assert_conflict(
        store.open_transfer(&transfer(&unvalidated, 5_000)).await,
        "validated",
    );
    store
        .open_transfer(&transfer(&unvalidated, 4_999))
        .await
        .unwrap();

    // Only the grantee transfers under its grant.
    let active = granted(&store, 100_000, None).await;
    let mut stranger = transfer(&active, 3_000);
    stranger.grantee = "spiffe://us.xborder.test/agency/fbi".into();
    assert_conflict(store.open_transfer(&stranger).await, "not");
    assert_eq!(
        store
            .grant(active.id)
            .await
            .unwrap()
            .unwrap()
            .used_transfers,
        0
    );

    // One id, one transfer.
    let open = transfer(&active, 3_000);
    store.open_transfer(&open).await.unwrap();
    assert_conflict(store.open_transfer(&open).await, "already exists");
    assert_eq!(
        store
            .grant(active.id)
            .await
            .unwrap()
            .unwrap()
            .used_transfers,
        1
    );

    let mut unknown = transfer(&active, 3_000);
    unknown.grant_id = GrantId::new();
    assert_not_found(store.open_transfer(&unknown).await);
}

async fn open_transfers_lists_only_the_open_ones(store: Arc<dyn Store>) {
    assert!(store.open_transfers().await.unwrap().is_empty());
    let grant = granted(&store, 100_000, None).await;
    let later = transfer(&grant, 5_000);
    let closed = transfer(&grant, 3_000);
    let earlier = transfer(&grant, 4_000);
    for open in [&later, &closed, &earlier] {
        store.open_transfer(open).await.unwrap();
    }
    let receipt = receipt(&closed, 1, 3_500);
    close(&store, &receipt).await.unwrap();
    assert_eq!(
        store.open_transfers().await.unwrap(),
        [earlier.clone(), later.clone()],
        "oldest first, the closed one left out"
    );

    // At start, the caller closes what a stop left open, with an interrupted receipt.
    for open in store.open_transfers().await.unwrap() {
        let receipt = Receipt::interrupted(&open, at(9_000), true);
        close(&store, &receipt).await.unwrap();
    }
    assert!(store.open_transfers().await.unwrap().is_empty());
    let (interrupted, _) = store.transfer_receipt(earlier.id).await.unwrap().unwrap();
    assert_eq!(interrupted.incomplete, Some(Incomplete::Interrupted));
    assert_eq!(store.grant(grant.id).await.unwrap().unwrap().used_bytes, 1);
}
