//! A grantee held to its grant and its pair's rate: the transfer that
//! reaches the byte quota is cut exactly at it, the transfer quota counts
//! transfers, and a burst beyond the pair's rate is refused with 429 and
//! `Retry-After`.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{pattern, receipt};
use crate::support::*;

#[tokio::test]
async fn the_transfer_that_reaches_the_byte_quota_is_cut_exactly_at_it() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({ "max_bytes": 100_000 }),
    )
    .await;

    let (status, transfer, sealed) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/content/+3725550123?bytes=1000000",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Cut exactly at the limit, as a whole age stream: what crossed decrypts.
    assert_eq!(open_sealed(&sealed), pattern(100_000));
    let receipt = receipt(&world, gateway.border, &police, &transfer.unwrap()).await;
    assert_eq!(
        (
            receipt["complete"].as_bool(),
            receipt["incomplete"].as_str()
        ),
        (Some(false), Some("exhausted"))
    );
    assert_eq!(receipt["plaintext_bytes"], 100_000);

    let (status, body) = send_json(
        &admin(&world, "rita"),
        gateway.admin,
        Method::GET,
        &format!("/v1/grants/{grant}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["state"].as_str(), body["ending"]["cause"].as_str()),
        (Some("exhausted"), Some("exhausted"))
    );
    assert_eq!(body["used_bytes"], 100_000);
    let (status, _, body) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/content/+3725550123?bytes=10",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "grant_exhausted"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_transfer_quota_counts_transfers() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (token, _) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
        json!({ "max_transfers": 2 }),
    )
    .await;
    let path = "/v1/data/subscriber/+3725550123";
    for _ in 0..2 {
        assert_eq!(
            pull_raw(&world, gateway.border, &police, Some(&token), path)
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, _, body) = pull_raw(&world, gateway.border, &police, Some(&token), path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "grant_exhausted"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_burst_beyond_the_pairs_rate_is_refused_with_retry_after() {
    let world = World::new();
    let upstream = xborder::upstream_example::spawn(loopback(), Default::default())
        .await
        .unwrap();
    let text = world.config_text(upstream).replace(
        "[policy.EE.FI.approvals]",
        "[policy.EE.FI.rate]\nrequests_per_second = 1\nrequest_burst = 3\n\n[policy.EE.FI.approvals]",
    );
    world.write("ee/gateway.toml", &text);
    let config = xborder::config::Config::load(&world.path("ee/gateway.toml")).unwrap();
    let gateway = Running::start_with(config, Default::default()).await;
    let police = world.fi_police();
    let token = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let client = world.client(Some(&police));
    let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let request =
            xborder::client::bearer_get("/v1/data/subscriber/+3725550123".parse().unwrap(), &token);
        let response = conn.send(request).await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (_, body) = xborder::client::collect(response).await.unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap()["code"],
                "rate_limited"
            );
            assert!(retry_after.unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    gateway.shutdown().await;
}
