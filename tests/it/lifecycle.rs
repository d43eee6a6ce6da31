//! A gateway's life from the operator's side: built in one step that reports
//! every bad file at once, served on listeners the caller bound, and stopped
//! with a drain whose end is told truthfully in the receipts.

use http::{Method, StatusCode};
use tokio_util::sync::CancellationToken;
use xborder::config::Config;
use xborder::server::{Gateway, Listeners, StartError};
use xborder::upstream_example;

use crate::support::*;

/// An operator who got three files wrong learns of all three from one start,
/// and no listener was ever bound (the caller binds after the build).
#[tokio::test]
async fn a_build_reports_every_bad_file_at_once() {
    let world = World::new();
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let config = world.config(upstream);
    std::fs::remove_file(world.path("ee/gateway.pem")).unwrap();
    world.write("ee/token-key.pem", "not a key");
    world.write("ee/audit-pseudonym.key", "abcd");

    let Err(StartError::Config(errors)) = Gateway::build(config).await else {
        panic!("a gateway built with three bad files");
    };
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    for key in ["identity.certificate", "tokens", "audit.pseudonym_key"] {
        assert!(keys.contains(&key), "`{key}` not reported: {errors}");
    }
    // Nothing was opened either: the store comes after the files.
    assert!(!world.path("ee/data").exists());
    stop.cancel();
}

/// A local (sidecar) listener handed to a gateway whose configuration has
/// none is refused before anything is served or logged as started.
#[tokio::test]
async fn a_local_listener_the_configuration_lacks_is_refused_before_serving() {
    let world = World::new();
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let gateway = Gateway::build(world.config(upstream)).await.unwrap();
    let listeners = Listeners {
        border: bind_loopback().await,
        admin: None,
        ops: None,
        local: Some(bind_loopback().await),
    };
    let border = listeners.border_addr();
    let e = gateway
        .serve(listeners, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(e, StartError::LocalUnconfigured), "{e}");
    assert!(e.to_string().contains("`listeners.local`"), "{e}");
    // The listeners were dropped unserved.
    assert!(tokio::net::TcpStream::connect(border).await.is_err());
    stop.cancel();
}

/// A transfer still streaming when the grace period ends is cut; its receipt
/// says the gateway was shutting down, not that the client went away, and it
/// is written before the gateway returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_at_the_end_of_the_grace_period_is_receipted_shutting_down() {
    let world = World::new();
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let text = world
        .config_text(upstream)
        .replace("shutdown_grace = \"20s\"", "shutdown_grace = \"300ms\"")
        .replace("idle = \"2s\"", "idle = \"30s\"");
    world.write("ee/gateway.toml", &text);
    let config = Config::load(&world.path("ee/gateway.toml")).unwrap();
    let gateway = Running::start_with(config, CancellationToken::new()).await;
    let police = world.fi_police();
    let token = grant_token(&world, gateway.border, gateway.admin, &police, &["content"]).await;

    // A 256 MiB transfer whose reader stops after the first frame.
    let mut conn = world
        .client(Some(&police))
        .connect(gateway.border, "localhost")
        .await
        .unwrap();
    let request = xborder::client::bearer_get(
        "/v1/data/content/+3725550123?bytes=268435456"
            .parse()
            .unwrap(),
        &token,
    );
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let transfer = response.headers()["x-xborder-transfer"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();

    // The drain waits out its grace period for this reader, then cuts it.
    gateway.shutdown().await;
    drop((body, conn));

    // The next run serves the receipt the stopping one wrote (a transfer
    // left open would have been closed `interrupted` at this start).
    let again = Running::start_with(world.config(upstream), CancellationToken::new()).await;
    let path = format!("/v1/transfers/{transfer}/receipt");
    let client = world.client(Some(&police));
    let (status, body) = send_json(&client, again.border, Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let receipt = &body["receipt"];
    assert_eq!(
        (
            receipt["complete"].as_bool(),
            receipt["incomplete"].as_str()
        ),
        (Some(false), Some("shutting_down")),
        "{receipt}"
    );
    assert!(receipt["ciphertext_bytes"].as_u64().unwrap() > 0);
    again.shutdown().await;
    stop.cancel();
}
