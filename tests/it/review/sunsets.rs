//! A grant that ends on time: at its sunset, or as an emergency grant not
//! validated in time (one validated in time stays), and after a restart,
//! which ends what fell due while the gateway was down and re-arms the
//! timers of the rest.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use super::{admin_get, approve, pull, token_of};
use crate::support::*;

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
