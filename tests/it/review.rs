//! Requests, review and grants over real TLS and a real SQLite file: the
//! whole story, the two-person rule, emergencies, sunsets and every token
//! refusal with its code.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use xborder::clock::Clock;
use xborder::grant::token::{TokenKeys, TokenSettings, Tokens};
use xborder::grant::{Cause, GrantId};
use xborder::store::Store;
use xborder::store::sqlite::SqliteStore;

use crate::support::*;

async fn approve(
    world: &World,
    admin_addr: std::net::SocketAddr,
    who: &str,
    id: &str,
    terms: Value,
) -> (StatusCode, Value) {
    send_json(
        &admin(world, who),
        admin_addr,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(&terms),
        None,
    )
    .await
}

async fn admin_get(world: &World, admin_addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = send_json(
        &admin(world, "rita"),
        admin_addr,
        Method::GET,
        path,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn token_of(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    id: &str,
) -> Value {
    let (status, view) = send_json(
        &world.client(Some(cert)),
        border,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// GET a subscriber record with `token`; the status and problem code (if any).
async fn pull(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    token: &str,
    route: &str,
) -> (StatusCode, String) {
    let (status, body) = send_json(
        &world.client(Some(cert)),
        border,
        Method::GET,
        &format!("/v1/data/{route}/+3725550123"),
        None,
        Some(token),
    )
    .await;
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

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
async fn bad_request_bodies_name_every_bad_field() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let mut body = request_body(&["subscriber", "Subscriber"], "normal");
    body["recipient"] = json!("age1notakey");
    body["targets"] = json!([]);
    body["period"] = json!({ "from": "2026-06-30T00:00:00Z", "to": "2026-01-01T00:00:00Z" });
    let (status, problem) = file(&world, gateway.border, &police, &body).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["categories[1]", "targets", "period", "recipient"]
    );

    // Unknown fields are refused, naming the field; and the requester is never a body field.
    let mut body = request_body(&["subscriber"], "normal");
    body["requester"] = json!("spiffe://ee.xborder.test/admin/operator");
    let (status, problem) = file(&world, gateway.border, &police, &body).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    assert!(
        problem["title"].as_str().unwrap().contains("requester"),
        "{problem}"
    );

    // Nothing of either was stored.
    let all = admin_get(&world, gateway.admin, "/v1/requests").await;
    assert_eq!(all["requests"].as_array().unwrap().len(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_over_broad_request_is_refused_with_every_failing_finding_and_kept_for_the_record() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let mut body = request_body(&["ip_identification", "subscriber"], "normal");
    body["legal_basis"] = json!("curiosity");
    body["targets"] = json!(["1", "2", "3", "4", "5", "6"]);
    body["period"] = json!({ "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z" });
    let (status, problem) = file(&world, gateway.border, &world.fi_police(), &body).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_refused"))
    );
    let failed: Vec<&str> = problem["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        vec![
            "legal_basis",
            "category.ip_identification",
            "targets",
            "period"
        ]
    );
    let refused = admin_get(&world, gateway.admin, "/v1/requests?state=refused").await;
    assert_eq!(refused["requests"][0]["id"], problem["request_id"]);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_pair_without_policy_is_refused() {
    let world = World::new();
    let stop = Default::default();
    let upstream: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    // The only policy is for another pair: EE data to LV.
    let without_fi = world
        .config_text(upstream)
        .replace("[policy.EE.FI", "[policy.EE.LV");
    world.write("ee/gateway.toml", &without_fi);
    let config = xborder::config::Config::load(&world.path("ee/gateway.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let gateway = Running::start_with(config, stop).await;
    let (status, problem) = file(
        &world,
        gateway.border,
        &world.fi_police(),
        &request_body(&["subscriber"], "normal"),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("policy_refused"))
    );
    assert_eq!(problem["findings"][0]["rule"], "pair_policy");
    assert!(
        problem["findings"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("denied by default")
    );
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

#[tokio::test]
async fn every_token_refusal_has_its_own_code() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let claims = token.split('.').nth(1).unwrap().to_owned();
    let refused = |code: &str| (StatusCode::UNAUTHORIZED, code.to_owned());

    // No token, garbage, a tampered payload.
    let (status, body) = send_json(
        &world.client(Some(&police)),
        gateway.border,
        Method::GET,
        "/v1/data/subscriber/+3725550123",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_missing"))
    );
    assert_eq!(
        pull(&world, gateway.border, &police, "not-a-token", "subscriber").await,
        refused("token_malformed")
    );
    let parts: Vec<&str> = token.split('.').collect();
    let mut flipped = parts[1].as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        String::from_utf8(flipped).unwrap(),
        parts[2]
    );
    assert_eq!(
        pull(&world, gateway.border, &police, &tampered, "subscriber").await,
        refused("token_signature")
    );

    // `alg: none`, and HS256 (the classic key-confusion attempt).
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{claims}.",
        b64(&json!({ "alg": "none", "typ": "at+jwt" }))
    );
    assert_eq!(
        pull(&world, gateway.border, &police, &none, "subscriber").await,
        refused("token_algorithm")
    );
    let hs = format!(
        "{}.{claims}.{}",
        b64(&json!({ "alg": "HS256", "kid": "x" })),
        parts[2]
    );
    assert_eq!(
        pull(&world, gateway.border, &police, &hs, "subscriber").await,
        refused("token_algorithm")
    );

    // A key the gateway never configured.
    let grant_id: GrantId = claims_json(&token)["jti"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = SqliteStore::open(
        &world.path("ee/data").join(SqliteStore::FILE_NAME),
        xborder::audit::entry::Pseudonymiser::new(PSEUDONYM_KEY.to_vec()).unwrap(),
    )
    .unwrap();
    let grant = store.grant(grant_id).await.unwrap().unwrap();
    let settings = |issuer: &str, audience: &str| TokenSettings {
        issuer: issuer.into(),
        audience: audience.into(),
        leeway: Duration::ZERO,
    };
    let ours = "spiffe://ee.xborder.test/gateway";
    let stranger = Tokens::new(
        TokenKeys::from_signing_key(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)),
        settings(ours, ours),
    );
    let foreign = stranger.issue(&grant).unwrap();
    assert_eq!(
        pull(&world, gateway.border, &police, &foreign, "subscriber").await,
        refused("token_unknown_key")
    );

    // Our key, but the wrong issuer or audience.
    let key_file = world.path("ee/token-key.pem");
    for (issuer, audience, code) in [
        ("spiffe://fi.xborder.test/gateway", ours, "token_issuer"),
        (ours, "spiffe://lv.xborder.test/gateway", "token_audience"),
    ] {
        let tokens = Tokens::new(
            TokenKeys::load(&key_file, &[]).unwrap(),
            settings(issuer, audience),
        );
        let token = tokens.issue(&grant).unwrap();
        assert_eq!(
            pull(&world, gateway.border, &police, &token, "subscriber").await,
            refused(code)
        );
    }

    // The store says exhausted, then a revoked one.
    let exhausted = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let exhausted_id: GrantId = claims_json(&exhausted)["jti"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let clock = Clock::system();
    store
        .end_grant(exhausted_id, Cause::Exhausted, None, None, clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pull(&world, gateway.border, &police, &exhausted, "subscriber").await,
        (StatusCode::FORBIDDEN, "grant_exhausted".into())
    );
    let (status, _) = send_json(
        &admin(&world, "operator"),
        gateway.admin,
        Method::POST,
        &format!("/v1/grants/{grant_id}/revoke"),
        Some(&json!({ "reason": "incident 42" })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        pull(&world, gateway.border, &police, &token, "subscriber").await,
        (StatusCode::FORBIDDEN, "grant_revoked".into())
    );
    let revoked = admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await;
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["ending"]["cause"], "manual");
    assert_eq!(
        revoked["ending"]["by"],
        "spiffe://ee.xborder.test/admin/operator"
    );
    assert_eq!(revoked["ending"]["reason"], "incident 42");
    gateway.shutdown().await;
}

fn claims_json(token: &str) -> Value {
    use base64::Engine as _;
    let claims = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap()
}

/// A grant with a real 2 s lifetime: usable before its sunset, refused after,
/// and recorded as expired by the scheduler.
#[tokio::test]
async fn a_grant_expires_at_its_sunset() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (token, grant_id) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
        json!({ "lifetime": "2s" }),
    )
    .await;
    assert_eq!(
        pull(&world, gateway.border, &police, &token, "subscriber")
            .await
            .0,
        StatusCode::OK
    );

    let expired = eventually(Duration::from_secs(6), || async {
        admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await["state"]
            == "expired"
    })
    .await;
    assert!(expired, "the scheduler did not expire the grant");
    let grant = admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await;
    assert_eq!(grant["ending"]["cause"], "expired");
    let expires_at =
        xborder::clock::Timestamp::parse(grant["expires_at"].as_str().unwrap()).unwrap();
    let ended_at =
        xborder::clock::Timestamp::parse(grant["ending"]["at"].as_str().unwrap()).unwrap();
    // Never early; how promptly is the paused-time unit tests' business.
    assert!(
        ended_at >= expires_at,
        "ended at {ended_at}, due {expires_at}"
    );
    // The token's `exp` is the sunset, so the token itself is refused first.
    assert_eq!(
        pull(&world, gateway.border, &police, &token, "subscriber").await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );
    gateway.shutdown().await;
}

fn emergency_config(
    world: &World,
    upstream: std::net::SocketAddr,
    window: &str,
) -> xborder::config::Config {
    let text = world.config_text(upstream).replace(
        "[policy.EE.FI.approvals]",
        &format!("emergency_validation = \"{window}\"\n\n[policy.EE.FI.approvals]"),
    );
    world.write("ee/gateway.toml", &text);
    xborder::config::Config::load(&world.path("ee/gateway.toml")).unwrap()
}

#[tokio::test]
async fn an_emergency_grant_not_validated_in_time_is_revoked() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let gateway = Running::start_with(emergency_config(&world, upstream, "2s"), stop).await;
    let police = world.fi_police();

    let (status, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["content"], "emergency"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let filed_at = xborder::clock::Timestamp::parse(filed["filed_at"].as_str().unwrap()).unwrap();
    let deadline = xborder::clock::Timestamp::parse(filed["deadline"].as_str().unwrap()).unwrap();
    assert_eq!(filed_at.until(deadline), Duration::from_secs(8 * 3600));
    let id = filed["id"].as_str().unwrap().to_owned();

    // One approver grants at once, though `content` normally needs two.
    let (status, answer) = approve(
        &world,
        gateway.admin,
        "alice",
        &id,
        json!({ "lifetime": "1h" }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["grant"]["validation_due"].is_string());
    let grant_id = answer["grant"]["id"].as_str().unwrap().to_owned();
    let token = token_of(&world, gateway.border, &police, &id).await["grant"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        pull(&world, gateway.border, &police, &token, "content")
            .await
            .0,
        StatusCode::OK,
        "the emergency grant lets the transfer through"
    );

    // The approver cannot validate their own grant.
    let validate = |who: &'static str| {
        let grant_id = grant_id.clone();
        let world = &world;
        let addr = gateway.admin;
        async move {
            send_json(
                &admin(world, who),
                addr,
                Method::POST,
                &format!("/v1/grants/{grant_id}/validate"),
                Some(&json!({})),
                None,
            )
            .await
        }
    };
    let (status, problem) = validate("alice").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("state_conflict"))
    );

    let revoked = eventually(Duration::from_secs(6), || async {
        admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await["state"]
            == "revoked"
    })
    .await;
    assert!(revoked, "unvalidated emergency grant still active");
    let grant = admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await;
    assert_eq!(grant["ending"]["cause"], "validation_missed");
    assert_eq!(
        pull(&world, gateway.border, &police, &token, "content").await,
        (StatusCode::FORBIDDEN, "grant_revoked".into())
    );
    // Too late to validate now.
    assert_eq!(validate("bob").await.0, StatusCode::CONFLICT);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_emergency_grant_validated_in_time_stays() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let gateway = Running::start_with(
        emergency_config(&world, "127.0.0.1:9".parse().unwrap(), "2s"),
        stop,
    )
    .await;
    let police = world.fi_police();
    let (_, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["content"], "emergency"),
    )
    .await;
    let id = filed["id"].as_str().unwrap();
    let (_, answer) = approve(
        &world,
        gateway.admin,
        "alice",
        id,
        json!({ "lifetime": "1h" }),
    )
    .await;
    let grant_id = answer["grant"]["id"].as_str().unwrap();
    let (status, grant) = send_json(
        &admin(&world, "bob"),
        gateway.admin,
        Method::POST,
        &format!("/v1/grants/{grant_id}/validate"),
        Some(&json!({})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{grant}");
    assert_eq!(grant["validated_by"], "spiffe://ee.xborder.test/admin/bob");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grant = admin_get(&world, gateway.admin, &format!("/v1/grants/{grant_id}")).await;
    assert_eq!(grant["state"], "active");
    gateway.shutdown().await;
}

/// Grants that fell due while the gateway was down end at start; timers are
/// re-armed from the store for the rest.
#[tokio::test]
async fn a_restart_ends_what_fell_due_and_rearms_the_rest() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let gateway = Running::start_with(world.config(upstream), stop.clone()).await;
    let police = world.fi_police();
    let mut grants = Vec::new();
    for lifetime in ["1s", "4s"] {
        let (_, filed) = file(
            &world,
            gateway.border,
            &police,
            &request_body(&["subscriber"], "normal"),
        )
        .await;
        let (_, answer) = approve(
            &world,
            gateway.admin,
            "alice",
            filed["id"].as_str().unwrap(),
            json!({ "lifetime": lifetime }),
        )
        .await;
        grants.push(answer["grant"]["id"].as_str().unwrap().to_owned());
    }
    gateway.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let restarted = Running::start_with(
        world.config(upstream),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let short = format!("/v1/grants/{}", grants[0]);
    let ended_at_start = eventually(Duration::from_secs(1), || async {
        admin_get(&world, restarted.admin, &short).await["state"] == "expired"
    })
    .await;
    assert!(
        ended_at_start,
        "a grant that expired while down is still active"
    );
    let long = format!("/v1/grants/{}", grants[1]);
    assert_eq!(
        admin_get(&world, restarted.admin, &long).await["state"],
        "active"
    );
    let rearmed = eventually(Duration::from_secs(6), || async {
        admin_get(&world, restarted.admin, &long).await["state"] == "expired"
    })
    .await;
    assert!(
        rearmed,
        "the timer of the second grant was not re-armed after restart"
    );
    restarted.shutdown().await;
    stop.cancel();
}
