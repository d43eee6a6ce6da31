//! The store contract, written against `Arc<dyn Store>`.
//!
//! Each behaviour is one `async fn(Arc<dyn Store>)`; [`store_suite!`] turns
//! the list into `#[tokio::test]`s for one backend, so another backend (the
//! PostgreSQL one) runs the same suite by invoking the macro with its own
//! constructor. Tests about one backend's file or schema follow the suite.

use std::collections::HashSet;
use std::sync::Arc;

use xborder::audit::entry::Pseudonymiser;
use xborder::category::Category;
use xborder::clock::Timestamp;
use xborder::grant::{Cause, Grant, GrantId, GrantState, Quotas};
use xborder::identity::SpiffeId;
use xborder::policy::{Finding, Verdict};
use xborder::request::{Approval, Period, Request, RequestId, RequestState, Scope, Urgency};
use xborder::store::postgres::PostgresStore;
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Decision, Store, StoreError};
use xborder::transfer::receipt::{Incomplete, Receipt, TransferId, TransferOpen};

use crate::support::{jurisdiction, spiffe};

/// `#[tokio::test]` wrappers: `store_suite!(module, async || -> Option<(guard, Arc<dyn Store>)>; behaviour, ...)`.
/// The guard (a temp dir) lives as long as the test; `None` skips it (no
/// PostgreSQL installed outside CI, said loudly by the harness).
macro_rules! store_suite {
    ($backend:ident, $open:expr; $($behaviour:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let Some((_guard, store)) = ($open)().await else {
                        return;
                    };
                    super::$behaviour(store).await;
                }
            )+
        }
    };
}

mod audit;
mod notices;

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
    a_transfer_opens_and_closes_with_its_receipt,
    the_transfer_quota_lets_exactly_max_transfers_open,
    racing_opens_never_exceed_the_transfer_quota,
    closing_adds_the_plaintext_bytes_to_the_grant,
    a_transfer_is_closed_once_with_a_receipt_that_matches_it,
    only_an_active_grant_of_the_grantee_opens_transfers,
    open_transfers_lists_only_the_open_ones,
);

store_suite!(postgres, super::open_postgres;
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
    a_transfer_opens_and_closes_with_its_receipt,
    the_transfer_quota_lets_exactly_max_transfers_open,
    racing_opens_never_exceed_the_transfer_quota,
    closing_adds_the_plaintext_bytes_to_the_grant,
    a_transfer_is_closed_once_with_a_receipt_that_matches_it,
    only_an_active_grant_of_the_grantee_opens_transfers,
    open_transfers_lists_only_the_open_ones,
);

async fn open_sqlite() -> Option<(tempfile::TempDir, Arc<dyn Store>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join(SqliteStore::FILE_NAME), names()).unwrap();
    Some((dir, Arc::new(store)))
}

/// A fresh database on the shared PostgreSQL server.
async fn open_postgres() -> Option<((), Arc<dyn Store>)> {
    let server = crate::pg::shared()?;
    let store = PostgresStore::open(server.database().await, names())
        .await
        .unwrap();
    Some(((), Arc::new(store)))
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

/// The notice deferral the fixtures' approvals set: one minute.
const NOTICE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An approval taken under policy `policy`, notifying a minute after issue.
fn decision(policy: &str) -> Decision {
    Decision {
        policy: policy.into(),
        notice_after: NOTICE_AFTER,
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
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant,
            &decision("policy-hash"),
        )
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

/// Files, approves and returns a grant with these quotas.
async fn granted_with(store: &Arc<dyn Store>, quotas: Quotas) -> Grant {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let mut grant = grant(&request, 100_000, None);
    grant.quotas = quotas;
    match store
        .approve(
            request.id,
            approval("anna", 2_000),
            1,
            grant,
            &decision("policy-hash"),
        )
        .await
        .unwrap()
    {
        Approved::Granted(grant) => *grant,
        other => panic!("one approver of one required should grant, got {other:?}"),
    }
}

/// A transfer under `grant` by its grantee, starting at `started_at`.
fn transfer(grant: &Grant, started_at: i64) -> TransferOpen {
    TransferOpen {
        id: TransferId::new(),
        grant_id: grant.id,
        grantee: grant.grantee.to_string(),
        route: "/v1/subscriber".into(),
        category: "subscriber".into(),
        target: grant.scope.targets[0].clone(),
        started_at: at(started_at),
    }
}

/// The complete receipt of `open`, `bytes` of plaintext, ended at `ended_at`.
fn receipt(open: &TransferOpen, bytes: u64, ended_at: i64) -> Receipt {
    Receipt {
        plaintext_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ciphertext_sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
            .into(),
        plaintext_bytes: bytes,
        ciphertext_bytes: bytes + 200,
        complete: true,
        incomplete: None,
        ..Receipt::interrupted(open, at(ended_at), true)
    }
}

/// Stands in for the signed JWS: the store keeps it as given.
fn jws(receipt: &Receipt) -> String {
    format!("header.{}.signature", receipt.transfer_id)
}

fn names() -> Pseudonymiser {
    Pseudonymiser::new(vec![0x5a; 32]).unwrap()
}

/// Closes with a stand-in signature; returns the receipt as stored (with
/// its audit index) and that signature.
async fn close(store: &Arc<dyn Store>, receipt: &Receipt) -> Result<(Receipt, String), StoreError> {
    store
        .close_transfer(receipt.clone(), Box::new(|r| Ok(jws(r))))
        .await
}

#[track_caller]
fn assert_quota_exhausted<T: std::fmt::Debug>(result: Result<T, StoreError>, grant: GrantId) {
    match result {
        Err(StoreError::QuotaExhausted {
            grant: exhausted,
            max_transfers,
        }) => {
            assert_eq!(exhausted, grant);
            assert_eq!(max_transfers, 2);
        }
        other => panic!("expected QuotaExhausted, got {other:?}"),
    }
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

// ---------------------------------------------------------------------------
// SQLite only: the file

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
