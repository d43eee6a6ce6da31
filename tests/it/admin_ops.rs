//! The admin listener (our operators only) and the ops listener (probes, metrics).

use http::StatusCode;
use serde_json::Value;
use xborder::pki::LeafSpec;

use crate::support::*;

#[tokio::test]
async fn admin_serves_listed_operators_and_refuses_everyone_else() {
    let world = World::new();
    let gateway = Running::start(&world).await;

    let operator = world
        .ee
        .issue(&LeafSpec::client(spiffe(
            "spiffe://ee.xborder.test/admin/operator",
        )))
        .unwrap();
    let (status, body) = get(&world.client(Some(&operator)), gateway.admin, "/v1/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let whoami: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        whoami["spiffe_id"],
        "spiffe://ee.xborder.test/admin/operator"
    );
    assert_eq!(whoami["jurisdiction"], "EE");
    let thumbprint = xborder::identity::Thumbprint::of(&operator.cert_der());
    assert_eq!(whoami["x5t#S256"], thumbprint.x5t_s256());

    // One of ours, but not an administrator: 403 with its code.
    let clerk = world
        .ee
        .issue(&LeafSpec::client(spiffe(
            "spiffe://ee.xborder.test/staff/clerk",
        )))
        .unwrap();
    let (status, body) = get(&world.client(Some(&clerk)), gateway.admin, "/v1/whoami")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "not_admin"
    );

    // A foreign peer, trusted on the border, is not even let in here.
    assert_refused(&world.client(Some(&world.fi_police())), gateway.admin).await;
    gateway.shutdown().await;
}

#[tokio::test]
async fn ops_answers_probes_and_serves_metrics() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    assert_eq!(plain_get(gateway.ops, "/healthz").await.0, StatusCode::OK);
    assert_eq!(plain_get(gateway.ops, "/readyz").await.0, StatusCode::OK);

    let client = world.client(Some(&world.fi_police()));
    get(&client, gateway.border, "/v1/data/subscriber/+3725550123")
        .await
        .unwrap();
    let (status, metrics) = plain_get(gateway.ops, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("xborder_build_info{version=\""),
        "{metrics}"
    );
    assert_eq!(
        gateway
            .metric(r#"xborder_tls_handshakes_total{listener="border",result="ok"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        plain_get(gateway.ops, "/nothing").await.0,
        StatusCode::NOT_FOUND
    );

    // Not ready once the data directory cannot be written.
    let data = world.path("ee/data");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::write(&data, "not a directory").unwrap();
    let (status, body) = plain_get(gateway.ops, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("data_dir"), "{body}");
    assert_eq!(plain_get(gateway.ops, "/healthz").await.0, StatusCode::OK);
    gateway.shutdown().await;
}

/// Issue 15 (7): the admin API refuses an ε outside its documented range with
/// its own code, and serves a noisy report within it.
#[tokio::test]
async fn the_report_api_refuses_an_epsilon_out_of_range() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let operator = admin(&world, "operator");
    let period = "from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z";
    for bad in ["1e-300", "0.001", "11"] {
        let path = format!("/v1/reports/transparency?{period}&epsilon={bad}");
        let (status, body) = get(&operator, gateway.admin, &path).await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let problem: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "epsilon_out_of_range", "{problem}");
        assert_eq!(problem["minimum"], 0.01, "{problem}");
        assert_eq!(problem["maximum"], 10.0, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "epsilon", "{problem}");
    }
    let path = format!("/v1/reports/transparency?{period}&epsilon=0.5&format=json");
    let (status, body) = get(&operator, gateway.admin, &path).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["publication"]["epsilon"], 0.5);
    gateway.shutdown().await;
}
