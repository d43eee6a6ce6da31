//! The store contract, written against `Arc<dyn Store>`.
//!
//! Each behaviour is one `async fn(Arc<dyn Store>)`; [`store_suite!`] turns
//! the list into `#[tokio::test]`s for one backend, so every behaviour runs
//! against SQLite and against PostgreSQL (each invoking the macro with its
//! own constructor). The behaviours live one story a module: requests and
//! their review ([`requests`]), grants ending and falling due ([`grants`]),
//! transfers under a grant's quotas ([`transfers`]), the audit log
//! ([`audit`]) and the notice outbox ([`notices`]); tests about SQLite's
//! file are in [`sqlite_file`]. This file holds the macro, the two
//! constructors and the fixtures they share.

use std::sync::Arc;

use xborder::audit::entry::Pseudonymiser;
use xborder::category::Category;
use xborder::clock::Timestamp;
use xborder::grant::{Grant, GrantId, GrantState, Quotas};
use xborder::identity::SpiffeId;
use xborder::policy::{Finding, Verdict};
use xborder::request::{Approval, Period, Request, RequestId, RequestState, Scope, Urgency};
use xborder::store::postgres::PostgresStore;
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Decision, Store, StoreError};
use xborder::transfer::receipt::{Receipt, TransferId, TransferOpen};

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
mod grants;
mod notices;
mod requests;
mod sqlite_file;
mod transfers;

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
