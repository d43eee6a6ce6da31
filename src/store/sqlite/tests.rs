//! What only the SQLite store can be asked: its pragmas, its schema, and how
//! it treats rows it did not write. The behaviour every store shares is in
//! `tests/it/store.rs`.

use std::path::PathBuf;

use super::migrations::{self, MIGRATIONS};
use super::*;
use crate::store::fixtures::{decision, request_due};
use crate::transfer::receipt::{Incomplete, Receipt, TransferId, TransferOpen};

fn open() -> (tempfile::TempDir, PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store = SqliteStore::open(&path, names()).unwrap();
    (dir, path, store)
}

fn names() -> Pseudonymiser {
    Pseudonymiser::new(vec![9; 32]).unwrap()
}

/// A signer that signs nothing: these tests read back what was stored.
fn jws() -> SignReceipt {
    Box::new(|_| Ok("jws".to_owned()))
}

fn sql(store: &SqliteStore, statement: &str) -> rusqlite::Result<usize> {
    store.reader.lock().unwrap().execute(statement, [])
}

#[track_caller]
fn assert_backend_names(error: StoreError, column: &str) {
    match error {
        StoreError::Backend(e) => {
            let message = e.to_string();
            assert!(
                message.contains(column),
                "`{message}` should name `{column}`"
            );
        }
        other => panic!("expected a backend error naming {column}, got {other:?}"),
    }
}

#[test]
fn a_new_file_is_durable_and_at_the_current_version() {
    let (_dir, _path, store) = open();
    let conn = store.reader.lock().unwrap();
    let pragma = |name: &str| -> String {
        conn.pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "wal");
    assert_eq!(pragma("synchronous"), "2", "FULL");
    assert_eq!(pragma("foreign_keys"), "1");
    assert_eq!(pragma("busy_timeout"), "5000");
    assert_eq!(
        migrations::user_version(&conn).unwrap(),
        MIGRATIONS.len() as u32
    );
    assert_eq!(migrations::current_version(), MIGRATIONS.len() as u32);
}

#[tokio::test]
async fn reopening_does_not_migrate_again() {
    let (_dir, path, store) = open();
    let request = request_due(Timestamp::from_unix_ms(2_000));
    store.insert_request(&request).await.unwrap();
    drop(store);
    let store = SqliteStore::open(&path, names()).unwrap();
    assert_eq!(store.request(request.id).await.unwrap(), Some(request));
}

#[test]
fn a_negative_schema_version_is_refused() {
    let (_dir, path, store) = open();
    sql(&store, "PRAGMA user_version = -1").unwrap();
    drop(store);
    let Err(e) = SqliteStore::open(&path, names()) else {
        panic!("a negative user_version is not ours");
    };
    assert!(e.to_string().contains("version -1"), "{e}");
}

