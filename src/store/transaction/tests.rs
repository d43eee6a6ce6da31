//! The decisions without a database: what each plan writes and logs, and in
//! which order. That both drivers carry a plan out alike is the store
//! suite's part (`tests/it/store.rs`).

use super::*;
use crate::store::fixtures::{decision, request_due};

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn approval(name: &str, ms: i64) -> Approval {
    Approval {
        approver: format!("spiffe://ee.xborder.test/{name}").parse().unwrap(),
        at: at(ms),
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
        quotas: Default::default(),
        used_bytes: 0,
        used_transfers: 0,
        approvers: Vec::new(),
        issued_at: at(5_000),
        expires_at: at(100_000),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: "t".into(),
    }
}

/// Each step as `write <change>` or `append <entry kind>`.
fn steps<T>(plan: &Plan<T>) -> Vec<String> {
    plan.steps
        .iter()
        .map(|step| match step {
            Step::Write(change) => {
                let debug = format!("{change:?}");
                let name = debug.split([' ', '(']).next().unwrap_or_default();
                format!("write {name}")
            }
            Step::Append(_, event) => format!("append {}", event.kind()),
        })
        .collect()
}

#[test]
fn an_approval_that_grants_is_logged_before_the_grant_is_written() {
    let mut request = request_due(at(100_000));
    request.approvals = vec![approval("anna", 3_000)];
    let grant = grant_for(&request);
    let plan = approve(
        request.id,
        Some(request.clone()),
        approval("bert", 2_000),
        2,
        grant.clone(),
        &decision(),
    )
    .unwrap();
    assert_eq!(
        steps(&plan),
        [
            "write InsertApproval",
            "append approval",
            "write InsertGrant",
            "write ApproveRequest",
            "write InsertNotice",
            "append grant_issued",
        ]
    );
    assert_eq!(plan.announce, Some(Announce::Due(grant.id)));
    let Approved::Granted(granted) = plan.outcome else {
        panic!("{:?}", plan.outcome);
    };
    // As the stores read approvals back: by time, whoever came first.
    assert_eq!(
        granted.approvers,
        [approval("bert", 0).approver, approval("anna", 0).approver]
    );
}

#[test]
fn a_repeated_approver_is_logged_but_not_written_again() {
    let mut request = request_due(at(100_000));
    request.approvals = vec![approval("anna", 3_000)];
    let plan = approve(
        request.id,
        Some(request.clone()),
        approval("anna", 4_000),
        2,
        grant_for(&request),
        &decision(),
    )
    .unwrap();
    assert_eq!(steps(&plan), ["append approval"]);
    assert_eq!(plan.announce, None);
    assert_eq!(
        plan.outcome,
        Approved::Pending {
            approvals: 1,
            required: 2
        }
    );
}

#[test]
fn an_ended_grant_is_left_alone_and_an_unknown_one_is_not_found() {
    let mut grant = grant_for(&request_due(at(100_000)));
    grant.state = GrantState::Revoked;
    let plan = end_grant(Some(grant), Cause::Expired, None, None, at(9_000)).unwrap();
    assert!(plan.steps.is_empty() && plan.announce.is_none() && plan.outcome.is_none());
    assert!(matches!(
        end_grant(None, Cause::Expired, None, None, at(9_000)),
        Err(StoreError::NotFound)
    ));
}

#[test]
fn a_failed_attempt_is_counted_and_never_retried_before_the_notice_is_due() {
    let notice = NoticeAttempts {
        state: NoticeState::Pending,
        grant: GrantId::new(),
        attempts: 2,
        due_at: at(10_000),
    };
    let id = NoticeId::new();
    let plan = notice_failed(id, Some(notice.clone()), at(8_000), "refused", at(9_000)).unwrap();
    assert!(plan.outcome);
    let [
        Step::Write(Change::NoticeFailed {
            attempts,
            next_attempt_at,
            ..
        }),
    ] = plan.steps.as_slice()
    else {
        panic!("{:?}", plan.steps);
    };
    assert_eq!((*attempts, *next_attempt_at), (3, at(10_000)));

    let delivered = NoticeAttempts {
        state: NoticeState::Delivered,
        ..notice
    };
    let plan = notice_failed(id, Some(delivered), at(8_000), "late", at(9_000)).unwrap();
    assert!(!plan.outcome && plan.steps.is_empty());
}
