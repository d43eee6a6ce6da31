//! The review commands as EE's compliance officer and approvers use them:
//! `xborder policy explain` offline, then `xborder request …` and
//! `xborder grant …` against a running gateway's admin listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;

use http::StatusCode;
use serde_json::{Value, json};
use xborder::pki::LeafSpec;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_xborder");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes EE's config and `body` as a request file; runs `policy explain`.
fn explain(world: &World, body: &Value, extra: &[&str]) -> Output {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    world.write("ee/gateway.toml", &world.config_text(upstream));
    world.write("request.json", &body.to_string());
    std::process::Command::new(BIN)
        .args(["policy", "explain", "--config"])
        .arg(world.path("ee/gateway.toml"))
        .args(extra)
        .arg(world.path("request.json"))
        .output()
        .unwrap()
}

#[test]
fn policy_explain_lists_every_failing_rule_of_an_over_broad_request() {
    let world = World::new();
    let mut body = request_body(&["subscriber", "ip_identification"], "normal");
    body["legal_basis"] = json!("curiosity");
    body["targets"] = json!(["1", "2", "3", "4", "5", "6"]);
    body["period"] = json!({ "from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z" });

    let out = explain(&world, &body, &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let mut lines = stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("policy EE → FI ("), "{header}");
    assert!(header.contains("response due within 10 day(s)"), "{header}");
    for rule in [
        "legal_basis",
        "category.ip_identification",
        "targets",
        "period",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("FAIL") && l.contains(rule)),
            "no failing {rule} in:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("PASS") && l.contains("category.subscriber"))
    );
    assert_eq!(
        stdout.lines().last(),
        Some("REFUSED at filing: 4 hard rule(s) fail")
    );
    assert!(text(&out.stderr).contains("refused at filing"));

    // A jurisdiction with no policy is refused by default.
    let out = explain(
        &world,
        &request_body(&["subscriber"], "normal"),
        &["--requester", "US"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("none configured (denied by default)"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("pair_policy")),
        "{stdout}"
    );
}

