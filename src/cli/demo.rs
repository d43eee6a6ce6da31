//! `xborder demo`: one exchange across a border on loopback, told step by step.
//!
//! EE holds data behind its gateway; FI's gateway calls through EE's border
//! over mTLS. Everything lives in a temporary directory and in this process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::client::{self, BorderClient};
use crate::config::Config;
use crate::identity::Jurisdiction;
use crate::server::{Gateway, Listeners};
use crate::{pki, tls, upstream_example};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the gateway and the example upstream serving after the walk-through.
    #[arg(long)]
    keep_running: bool,
    /// Show the gateway's own log lines (INFO and up on stderr) between the
    /// steps; without it only warnings and errors are logged, so the steps
    /// read as one story.
    #[arg(long, short)]
    verbose: bool,
}

impl DemoArgs {
    /// The log level unless `RUST_LOG` says otherwise.
    pub fn log_level(&self) -> &'static str {
        if self.verbose { "info" } else { "warn" }
    }
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(walk_through(args))
}

async fn walk_through(args: DemoArgs) -> anyhow::Result<()> {
    let ee: Jurisdiction = "EE".parse()?;
    let fi: Jurisdiction = "FI".parse()?;
    let dir = tempfile::Builder::new().prefix("xborder-demo-").tempdir()?;

    step(
        1,
        "Make a throwaway development PKI for EE (data holder) and FI (requester).",
    );
    let written = pki::write_dev_set(dir.path(), &[ee.clone(), fi.clone()])?;
    say(&format!(
        "{} files in {}",
        written.len(),
        dir.path().display()
    ));

    step(2, "Start EE's data service: the built-in example upstream.");
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone()).await?;
    say(&format!("serving subscriber records on http://{upstream}"));

    step(
        3,
        "Start EE's gateway: border (mTLS), admin (mTLS), ops (HTTP).",
    );
    let mut ee_config = Config::load(&dir.path().join("ee/gateway.toml"))?;
    ee_config.listeners.border = loopback();
    ee_config.listeners.admin = Some(loopback());
    ee_config.listeners.ops = Some(loopback());
    for route in &mut ee_config.routes {
        route.upstream = format!("http://{upstream}{}", route.upstream.path()).parse()?;
    }
    let listeners = Listeners::bind(&ee_config.listeners).await?;
    let gateway = Gateway::build(ee_config).await?;
    let border = listeners.border_addr();
    let admin = listeners.admin_addr();
    let ops = listeners.ops_addr();
    let gateway_stop = stop.clone();
    let running =
        tokio::spawn(gateway.serve(listeners, async move { gateway_stop.cancelled().await }));
    say(&format!(
        "border https://{border}  ops http://{}",
        show(ops)
    ));

    step(
        4,
        "FI connects to EE's border with FI's gateway certificate.",
    );
    let fi_config = Config::load(&dir.path().join("fi/gateway.toml"))?;
    let fi_client =
        BorderClient::new(tls::client_config(&fi_config).map_err(crate::config::ConfigErrors)?);
    let mut fi = fi_client.connect(border, "localhost").await?;
    say(&format!(
        "mTLS over {}; EE sees spiffe://fi.xborder.test/gateway from jurisdiction FI",
        if fi.is_http2() { "HTTP/2" } else { "HTTP/1.1" }
    ));
    let path = "/v1/data/subscriber/+3725550123";
    let (status, body) = call(&mut fi, Method::GET, path, None, None).await?;
    say(&format!(
        "GET {path} without a grant -> {status} {}",
        body["code"]
    ));

    step(
        5,
        "FI files a request that asks too much; EE's policy refuses it at filing.",
    );
    let recipient = std::fs::read_to_string(dir.path().join("fi/age-recipient.txt"))?;
    let mut greedy = request_body(recipient.trim(), &["subscriber", "content"]);
    greedy["legal_basis"] = json!("curiosity");
    greedy["targets"] = json!(
        (0..12)
            .map(|i| format!("+37255501{i:02}"))
            .collect::<Vec<_>>()
    );
    let (status, body) = call(&mut fi, Method::POST, "/v1/requests", Some(&greedy), None).await?;
    say(&format!("POST /v1/requests -> {status} {}", body["code"]));
    for finding in body["findings"].as_array().into_iter().flatten() {
        say(&format!(
            "  FAIL {}: {}",
            finding["rule"].as_str().unwrap_or(""),
            finding["reason"].as_str().unwrap_or("")
        ));
    }

    step(
        6,
        "FI files a proportionate request for subscriber data about one number.",
    );
    let request = request_body(recipient.trim(), &["subscriber"]);
    let (status, filed) = call(&mut fi, Method::POST, "/v1/requests", Some(&request), None).await?;
    let id = filed["id"].as_str().unwrap_or_default().to_owned();
    say(&format!(
        "POST /v1/requests -> {status}: request {id}, {}, response due {}",
        filed["state"], filed["deadline"]
    ));
    if status != StatusCode::CREATED {
        bail!("filing failed: {filed}");
    }

    step(
        7,
        "EE's approver reviews it on the admin listener and approves a 1-hour grant.",
    );
    let ee = dir.path().join("ee");
    let roots = tls::roots_from_file(&ee.join("ca.pem")).map_err(anyhow::Error::msg)?;
    let operator = tls::identity_from_files(&ee.join("admin.pem"), &ee.join("admin-key.pem"))
        .map_err(|e| anyhow::anyhow!("the demo's admin identity: {e:?}"))?;
    let admin_tls = tls::client_config_with(roots, operator).map_err(anyhow::Error::msg)?;
    let admin_addr = admin.context("the admin listener is configured")?;
    let mut reviewer = BorderClient::new(admin_tls)
        .connect(admin_addr, "localhost")
        .await?;
    let approve = json!({ "lifetime": "1h", "max_transfers": 10 });
    let (status, approved) = call(
        &mut reviewer,
        Method::POST,
        &format!("/v1/requests/{id}/approve"),
        Some(&approve),
        None,
    )
    .await?;
    say(&format!(
        "POST /v1/requests/{id}/approve -> {status}: {}",
        approved["state"]
    ));
    let grant_id = approved["grant"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say(&format!(
        "grant {grant_id}, expires {}",
        approved["grant"]["expires_at"]
    ));

    step(
        8,
        "FI polls its request and receives the grant token, bound to its certificate.",
    );
    let (status, view) = call(
        &mut fi,
        Method::GET,
        &format!("/v1/requests/{id}"),
        None,
        None,
    )
    .await?;
    let token = view["grant"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    say(&format!(
        "GET /v1/requests/{id} -> {status}: {}, token of {} bytes",
        view["state"],
        token.len()
    ));

    step(
        9,
        "FI pulls the evidence with the token: sealed to FI's age key, with a signed receipt.",
    );
    let identity = read_age_identity(&dir.path().join("fi/age-identity.txt"))?;
    let out = dir.path().join("fi/evidence.json");
    let fetched = crate::fetch::fetch(&mut fi, path, &token, &identity, &out).await?;
    let receipt = &fetched.receipt;
    say(&format!(
        "GET {path} -> transfer {}: {} bytes of age ciphertext for {} bytes of plaintext",
        receipt.transfer_id, receipt.ciphertext_bytes, receipt.plaintext_bytes
    ));
    say(&format!(
        "receipt signed by EE verified against GET /v1/keys; ciphertext SHA-256 {}... matches",
        &receipt.ciphertext_sha256[..16]
    ));
    say(&format!(
        "its entry {} is in EE's audit log: inclusion proven under EE's signed tree head of {} entries",
        receipt.audit_index.unwrap_or_default(),
        fetched.logged_in.size
    ));
    say(&format!(
        "decrypted with FI's age identity: {}",
        std::fs::read_to_string(&out)?
    ));

    step(
        10,
        "EE revokes the grant (incident response); the token stops working at once.",
    );
    let revoke = json!({ "reason": "demo: case closed" });
    let (status, revoked) = call(
        &mut reviewer,
        Method::POST,
        &format!("/v1/grants/{grant_id}/revoke"),
        Some(&revoke),
        None,
    )
    .await?;
    say(&format!(
        "POST /v1/grants/{grant_id}/revoke -> {status}: {}",
        revoked["state"]
    ));
    let (status, body) = call(&mut fi, Method::GET, path, None, Some(&token)).await?;
    say(&format!("GET {path} -> {status} {}", body["code"]));

    step(
        11,
        "A client without a certificate is turned away during the handshake.",
    );
    say(&anonymous_attempt(&fi_config, border).await);

    step(
        12,
        "An oversight body takes EE's audit log away and verifies it offline.",
    );
    say(&audit_log(&mut reviewer).await?);

    if args.keep_running {
        println!();
        println!("Serving until Ctrl-C. Files: {}", dir.path().display());
        println!(
            "  border  https://{border}  (mTLS; certificates in fi/client.pem, fi/client-key.pem)"
        );
        println!("  admin   https://{}  (mTLS; ee/admin.pem)", show(admin));
        println!("  ops     http://{}/metrics", show(ops));
        println!("  upstream http://{upstream}");
        super::ShutdownSignal::install()?.received().await;
    }
    stop.cancel();
    running.await.context("gateway task")??;
    println!();
    println!(
        "Demo finished: filed, refused what was too broad, reviewed, granted, transferred, revoked, audited."
    );
    Ok(())
}

/// The identity in an age-keygen style file (`AGE-SECRET-KEY-1...` line).
fn read_age_identity(path: &std::path::Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse().ok())
        .with_context(|| format!("{}: no age X25519 identity", path.display()))
}

