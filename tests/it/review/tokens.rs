//! A grant token refused at the border, each reason with its own problem
//! code: none at all, garbage, a tampered payload, `alg: none` and HS256, a
//! key the gateway never configured, the wrong issuer or audience, a grant
//! the store says is exhausted, and a revoked one.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use xborder::clock::Clock;
use xborder::grant::token::{TokenKeys, TokenSettings, Tokens};
use xborder::grant::{Cause, GrantId};
use xborder::store::Store;
use xborder::store::sqlite::SqliteStore;

use super::{admin_get, pull};
use crate::support::*;

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
