//! The store contract, written against `Arc<dyn Store>`.
//!
//! Each behaviour is one `async fn(Arc<dyn Store>)`; [`store_suite!`] turns
//! the list into `#[tokio::test]`s for one backend, so another backend (the
//! PostgreSQL one) runs the same suite by invoking the macro with its own
//! constructor. Tests about one backend's file or schema follow the suite.

use std::collections::HashSet;
use std::sync::Arc;

use xborder::category::Category;
use xborder::clock::Timestamp;
use xborder::grant::{Cause, Grant, GrantId, GrantState, Quotas};
use xborder::identity::SpiffeId;
use xborder::policy::{Finding, Verdict};
use xborder::request::{Approval, Period, Request, RequestId, RequestState, Scope, Urgency};
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Store, StoreError};

use crate::support::{jurisdiction, spiffe};

/// `#[tokio::test]` wrappers: `store_suite!(module, || -> (guard, Arc<dyn Store>); behaviour, ...)`.
/// The guard (a temp dir, a database) lives as long as the test.
macro_rules! store_suite {
    ($backend:ident, $open:expr; $($behaviour:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let (_guard, store) = ($open)();
                    super::$behaviour(store).await;
                }
            )+
        }
    };
}

store_suite!(sqlite, super::open_sqlite;
    a_request_round_trips_with_findings_and_approvals,
    a_request_id_is_stored_once,
    requests_filter_by_state_newest_first,
    two_distinct_approvers_grant_and_a_repeated_one_counts_once,
    only_a_pending_request_can_be_approved,
    a_request_is_denied_once,
    the_first_ending_of_a_grant_wins,
    ending_an_unknown_grant_is_not_found,
    an_emergency_grant_is_validated_once_by_someone_else,
    next_due_and_due_follow_expiry_and_validation,
);

fn open_sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join(SqliteStore::FILE_NAME)).unwrap();
    (dir, Arc::new(store))
}

// ---------------------------------------------------------------------------
// fixtures

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn approver(name: &str) -> SpiffeId {
    spiffe(&format!("spiffe://ee.xborder.test/reviewer/{name}"))
}

fn scope(urgency: Urgency) -> Scope {
    Scope {
        legal_basis: "EIO Directive 2014/41/EU".into(),
        purpose: "investigation of fraud case 2026/117".into(),
        categories: vec![
            "subscriber".parse::<Category>().unwrap(),
            "traffic".parse().unwrap(),
        ],
        targets: vec!["+372 5555 0101".into(), "user@example.ee".into()],
        period: Period {
            from: at(1_700_000_000_000),
            to: at(1_700_086_400_000),
        },
        urgency,
        recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
        justification: "the account was used to receive the transfers".into(),
    }
}

/// A pending request filed at `filed_at`, with three findings and no approvals.
fn request(filed_at: i64) -> Request {
    Request {
        id: RequestId::new(),
        requester: spiffe("spiffe://fi.xborder.test/police/krp"),
        requester_jurisdiction: jurisdiction("FI"),
        holder: jurisdiction("EE"),
        thumbprint: "dGh1bWJwcmludC1vZi10aGUtY2xpZW50LWNlcnQ".into(),
        scope: scope(Urgency::Normal),
        state: RequestState::Pending,
        findings: vec![
            finding("legal_basis", Verdict::Pass, "EIO is accepted for FI"),
            finding(
                "categories",
                Verdict::NeedsReview,
                "traffic data needs a reviewer's judgement",
            ),
            finding("targets", Verdict::Pass, "2 targets, at most 10"),
        ],
        policy_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        filed_at: at(filed_at),
        deadline: at(filed_at + 10 * 86_400_000),
        approvals: Vec::new(),
        decided_at: None,
        decided_by: None,
        reason: None,
        grant_id: None,
    }
}

fn finding(rule: &str, verdict: Verdict, reason: &str) -> Finding {
    Finding {
        rule: rule.into(),
        verdict,
        reason: reason.into(),
    }
}

/// An active grant for `request`, the way review builds one before `approve`.
fn grant(request: &Request, expires_at: i64, validation_due: Option<i64>) -> Grant {
    Grant {
        id: GrantId::new(),
        request_id: request.id,
        grantee: request.requester.clone(),
        grantee_jurisdiction: request.requester_jurisdiction.clone(),
        holder: request.holder.clone(),
        thumbprint: request.thumbprint.clone(),
        scope: request.scope.clone(),
        quotas: Quotas {
            max_bytes: Some(10 << 20),
            max_transfers: None,
        },
        used_bytes: 0,
        used_transfers: 0,
        approvers: Vec::new(),
        issued_at: at(request.filed_at.unix_ms() + 1_000),
        expires_at: at(expires_at),
        validation_due: validation_due.map(at),
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: "eyJhbGciOiJFZERTQSJ9.eyJqdGkiOiJ0ZXN0In0.c2lnbmF0dXJl".into(),
    }
}

fn approval(name: &str, ms: i64) -> Approval {
    Approval {
        approver: approver(name),
        at: at(ms),
    }
}

/// Files a request and has one approver grant it; returns the grant.
async fn granted(store: &Arc<dyn Store>, expires_at: i64, validation_due: Option<i64>) -> Grant {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let grant = grant(&request, expires_at, validation_due);
    match store
        .approve(request.id, approval("anna", 2_000), 1, grant)
        .await
        .unwrap()
    {
        Approved::Granted(grant) => *grant,
        other => panic!("one approver of one required should grant, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, words: &str) {
    match result {
        Err(StoreError::Conflict(message)) => assert!(
            message.contains(words),
            "conflict message `{message}` should mention `{words}`"
        ),
        other => panic!("expected a conflict about `{words}`, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected NotFound, got {result:?}"
    );
}

// ---------------------------------------------------------------------------
// the suite

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
        .approve(request.id, approval("anna", 2_000), 2, proposed.clone())
        .await;
    assert_eq!(
        outcome.unwrap(),
        Approved::Pending {
            approvals: 1,
            required: 2
        }
    );

    let outcome = store
        .approve(request.id, approval("anna", 2_500), 2, proposed.clone())
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
        .approve(request.id, approval("bert", 3_000), 2, proposed.clone())
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

// ---------------------------------------------------------------------------
// SQLite only: the file

#[tokio::test]
async fn sqlite_finds_everything_again_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let pending = request(500);
    store.insert_request(&pending).await.unwrap();
    let grant = granted(&store, 100_000, Some(50_000)).await;
    let approved = store.request(grant.request_id).await.unwrap().unwrap();
    drop(store);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    assert_eq!(store.request(pending.id).await.unwrap(), Some(pending));
    assert_eq!(store.request(approved.id).await.unwrap(), Some(approved));
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(grant));
    assert_eq!(store.next_due().await.unwrap(), Some(at(50_000)));
}

#[tokio::test]
async fn sqlite_refuses_a_schema_newer_than_it_knows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();

    match SqliteStore::open(&path) {
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
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());

    for round in 0..20 {
        let request = request(1_000 + round);
        a.insert_request(&request).await.unwrap();
        let (first, second) = tokio::join!(
            a.approve(
                request.id,
                approval("anna", 2_000),
                1,
                grant(&request, 100_000, None)
            ),
            b.approve(
                request.id,
                approval("bert", 2_000),
                1,
                grant(&request, 100_000, None)
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
