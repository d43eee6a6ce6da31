//! The shipped monitoring (`deploy/prometheus/`, `deploy/grafana/`) against
//! the real tools: `promtool` checks and unit-tests the alert rules and the
//! scrape config, and a real Prometheus server scrapes a test gateway driven
//! with real traffic, then answers every alert and every dashboard query.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`); without
//! it these tests fail, naming the package.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const SCRAPE_CONFIG: &str = "deploy/prometheus/prometheus.yml";
const DASHBOARD: &str = "deploy/grafana/xborder.json";

/// The alerts the operations issue asks for; alerts.yml may add more.
const REQUIRED_ALERTS: &[&str] = &[
    "CertificateExpiringSoon",
    "RequestOverdue",
    "RevocationSpike",
    "RateLimitSurge",
    "AuditLogNotAdvancing",
    "GatewayDown",
    "HandshakeFailureSurge",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// `name` from the `prometheus` package, or a failure that says how to get it.
fn tool(name: &str) -> &str {
    match Command::new(name).arg("--version").output() {
        Ok(out) if out.status.success() => name,
        Ok(out) => panic!(
            "`{name} --version` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`{name}` is not installed ({e}): install the `prometheus` package \
             (apt-get install -y --no-install-recommends prometheus), \
             which provides `prometheus` and `promtool`"
        ),
    }
}

fn promtool(args: &[&str]) -> Output {
    Command::new(tool("promtool"))
        .args(args)
        .current_dir(ROOT)
        .output()
        .unwrap()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Alert names in alerts.yml, read from its `- alert: Name` lines.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(repo(ALERTS))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn promtool_checks_the_rules_their_unit_tests_and_the_scrape_config() {
    let names = alert_names();
    for required in REQUIRED_ALERTS {
        assert!(
            names.iter().any(|n| n == required),
            "{ALERTS} has no alert {required}: {names:?}"
        );
    }
    assert_success(
        "promtool check rules",
        &promtool(&["check", "rules", ALERTS]),
    );

    // Every alert is exercised by the unit tests.
    let tests = std::fs::read_to_string(repo(ALERT_TESTS)).unwrap();
    for name in &names {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{ALERT_TESTS} does not test {name}"
        );
    }
    assert_success(
        "promtool test rules",
        &promtool(&["test", "rules", ALERT_TESTS]),
    );

    // The scrape config, its rule file named by an absolute path.
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(repo(SCRAPE_CONFIG)).unwrap();
    assert!(
        config.contains("- alerts.yml"),
        "{SCRAPE_CONFIG} loads alerts.yml"
    );
    assert!(
        config.contains("job_name: xborder"),
        "{SCRAPE_CONFIG} has job xborder"
    );
    let copy = dir.path().join("prometheus.yml");
    std::fs::write(
        &copy,
        config.replace("- alerts.yml", &format!("- {}", repo(ALERTS).display())),
    )
    .unwrap();
    let out = promtool(&["check", "config", copy.to_str().unwrap()]);
    assert_success("promtool check config", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 rule files found"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A Prometheus server that is killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, ops: SocketAddr) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {alerts}\n\
                 scrape_configs:\n  - job_name: xborder\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"{ops}\"]\n",
                alerts = repo(ALERTS).display(),
            ),
        )
        .unwrap();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, addr, log }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// One GET on the HTTP API: the `data` of a `success` answer, or the error.
    async fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, path).await?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if answer["status"] != "success" {
            return Err(format!(
                "{status}: {}: {}",
                answer["errorType"], answer["error"]
            ));
        }
        Ok(answer["data"].clone())
    }

    /// An instant query at now: its series (a scalar counts as one).
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(promql)))
            .await?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                Ok(data["result"].as_array().cloned().unwrap_or_default())
            }
            Some("scalar") | Some("string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected resultType {other:?}")),
        }
    }

    /// The first value of `promql`'s first series, if any.
    async fn value(&self, promql: &str) -> Option<f64> {
        let series = self.query(promql).await.ok()?;
        series.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET with a 5 s bound; the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = http::Request::builder()
            .uri(path)
            .header("host", addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = send
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| format!("GET {path}: no answer within 5 s"))?
}

