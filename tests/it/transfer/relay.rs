//! An app in the pod that pulls through its own gateway (the sidecar): it
//! files, is granted and pulls over plain HTTP on the local listener, which
//! relays to the other gateway's border with its gateway's identity, passes
//! the ciphertext through undecrypted, and verifies the receipt.

use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

/// A plain-HTTP request to a local listener, as an app in the pod would send.
async fn app_request(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    app_request_authorized(addr, method, path, body, authorization.as_deref()).await
}

/// As [`app_request`], with the `Authorization` header's value as given.
async fn app_request_authorized(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> (StatusCode, http::HeaderMap, bytes::Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    let response = send
        .send_request(
            request
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// The relay's verdict on `transfer`, once it has one (`Null` after 2 s).
async fn relayed_verdict(local: std::net::SocketAddr, transfer: &str) -> Value {
    for _ in 0..100 {
        let (status, _, body) = app_request(
            local,
            Method::GET,
            &format!("/v1/relayed/{transfer}"),
            None,
            None,
        )
        .await;
        if status == StatusCode::OK {
            return serde_json::from_slice(&body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Value::Null
}

/// FI's app files, is granted and pulls through FI's own gateway (the
/// sidecar): its local listener relays to EE's border with FI's identity,
/// passes the ciphertext through undecrypted, and verifies EE's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_listener_relays_a_transfer_between_two_gateways() {
    let world = World::new();
    let ee = Running::start(&world).await;

    // FI's gateway: its own server and client certificates, EE as its peer.
    let fi_gateway = spiffe("spiffe://fi.xborder.test/gateway");
    let server = world
        .fi
        .issue(&xborder::pki::LeafSpec::server(fi_gateway.clone()))
        .unwrap();
    let client = world
        .fi
        .issue(&xborder::pki::LeafSpec::client(fi_gateway))
        .unwrap();
    world.write("fi/gateway.pem", &server.cert_pem());
    world.write("fi/gateway-key.pem", &server.key_pem());
    world.write("fi/client.pem", &client.cert_pem());
    world.write("fi/client-key.pem", &client.key_pem());
    xborder::grant::token::TokenKeys::generate_file(&world.path("fi/token-key.pem")).unwrap();
    xborder::grant::token::TokenKeys::generate_file(&world.path("fi/audit-key.pem")).unwrap();
    world.write("fi/audit-pseudonym.key", &"fe".repeat(32));
    world.write(
        "fi/gateway.toml",
        &format!(
            r#"
jurisdiction = "FI"
data_dir = "data"

[listeners]
border = "127.0.0.1:0"
local = "127.0.0.1:0"

[identity]
certificate = "gateway.pem"
key = "gateway-key.pem"
client_certificate = "client.pem"
client_key = "client-key.pem"

[tokens]
signing_key = "token-key.pem"

[audit]
signing_key = "audit-key.pem"
pseudonym_key = "audit-pseudonym.key"

[trust.FI]
trust_domain = "fi.xborder.test"
ca = "ca.pem"

[trust.EE]
trust_domain = "ee.xborder.test"
ca = "../ee/ca.pem"

[peers.EE]
border = "127.0.0.1:{}"
server_name = "localhost"
"#,
            ee.border.port()
        ),
    );
    let config = xborder::config::Config::load(&world.path("fi/gateway.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let gateway = xborder::server::Gateway::build(config).await.unwrap();
    let listeners = xborder::server::Listeners {
        border: bind_loopback().await,
        admin: None,
        ops: None,
        local: Some(bind_loopback().await),
    };
    let local = listeners.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let signal = stop.clone();
    let fi = tokio::spawn(gateway.serve(listeners, async move { signal.cancelled().await }));

    // The app files through the sidecar; EE sees FI's gateway as the requester.
    let (status, _, body) = app_request(
        local,
        Method::POST,
        "/EE/v1/requests",
        Some(&request_body(&["subscriber"], "normal")),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let filed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(filed["requester"], "spiffe://fi.xborder.test/gateway");
    let id = filed["id"].as_str().unwrap();
    let (status, _) = send_json(
        &admin(&world, "alice"),
        ee.admin,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(&json!({})),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = app_request(
        local,
        Method::GET,
        &format!("/EE/v1/requests/{id}"),
        None,
        None,
    )
    .await;
    let view: Value = serde_json::from_slice(&body).unwrap();
    let token = view["grant"]["token"].as_str().unwrap().to_owned();

    let (status, headers, sealed) = app_request(
        local,
        Method::GET,
        "/EE/v1/data/subscriber/+3725550123",
        None,
        Some(&token),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let record: Value = serde_json::from_slice(&open_sealed(&sealed)).unwrap();
    assert_eq!(record["asked_by"], "spiffe://fi.xborder.test/gateway");

    // The relay checked EE's receipt against the ciphertext it passed on.
    let transfer = headers["x-xborder-transfer"].to_str().unwrap().to_owned();
    let verdict = relayed_verdict(local, &transfer).await;
    assert_eq!(verdict["verified"], true, "{verdict}");
    assert_eq!(verdict["relayed_bytes"], sealed.len());
    assert_eq!(
        verdict["relayed_sha256"],
        hex::encode(Sha256::digest(&sealed))
    );

    // HTTP auth schemes are case-insensitive: EE's border takes `bearer`, so
    // the relay must recognise it too and check that transfer's receipt.
    let (status, headers, sealed) = app_request_authorized(
        local,
        Method::GET,
        "/EE/v1/data/subscriber/+3725550123",
        None,
        Some(&format!("bearer {token}")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let transfer = headers["x-xborder-transfer"].to_str().unwrap().to_owned();
    let verdict = relayed_verdict(local, &transfer).await;
    assert_eq!(verdict["verified"], true, "{verdict}");
    assert_eq!(verdict["relayed_bytes"], sealed.len());

    // An unknown jurisdiction is not relayed anywhere.
    let (status, _, _) = app_request(local, Method::GET, "/LV/v1/keys", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    stop.cancel();
    fi.await.unwrap().unwrap();
    ee.shutdown().await;
}
