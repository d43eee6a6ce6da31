//! Certificate, key and CRL hot reload without dropping established connections.

use std::time::Duration;

use http::StatusCode;
use xborder::pki::LeafSpec;

use crate::support::*;

#[tokio::test]
async fn a_new_server_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let client = world.client(Some(&world.fi_police()));
    let mut open = client.connect(gateway.border, "localhost").await.unwrap();
    let old = open.server_certificate().unwrap().clone();
    assert_eq!(old, world.gateway_cert.cert_der());

    // Rotate: key first, then certificate, as a naive operator would. The
    // half-rotated state (old cert, new key) must be refused, not served.
    let renewed = world
        .ee
        .issue(&LeafSpec::server(spiffe(
            "spiffe://ee.xborder.test/gateway",
        )))
        .unwrap();
    world.write("ee/gateway-key.pem", &renewed.key_pem());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut during = client.connect(gateway.border, "localhost").await.unwrap();
    assert_eq!(
        during.server_certificate().unwrap(),
        &old,
        "half-rotated files must not be served"
    );
    assert_eq!(
        get_on(&mut during, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    world.write("ee/gateway.pem", &renewed.cert_pem());

    let served_new = eventually(Duration::from_secs(5), || async {
        let conn = client.connect(gateway.border, "localhost").await.unwrap();
        conn.server_certificate() == Some(&renewed.cert_der())
    })
    .await;
    assert!(
        served_new,
        "new connections never saw the renewed certificate"
    );

    // The connection opened before the rotation still works.
    assert_eq!(
        get_on(&mut open, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_new_certificate_is_refused_and_the_old_one_kept() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let client = world.client(Some(&world.fi_police()));

    world.write(
        "ee/gateway.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = client.connect(gateway.border, "localhost").await.unwrap();
    assert_eq!(
        conn.server_certificate(),
        Some(&world.gateway_cert.cert_der())
    );
    assert_eq!(
        get_on(&mut conn, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );

    // An expired replacement is refused too.
    let now = time::OffsetDateTime::now_utc();
    let expired = world
        .ee
        .issue(
            &LeafSpec::server(spiffe("spiffe://ee.xborder.test/gateway")).valid(
                now - time::Duration::days(10),
                now - time::Duration::days(1),
            ),
        )
        .unwrap();
    world.write("ee/gateway-key.pem", &expired.key_pem());
    world.write("ee/gateway.pem", &expired.cert_pem());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let conn = client.connect(gateway.border, "localhost").await.unwrap();
    assert_eq!(
        conn.server_certificate(),
        Some(&world.gateway_cert.cert_der())
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_new_crl_refuses_a_revoked_peer_from_then_on() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let client = world.client(Some(&police));
    let mut open = client.connect(gateway.border, "localhost").await.unwrap();
    assert_eq!(
        get_on(&mut open, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );

    world.write("fi/ca.crl", &world.fi.crl_pem(&[&police]).unwrap());
    let refused = eventually(Duration::from_secs(5), || async {
        get(&client, gateway.border, PING).await.is_err()
    })
    .await;
    assert!(refused, "revoked peer still admitted after the CRL changed");
    // Others from FI are unaffected.
    let other = world.client(Some(&world.fi_police()));
    assert_eq!(
        get(&other, gateway.border, PING).await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    gateway.shutdown().await;
}
