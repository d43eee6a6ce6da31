//! A request as every store keeps it: filed once with its findings, listed
//! by state newest first, approved only while pending and only by distinct
//! approvers (a repeated one counts once) until enough of them grant it, or
//! denied once.

use std::sync::Arc;

use xborder::grant::GrantId;
use xborder::policy::Verdict;
use xborder::request::{Request, RequestId, RequestState, Urgency};
use xborder::store::{Approved, Store};

use super::{
    approval, approver, assert_conflict, assert_not_found, at, decision, finding, grant, request,
    scope,
};

store_suite!(sqlite, super::super::open_sqlite;
    a_request_round_trips_with_findings_and_approvals,
    a_request_id_is_stored_once,
    requests_filter_by_state_newest_first,
    two_distinct_approvers_grant_and_a_repeated_one_counts_once,
    only_a_pending_request_can_be_approved,
    a_request_is_denied_once,
);
store_suite!(postgres, super::super::open_postgres;
    a_request_round_trips_with_findings_and_approvals,
    a_request_id_is_stored_once,
    requests_filter_by_state_newest_first,
    two_distinct_approvers_grant_and_a_repeated_one_counts_once,
    only_a_pending_request_can_be_approved,
    a_request_is_denied_once,
);

async fn a_request_round_trips_with_findings_and_approvals(store: Arc<dyn Store>) {
    // Every optional field set, approvals in time order.
    let mut decided = request(5_000);
    decided.state = RequestState::Approved;
    decided.scope = scope(Urgency::Emergency);
    decided.approvals = vec![
        approval("anna", 6_000),
        approval("bert", 6_000),
        approval("carl", 7_000),
    ];
    decided.decided_at = Some(at(7_000));
    decided.decided_by = Some(approver("carl"));
    decided.reason = Some("proportionate: two targets, one day".into());
    decided.grant_id = Some(GrantId::new());
    store.insert_request(&decided).await.unwrap();
    assert_eq!(
        store.request(decided.id).await.unwrap(),
        Some(decided.clone())
    );

    // Every optional field empty, no findings.
    let mut bare = request(8_000);
    bare.findings.clear();
    store.insert_request(&bare).await.unwrap();
    assert_eq!(store.request(bare.id).await.unwrap(), Some(bare));

    assert_eq!(store.request(RequestId::new()).await.unwrap(), None);
}

async fn a_request_id_is_stored_once(store: Arc<dyn Store>) {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let mut again = request.clone();
    again.findings.clear();
    assert_conflict(store.insert_request(&again).await, "already exists");
    assert_eq!(store.request(request.id).await.unwrap(), Some(request));
}

async fn requests_filter_by_state_newest_first(store: Arc<dyn Store>) {
    let first = request(1_000);
    let third = request(3_000);
    let second = request(2_000);
    let mut refused = request(4_000);
    refused.state = RequestState::Refused;
    refused.findings = vec![finding(
        "categories",
        Verdict::Fail,
        "content may not leave EE",
    )];
    for r in [&first, &third, &second, &refused] {
        store.insert_request(r).await.unwrap();
    }

    let ids = |rs: Vec<Request>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.requests(Some(RequestState::Pending)).await.unwrap()),
        [third.id, second.id, first.id]
    );
    assert_eq!(
        ids(store.requests(Some(RequestState::Refused)).await.unwrap()),
        [refused.id]
    );
    assert!(
        store
            .requests(Some(RequestState::Denied))
            .await
            .unwrap()
            .is_empty()
    );

    let all = store.requests(None).await.unwrap();
    assert_eq!(all[0], refused, "listed requests carry their findings");
    assert_eq!(ids(all), [refused.id, third.id, second.id, first.id]);
}