/// Exports the log over admin as `xborder audit export` does, and checks it
/// as `xborder audit verify` does; what was verified, in one line.
async fn audit_log(admin: &mut crate::client::Connection) -> anyhow::Result<String> {
    use crate::audit::{checkpoint, entry::Entry, export, verify};
    let vkey = admin_text(admin, "/v1/audit/vkey").await?.trim().to_owned();
    let note = admin_text(admin, "/v1/audit/checkpoint").await?;
    let (name, key) = checkpoint::parse_vkey(&vkey)?;
    let head = checkpoint::open(&note, &name, &key)?;
    let page = admin_text(
        admin,
        &format!("/v1/audit/entries?start=0&limit={}", head.size),
    )
    .await?;
    let entries: Vec<Vec<u8>> = page.lines().map(|line| line.as_bytes().to_vec()).collect();
    let mut kinds = std::collections::BTreeMap::<&'static str, usize>::new();
    for line in &entries {
        *kinds.entry(Entry::parse(line)?.event.kind()).or_default() += 1;
    }
    let log = export::Export {
        header: export::Header {
            origin: head.origin.clone(),
            size: head.size,
            checkpoint: note,
        },
        entries,
    };
    let verified = verify::verify(&log, &vkey, None)?;
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    Ok(format!(
        "{} entries under {}'s signed tree head, recomputed and verified with its key alone: {}; \
         targets appear only as keyed pseudonyms",
        verified.size,
        verified.origin,
        kinds.join(", ")
    ))
}