#[test]
fn constraints_guard_states_and_links() {
    let (_dir, _path, store) = open();
    let insert = |state: &str| {
        sql(
            &store,
            &format!(
                "INSERT INTO requests (id, requester, requester_jurisdiction, holder, thumbprint, scope_json, \
                 state, policy_hash, filed_at, deadline) VALUES \
                 ('{}', 'r', 'FI', 'EE', 't', '{{}}', '{state}', 'h', 1, 2)",
                RequestId::new()
            ),
        )
    };
    assert!(insert("pending").is_ok());
    assert!(insert("maybe").is_err(), "CHECK on requests.state");
    assert!(
        sql(&store, "UPDATE requests SET filed_at = 'yesterday'").is_err(),
        "STRICT tables keep times integers"
    );
    assert!(
        sql(
            &store,
            "INSERT INTO findings VALUES ('no-such-request', 0, 'r', 'pass', 'x')"
        )
        .is_err(),
        "foreign keys are enforced"
    );
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_a_backend_error_naming_its_column() {
    let (_dir, _path, store) = open();
    let request = request_due(Timestamp::from_unix_ms(2_000));
    store.insert_request(&request).await.unwrap();
    let id = request.id;

    sql(&store, "UPDATE requests SET requester = 'not a spiffe id'").unwrap();
    assert_backend_names(store.request(id).await.unwrap_err(), "requests.requester");
    assert_backend_names(
        store.requests(None).await.unwrap_err(),
        "requests.requester",
    );

    sql(
        &store,
        "UPDATE requests SET requester = 'spiffe://fi.xborder.test/police', scope_json = '{}'",
    )
    .unwrap();
    assert_backend_names(store.request(id).await.unwrap_err(), "requests.scope_json");
}

#[tokio::test]
async fn a_bad_grant_row_names_its_column() {
    let (_dir, _path, store) = open();
    let request = request_due(Timestamp::from_unix_ms(2_000));
    store.insert_request(&request).await.unwrap();
    let grant = Grant {
        id: GrantId::new(),
        request_id: request.id,
        grantee: request.requester.clone(),
        grantee_jurisdiction: request.requester_jurisdiction.clone(),
        holder: request.holder.clone(),
        thumbprint: request.thumbprint.clone(),
        scope: request.scope.clone(),
        quotas: Default::default(),
        used_bytes: 0,
        used_transfers: 0,
        approvers: Vec::new(),
        issued_at: Timestamp::from_unix_ms(1),
        expires_at: Timestamp::from_unix_ms(2),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: "t".into(),
    };
    let approval = Approval {
        approver: "spiffe://ee.xborder.test/anna".parse().unwrap(),
        at: Timestamp::from_unix_ms(1),
    };
    store
        .approve(request.id, approval, 1, grant.clone(), &decision())
        .await
        .unwrap();

    sql(&store, r#"UPDATE grants SET approvers_json = '["anna"]'"#).unwrap();
    assert_backend_names(
        store.grant(grant.id).await.unwrap_err(),
        "grants.approvers_json",
    );
    assert_backend_names(
        store.due(Timestamp::from_unix_ms(5)).await.unwrap_err(),
        "grants.approvers_json",
    );

    // The CHECKs keep negative counters and half-ended grants out in the first place.
    assert!(sql(&store, "UPDATE grants SET used_bytes = -1").is_err());
    assert!(sql(&store, "UPDATE grants SET state = 'expired'").is_err());
}

#[test]
fn the_scheduler_queries_use_the_partial_indexes() {
    let (_dir, _path, store) = open();
    let conn = store.reader.lock().unwrap();
    let plan = |query: &str| -> String {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        let now = std::iter::repeat_n(0_i64, stmt.parameter_count());
        let rows = stmt
            .query_map(rusqlite::params_from_iter(now), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        rows.collect::<Result<Vec<_>, _>>().unwrap().join("\n")
    };
    for (query, indexes) in [
        (
            super::rows::NEXT_DUE,
            ["grants_due_expiry", "grants_due_validation"],
        ),
        (
            super::rows::DUE_IDS,
            ["grants_due_expiry", "grants_due_validation"],
        ),
    ] {
        let plan = plan(query);
        for index in indexes {
            assert!(plan.contains(index), "{query}\nshould use {index}:\n{plan}");
        }
    }
    let queue = plan("SELECT id FROM requests WHERE state = 'pending' ORDER BY filed_at DESC");
    assert!(queue.contains("requests_by_state"), "{queue}");
    let open = plan(super::transfers::OPEN_TRANSFERS);
    assert!(open.contains("transfers_open"), "{open}");
    let by_grant = plan("SELECT id FROM transfers WHERE grant_id = ?1");
    assert!(by_grant.contains("transfers_by_grant"), "{by_grant}");
    for query in [super::notices::DUE, super::notices::NEXT_DUE] {
        let plan = plan(query);
        assert!(
            plan.contains("notices_due"),
            "{query}\nshould use notices_due:\n{plan}"
        );
    }
}

fn grant_for(request: &Request) -> Grant {
    Grant {
        id: GrantId::new(),
        request_id: request.id,
        grantee: request.requester.clone(),
        grantee_jurisdiction: request.requester_jurisdiction.clone(),
        holder: request.holder.clone(),
        thumbprint: request.thumbprint.clone(),
        scope: request.scope.clone(),
        quotas: crate::grant::Quotas {
            max_bytes: Some(1_000),
            max_transfers: Some(3),
        },
        used_bytes: 100,
        used_transfers: 1,
        approvers: vec!["spiffe://ee.xborder.test/anna".parse().unwrap()],
        issued_at: Timestamp::from_unix_ms(1),
        expires_at: Timestamp::from_unix_ms(100_000),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: "t".into(),
    }
}

fn transfer_of(grant: &Grant) -> TransferOpen {
    TransferOpen {
        id: TransferId::new(),
        grant_id: grant.id,
        grantee: grant.grantee.to_string(),
        route: "/v1/subscriber".into(),
        category: "subscriber".into(),
        target: "+372 5555 0101".into(),
        started_at: Timestamp::from_unix_ms(3_000),
    }
}

/// A file written by the first release (schema version 1, no transfers)
/// opens with this code: it is migrated, and what it held is still there.
#[tokio::test]
async fn a_version_1_file_migrates_and_keeps_its_grants() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let request = request_due(Timestamp::from_unix_ms(2_000));
    let grant = grant_for(&request);
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.pragma_update(None, "user_version", 1).unwrap();
        rows::insert_request(&tx, &request).unwrap();
        rows::insert_grant(&tx, &grant).unwrap();
        tx.commit().unwrap();
    }

    let store = SqliteStore::open(&path, names()).unwrap();
    assert_eq!(
        migrations::user_version(&store.reader.lock().unwrap()).unwrap(),
        migrations::current_version()
    );
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(grant.clone()));
    assert_eq!(store.request(request.id).await.unwrap(), Some(request));

    // The counters carried over are the ones the quota checks start from.
    let open = transfer_of(&grant);
    assert_eq!(store.open_transfer(&open).await.unwrap(), 100);
    store.open_transfer(&transfer_of(&grant)).await.unwrap();
    assert!(matches!(
        store.open_transfer(&transfer_of(&grant)).await,
        Err(StoreError::QuotaExhausted {
            max_transfers: 3,
            ..
        })
    ));
    let receipt = Receipt::interrupted(&open, Timestamp::from_unix_ms(4_000), true);
    let (receipt, _) = store.close_transfer(receipt, jws()).await.unwrap();
    assert!(receipt.audit_index.is_some());
    assert_eq!(
        store.transfer_receipt(open.id).await.unwrap(),
        Some((receipt, "jws".to_owned()))
    );
}