#[test]
fn policy_explain_admits_a_proportionate_request() {
    let world = World::new();
    let out = explain(&world, &request_body(&["subscriber"], "normal"), &[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("ADMISSIBLE"));

    // Content needs two approvers; an emergency runs on the short clock.
    let out = explain(
        &world,
        &request_body(&["content"], "emergency"),
        &["--requester", "FI"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains("response due within 8 hour(s) (emergency request"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("ADMISSIBLE: needs review of approvals, emergency")
    );
}

#[test]
fn policy_explain_names_each_invalid_field_and_exits_2() {
    let world = World::new();
    let mut body = request_body(&["Subscriber Data"], "normal");
    body["recipient"] = json!("ssh-ed25519 AAAA");
    let out = explain(&world, &body, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(stderr.contains("invalid request:"), "{stderr}");
    assert!(stderr.contains("\n  categories[0]: "), "{stderr}");
    assert!(
        stderr.contains("\n  recipient: not an age X25519 recipient"),
        "{stderr}"
    );

    // A field the body does not have is named too.
    let mut body = request_body(&["subscriber"], "normal");
    body["requester"] = json!("FI");
    let out = explain(&world, &body, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a request body: unknown field `requester`"),
        "{stderr}"
    );
}

#[test]
fn admin_commands_name_the_flag_of_an_unusable_file() {
    let world = World::new();
    let operator = world
        .ee
        .issue(&LeafSpec::client(spiffe(
            "spiffe://ee.xborder.test/admin/operator",
        )))
        .unwrap();
    let stranger = world.fi_police();
    world.write("ee/operator.pem", &operator.cert_pem());
    world.write("ee/stranger-key.pem", &stranger.key_pem());
    let run = |ca: &str, key: &str| {
        std::process::Command::new(BIN)
            .args(["grant", "list", "--admin", "127.0.0.1:9"])
            .arg("--ca")
            .arg(world.path(ca))
            .arg("--cert")
            .arg(world.path("ee/operator.pem"))
            .arg("--key")
            .arg(world.path(key))
            .output()
            .unwrap()
    };
    let out = run("ee/missing-ca.pem", "ee/stranger-key.pem");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with("error: --ca: "),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("missing-ca.pem: cannot read"));

    let out = run("ee/ca.pem", "ee/stranger-key.pem");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: --key: "), "{stderr}");
    assert!(
        stderr.contains("does not match the certificate in --cert"),
        "{stderr}"
    );
}

/// EE's admin identity `name`, written to files the CLI reads.
fn admin_files(world: &World, name: &str) -> (PathBuf, PathBuf) {
    let issued = world
        .ee
        .issue(&LeafSpec::client(spiffe(&format!(
            "spiffe://ee.xborder.test/admin/{name}"
        ))))
        .unwrap();
    world.write(&format!("ee/{name}.pem"), &issued.cert_pem());
    world.write(&format!("ee/{name}-key.pem"), &issued.key_pem());
    (
        world.path(&format!("ee/{name}.pem")),
        world.path(&format!("ee/{name}-key.pem")),
    )
}

/// Runs the real binary as admin `name` (identity from the environment).
async fn xborder(
    world: &World,
    admin: SocketAddr,
    name: &str,
    args: &[&str],
) -> (bool, String, String) {
    let (cert, key) = admin_files(world, name);
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("XBORDER_ADMIN", admin.to_string())
        .env("XBORDER_CA", world.path("ee/ca.pem"))
        .env("XBORDER_CERT", cert)
        .env("XBORDER_KEY", key)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_review_a_request_and_revoke_its_grant_from_the_command_line() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (status, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["content"], "normal"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["id"].as_str().unwrap().to_owned();

    // The request waits for review, listed with its deadline.
    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["request", "list", "--state", "pending"],
    )
    .await;
    assert!(ok, "{err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "STATE",
            "REQUESTER",
            "CATEGORIES",
            "FILED",
            "DEADLINE",
            "OVERDUE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        [
            id.as_str(),
            "pending",
            "spiffe://fi.xborder.test/agency/police",
            "content"
        ]
    );
    assert_eq!(row[6], "no");
    assert_eq!(lines.next(), None);

    let (ok, out, err) =
        xborder(&world, gateway.admin, "operator", &["request", "show", &id]).await;
    assert!(ok, "{err}");
    assert!(out.contains("state          pending\n"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("NEEDS_REVIEW") && l.contains("approvals")),
        "{out}"
    );
    assert!(out.contains("approvals:\n  none\n"), "{out}");

    // Content needs two distinct approvers: the first approval only counts.
    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["request", "approve", &id],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "approval recorded: 1 of 2 distinct approvers\n");

    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "alice",
        &[
            "request",
            "approve",
            &id,
            "--lifetime",
            "7d",
            "--max-transfers",
            "3",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let grant_id = out
        .strip_prefix("approved: grant ")
        .and_then(|rest| rest.split_once(", expires "))
        .map(|(grant, _)| grant.to_owned())
        .unwrap_or_else(|| panic!("unexpected approval output: {out}"));

    // Approving again is refused, with the stable code.
    let (ok, out, err) = xborder(&world, gateway.admin, "bob", &["request", "approve", &id]).await;
    assert!(!ok, "{out}");
    assert!(err.starts_with("error: state_conflict: "), "{err}");

    // A reviewer may read but not approve.
    let (ok, _, err) = xborder(
        &world,
        gateway.admin,
        "rita",
        &["request", "deny", &id, "--reason", "no"],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("role_required: this action needs the approver role"),
        "{err}"
    );

    // The grant is active, and --json prints the API's answer.
    let (ok, out, err) = xborder(&world, gateway.admin, "operator", &["grant", "list"]).await;
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        [
            grant_id.as_str(),
            "active",
            "spiffe://fi.xborder.test/agency/police",
            "content"
        ]
    );
    assert_eq!(row[5], "-");
    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["grant", "show", &grant_id, "--json"],
    )
    .await;
    assert!(ok, "{err}");
    let grant: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(grant["quotas"]["max_transfers"], 3);
    assert!(
        grant.get("token").is_none(),
        "the admin view never carries the bearer token"
    );

    // A revocation needs a reason; the field error is listed.
    let (ok, _, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["grant", "revoke", &grant_id, "--reason", " "],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("error: invalid_request: "), "{err}");
    assert!(err.contains("\n  reason: "), "{err}");

    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &[
            "grant",
            "revoke",
            &grant_id,
            "--reason",
            "incident 2026-11: key compromise",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("revoked: grant {grant_id} at ")),
        "{out}"
    );

    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["grant", "list", "--state", "revoked"],
    )
    .await;
    assert!(ok, "{err}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((row[1], row[5]), ("revoked", "manual"));
    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["grant", "list", "--state", "active"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out, "no grants\n");

    let (ok, out, err) = xborder(
        &world,
        gateway.admin,
        "operator",
        &["grant", "revoke", &grant_id, "--reason", "again"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(err.starts_with("error: state_conflict: "), "{err}");

    gateway.shutdown().await;
}

/// Runs `args` against `addr` with the given CA, certificate and key files.
async fn xborder_with(
    addr: SocketAddr,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("XBORDER_ADMIN", addr.to_string())
        .env("XBORDER_CA", ca)
        .env("XBORDER_CERT", cert)
        .env("XBORDER_KEY", key)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (out.status.success(), text(&out.stderr))
}

/// Issue 15 (6): the CLI says what went wrong, once: a refused certificate,
/// an untrusted server, a border port given as the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_say_why_a_connection_failed_once() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let ca = world.path("ee/ca.pem");
    let (cert, key) = admin_files(&world, "operator");

    // Certificates the admin listener refuses in the handshake: FI's
    // (another trust domain) and one from a rogue CA claiming EE's domain.
    let rogue = xborder::pki::DevCa::new(&jurisdiction("EE")).unwrap();
    let spy = spiffe("spiffe://ee.xborder.test/admin/operator");
    for (name, issued) in [
        (
            "fi",
            world
                .fi
                .issue(&LeafSpec::client(spiffe(
                    "spiffe://fi.xborder.test/admin/operator",
                )))
                .unwrap(),
        ),
        (
            "rogue",
            rogue.issue(&LeafSpec::client(spy.clone())).unwrap(),
        ),
    ] {
        world.write(&format!("ee/{name}.pem"), &issued.cert_pem());
        world.write(&format!("ee/{name}-key.pem"), &issued.key_pem());
        let (ok, stderr) = xborder_with(
            gateway.admin,
            &ca,
            &world.path(&format!("ee/{name}.pem")),
            &world.path(&format!("ee/{name}-key.pem")),
            &["grant", "list"],
        )
        .await;
        assert!(!ok, "{name}");
        assert!(
            stderr.contains("the admin listener at ")
                && stderr.contains("refused this client certificate"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("broken pipe"), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
    }

    // A --ca that did not issue the gateway's certificate: the cause once.
    let (ok, stderr) = xborder_with(
        gateway.admin,
        &world.path("fi/ca.pem"),
        &cert,
        &key,
        &["grant", "list"],
    )
    .await;
    assert!(!ok);
    assert_eq!(stderr.matches("UnknownIssuer").count(), 1, "{stderr}");

    // The border port given as the admin listener: a hint, not just a code.
    let (ok, stderr) = xborder_with(gateway.border, &ca, &cert, &key, &["request", "list"]).await;
    assert!(!ok);
    assert!(stderr.contains("method_not_allowed"), "{stderr}");
    assert!(
        stderr.contains("looks like a gateway's border listener, not its admin listener"),
        "{stderr}"
    );

    gateway.shutdown().await;
}
