//! `xborder demo`: one exchange across a border on loopback, told step by step.
//!
//! EE holds data behind its gateway; FI's gateway calls through EE's border
//! over mTLS. Everything lives in a temporary directory and in this process.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use http::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::client::{self, BorderClient};
use crate::config::Config;
use crate::identity::Jurisdiction;
use crate::server::Gateway;
use crate::{pki, tls, upstream_example};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the gateway and the example upstream serving after the walk-through.
    #[arg(long)]
    keep_running: bool,
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
    let gateway = Gateway::bind(ee_config).await?;
    let border = gateway.border_addr();
    let admin = gateway.admin_addr();
    let ops = gateway.ops_addr();
    let gateway_stop = stop.clone();
    let running = tokio::spawn(gateway.run(async move { gateway_stop.cancelled().await }));
    say(&format!(
        "border https://{border}  ops http://{}",
        show(ops)
    ));

    step(4, "FI calls EE's border with FI's gateway certificate.");
    let fi_config = Config::load(&dir.path().join("fi/gateway.toml"))?;
    let fi_client =
        BorderClient::new(tls::client_config(&fi_config).map_err(crate::config::ConfigErrors)?);
    let mut conn = fi_client.connect(border, "localhost").await?;
    say(&format!(
        "mTLS established over {}; EE sees spiffe://fi.xborder.test/gateway from jurisdiction FI",
        if conn.is_http2() {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        }
    ));
    let path = "/v1/data/subscriber/372-5550123";
    let (parts, body) = client::collect(conn.send(client::get(path.parse()?)).await?).await?;
    say(&format!("GET {path} -> {}", parts.status));
    say(&format!("  {}", String::from_utf8_lossy(&body)));
    if parts.status != StatusCode::OK {
        bail!("the routed call failed with {}", parts.status);
    }

    step(5, "A path no route serves is refused with problem+json.");
    let (parts, body) =
        client::collect(conn.send(client::get("/v1/data/unknown".parse()?)).await?).await?;
    say(&format!(
        "GET /v1/data/unknown -> {}  {}",
        parts.status,
        String::from_utf8_lossy(&body)
    ));

    step(
        6,
        "A client without a certificate is turned away during the handshake.",
    );
    say(&anonymous_attempt(&fi_config, border).await);

    if args.keep_running {
        println!();
        println!("Serving until Ctrl-C. Files: {}", dir.path().display());
        println!(
            "  border  https://{border}  (mTLS; certificates in fi/client.pem, fi/client-key.pem)"
        );
        println!("  admin   https://{}  (mTLS; ee/admin.pem)", show(admin));
        println!("  ops     http://{}/metrics", show(ops));
        println!("  upstream http://{upstream}");
        super::shutdown_signal().await;
    }
    stop.cancel();
    running.await.context("gateway task")?;
    println!();
    println!("Demo finished: EE's gateway served FI over mTLS and refused what it should.");
    Ok(())
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