#[tokio::test]
async fn transfer_constraints_keep_open_and_closed_rows_whole() {
    let (_dir, _path, store) = open();
    let request = request_due(Timestamp::from_unix_ms(2_000));
    store.insert_request(&request).await.unwrap();
    let grant = grant_for(&request);
    let approval = Approval {
        approver: "spiffe://ee.xborder.test/anna".parse().unwrap(),
        at: Timestamp::from_unix_ms(1),
    };
    store
        .approve(request.id, approval, 1, grant.clone(), &decision())
        .await
        .unwrap();
    let open = transfer_of(&grant);
    store.open_transfer(&open).await.unwrap();

    assert!(
        sql(&store, "UPDATE transfers SET state = 'closed'").is_err(),
        "a closed row needs its end, receipt and jws"
    );
    assert!(
        sql(&store, "UPDATE transfers SET plaintext_bytes = 5").is_err(),
        "an open row has no sizes"
    );
    assert!(
        sql(&store, "UPDATE transfers SET grant_id = 'no-such-grant'").is_err(),
        "foreign key to grants"
    );

    let mut receipt = Receipt::interrupted(&open, Timestamp::from_unix_ms(4_000), true);
    receipt.incomplete = Some(Incomplete::UpstreamFailed);
    store.close_transfer(receipt, jws()).await.unwrap();
    assert!(
        sql(&store, "UPDATE transfers SET complete = 1").is_err(),
        "complete with a cause"
    );
    assert!(
        sql(&store, "UPDATE transfers SET incomplete = 'bored'").is_err(),
        "CHECK on transfers.incomplete"
    );
    assert!(
        sql(&store, "UPDATE transfers SET state = 'open'").is_err(),
        "an open row has no end"
    );

    sql(&store, "UPDATE transfers SET receipt_json = '{}'").unwrap();
    assert_backend_names(
        store.transfer_receipt(open.id).await.unwrap_err(),
        "transfers.receipt_json",
    );
}