async fn two_distinct_approvers_grant_and_a_repeated_one_counts_once(store: Arc<dyn Store>) {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let proposed = grant(&request, 100_000, None);

    let outcome = store
        .approve(
            request.id,
            approval("anna", 2_000),
            2,
            proposed.clone(),
            &decision("policy-hash"),
        )
        .await;
    assert_eq!(
        outcome.unwrap(),
        Approved::Pending {
            approvals: 1,
            required: 2
        }
    );

    let outcome = store
        .approve(
            request.id,
            approval("anna", 2_500),
            2,
            proposed.clone(),
            &decision("policy-hash"),
        )
        .await;
    assert_eq!(
        outcome.unwrap(),
        Approved::Pending {
            approvals: 1,
            required: 2
        }
    );
    let stored = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Pending);
    assert_eq!(
        stored.approvals,
        [approval("anna", 2_000)],
        "the first approval by anna is kept"
    );
    assert!(store.grant(proposed.id).await.unwrap().is_none());

    let outcome = store
        .approve(
            request.id,
            approval("bert", 3_000),
            2,
            proposed.clone(),
            &decision("policy-hash"),
        )
        .await;
    let Approved::Granted(granted) = outcome.unwrap() else {
        panic!("the second distinct approver completes the review");
    };
    assert_eq!(granted.id, proposed.id);
    assert_eq!(granted.approvers, [approver("anna"), approver("bert")]);
    assert_eq!(
        store.grant(proposed.id).await.unwrap().as_ref(),
        Some(&*granted)
    );

    let stored = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Approved);
    assert_eq!(stored.grant_id, Some(proposed.id));
    assert_eq!(stored.decided_at, Some(at(3_000)));
    assert_eq!(stored.decided_by, Some(approver("bert")));
    assert_eq!(
        stored.approvals,
        [approval("anna", 2_000), approval("bert", 3_000)]
    );

    // Approved is final: a third approver is turned away.
    let late = store
        .approve(
            request.id,
            approval("carl", 4_000),
            2,
            grant(&request, 100_000, None),
            &decision("policy-hash"),
        )
        .await;
    assert_conflict(late, "approved");
    assert_eq!(store.grants(None).await.unwrap().len(), 1);
}

async fn only_a_pending_request_can_be_approved(store: Arc<dyn Store>) {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    store
        .deny(
            request.id,
            &approver("anna"),
            "not proportionate",
            at(2_000),
        )
        .await
        .unwrap();

    let outcome = store
        .approve(
            request.id,
            approval("bert", 3_000),
            1,
            grant(&request, 100_000, None),
            &decision("policy-hash"),
        )
        .await;
    assert_conflict(outcome, "denied");
    assert!(
        store
            .request(request.id)
            .await
            .unwrap()
            .unwrap()
            .approvals
            .is_empty()
    );
    assert!(store.grants(None).await.unwrap().is_empty());

    let mut refused = self::request(1_000);
    refused.state = RequestState::Refused;
    store.insert_request(&refused).await.unwrap();
    let outcome = store
        .approve(
            refused.id,
            approval("bert", 3_000),
            1,
            grant(&refused, 100_000, None),
            &decision("policy-hash"),
        )
        .await;
    assert_conflict(outcome, "refused");

    let unknown = self::request(1_000);
    assert_not_found(
        store
            .approve(
                unknown.id,
                approval("bert", 3_000),
                1,
                grant(&unknown, 100_000, None),
                &decision("policy-hash"),
            )
            .await,
    );
}

async fn a_request_is_denied_once(store: Arc<dyn Store>) {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();

    let denied = store
        .deny(
            request.id,
            &approver("anna"),
            "not proportionate",
            at(2_000),
        )
        .await
        .unwrap();
    assert_eq!(denied.state, RequestState::Denied);
    assert_eq!(denied.decided_by, Some(approver("anna")));
    assert_eq!(denied.decided_at, Some(at(2_000)));
    assert_eq!(denied.reason.as_deref(), Some("not proportionate"));
    assert_eq!(denied.findings, request.findings);
    assert_eq!(
        store.request(request.id).await.unwrap(),
        Some(denied.clone())
    );

    assert_conflict(
        store
            .deny(request.id, &approver("bert"), "again", at(3_000))
            .await,
        "denied",
    );
    assert_eq!(
        store.request(request.id).await.unwrap(),
        Some(denied),
        "the first denial is kept"
    );

    assert_not_found(
        store
            .deny(RequestId::new(), &approver("anna"), "no such", at(2_000))
            .await,
    );
}
