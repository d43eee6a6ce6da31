//! What the grantee receives and how it checks it: the real `age` CLI opens
//! what the gateway sealed, and `xborder fetch` keeps the plaintext only
//! once the signed receipt and the audit log vouch for it; a pass-through
//! route (its data service encrypts end to end) moves the bytes as sent and
//! still counts, hashes, receipts and logs them.

use std::process::Command;

use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{pattern, receipt};
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_cli_opens_what_the_gateway_sealed_and_fetch_verifies_the_receipt() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let token = grant_token(&world, gateway.border, gateway.admin, &police, &["content"]).await;
    let path = "/v1/data/content/+3725550123?bytes=300001";

    // The real `age` CLI decrypts the gateway's output.
    let (status, transfer, sealed) =
        pull_raw(&world, gateway.border, &police, Some(&token), path).await;
    assert_eq!(status, StatusCode::OK);
    world.write("fi/identity.txt", &format!("{IDENTITY}\n"));
    std::fs::write(world.path("fi/sealed.age"), &sealed).unwrap();
    let age = Command::new("age")
        .args(["-d", "-i"])
        .arg(world.path("fi/identity.txt"))
        .arg(world.path("fi/sealed.age"))
        .output()
        .expect("the `age` CLI is installed (apt-get install age)");
    assert!(
        age.status.success(),
        "{}",
        String::from_utf8_lossy(&age.stderr)
    );
    assert_eq!(age.stdout, pattern(300_001));

    // Its receipt names exactly these bytes.
    let receipt = receipt(&world, gateway.border, &police, &transfer.unwrap()).await;
    assert_eq!(receipt["complete"], true);
    assert_eq!(receipt["plaintext_bytes"], 300_001);
    assert_eq!(receipt["ciphertext_bytes"], sealed.len());
    assert_eq!(
        receipt["ciphertext_sha256"],
        hex::encode(Sha256::digest(&sealed))
    );
    assert_eq!(
        receipt["plaintext_sha256"],
        hex::encode(Sha256::digest(pattern(300_001)))
    );
    assert_eq!(receipt["target"], "+3725550123");

    // `xborder fetch`: verified and decrypted; with the wrong identity, nothing at OUT.
    world.write("fi/token", &token);
    world.write("fi/police.pem", &police.cert_pem());
    world.write("fi/police-key.pem", &police.key_pem());
    let fetch = |identity: &str, out: &str| {
        Command::new(BIN)
            .arg("fetch")
            .arg(format!("https://localhost:{}{path}", gateway.border.port()))
            .arg("--token")
            .arg(world.path("fi/token"))
            .arg("--identity")
            .arg(world.path(identity))
            .arg("--cert")
            .arg(world.path("fi/police.pem"))
            .arg("--key")
            .arg(world.path("fi/police-key.pem"))
            .arg("--ca")
            .arg(world.path("ee/ca.pem"))
            .arg("-o")
            .arg(world.path(out))
            .output()
            .unwrap()
    };
    let good = tokio::task::spawn_blocking({
        let fetch = fetch("fi/identity.txt", "fi/evidence.bin");
        move || fetch
    })
    .await
    .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("receipt verified"));
    assert_eq!(
        std::fs::read(world.path("fi/evidence.bin")).unwrap(),
        pattern(300_001)
    );

    let stranger = age::x25519::Identity::generate();
    world.write(
        "fi/other.txt",
        &format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&stranger.to_string())
        ),
    );
    let bad = tokio::task::spawn_blocking({
        let fetch = fetch("fi/other.txt", "fi/nothing.bin");
        move || fetch
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("decryption failed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(
        !world.path("fi/nothing.bin").exists(),
        "partial plaintext left behind"
    );
    let leftovers: Vec<_> = std::fs::read_dir(world.path("fi"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".xborder-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    gateway.shutdown().await;
}

/// A route whose data service already encrypts end to end passes its bytes
/// through untouched, and still checks the token, counts the quota, hashes
/// and receipts, and logs the transfer; `xborder fetch` keeps the payload as
/// it came once the receipt and the log vouch for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_route_moves_the_bytes_as_sent_and_still_receipts_them() {
    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    let text = world.config_text(upstream)
        + &format!(
            "\n[[routes]]\nprefix = \"/v1/data/content-e2e\"\nupstream = \"http://{upstream}/content\"\ncategory = \"content\"\nseal = false\nparameters = [\"bytes\"]\n"
        );
    world.write("ee/gateway.toml", &text);
    let config = xborder::config::Config::load(&world.path("ee/gateway.toml")).unwrap();
    assert!(
        !config
            .routes
            .iter()
            .find(|r| r.prefix == "/v1/data/content-e2e")
            .unwrap()
            .seal
    );
    let gateway = Running::start_with(config, stop.clone()).await;
    let police = world.fi_police();
    let (token, _) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({ "max_bytes": 250_000 }),
    )
    .await;

    // Without a token: refused as on any route.
    let path = "/v1/data/content-e2e/+3725550123?bytes=100000";
    let (status, _, _) = pull_raw(&world, gateway.border, &police, None, path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, transfer, body) =
        pull_raw(&world, gateway.border, &police, Some(&token), path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        pattern(100_000),
        "the bytes as the data service sent them"
    );
    let first = receipt(&world, gateway.border, &police, &transfer.unwrap()).await;
    let hash = hex::encode(Sha256::digest(pattern(100_000)));
    assert_eq!(first["encrypted"], false);
    assert_eq!(first["complete"], true);
    assert_eq!(first["plaintext_sha256"], hash.as_str());
    assert_eq!(first["ciphertext_sha256"], hash.as_str());
    assert_eq!(first["plaintext_bytes"], 100_000);
    assert_eq!(first["ciphertext_bytes"], 100_000);

    // The byte quota still cuts exactly at its limit: 100 000 used, 150 000 left.
    let (status, transfer, body) = pull_raw(
        &world,
        gateway.border,
        &police,
        Some(&token),
        "/v1/data/content-e2e/+3725550123?bytes=200000",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, pattern(150_000), "cut at the quota, byte for byte");
    let receipt = receipt(&world, gateway.border, &police, &transfer.unwrap()).await;
    assert_eq!(
        (
            receipt["complete"].as_bool(),
            receipt["incomplete"].as_str()
        ),
        (Some(false), Some("exhausted"))
    );

    // `xborder fetch` on a fresh grant keeps the payload as it came.
    let (token, _) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({}),
    )
    .await;
    world.write("fi/token", &token);
    world.write("fi/police.pem", &police.cert_pem());
    world.write("fi/police-key.pem", &police.key_pem());
    world.write("fi/identity.txt", &format!("{IDENTITY}\n"));
    let out = tokio::task::spawn_blocking({
        let args: Vec<std::ffi::OsString> = vec![
            "fetch".into(),
            format!("https://localhost:{}{path}", gateway.border.port()).into(),
            "--token".into(),
            world.path("fi/token").into(),
            "--identity".into(),
            world.path("fi/identity.txt").into(),
            "--cert".into(),
            world.path("fi/police.pem").into(),
            "--key".into(),
            world.path("fi/police-key.pem").into(),
            "--ca".into(),
            world.path("ee/ca.pem").into(),
            "-o".into(),
            world.path("fi/e2e.bin").into(),
        ];
        move || Command::new(BIN).args(args).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(world.path("fi/e2e.bin")).unwrap(),
        pattern(100_000)
    );
    gateway.shutdown().await;
}
