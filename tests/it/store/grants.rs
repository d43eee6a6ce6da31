//! A grant's life as every store keeps it: the first ending (expiry,
//! revocation, a missed validation) wins and later ones are refused, an
//! emergency grant is validated once and only by someone other than its
//! approvers, and the next due time follows expiry and validation.

use std::collections::HashSet;
use std::sync::Arc;

use xborder::grant::{Cause, GrantId, GrantState};
use xborder::store::Store;

use super::{approver, assert_conflict, assert_not_found, at, granted};
use crate::support::spiffe;

store_suite!(sqlite, super::super::open_sqlite;
    the_first_ending_of_a_grant_wins,
    ending_an_unknown_grant_is_not_found,
    an_emergency_grant_is_validated_once_by_someone_else,
    next_due_and_due_follow_expiry_and_validation,
);
store_suite!(postgres, super::super::open_postgres;
    the_first_ending_of_a_grant_wins,
    ending_an_unknown_grant_is_not_found,
    an_emergency_grant_is_validated_once_by_someone_else,
    next_due_and_due_follow_expiry_and_validation,
);

async fn the_first_ending_of_a_grant_wins(store: Arc<dyn Store>) {
    let grant = granted(&store, 100_000, None).await;
    let operator = spiffe("spiffe://ee.xborder.test/operator/olga");

    let ended = store
        .end_grant(
            grant.id,
            Cause::Manual,
            Some(&operator),
            Some("incident 42"),
            at(50_000),
        )
        .await
        .unwrap()
        .expect("an active grant ends");
    assert_eq!(ended.state, GrantState::Revoked);
    let ending = ended.ending.clone().unwrap();
    assert_eq!(ending.cause, Cause::Manual);
    assert_eq!(ending.at, at(50_000));
    assert_eq!(ending.by, Some(operator));
    assert_eq!(ending.reason.as_deref(), Some("incident 42"));

    let again = store
        .end_grant(grant.id, Cause::Expired, None, None, at(100_000))
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(ended.clone()));

    assert_eq!(
        store.grants(Some(GrantState::Revoked)).await.unwrap(),
        [ended]
    );
    assert!(
        store
            .grants(Some(GrantState::Active))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .grants(Some(GrantState::Expired))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn ending_an_unknown_grant_is_not_found(store: Arc<dyn Store>) {
    assert_not_found(
        store
            .end_grant(GrantId::new(), Cause::Expired, None, None, at(1))
            .await,
    );
    assert_eq!(store.grant(GrantId::new()).await.unwrap(), None);
}

async fn an_emergency_grant_is_validated_once_by_someone_else(store: Arc<dyn Store>) {
    // `granted` has anna approve alone, as an emergency.
    let grant = granted(&store, 100_000, Some(50_000)).await;
    assert_eq!(grant.approvers, [approver("anna")]);

    assert_conflict(
        store
            .validate_grant(grant.id, &approver("anna"), at(3_000))
            .await,
        "approved",
    );

    let validated = store
        .validate_grant(grant.id, &approver("bert"), at(3_000))
        .await
        .unwrap();
    assert_eq!(validated.validated_by, Some(approver("bert")));
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(validated));

    assert_conflict(
        store
            .validate_grant(grant.id, &approver("carl"), at(4_000))
            .await,
        "already validated",
    );

    // A grant without a validation deadline needs none.
    let normal = granted(&store, 100_000, None).await;
    assert_conflict(
        store
            .validate_grant(normal.id, &approver("bert"), at(3_000))
            .await,
        "needs no validation",
    );

    // An ended grant cannot be validated, nor one past its deadline.
    let ended = granted(&store, 100_000, Some(50_000)).await;
    store
        .end_grant(ended.id, Cause::Manual, None, None, at(4_000))
        .await
        .unwrap();
    assert_conflict(
        store
            .validate_grant(ended.id, &approver("bert"), at(5_000))
            .await,
        "not active",
    );
    let late = granted(&store, 100_000, Some(50_000)).await;
    assert_conflict(
        store
            .validate_grant(late.id, &approver("bert"), at(50_000))
            .await,
        "validated by",
    );
    assert_eq!(
        store.grant(late.id).await.unwrap().unwrap().validated_by,
        None
    );

    assert_not_found(
        store
            .validate_grant(GrantId::new(), &approver("bert"), at(3_000))
            .await,
    );
}

async fn next_due_and_due_follow_expiry_and_validation(store: Arc<dyn Store>) {
    assert_eq!(store.next_due().await.unwrap(), None);
    assert!(store.due(at(i64::MAX)).await.unwrap().is_empty());

    let plain = granted(&store, 10_000, None).await;
    let emergency = granted(&store, 20_000, Some(5_000)).await;
    assert_eq!(store.next_due().await.unwrap(), Some(at(5_000)));

    let due = |now: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .due(at(now))
                .await
                .unwrap()
                .into_iter()
                .collect::<HashSet<_>>()
        }
    };
    assert!(due(4_999).await.is_empty());
    assert_eq!(
        due(5_000).await,
        HashSet::from([(emergency.id, Cause::ValidationMissed)])
    );
    assert_eq!(
        due(10_000).await,
        HashSet::from([
            (emergency.id, Cause::ValidationMissed),
            (plain.id, Cause::Expired)
        ])
    );
    // Past its sunset, expiry is the cause even when validation was also missed.
    assert_eq!(
        due(20_000).await,
        HashSet::from([(emergency.id, Cause::Expired), (plain.id, Cause::Expired)])
    );

    // Validated: only its expiry is left.
    store
        .validate_grant(emergency.id, &approver("bert"), at(4_000))
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(at(10_000)));
    assert!(due(9_999).await.is_empty());

    // Ended grants are never due.
    store
        .end_grant(plain.id, Cause::Expired, None, None, at(10_000))
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(at(20_000)));
    assert_eq!(
        due(30_000).await,
        HashSet::from([(emergency.id, Cause::Expired)])
    );
    store
        .end_grant(emergency.id, Cause::Expired, None, None, at(20_000))
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), None);
    assert!(due(30_000).await.is_empty());
}
