//! Acknowledged writes survive SIGKILL; nothing is half-written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::binary::Served;
use crate::support::*;

/// What the gateway acknowledged before it was killed.
#[derive(Default)]
struct Acknowledged {
    /// Request id and the number of findings the 201 carried.
    filed: Vec<(String, usize)>,
    /// Request id → grant id of approvals answered 200.
    granted: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_of_writes_loses_no_acknowledged_write() {
    let world = World::new();
    world.config("127.0.0.1:9".parse().unwrap());
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");

    let police = world.fi_police();
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..3 {
        let (client, approver) = (world.client(Some(&police)), admin(&world, "alice"));
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.spawn(async move {
            let Ok(mut conn) = client.connect(border, "localhost").await else {
                return;
            };
            let Ok(mut admin_conn) = approver.connect(admin_addr, "localhost").await else {
                return;
            };
            // Bounded: at most 500 filings per writer.
            for i in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let body = request_body(&["subscriber"], "normal");
                let Some((status, filed)) =
                    try_send(&mut conn, Method::POST, "/v1/requests", Some(&body)).await
                else {
                    return;
                };
                assert_eq!(status, StatusCode::CREATED, "{filed}");
                let id = filed["id"].as_str().unwrap().to_owned();
                let findings = filed["findings"].as_array().unwrap().len();
                acknowledged.lock().await.filed.push((id.clone(), findings));
                // Every other request of writer 0 is approved at once.
                if writer == 0 && i % 2 == 0 {
                    let path = format!("/v1/requests/{id}/approve");
                    let Some((status, answer)) =
                        try_send(&mut admin_conn, Method::POST, &path, Some(&json!({}))).await
                    else {
                        return;
                    };
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    let grant = answer["grant"]["id"].as_str().unwrap().to_owned();
                    acknowledged.lock().await.granted.push((id, grant));
                }
            }
        });
    }

    // Kill mid-stream once a fair number of writes are acknowledged.
    let enough = eventually(Duration::from_secs(20), || async {
        acknowledged.lock().await.filed.len() >= 60
    })
    .await;
    assert!(enough, "the writers did not get going");
    served.signal("KILL");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(!ok, "SIGKILL should not look like a clean exit");
    stop.store(true, Ordering::Relaxed);
    while writers.join_next().await.is_some() {}

    // Restart on the same data directory: everything acknowledged is there.
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");
    let acknowledged = acknowledged.lock().await;
    assert!(
        acknowledged.granted.len() >= 5,
        "too few approvals to mean anything"
    );
    let mut conn = world
        .client(Some(&police))
        .connect(border, "localhost")
        .await
        .unwrap();
    for (id, findings) in &acknowledged.filed {
        let (status, view) = try_send(&mut conn, Method::GET, &format!("/v1/requests/{id}"), None)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged request {id} lost: {view}"
        );
        assert_eq!(
            view["findings"].as_array().unwrap().len(),
            *findings,
            "{id}"
        );
    }
    let mut admin_conn = admin(&world, "rita")
        .connect(admin_addr, "localhost")
        .await
        .unwrap();
    for (request, grant) in &acknowledged.granted {
        let (status, view) = try_send(
            &mut admin_conn,
            Method::GET,
            &format!("/v1/grants/{grant}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged grant {grant} lost");
        assert_eq!(view["request_id"], request.as_str());
    }

    // No half-written record: every stored request has its findings, and
    // every approved request its grant, whether or not it was acknowledged.
    let (_, all) = try_send(&mut admin_conn, Method::GET, "/v1/requests", None)
        .await
        .unwrap();
    let all = all["requests"].as_array().unwrap();
    assert!(all.len() >= acknowledged.filed.len());
    for request in all {
        assert_eq!(
            request["findings"].as_array().unwrap().len(),
            5,
            "{request}"
        );
        if request["state"] == "approved" {
            let grant = request["grant_id"]
                .as_str()
                .expect("an approved request names its grant");
            let (status, _) = try_send(
                &mut admin_conn,
                Method::GET,
                &format!("/v1/grants/{grant}"),
                None,
            )
            .await
            .unwrap();
            assert_eq!(status, StatusCode::OK);
        } else {
            assert_eq!(request["state"], "pending");
            assert!(request["grant_id"].is_null());
        }
    }
    served.signal("TERM");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok);
}

/// One JSON exchange; `None` once the gateway is gone.
async fn try_send(
    conn: &mut xborder::client::Connection,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Option<(StatusCode, Value)> {
    let bytes = body.map(Value::to_string).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(xborder::server::full(bytes))
        .ok()?;
    let response = conn.send(request).await.ok()?;
    let (parts, body) = xborder::client::collect(response).await.ok()?;
    Some((
        parts.status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}
