//! The outbox of data-subject notices as every store keeps it: a notice is
//! written with its grant (the final approver's deferral wins), listed when
//! due in order, delivered once with one audit entry, and pushed back by a
//! failed attempt without an entry. The SQLite-only failure injection (no
//! grant without its notice) is at the end.

use std::sync::Arc;
use std::time::Duration;

use xborder::audit::entry::{Entry, Event};
use xborder::grant::Grant;
use xborder::notice::{NoticeCounts, NoticeId, NoticeState, NoticeView};
use xborder::store::sqlite::SqliteStore;
use xborder::store::{Approved, Decision, Store, StoreError};

use super::{NOTICE_AFTER, approval, assert_conflict, at, decision, grant, names, request};

store_suite!(sqlite, super::super::open_sqlite;
    a_notice_is_written_with_its_grant_and_not_before,
    due_notices_come_longest_waiting_first_up_to_the_limit,
    a_notice_is_delivered_once_with_one_entry,
    a_failed_attempt_pushes_the_notice_back_without_an_entry,
);
store_suite!(postgres, super::super::open_postgres;
    a_notice_is_written_with_its_grant_and_not_before,
    due_notices_come_longest_waiting_first_up_to_the_limit,
    a_notice_is_delivered_once_with_one_entry,
    a_failed_attempt_pushes_the_notice_back_without_an_entry,
);

/// Files a request at `filed_at` and grants it (issued a second later),
/// notifying `notice_after_ms` after issue.
async fn issue(store: &Arc<dyn Store>, filed_at: i64, notice_after_ms: u64) -> Grant {
    let request = request(filed_at);
    store.insert_request(&request).await.unwrap();
    let decision = Decision {
        policy: "p".into(),
        notice_after: Duration::from_millis(notice_after_ms),
    };
    match store
        .approve(
            request.id,
            approval("anna", filed_at + 1_000),
            1,
            grant(&request, filed_at + 1_000_000, None),
            &decision,
        )
        .await
        .unwrap()
    {
        Approved::Granted(grant) => *grant,
        other => panic!("{other:?}"),
    }
}

/// The notice of `grant`.
async fn notice_of(store: &Arc<dyn Store>, grant: &Grant) -> NoticeView {
    store
        .notices(None)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.notice.grant_id == grant.id)
        .expect("every grant has its notice")
}

async fn due_ids(store: &Arc<dyn Store>, now: i64, limit: usize) -> Vec<NoticeId> {
    store
        .due_notices(at(now), limit)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect()
}

/// Every audit event, in order.
async fn events(store: &Arc<dyn Store>) -> Vec<Event> {
    store
        .audit_entries(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|bytes| Entry::parse(bytes).unwrap().event)
        .collect()
}

async fn a_notice_is_written_with_its_grant_and_not_before(store: Arc<dyn Store>) {
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    let proposed = grant(&request, 100_000, None);
    // The first approver would defer a day; the second, who grants, a minute.
    let first = Decision {
        policy: "p1".into(),
        notice_after: Duration::from_secs(86_400),
    };
    let counted = store
        .approve(
            request.id,
            approval("anna", 2_000),
            2,
            proposed.clone(),
            &first,
        )
        .await
        .unwrap();
    assert!(matches!(counted, Approved::Pending { .. }));
    assert!(
        store.notices(None).await.unwrap().is_empty(),
        "no grant, no notice"
    );
    assert_eq!(store.next_notice_due().await.unwrap(), None);

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
    let due = granted.issued_at.saturating_add(NOTICE_AFTER);
    let notices = store.notices(None).await.unwrap();
    assert_eq!(notices.len(), 1);
    let view = &notices[0];
    let notice = &view.notice;
    assert_eq!(
        (notice.grant_id, notice.request_id, notice.due_at),
        (granted.id, request.id, due)
    );
    assert_eq!(
        (view.state, view.attempts, view.next_attempt_at, view.status),
        (NoticeState::Pending, 0, Some(due), None)
    );
    assert_eq!(notice.requester, request.requester);
    assert_eq!(
        notice.requester_jurisdiction,
        request.requester_jurisdiction
    );
    assert_eq!(notice.holder, request.holder);
    assert_eq!(
        notice.targets, request.scope.targets,
        "in clear, for the receiver"
    );
    assert_eq!(notice.categories, request.scope.categories);
    assert_eq!(notice.legal_basis, request.scope.legal_basis);
    assert_eq!(notice.period, request.scope.period);
    assert_eq!(
        (notice.issued_at, notice.expires_at),
        (granted.issued_at, granted.expires_at)
    );
    assert_eq!(store.next_notice_due().await.unwrap(), Some(due));
    assert_eq!(
        store.notice_counts().await.unwrap(),
        NoticeCounts {
            pending: 1,
            delivered: 0
        }
    );
    let issued: Vec<_> = events(&store)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::GrantIssued { notice_due, .. } => Some(notice_due),
            _ => None,
        })
        .collect();
    assert_eq!(issued, [Some(due)], "the log says when the notice is due");
}

