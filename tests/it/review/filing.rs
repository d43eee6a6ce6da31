//! A request refused at filing: a bad body names every bad field, an
//! over-broad request is refused with every failing finding and kept for
//! the record, and a pair without a policy is refused.

use http::StatusCode;
use serde_json::json;

use super::admin_get;
use crate::support::*;

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
