//! A request filed, reviewed and approved: the whole story from filing with
//! its findings, through a reviewer's approval and the grantee's token, to a
//! transfer within the grant's scope; and content, which needs two distinct
//! approvers before it is granted.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use super::{admin_get, approve, pull, token_of};
use crate::support::*;

#[tokio::test]
async fn the_whole_story_file_findings_approve_token_transfer() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();

    let (status, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["subscriber"], "normal"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    assert_eq!(filed["state"], "pending");
    assert_eq!(filed["requester"], "spiffe://fi.xborder.test/agency/police");
    let rules: Vec<&str> = filed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        vec![
            "pair_policy",
            "legal_basis",
            "category.subscriber",
            "targets",
            "period"
        ]
    );
    assert!(
        filed["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["verdict"] == "pass")
    );
    let filed_at = xborder::clock::Timestamp::parse(filed["filed_at"].as_str().unwrap()).unwrap();
    let deadline = xborder::clock::Timestamp::parse(filed["deadline"].as_str().unwrap()).unwrap();
    assert_eq!(
        filed_at.until(deadline),
        Duration::from_secs(10 * 86_400),
        "e-Evidence default: 10 days"
    );
    let id = filed["id"].as_str().unwrap().to_owned();

    // Only the requester that filed it may read it.
    let customs = world
        .fi
        .issue(&xborder::pki::LeafSpec::client(spiffe(
            "spiffe://fi.xborder.test/agency/customs",
        )))
        .unwrap();
    let (status, body) = send_json(
        &world.client(Some(&customs)),
        gateway.border,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("request_not_found"))
    );

    // Reviewers see it pending, not overdue.
    let pending = admin_get(&world, gateway.admin, "/v1/requests?state=pending").await;
    assert_eq!(pending["requests"][0]["id"], id.as_str());
    assert_eq!(pending["requests"][0]["overdue"], false);

    let (status, answer) = approve(
        &world,
        gateway.admin,
        "alice",
        &id,
        json!({ "lifetime": "1h", "max_transfers": 5 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "approved");
    assert!(
        answer["grant"].get("token").is_none(),
        "admins do not see bearer tokens"
    );

    let view = token_of(&world, gateway.border, &police, &id).await;
    assert_eq!(view["state"], "approved");
    let token = view["grant"]["token"].as_str().unwrap();
    assert_eq!(
        pull(&world, gateway.border, &police, token, "subscriber").await,
        (StatusCode::OK, String::new())
    );

    // The same token over another certificate, even one with the same SPIFFE ID, is not bound to it.
    let colleague = world.fi_police();
    assert_eq!(
        pull(&world, gateway.border, &colleague, token, "subscriber").await,
        (StatusCode::FORBIDDEN, "token_not_bound".into())
    );
    // A category the grant does not cover.
    assert_eq!(
        pull(&world, gateway.border, &police, token, "content").await,
        (StatusCode::FORBIDDEN, "scope_category".into())
    );
    // A target the grant does not name, a period outside the grant's, no target at all.
    let with_token = |path: &'static str| {
        let client = world.client(Some(&police));
        let token = token.to_owned();
        async move {
            let (status, body) = send_json(
                &client,
                gateway.border,
                Method::GET,
                path,
                None,
                Some(&token),
            )
            .await;
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    for (path, status, code) in [
        (
            "/v1/data/subscriber/+3725559999",
            StatusCode::FORBIDDEN,
            "scope_target",
        ),
        (
            "/v1/data/subscriber/+3725550123?from=2025-12-01T00:00:00Z",
            StatusCode::FORBIDDEN,
            "scope_period",
        ),
        (
            "/v1/data/subscriber/+3725550123?to=2026-07-01T00:00:00Z",
            StatusCode::FORBIDDEN,
            "scope_period",
        ),
        (
            "/v1/data/subscriber/+3725550123?from=soon",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/v1/data/subscriber",
            StatusCode::BAD_REQUEST,
            "target_required",
        ),
    ] {
        assert_eq!(with_token(path).await, (status, code.to_owned()), "{path}");
    }
    // A period inside the grant's passes.
    let inside =
        "/v1/data/subscriber/+3725550123?from=2026-02-01T00:00:00Z&to=2026-03-01T00:00:00Z";
    assert_eq!(with_token(inside).await.0, StatusCode::OK);
    gateway.shutdown().await;
}

#[tokio::test]
async fn content_needs_two_distinct_approvers() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (_, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["content"], "normal"),
    )
    .await;
    let id = filed["id"].as_str().unwrap();

    let (status, answer) = approve(&world, gateway.admin, "alice", id, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (answer["approvals"].as_u64(), answer["required"].as_u64()),
        (Some(1), Some(2))
    );
    // The same approver again counts once.
    let (_, answer) = approve(&world, gateway.admin, "alice", id, json!({})).await;
    assert_eq!(answer["approvals"], 1);
    // A reviewer may not approve.
    let (status, problem) = approve(&world, gateway.admin, "rita", id, json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("role_required"))
    );
    assert_eq!(
        token_of(&world, gateway.border, &police, id).await["state"],
        "pending"
    );

    // A lifetime beyond the policy's cap is refused, naming the cap.
    let (status, problem) = approve(
        &world,
        gateway.admin,
        "bob",
        id,
        json!({ "lifetime": "31d" }),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("lifetime_exceeds_policy"))
    );

    let (status, answer) = approve(
        &world,
        gateway.admin,
        "bob",
        id,
        json!({ "lifetime": "2h" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let approvers: Vec<&str> = answer["grant"]["approvers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        approvers,
        vec![
            "spiffe://ee.xborder.test/admin/alice",
            "spiffe://ee.xborder.test/admin/bob"
        ]
    );
    // Once approved, further approvals conflict.
    let (status, problem) = approve(&world, gateway.admin, "operator", id, json!({})).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("state_conflict"))
    );
    gateway.shutdown().await;
}