/// A GET on the admin listener whose answer is text.
async fn admin_text(admin: &mut crate::client::Connection, path: &str) -> anyhow::Result<String> {
    let (parts, body) = client::collect(admin.send(client::get(path.parse()?)).await?).await?;
    anyhow::ensure!(
        parts.status == StatusCode::OK,
        "GET {path} -> {}",
        parts.status
    );
    Ok(String::from_utf8(body.to_vec())?)
}

/// One JSON exchange; the status and the JSON answer (or `null`).
async fn call(
    conn: &mut crate::client::Connection,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut request = http::Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let bytes = body.map(Value::to_string).unwrap_or_default();
    let request = request.body(crate::wire::full(bytes))?;
    let (parts, body) = client::collect(conn.send(request).await?).await?;
    Ok((
        parts.status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// A request body of FI's police for `categories` about one number.
fn request_body(recipient: &str, categories: &[&str]) -> Value {
    json!({
        "legal_basis": "eu-2023-1543",
        "purpose": "investigation 2026/77 into card fraud",
        "categories": categories,
        "targets": ["+3725550123"],
        "period": { "from": "2026-01-01T00:00:00Z", "to": "2026-06-30T00:00:00Z" },
        "urgency": "normal",
        "recipient": recipient,
        "justification": "the number confirmed fraudulent card payments on 2026-03-02",
    })
}

/// What happens to a caller that trusts EE's CA but presents no certificate.
async fn anonymous_attempt(fi_config: &Config, border: SocketAddr) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for anchor in fi_config.trust.values() {
        for cert in tls::read_certificates(&anchor.ca).unwrap_or_default() {
            let _ = roots.add(cert);
        }
    }
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
    else {
        return "could not build the anonymous client".to_owned();
    };
    let mut config = builder.with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = BorderClient::new(Arc::new(config));
    // Under TLS 1.3 the refusal arrives on the first read, so send a request.
    let outcome = match client.connect(border, "localhost").await {
        Ok(mut conn) => conn
            .send(client::get(http::Uri::from_static("/v1/data/subscriber/x")))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => "unexpectedly served!".to_owned(),
        Err(e) => format!("refused: {e}"),
    }
}

fn step(n: u32, text: &str) {
    println!();
    println!("{n}. {text}");
}

fn say(text: &str) {
    println!("   {text}");
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn show(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "-".to_owned(), |a| a.to_string())
}
