//! The `xborder` binary as an operator runs it: config check, serve, SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use xborder::pki::LeafSpec;
use xborder::upstream_example::{self, pattern_byte};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_names_every_bad_key_and_its_file() {
    let world = World::new();
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let good = world.config_text(upstream);
    world.write("ee/gateway.toml", &good);
    let (ok, stderr) = check(&world.path("ee/gateway.toml"));
    assert!(ok, "{stderr}");

    // Structure: every problem at once.
    let bad = good
        .replace("[listeners]", "colour = \"red\"\n[listeners]")
        .replace("idle = \"2s\"", "idle = \"2 fortnights-ish\"")
        .replace("ops = \"127.0.0.1:0\"", "ops = \"127.0.0.1:7000\"")
        .replace("admin = \"127.0.0.1:0\"", "admin = \"127.0.0.1:7000\"");
    world.write("ee/bad.toml", &bad);
    let (ok, stderr) = check(&world.path("ee/bad.toml"));
    assert!(!ok);
    let file = world.path("ee/bad.toml").display().to_string();
    for key in [
        "`colour`: unknown key",
        "`timeouts.idle`",
        "`listeners.ops`",
    ] {
        assert!(
            stderr.contains(&format!("{file}: {key}")),
            "missing {key} in:\n{stderr}"
        );
    }

    // Files: missing, unreadable as PEM, and a key that is not the certificate's.
    let stranger = world
        .ee
        .issue(&LeafSpec::server(spiffe(
            "spiffe://ee.xborder.test/gateway",
        )))
        .unwrap();
    world.write("ee/stranger-key.pem", &stranger.key_pem());
    world.write("ee/garbage.crl", "this is not a CRL");
    let bad = good
        .replace("key = \"gateway-key.pem\"", "key = \"stranger-key.pem\"")
        .replace("ca = \"../fi/ca.pem\"", "ca = \"../fi/missing.pem\"")
        .replace("crls = [\"ca.crl\"]", "crls = [\"garbage.crl\"]");
    world.write("ee/files.toml", &bad);
    let (ok, stderr) = check(&world.path("ee/files.toml"));
    assert!(!ok);
    for needle in [
        "`identity.key`: ",
        "does not match the certificate in `identity.certificate`",
        "`trust.FI.ca`: ",
        "missing.pem: cannot read",
        "`trust.EE.crls[0]`: ",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

/// Issue 15 (5): a bad value elsewhere must not hide a missing file; the
/// operator sees every problem on the first run.
#[test]
fn config_check_reports_bad_values_and_missing_files_together() {
    let world = World::new();
    let good = world.config_text("127.0.0.1:9".parse().unwrap());
    let bad = good
        .replace("[listeners]", "colour = \"red\"\n[listeners]")
        .replace("idle = \"2s\"", "idle = \"2 fortnights-ish\"")
        .replace(
            "certificate = \"gateway.pem\"",
            "certificate = \"missing-gateway.pem\"",
        )
        .replace(
            "pseudonym_key = \"audit-pseudonym.key\"",
            "pseudonym_key = \"missing-pseudonym.key\"",
        );
    world.write("ee/three.toml", &bad);
    let (ok, stderr) = check(&world.path("ee/three.toml"));
    assert!(!ok);
    let file = world.path("ee/three.toml").display().to_string();
    for needle in [
        "`colour`: unknown key",
        "`timeouts.idle`: `2 fortnights-ish` is not a duration",
        "`identity.certificate`: ",
        "`audit.pseudonym_key`: ",
    ] {
        assert!(
            stderr.contains(&format!("{file}: {needle}")),
            "missing {needle:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("missing-gateway.pem"), "{stderr}");
    assert!(stderr.contains("missing-pseudonym.key"), "{stderr}");
    assert!(stderr.contains("has 4 problem(s)"), "{stderr}");

    // Without a jurisdiction there is nothing to check files against: say so.
    world.write(
        "ee/nowhere.toml",
        &good.replace("jurisdiction = \"EE\"", "jurisdiction = \"Narnia\""),
    );
    let (ok, stderr) = check(&world.path("ee/nowhere.toml"));
    assert!(!ok);
    assert!(stderr.contains("`jurisdiction`: "), "{stderr}");
    assert!(
        stderr.contains("the files it names were not checked"),
        "{stderr}"
    );
}

#[test]
fn serve_exits_on_a_bad_config_before_binding_any_port() {
    let world = World::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = world
        .config_text("127.0.0.1:9".parse().unwrap())
        .replace(
            "border = \"127.0.0.1:0\"",
            &format!("border = \"127.0.0.1:{port}\""),
        )
        .replace("shutdown_grace = \"20s\"", "shutdown_grace = \"soon\"");
    world.write("ee/gateway.toml", &text);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(world.path("ee/gateway.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`timeouts.shutdown_grace`"), "{stderr}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port was bound"
    );
}

/// A gateway process with its JSON log lines streamed to the test.
pub struct Served {
    child: Child,
    logs: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Served {
    pub fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            logs,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line matching `pred`.
    pub fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(found) = self.seen.iter().find(|v| pred(v)) {
            return found.clone();
        }
        loop {
            let line = self
                .logs
                .recv_timeout(Duration::from_secs(20))
                .expect("log line in time");
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    pub fn listening(&mut self, listener: &str) -> SocketAddr {
        let line = self.wait_for(|v| {
            v["fields"]["message"] == "listening" && v["fields"]["listener"] == listener
        });
        line["fields"]["addr"].as_str().unwrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; returns success and every remaining log line.
    pub fn wait(mut self) -> (bool, Vec<Value>) {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.logs.iter());
        (status.success(), std::mem::take(&mut self.seen))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_64_mib_transfer_lets_it_finish_and_exits_zero() {
    let world = World::new();
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    // The test's client reads 64 MiB while the suite runs beside it: on a
    // busy machine it may not read for 2 s, which the gateway (rightly)
    // closes as a stalled exchange. This test is about the drain.
    world.write(
        "ee/gateway.toml",
        &world
            .config_text(upstream)
            .replace("idle = \"2s\"", "idle = \"30s\""),
    );
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");

    // A refusal is logged once, with its reason and the peer's address.
    let now = OffsetDateTime::now_utc();
    let expired = world
        .fi
        .issue(
            &LeafSpec::client(spiffe("spiffe://fi.xborder.test/agency/police")).valid(
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            ),
        )
        .unwrap();
    let refused_at = assert_refused(&world.client(Some(&expired)), border).await;
    assert!(!refused_at.is_empty());

    let total: u64 = 64 * 1024 * 1024;
    let police = world.fi_police();
    let token = grant_token(&world, border, admin_addr, &police, &["content"]).await;
    let client = world.client(Some(&police));
    let mut conn = client.connect(border, "localhost").await.unwrap();
    let path = format!("/v1/data/content/+3725550123?bytes={total}");
    let request = xborder::client::bearer_get(path.parse().unwrap(), &token);
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut sealed = Vec::new();
    let mut signalled = false;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        sealed.extend_from_slice(&data);
        if !signalled && sealed.len() >= 4 * 1024 * 1024 {
            served.signal("TERM");
            signalled = true;
            served.wait_for(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("shutting down"))
            });
            // No new connections once shutdown has begun.
            assert!(
                client.connect(border, "localhost").await.is_err(),
                "accepted during shutdown"
            );
        }
    }
    let plaintext = open_sealed(&sealed);
    let received = plaintext.len() as u64;
    let expected: Vec<u8> = (0..total).map(pattern_byte).collect();
    let hash = Sha256::digest(&plaintext);
    let expected = Sha256::digest(&expected);
    assert!(signalled);
    assert_eq!(received, total, "transfer cut short by shutdown");
    assert_eq!(hash, expected);

    let (ok, logs) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok, "exit status not 0");
    assert!(
        logs.iter()
            .any(|v| v["fields"]["message"] == "drained; all exchanges finished")
    );
    let refusals: Vec<&Value> = logs
        .iter()
        .filter(|v| v["fields"]["message"] == "connection refused")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let fields = &refusals[0]["fields"];
    assert_eq!(
        fields["reason"],
        "certificate expired (claimed SPIFFE ID spiffe://fi.xborder.test/agency/police)"
    );
    assert!(fields["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(fields["listener"], "border");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_at_once() {
    let world = World::new();
    // A long interval: only SIGHUP can explain a prompt reload.
    let text = world
        .config_text("127.0.0.1:9".parse().unwrap())
        .replace("interval = \"100ms\"", "interval = \"1h\"");
    world.write("ee/gateway.toml", &text);
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let client = world.client(Some(&world.fi_police()));
    let before = client.connect(border, "localhost").await.unwrap();
    assert_eq!(
        before.server_certificate(),
        Some(&world.gateway_cert.cert_der())
    );

    let renewed = world
        .ee
        .issue(&LeafSpec::server(spiffe(
            "spiffe://ee.xborder.test/gateway",
        )))
        .unwrap();
    world.write("ee/gateway-key.pem", &renewed.key_pem());
    world.write("ee/gateway.pem", &renewed.cert_pem());
    served.signal("HUP");
    served.wait_for(|v| v["fields"]["message"] == "TLS certificates reloaded");
    let after = client.connect(border, "localhost").await.unwrap();
    assert_eq!(after.server_certificate(), Some(&renewed.cert_der()));
    served.signal("TERM");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok);
}

#[test]
fn the_demo_walks_through_and_exits_zero() {
    let out = Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The story alone: no gateway log lines on stdout, and none below WARN
    // on stderr to interleave with it on a terminal (issue 15, 10).
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains("INFO") && !text.contains("DEBUG"),
            "log lines on {name}:\n{text}"
        );
    }
    for n in 1..=12 {
        assert!(
            stdout.contains(&format!("\n{n}. ")),
            "no step {n} in:\n{stdout}"
        );
    }
    for step in [
        "without a grant -> 401 Unauthorized \"token_missing\"",
        "POST /v1/requests -> 403 Forbidden \"policy_refused\"",
        "FAIL legal_basis",
        "FAIL targets",
        "POST /v1/requests -> 201 Created",
        "-> 200 OK: \"approved\"",
        "receipt signed by EE verified against GET /v1/keys",
        "decrypted with FI's age identity: {\"asked_by\":\"spiffe://fi.xborder.test/gateway\"",
        "-> 403 Forbidden \"grant_revoked\"",
        // The anonymous client's own words vary (an alert, or a reset under
        // load); what matters is that it was refused.
        "turned away during the handshake.\n   refused: ",
        "is in EE's audit log: inclusion proven under EE's signed tree head",
        "recomputed and verified with its key alone: ",
        "2 transfer_denied",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

/// `--verbose` brings the gateway's own INFO lines back, on stderr only.
#[test]
fn the_demo_shows_the_gateway_log_when_verbose() {
    let out = Command::new(BIN)
        .args(["demo", "--verbose"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("INFO"), "{stderr}");
    assert!(!stdout.contains("INFO"), "{stdout}");
    assert!(stdout.contains("Demo finished"), "{stdout}");
}

/// The example configs in `config/` stay in step with the schema and with `certs/`.
#[test]
fn example_configs_load_and_name_existing_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let config = xborder::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut files = vec![
            config.identity.certificate.clone(),
            config.identity.key.clone(),
            config.tokens.signing_key.clone(),
            config.audit.signing_key.clone(),
            config.audit.pseudonym_key.clone(),
        ];
        for anchor in config.trust.values() {
            files.push(anchor.ca.clone());
            files.extend(anchor.crls.iter().cloned());
        }
        for file in files {
            assert!(
                file.is_file(),
                "{}: {} is missing",
                path.display(),
                file.display()
            );
        }
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}
