//! `/metrics` after real traffic: the samples an operator reads (transfers by
//! outcome and code, bytes, revocations, requests, grants, notices,
//! certificate expiries, process metrics), checked by the real `promtool`,
//! with bounded label values only (no grant ids, SPIFFE IDs or targets).

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// GET `path`, with `token` if any; the status and the raw body (empty if cut).
async fn pull(
    world: &World,
    border: std::net::SocketAddr,
    cert: &xborder::pki::Issued,
    token: Option<&str>,
    path: &str,
) -> (StatusCode, Vec<u8>) {
    let (status, _, body) = pull_raw(world, border, cert, token, path).await;
    (status, body)
}

/// Polls `sample` (every 50 ms, at most 5 s) until it reads `want`; the last value read.
async fn wait_for(gateway: &Running, sample: &str, want: f64) -> Option<f64> {
    let mut last = None;
    for _ in 0..100 {
        last = gateway.metric(sample).await;
        if last == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// Runs `promtool check metrics` on `text`; its exit status and everything it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`promtool` is not installed: install the `prometheus` package \
             (apt-get install -y --no-install-recommends prometheus); CI does"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// Every label value of every sample in the text format.
fn label_values(text: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let Some((labels, _)) = rest.rsplit_once('}') else {
            continue;
        };
        let mut rest = labels;
        while let Some((_, after_quote)) = rest.split_once("=\"") {
            let end = after_quote
                .find('"')
                .expect("label values are quoted in the text format");
            values.push(after_quote[..end].to_owned());
            rest = &after_quote[end + 1..];
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_traffic_are_accurate_valid_and_bounded() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();

    // A complete transfer of 5000 bytes under grant A, which is then revoked.
    let (token_a, grant_a) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({}),
    )
    .await;
    let (status, complete) = pull(
        &world,
        gateway.border,
        &police,
        Some(&token_a),
        "/v1/data/content/+3725550123?bytes=5000",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open_sealed(&complete).len(), 5000);

    // An incomplete one: grant B's byte quota cuts it at 1000 bytes.
    let (token_b, grant_b) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({ "max_bytes": 1000 }),
    )
    .await;
    let (status, cut) = pull(
        &world,
        gateway.border,
        &police,
        Some(&token_b),
        "/v1/data/content/+3725550123?bytes=100000",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open_sealed(&cut).len(), 1000);

    // Refusals under grant C, which stays active.
    let (token_c, grant_c) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
        json!({}),
    )
    .await;
    let (status, _) = pull(
        &world,
        gateway.border,
        &police,
        None,
        "/v1/data/subscriber/+3725550123",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = pull(
        &world,
        gateway.border,
        &police,
        Some(&token_c),
        "/v1/data/subscriber/+3725559999",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A manual revocation of grant A; its token is refused afterwards.
    let (status, answer) = send_json(
        &admin(&world, "operator"),
        gateway.admin,
        Method::POST,
        &format!("/v1/grants/{grant_a}/revoke"),
        Some(&json!({ "reason": "the investigation is closed" })),
        None,
    )
    .await;
    assert!(status.is_success(), "{status}: {answer}");
    let (status, _) = pull(
        &world,
        gateway.border,
        &police,
        Some(&token_a),
        "/v1/data/content/+3725550123?bytes=10",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Transfers close in their own tasks and endings are counted by a
    // subscriber: poll for them.
    let ok = r#"xborder_transfers_total{code="ok",jurisdiction="FI",outcome="complete"}"#;
    assert_eq!(wait_for(&gateway, ok, 1.0).await, Some(1.0));
    let exhausted =
        r#"xborder_transfers_total{code="exhausted",jurisdiction="FI",outcome="incomplete"}"#;
    assert_eq!(wait_for(&gateway, exhausted, 1.0).await, Some(1.0));
    let manual = r#"xborder_grant_revocations_total{cause="manual"}"#;
    assert_eq!(wait_for(&gateway, manual, 1.0).await, Some(1.0));
    let by_quota = r#"xborder_grant_revocations_total{cause="exhausted"}"#;
    assert_eq!(wait_for(&gateway, by_quota, 1.0).await, Some(1.0));

    let (status, text) = plain_get(gateway.ops, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    };
    for (name, want) in [
        (ok, 1.0),
        (exhausted, 1.0),
        (
            r#"xborder_transfers_total{code="token_missing",jurisdiction="FI",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"xborder_transfers_total{code="scope_target",jurisdiction="FI",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"xborder_transfers_total{code="grant_revoked",jurisdiction="FI",outcome="refused"}"#,
            1.0,
        ),
        (r#"xborder_transfer_bytes_total{kind="plaintext"}"#, 6000.0),
        (
            r#"xborder_transfer_bytes_total{kind="ciphertext"}"#,
            (complete.len() + cut.len()) as f64,
        ),
        (
            r#"xborder_transfer_duration_seconds_count{outcome="complete"}"#,
            1.0,
        ),
        (
            r#"xborder_transfer_duration_seconds_count{outcome="incomplete"}"#,
            1.0,
        ),
        // Every transfer that got past the token's presence verified it.
        ("xborder_token_verification_duration_seconds_count", 4.0),
        (manual, 1.0),
        (r#"xborder_grant_revocations_total{cause="expired"}"#, 0.0),
        (r#"xborder_requests{state="approved"}"#, 3.0),
        (r#"xborder_requests{state="pending"}"#, 0.0),
        ("xborder_requests_overdue", 0.0),
        ("xborder_grants_active", 1.0),
        ("xborder_audit_append_failures_total", 0.0),
        // Three grants, three notices; no webhook here, so all wait.
        (r#"xborder_notices{state="pending"}"#, 3.0),
        (r#"xborder_notices{state="delivered"}"#, 0.0),
        (
            r#"xborder_notice_deliveries_total{outcome="delivered"}"#,
            0.0,
        ),
        (r#"xborder_notice_deliveries_total{outcome="failed"}"#, 0.0),
    ] {
        assert_eq!(sample(name), Some(want), "{name} in\n{text}");
    }
    // Every request, finding, decision and transfer above is in the audit log.
    let logged = sample("xborder_audit_log_entries").unwrap_or_default();
    assert!(logged >= 20.0, "only {logged} audit entries in\n{text}");
    // Nothing was rate limited; the configured requester's series starts at zero.
    assert_eq!(
        sample(r#"xborder_rate_limited_total{jurisdiction="FI"}"#),
        Some(0.0),
        "{text}"
    );

    // The gateway certificate's notAfter, as the snapshot read it.
    let der = world.gateway_cert.cert_der();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let not_after = cert.validity().not_after.timestamp() as f64;
    assert_eq!(
        sample(
            r#"xborder_certificate_expiry_timestamp_seconds{certificate="identity.certificate"}"#
        ),
        Some(not_after),
        "{text}"
    );
    assert!(
        text.contains(r#"xborder_certificate_expiry_timestamp_seconds{certificate="trust.FI.ca"}"#),
        "{text}"
    );
    assert!(
        sample("process_resident_memory_bytes").is_some_and(|rss| rss > 0.0),
        "{text}"
    );

    // The real promtool: no complaint at all.
    let (passed, printed) = promtool_check(&text);
    assert!(
        passed && printed.trim().is_empty(),
        "promtool check metrics: {printed}\non\n{text}"
    );

    // Bounded labels: no grant id, SPIFFE ID or target in any label value.
    let forbidden = [
        grant_a.as_str(),
        grant_b.as_str(),
        grant_c.as_str(),
        "spiffe://",
        "+372",
        "/",
    ];
    for value in label_values(&text) {
        for bad in forbidden {
            assert!(
                !value.contains(bad),
                "label value `{value}` contains `{bad}`:\n{text}"
            );
        }
        let uuid_like = value.len() == 36 && value.matches('-').count() == 4;
        assert!(!uuid_like, "label value `{value}` looks like an id");
    }

    gateway.shutdown().await;
}

/// Issue 15 (9): a fresh gateway already has the series dashboards and
/// alerts read, at zero, before any handshake or transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gateway_exposes_its_labelled_series_at_zero() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let (status, text) = plain_get(gateway.ops, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let sample = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
    };
    let mut want = Vec::new();
    for listener in ["border", "admin"] {
        for result in ["ok", "refused", "timeout"] {
            want.push(format!(
                r#"xborder_tls_handshakes_total{{listener="{listener}",result="{result}"}}"#
            ));
        }
        want.push(format!(
            r#"xborder_open_connections{{listener="{listener}"}}"#
        ));
    }
    // Every jurisdiction of the trust section, ours included.
    for j in ["EE", "FI"] {
        for (outcome, code) in [
            ("complete", "ok"),
            ("incomplete", "exhausted"),
            ("incomplete", "revoked"),
            ("incomplete", "upstream_failed"),
            ("refused", "token_missing"),
            ("refused", "grant_revoked"),
            ("refused", "grant_expired"),
            ("refused", "scope_target"),
            ("refused", "rate_limited"),
        ] {
            want.push(format!(
                r#"xborder_transfers_total{{code="{code}",jurisdiction="{j}",outcome="{outcome}"}}"#
            ));
        }
        want.push(format!(
            r#"xborder_rate_limited_total{{jurisdiction="{j}"}}"#
        ));
    }
    for name in &want {
        assert_eq!(sample(name), Some(0.0), "{name} in\n{text}");
    }
    // Bounded: nothing for a jurisdiction the configuration does not name.
    assert!(!text.contains(r#"jurisdiction="US""#), "{text}");

    let (passed, printed) = promtool_check(&text);
    assert!(
        passed && printed.trim().is_empty(),
        "promtool check metrics: {printed}\non\n{text}"
    );
    gateway.shutdown().await;
}