/// Percent-encodes a query parameter value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A dashboard expression as Prometheus would get it from Grafana: interval
/// macros as `1m`, data source variables gone, every other variable (job,
/// instance: used as `=~` regexes) matching anything.
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut expr = expr.to_owned();
    for mac in ["__rate_interval", "__interval", "__range"] {
        expr = expr
            .replace(&format!("${{{mac}}}"), "1m")
            .replace(&format!("${mac}"), "1m");
    }
    for ds in ["DS_PROMETHEUS", "datasource"] {
        expr = expr
            .replace(&format!("${{{ds}}}"), "")
            .replace(&format!("${ds}"), "");
    }
    let mut variables = variables.to_vec();
    variables.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for var in &variables {
        expr = expr
            .replace(&format!("${{{var}}}"), ".+")
            .replace(&format!("${var}"), ".+");
    }
    expr
}

/// Every target of every panel (rows' nested panels too): (panel title, refId, expr).
fn panel_targets(dashboard: &Value) -> Vec<(String, String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let id = target["refId"].as_str().unwrap_or("?").to_owned();
                    out.push((title.clone(), id, expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Waits for `check` until `deadline`; false if it never held.
async fn until<F, Fut>(deadline: Instant, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A GET with `token` on a fresh connection, retried while rate-limited
/// (bounded by `deadline`); the status.
async fn transfer(
    world: &World,
    gateway: &Running,
    cert: &xborder::pki::Issued,
    path: &str,
    token: Option<&str>,
    deadline: Instant,
) -> StatusCode {
    loop {
        let mut conn = world
            .client(Some(cert))
            .connect(gateway.border, "localhost")
            .await
            .unwrap();
        let status = match token {
            Some(token) => get_with(&mut conn, path, token).await.unwrap().0,
            None => get_on(&mut conn, path).await.unwrap().0,
        };
        if status != StatusCode::TOO_MANY_REQUESTS || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway_and_answers_every_alert_and_dashboard_query() {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    tool("prometheus");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap())
        .expect("the dashboard is JSON");

    // A gateway whose FI policy has a small request rate, so a burst is refused.
    let world = World::new();
    let upstream = xborder::upstream_example::spawn(loopback(), Default::default())
        .await
        .unwrap();
    let text = world.config_text(upstream).replace(
        "[policy.EE.FI.approvals]",
        "[policy.EE.FI.rate]\nrequests_per_second = 5\nrequest_burst = 5\n\n[policy.EE.FI.approvals]",
    );
    world.write("ee/gateway.toml", &text);
    let config = xborder::config::Config::load(&world.path("ee/gateway.toml")).unwrap();
    let gateway = Running::start_with(config, Default::default()).await;

    let prometheus = Prometheus::start(world.dir.path(), gateway.ops);
    assert!(
        until(deadline, || async {
            prometheus.value(r#"up{job="xborder"}"#).await == Some(1.0)
        })
        .await,
        "Prometheus never scraped the gateway's ops listener {}:\n{}",
        gateway.ops,
        prometheus.log_tail()
    );

    // Traffic: complete, refused, rate-limited, cut by a manual revocation.
    let police = world.fi_police();
    let (content, content_grant) = grant_with(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["content"],
        json!({}),
    )
    .await;
    let subscriber = grant_token(
        &world,
        gateway.border,
        gateway.admin,
        &police,
        &["subscriber"],
    )
    .await;
    let small = "/v1/data/content/+3725550123?bytes=100000";
    let status = transfer(&world, &gateway, &police, small, Some(&content), deadline).await;
    assert_eq!(status, StatusCode::OK, "a complete transfer");
    let status = transfer(&world, &gateway, &police, small, None, deadline).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "token_missing");
    let status = transfer(
        &world,
        &gateway,
        &police,
        small,
        Some(&subscriber),
        deadline,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "scope_category");

    let mut conn = world
        .client(Some(&police))
        .connect(gateway.border, "localhost")
        .await
        .unwrap();
    let mut limited = 0;
    for _ in 0..12 {
        let (status, _) = get_with(&mut conn, "/v1/data/subscriber/+3725550123", &subscriber)
            .await
            .unwrap();
        limited += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(
        limited > 0,
        "a burst of 12 beyond a burst of 5 is rate-limited"
    );

    // A long stream, cut by revoking its grant by hand.
    let stream = async {
        loop {
            let mut conn = world
                .client(Some(&police))
                .connect(gateway.border, "localhost")
                .await
                .unwrap();
            let mut request = xborder::client::get(
                "/v1/data/content/+3725550123?bytes=268435456"
                    .parse()
                    .unwrap(),
            );
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {content}").parse().unwrap(),
            );
            let response = conn.send(request).await.unwrap();
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            body.frame().await.unwrap().unwrap();
            let (status, answer) = send_json(
                &admin(&world, "operator"),
                gateway.admin,
                Method::POST,
                &format!("/v1/grants/{content_grant}/revoke"),
                Some(&json!({ "reason": "monitoring test" })),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            while let Some(Ok(_)) = body.frame().await {}
            break (conn, body);
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _cut = tokio::time::timeout(remaining, stream)
        .await
        .expect("the stream is cut by the revocation in time");
    let status = transfer(&world, &gateway, &police, small, Some(&content), deadline).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "grant_revoked");
    let status = transfer(
        &world,
        &gateway,
        &police,
        "/v1/data/subscriber/+3725550123",
        Some(&subscriber),
        deadline,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "another complete transfer");
    let traffic_ended = SystemTime::now();

    // Three scrapes after the traffic.
    let scraped = until(deadline, || async {
        let since = traffic_ended.elapsed().unwrap_or_default().as_secs().max(1);
        prometheus
            .value(&format!(
                r#"count_over_time(up{{job="xborder"}}[{since}s])"#
            ))
            .await
            .is_some_and(|n| n >= 3.0)
    })
    .await;
    assert!(
        scraped,
        "Prometheus did not scrape 3 times after the traffic:\n{}",
        prometheus.log_tail()
    );

    let mut failures = Vec::new();

    // Every alert, as Prometheus loaded it: evaluated without error, and its
    // expression answers a query.
    let names = alert_names();
    let rules_loaded = until(deadline, || async {
        let Ok(data) = prometheus.api("/api/v1/rules?type=alert").await else {
            return false;
        };
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.len() == names.len() && rules.iter().all(|r| r["health"] != "unknown")
    })
    .await;
    assert!(
        rules_loaded,
        "Prometheus did not load and evaluate every rule of {ALERTS}"
    );
    let data = prometheus.api("/api/v1/rules?type=alert").await.unwrap();
    for group in data["groups"].as_array().unwrap() {
        assert_eq!(group["name"], "xborder", "rule group name");
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["name"].as_str().unwrap();
            let expr = rule["query"].as_str().unwrap();
            assert!(names.iter().any(|n| n == name), "{name} not in {ALERTS}");
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{name} has no {key}"
                );
            }
            assert!(
                rule["labels"]["severity"].is_string(),
                "{name} has no severity"
            );
            if rule["health"] != "ok" {
                failures.push(format!(
                    "alert {name}: {} ({})",
                    rule["health"], rule["lastError"]
                ));
            }
            match prometheus.query(expr).await {
                Ok(series) => eprintln!(
                    "alert {name}: {} series (firing now: {})",
                    series.len(),
                    rule["state"]
                ),
                Err(e) => failures.push(format!("alert {name}: {e}\n  {expr}")),
            }
        }
    }

    // Every dashboard variable and panel query: valid, and with series.
    let variables: Vec<(String, String, String)> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap().to_owned(),
                v["type"].as_str().unwrap().to_owned(),
                query.to_owned(),
            )
        })
        .collect();
    let names: Vec<String> = variables
        .iter()
        .filter(|(_, kind, _)| kind != "datasource")
        .map(|(name, _, _)| name.clone())
        .collect();
    for (name, kind, query) in &variables {
        if kind != "query" {
            continue;
        }
        // label_values(selector, label) is Grafana's; ask Prometheus the same.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {name}: not label_values(..): {query}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let promql = substitute(&format!("count by ({}) ({selector})", label.trim()), &names);
        match prometheus.query(&promql).await {
            Ok(series) if series.is_empty() => {
                failures.push(format!("variable {name}: no values\n  {promql}"))
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("variable {name}: {e}\n  {promql}")),
        }
    }
    let targets = panel_targets(&dashboard);
    assert!(
        targets.len() >= 12,
        "the dashboard has its panels: {targets:?}"
    );
    for (title, id, expr) in &targets {
        let promql = substitute(expr, &names);
        assert!(
            !promql.contains('$'),
            "panel {title} ({id}): unknown variable in {promql}"
        );
        match prometheus.query(&promql).await {
            Ok(series) if series.is_empty() => {
                failures.push(format!("panel {title} ({id}): no series\n  {promql}"))
            }
            Ok(series) => eprintln!("panel {title} ({id}): {} series", series.len()),
            Err(e) => failures.push(format!("panel {title} ({id}): {e}\n  {promql}")),
        }
    }

    drop(prometheus);
    gateway.shutdown().await;
    eprintln!("monitoring check took {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of the shipped queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