#[tokio::test]
async fn notice_constraints_keep_pending_and_delivered_rows_whole() {
    let (_dir, _path, store) = open();
    let request = request_due(Timestamp::from_unix_ms(2_000));
    store.insert_request(&request).await.unwrap();
    let grant = grant_for(&request);
    let approval = Approval {
        approver: "spiffe://ee.xborder.test/anna".parse().unwrap(),
        at: Timestamp::from_unix_ms(1),
    };
    store
        .approve(request.id, approval, 1, grant.clone(), &decision())
        .await
        .unwrap();

    assert!(
        sql(&store, "UPDATE notices SET state = 'delivered'").is_err(),
        "a delivered row needs its time, status and an attempt"
    );
    assert!(
        sql(&store, "UPDATE notices SET status = 200").is_err(),
        "a pending row has no answer"
    );
    assert!(
        sql(&store, "UPDATE notices SET next_attempt_at = due_at - 1").is_err(),
        "no attempt before the due time"
    );
    assert!(
        sql(&store, "UPDATE notices SET attempts = 1").is_err(),
        "an attempt has a time"
    );
    assert!(
        sql(&store, "UPDATE notices SET state = 'lost'").is_err(),
        "CHECK on notices.state"
    );
    assert!(
        sql(&store, "UPDATE notices SET grant_id = 'no-such-grant'").is_err(),
        "foreign key to grants"
    );
    assert!(
        sql(
            &store,
            &format!(
                "INSERT INTO notices (id, grant_id, request_id, due_at, state, next_attempt_at) \
                 VALUES ('{}', '{}', '{}', 1, 'pending', 1)",
                crate::notice::NoticeId::new(),
                grant.id,
                request.id
            )
        )
        .is_err(),
        "one notice per grant"
    );
    assert!(
        sql(
            &store,
            "UPDATE notices SET state = 'delivered', attempts = 1, last_attempt_at = 5, \
             delivered_at = 5, status = 302"
        )
        .is_err(),
        "delivered only on a 2xx"
    );

    sql(&store, "UPDATE grants SET scope_json = '{}'").unwrap();
    assert_backend_names(store.notices(None).await.unwrap_err(), "grants.scope_json");
}

/// A file from before notices (schema version 3) migrates; its grants keep
/// working and get no notice: no deferral was ever decided for them.
#[tokio::test]
async fn a_version_3_file_migrates_without_inventing_notices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let old = request_due(Timestamp::from_unix_ms(2_000));
    let grant = grant_for(&old);
    {
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for script in &MIGRATIONS[..3] {
            tx.execute_batch(script).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        rows::insert_request(&tx, &old).unwrap();
        rows::insert_grant(&tx, &grant).unwrap();
        tx.commit().unwrap();
    }

    let store = SqliteStore::open(&path, names()).unwrap();
    assert_eq!(store.grant(grant.id).await.unwrap(), Some(grant));
    assert!(store.notices(None).await.unwrap().is_empty());
    assert_eq!(store.next_notice_due().await.unwrap(), None);

    // A grant issued from now on gets its notice.
    let mut next = request_due(Timestamp::from_unix_ms(2_000));
    next.filed_at = Timestamp::from_unix_ms(5);
    store.insert_request(&next).await.unwrap();
    let approval = Approval {
        approver: "spiffe://ee.xborder.test/anna".parse().unwrap(),
        at: Timestamp::from_unix_ms(10),
    };
    store
        .approve(next.id, approval, 1, grant_for(&next), &decision())
        .await
        .unwrap();
    assert_eq!(store.notices(None).await.unwrap().len(), 1);
}
