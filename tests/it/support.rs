//! The test harness: a throwaway PKI for EE (data holder) and FI (requester),
//! an EE gateway on ephemeral loopback ports, the example upstream, and
//! clients presenting whatever certificate a test needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use xborder::client::{self, BorderClient, ClientError, Connection};
use xborder::config::Config;
use xborder::identity::{Jurisdiction, SpiffeId};
use xborder::pki::{DevCa, Issued, LeafSpec};
use xborder::server::Gateway;
use xborder::{tls, upstream_example};

pub fn jurisdiction(cc: &str) -> Jurisdiction {
    cc.parse().expect("test jurisdictions are valid")
}

pub fn spiffe(id: &str) -> SpiffeId {
    id.parse().expect("test SPIFFE IDs are valid")
}

/// Files and CAs of one test: EE's gateway trusts EE and FI.
pub struct World {
    pub dir: tempfile::TempDir,
    pub ee: DevCa,
    pub fi: DevCa,
    pub gateway_cert: Issued,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ee = DevCa::new(&jurisdiction("EE")).unwrap();
        let fi = DevCa::new(&jurisdiction("FI")).unwrap();
        let gateway_cert = ee
            .issue(&LeafSpec::server(spiffe(
                "spiffe://ee.xborder.test/gateway",
            )))
            .unwrap();
        let world = Self {
            dir,
            ee,
            fi,
            gateway_cert,
        };
        world.write("ee/ca.pem", &world.ee.cert_pem());
        world.write("ee/ca.crl", &world.ee.crl_pem(&[]).unwrap());
        world.write("fi/ca.pem", &world.fi.cert_pem());
        world.write("fi/ca.crl", &world.fi.crl_pem(&[]).unwrap());
        world.write("ee/gateway.pem", &world.gateway_cert.cert_pem());
        world.write("ee/gateway-key.pem", &world.gateway_cert.key_pem());
        world
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file atomically, as an operator's tooling would.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// EE's gateway config, listeners on ephemeral ports, short timeouts.
    pub fn config_text(&self, upstream: SocketAddr) -> String {
        format!(
            r#"
jurisdiction = "EE"
data_dir = "data"

[listeners]
border = "127.0.0.1:0"
admin = "127.0.0.1:0"
ops = "127.0.0.1:0"

[identity]
certificate = "gateway.pem"
key = "gateway-key.pem"

[timeouts]
tls_handshake = "2s"
header_read = "1s"
idle = "2s"
upstream_connect = "1s"
shutdown_grace = "20s"

[reload]
interval = "100ms"

[admin]
identities = ["spiffe://ee.xborder.test/admin/operator"]

[trust.EE]
trust_domain = "ee.xborder.test"
ca = "ca.pem"
crls = ["ca.crl"]

[trust.FI]
trust_domain = "fi.xborder.test"
ca = "../fi/ca.pem"
crls = ["../fi/ca.crl"]

[[routes]]
prefix = "/v1/data/subscriber"
upstream = "http://{upstream}/subscriber"
category = "subscriber"

[[routes]]
prefix = "/v1/data/content"
upstream = "http://{upstream}"
category = "content"
"#
        )
    }

    pub fn config(&self, upstream: SocketAddr) -> Config {
        self.write("ee/gateway.toml", &self.config_text(upstream));
        Config::load(&self.path("ee/gateway.toml")).unwrap()
    }

    /// A client certificate of FI's police, issued by FI's CA.
    pub fn fi_police(&self) -> Issued {
        self.fi
            .issue(&LeafSpec::client(spiffe(
                "spiffe://fi.xborder.test/agency/police",
            )))
            .unwrap()
    }

    /// A client that trusts EE's CA and presents `cert`, offering h2 and http/1.1.
    pub fn client(&self, cert: Option<&Issued>) -> BorderClient {
        self.client_alpn(cert, &[b"h2", b"http/1.1"])
    }

    pub fn client_alpn(&self, cert: Option<&Issued>, alpn: &[&[u8]]) -> BorderClient {
        BorderClient::new(Arc::new(self.client_config(cert, alpn)))
    }

    pub fn client_config(&self, cert: Option<&Issued>, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ee.cert_der()).unwrap();
        let mut config = match cert {
            Some(cert) => {
                let key = tls::provider()
                    .key_provider
                    .load_private_key(cert.key_der())
                    .unwrap();
                let certified = CertifiedKey::new(vec![cert.cert_der()], key);
                (*tls::client_config_with(roots, Arc::new(certified)).unwrap()).clone()
            }
            None => rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// A running EE gateway with the example upstream behind it.
pub struct Running {
    pub border: SocketAddr,
    pub admin: SocketAddr,
    pub ops: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(world: &World) -> Self {
        let stop = CancellationToken::new();
        let upstream = upstream_example::spawn(loopback(), stop.clone())
            .await
            .unwrap();
        Self::start_with(world.config(upstream), stop).await
    }

    pub async fn start_with(config: Config, stop: CancellationToken) -> Self {
        let gateway = Gateway::bind(config).await.unwrap();
        let border = gateway.border_addr();
        let admin = gateway.admin_addr().unwrap();
        let ops = gateway.ops_addr().unwrap();
        let signal = stop.clone();
        let task = tokio::spawn(gateway.run(async move { signal.cancelled().await }));
        Self {
            border,
            admin,
            ops,
            stop,
            task,
        }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway drains within its grace period")
            .unwrap();
    }

    /// One metric sample from the ops listener, e.g.
    /// `xborder_tls_handshakes_total{listener="border",result="refused"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = plain_get(self.ops, "/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One GET on a fresh connection; the whole body.
pub async fn get(
    client: &BorderClient,
    addr: SocketAddr,
    path: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let mut conn = client.connect(addr, "localhost").await?;
    get_on(&mut conn, path).await
}

pub async fn get_on(conn: &mut Connection, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
    let response = conn.send(client::get(path.parse().unwrap())).await?;
    let (parts, body) = client::collect(response).await?;
    Ok((parts.status, body))
}

/// Asserts that `client` is refused at `addr`; returns what the client saw.
pub async fn assert_refused(client: &BorderClient, addr: SocketAddr) -> String {
    match get(client, addr, "/v1/data/subscriber/372-5550123").await {
        Ok((status, body)) => panic!("served with {status}: {}", String::from_utf8_lossy(&body)),
        Err(e) => e.to_string(),
    }
}

/// A plain-HTTP GET (for the ops listener).
pub async fn plain_get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `check` every 50 ms until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