async fn due_notices_come_longest_waiting_first_up_to_the_limit(store: Arc<dyn Store>) {
    // Issued at 2 s, 3 s and 4 s; due at 10 s, 5 s and 20 s.
    let a = issue(&store, 1_000, 8_000).await;
    let b = issue(&store, 2_000, 2_000).await;
    let c = issue(&store, 3_000, 16_000).await;
    let id = |g: &Grant| {
        let g = g.clone();
        let store = store.clone();
        async move { notice_of(&store, &g).await.notice.id }
    };
    let (a, b, c) = (id(&a).await, id(&b).await, id(&c).await);

    assert!(due_ids(&store, 4_999, 10).await.is_empty());
    assert_eq!(due_ids(&store, 5_000, 10).await, [b]);
    assert_eq!(due_ids(&store, 10_000, 10).await, [b, a]);
    assert_eq!(due_ids(&store, 10_000, 1).await, [b]);
    assert_eq!(due_ids(&store, 20_000, 10).await, [b, a, c]);
    assert_eq!(store.next_notice_due().await.unwrap(), Some(at(5_000)));

    // b fails and waits until 30 s; a is delivered.
    assert!(
        store
            .notice_failed(b, at(5_000), "answered 500", at(30_000))
            .await
            .unwrap()
    );
    assert!(store.notice_delivered(a, at(10_000), 200).await.unwrap());
    assert_eq!(due_ids(&store, 20_000, 10).await, [c]);
    assert_eq!(store.next_notice_due().await.unwrap(), Some(at(20_000)));
    assert!(store.notice_delivered(c, at(20_000), 200).await.unwrap());
    assert_eq!(store.next_notice_due().await.unwrap(), Some(at(30_000)));
    assert_eq!(due_ids(&store, 30_000, 10).await, [b]);

    let listed = |state| {
        let store = store.clone();
        async move {
            store
                .notices(state)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.notice.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(None).await, [b, a, c], "in the order they fall due");
    assert_eq!(listed(Some(NoticeState::Pending)).await, [b]);
    assert_eq!(listed(Some(NoticeState::Delivered)).await, [a, c]);
    assert_eq!(
        store.notice_counts().await.unwrap(),
        NoticeCounts {
            pending: 1,
            delivered: 2
        }
    );
}

async fn a_notice_is_delivered_once_with_one_entry(store: Arc<dyn Store>) {
    let grant = issue(&store, 1_000, 60_000).await;
    let id = notice_of(&store, &grant).await.notice.id;

    assert_conflict(store.notice_delivered(id, at(70_000), 500).await, "2xx");
    assert!(store.notice_delivered(id, at(70_000), 204).await.unwrap());
    let head = store.audit_head().await.unwrap();
    assert!(
        !store.notice_delivered(id, at(71_000), 200).await.unwrap(),
        "a repeat is not a second delivery"
    );
    assert!(
        !store
            .notice_failed(id, at(72_000), "late failure", at(80_000))
            .await
            .unwrap(),
        "a delivered notice records no failure"
    );
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing logged");

    let view = notice_of(&store, &grant).await;
    assert_eq!(
        (
            view.state,
            view.attempts,
            view.status,
            view.delivered_at,
            view.next_attempt_at,
            view.last_error
        ),
        (
            NoticeState::Delivered,
            1,
            Some(204),
            Some(at(70_000)),
            None,
            None
        )
    );
    let delivered: Vec<Event> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.kind() == "notice_delivered")
        .collect();
    assert_eq!(
        delivered,
        [Event::NoticeDelivered {
            notice: id,
            grant: grant.id,
            attempts: 1,
            status: 204,
        }]
    );
    assert_eq!(delivered[0].grant(), Some(grant.id));
    assert!(
        store
            .due_notices(at(i64::MAX), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_notice_due().await.unwrap(), None);

    let unknown = NoticeId::new();
    assert!(matches!(
        store.notice_delivered(unknown, at(1), 200).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.notice_failed(unknown, at(1), "x", at(2)).await,
        Err(StoreError::NotFound)
    ));
}

async fn a_failed_attempt_pushes_the_notice_back_without_an_entry(store: Arc<dyn Store>) {
    let grant = issue(&store, 1_000, 60_000).await;
    let due = grant
        .issued_at
        .saturating_add(Duration::from_secs(60))
        .unix_ms();
    let id = notice_of(&store, &grant).await.notice.id;
    let head = store.audit_head().await.unwrap();

    assert!(
        store
            .notice_failed(
                id,
                at(due + 5),
                "answered 500 Internal Server Error",
                at(due + 1_005)
            )
            .await
            .unwrap()
    );
    let view = notice_of(&store, &grant).await;
    assert_eq!(
        (
            view.state,
            view.attempts,
            view.last_attempt_at,
            view.next_attempt_at
        ),
        (
            NoticeState::Pending,
            1,
            Some(at(due + 5)),
            Some(at(due + 1_005))
        )
    );
    assert_eq!(
        view.last_error.as_deref(),
        Some("answered 500 Internal Server Error")
    );
    assert!(due_ids(&store, due + 1_004, 10).await.is_empty());
    let retried = store.due_notices(at(due + 1_005), 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts), (id, 1));
    assert_eq!(
        store.next_notice_due().await.unwrap(),
        Some(at(due + 1_005))
    );

    // A next attempt before the due time is held at the due time; a long
    // error is kept short.
    let long = "x".repeat(10_000);
    store
        .notice_failed(id, at(due + 1_005), &long, at(0))
        .await
        .unwrap();
    let view = notice_of(&store, &grant).await;
    assert_eq!(view.next_attempt_at, Some(at(due)));
    assert_eq!(view.attempts, 2);
    assert!(view.last_error.unwrap().len() <= 512);
    assert_eq!(
        store.audit_head().await.unwrap(),
        head,
        "failures are not audited"
    );

    assert!(
        store
            .notice_delivered(id, at(due + 2_000), 200)
            .await
            .unwrap()
    );
    let delivered = notice_of(&store, &grant).await;
    assert_eq!(delivered.attempts, 3, "two failures and the delivery");
    match events(&store).await.last() {
        Some(Event::NoticeDelivered { attempts: 3, .. }) => {}
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// SQLite: no grant without its notice.

#[tokio::test]
async fn sqlite_a_grant_whose_notice_cannot_be_written_is_not_issued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let request = request(1_000);
    store.insert_request(&request).await.unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER fail_notice BEFORE INSERT ON notices \
             BEGIN SELECT RAISE(ABORT, 'injected notice failure'); END;",
        )
        .unwrap();

    // An approval that only counts writes no notice, so it goes through.
    let proposed = grant(&request, 100_000, None);
    let counted = store
        .approve(
            request.id,
            approval("anna", 2_000),
            2,
            proposed.clone(),
            &decision("p"),
        )
        .await
        .unwrap();
    assert!(matches!(counted, Approved::Pending { .. }));
    let head = store.audit_head().await.unwrap();

    let result = store
        .approve(
            request.id,
            approval("bert", 2_500),
            2,
            proposed.clone(),
            &decision("p"),
        )
        .await;
    assert!(matches!(result, Err(StoreError::Backend(_))), "{result:?}");
    assert!(store.grants(None).await.unwrap().is_empty(), "no grant");
    let stored = store.request(request.id).await.unwrap().unwrap();
    assert_eq!(stored.state.as_str(), "pending");
    assert_eq!(stored.approvals.len(), 1, "the second approval is undone");
    assert_eq!(store.audit_head().await.unwrap(), head, "nothing logged");
    assert!(store.notices(None).await.unwrap().is_empty());

    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP TRIGGER fail_notice;")
        .unwrap();
    let granted = store
        .approve(
            request.id,
            approval("bert", 2_500),
            2,
            proposed,
            &decision("p"),
        )
        .await
        .unwrap();
    assert!(matches!(granted, Approved::Granted(_)));
    assert_eq!(store.notices(None).await.unwrap().len(), 1);
}

/// A notice and its state are in the file: a restarted gateway finds the
/// pending ones and does not resend the delivered ones.
#[tokio::test]
async fn sqlite_notices_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SqliteStore::FILE_NAME);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    let sent = issue(&store, 1_000, 1_000).await;
    let waiting = issue(&store, 2_000, 1_000).await;
    let sent = notice_of(&store, &sent).await.notice.id;
    store.notice_delivered(sent, at(5_000), 200).await.unwrap();
    let before = store.notices(None).await.unwrap();
    drop(store);

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, names()).unwrap());
    assert_eq!(store.notices(None).await.unwrap(), before);
    let due = store.due_notices(at(10_000), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].grant_id, waiting.id);
    assert!(!store.notice_delivered(sent, at(11_000), 200).await.unwrap());
}
