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
use xborder::grant::token::TokenKeys;
use xborder::identity::{Jurisdiction, SpiffeId};
use xborder::pki::{DevCa, Issued, LeafSpec};
use xborder::server::{Gateway, Listeners};
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
        TokenKeys::generate_file(&world.path("ee/token-key.pem")).unwrap();
        TokenKeys::generate_file(&world.path("ee/audit-key.pem")).unwrap();
        world.write("ee/audit-pseudonym.key", &hex::encode(PSEUDONYM_KEY));
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

[tokens]
signing_key = "token-key.pem"

[audit]
signing_key = "audit-key.pem"
pseudonym_key = "audit-pseudonym.key"

[admin.identities]
"spiffe://ee.xborder.test/admin/operator" = ["operator", "approver", "reviewer"]
"spiffe://ee.xborder.test/admin/olga" = ["auditor"]
"spiffe://ee.xborder.test/admin/alice" = ["approver"]
"spiffe://ee.xborder.test/admin/bob" = ["approver"]
"spiffe://ee.xborder.test/admin/rita" = ["reviewer"]

[policy.EE.FI]
legal_bases = ["eu-2023-1543"]
categories = ["subscriber", "traffic", "content"]
forbidden_categories = ["ip_identification"]
max_targets = 5
max_period = "366d"
max_lifetime = "30d"
max_lifetime_emergency = "3d"

[policy.EE.FI.approvals]
content = 2

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
parameters = ["fields"]

[[routes]]
prefix = "/v1/data/content"
upstream = "http://{upstream}/content"
category = "content"
parameters = ["bytes"]
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
        let gateway = Gateway::build(config).await.unwrap();
        let listeners = Listeners {
            border: bind_loopback().await,
            admin: Some(bind_loopback().await),
            ops: Some(bind_loopback().await),
            local: None,
        };
        let border = listeners.border_addr();
        let admin = listeners.admin_addr().unwrap();
        let ops = listeners.ops_addr().unwrap();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            gateway
                .serve(listeners, async move { signal.cancelled().await })
                .await
                .unwrap()
        });
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

/// A listener on a free loopback port.
pub async fn bind_loopback() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind(loopback()).await.unwrap()
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
    match get(client, addr, "/v1/data/subscriber/+3725550123").await {
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

/// FI's age recipient in request bodies, and its identity (test-only key).
/// EE's audit pseudonym key in the test world: tests compute the pseudonym
/// a target must have in the log.
pub const PSEUDONYM_KEY: [u8; 32] = [0x5a; 32];

pub const RECIPIENT: &str = "age1sku64zu8tak3q3a5kgk44z4kaj4k2x833f2vlrjwv8dqrz9vrdhsstdztc";
pub const IDENTITY: &str =
    "AGE-SECRET-KEY-1LEVYW5RMLCDUW5UC85W62G9AMS7E0VGDCHWUVJ7N5ED7FA6L5P2QYX0TPP";

/// Decrypts a sealed payload with [`IDENTITY`], as the requester would.
pub fn open_sealed(ciphertext: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let identity: age::x25519::Identity = IDENTITY.parse().unwrap();
    let decryptor = age::Decryptor::new(ciphertext).expect("an age header");
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .expect("sealed to our recipient");
    let mut plaintext = Vec::new();
    reader
        .read_to_end(&mut plaintext)
        .expect("a whole, untruncated age stream");
    plaintext
}

/// A request body asking for `categories` about two targets.
pub fn request_body(categories: &[&str], urgency: &str) -> serde_json::Value {
    serde_json::json!({
        "legal_basis": "eu-2023-1543",
        "purpose": "investigation 2026/77 into card fraud",
        "categories": categories,
        "targets": ["+3725550123", "+3725550124"],
        "period": { "from": "2026-01-01T00:00:00Z", "to": "2026-06-30T00:00:00Z" },
        "urgency": urgency,
        "recipient": RECIPIENT,
        "justification": "the suspect used these numbers to confirm fraudulent payments",
    })
}

/// Sends `body` as JSON with `method` on a fresh connection; status and JSON answer.
pub async fn send_json(
    client: &BorderClient,
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut conn = client.connect(addr, "localhost").await.unwrap();
    send_json_on(&mut conn, method, path, body, token).await
}

pub async fn send_json_on(
    conn: &mut Connection,
    method: http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = http::Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(xborder::wire::full(bytes)).unwrap();
    let (parts, body) = client::collect(conn.send(request).await.unwrap())
        .await
        .unwrap();
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, value)
}

/// An admin identity of EE's (`operator`, `alice`, `bob`, `rita`).
pub fn admin(world: &World, name: &str) -> BorderClient {
    let cert = world
        .ee
        .issue(&LeafSpec::client(spiffe(&format!(
            "spiffe://ee.xborder.test/admin/{name}"
        ))))
        .unwrap();
    world.client(Some(&cert))
}

/// Revokes `grant` on `admin_addr` as EE's operator, for an incident.
pub async fn revoke(world: &World, admin_addr: SocketAddr, grant: &str) {
    let (status, answer) = send_json(
        &admin(world, "operator"),
        admin_addr,
        http::Method::POST,
        &format!("/v1/grants/{grant}/revoke"),
        Some(&serde_json::json!({ "reason": "incident" })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// `grant` as EE's operator sees it on `admin_addr`.
pub async fn grant_view(world: &World, admin_addr: SocketAddr, grant: &str) -> serde_json::Value {
    let (status, view) = send_json(
        &admin(world, "operator"),
        admin_addr,
        http::Method::GET,
        &format!("/v1/grants/{grant}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

/// Files a request as `cert`'s holder; the request's JSON as the border returns it.
pub async fn file(
    world: &World,
    border: SocketAddr,
    cert: &Issued,
    body: &serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    send_json(
        &world.client(Some(cert)),
        border,
        http::Method::POST,
        "/v1/requests",
        Some(body),
        None,
    )
    .await
}

/// Files a request for `categories` as `cert`, has it approved by as many
/// approvers as it needs, and returns the grant token.
pub async fn grant_token(
    world: &World,
    border: SocketAddr,
    admin_addr: SocketAddr,
    cert: &Issued,
    categories: &[&str],
) -> String {
    grant_with(
        world,
        border,
        admin_addr,
        cert,
        categories,
        serde_json::json!({}),
    )
    .await
    .0
}

/// As [`grant_token`], with the approvers' `terms` (lifetime, quotas); the
/// token and the grant id.
pub async fn grant_with(
    world: &World,
    border: SocketAddr,
    admin_addr: SocketAddr,
    cert: &Issued,
    categories: &[&str],
    terms: serde_json::Value,
) -> (String, String) {
    let (status, filed) = file(world, border, cert, &request_body(categories, "normal")).await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["id"].as_str().unwrap().to_owned();
    for approver in ["alice", "bob"] {
        let (status, answer) = send_json(
            &admin(world, approver),
            admin_addr,
            http::Method::POST,
            &format!("/v1/requests/{id}/approve"),
            Some(&terms),
            None,
        )
        .await;
        assert!(status.is_success(), "{status}: {answer}");
        if answer["state"] == "approved" {
            break;
        }
    }
    let (status, view) = send_json(
        &world.client(Some(cert)),
        border,
        http::Method::GET,
        &format!("/v1/requests/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let token = view["grant"]["token"]
        .as_str()
        .expect("approved request carries its token");
    (
        token.to_owned(),
        view["grant"]["id"].as_str().unwrap().to_owned(),
    )
}

/// A GET with a bearer token on `conn`.
pub async fn get_with(
    conn: &mut Connection,
    path: &str,
    token: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let request = client::bearer_get(path.parse().unwrap(), token);
    let response = conn.send(request).await?;
    let (parts, body) = client::collect(response).await?;
    Ok((parts.status, body))
}

/// A path that any verified peer may GET: an unknown request, answered 404.
pub const PING: &str = "/v1/requests/00000000-0000-4000-8000-000000000000";

/// GET `path` on a fresh connection as `cert`, with `token` if any; the
/// status, the transfer id the gateway named, and the raw body.
pub async fn pull_raw(
    world: &World,
    border: SocketAddr,
    cert: &Issued,
    token: Option<&str>,
    path: &str,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut conn = world
        .client(Some(cert))
        .connect(border, "localhost")
        .await
        .unwrap();
    let uri = path.parse().unwrap();
    let request = match token {
        Some(token) => client::bearer_get(uri, token),
        None => client::get(uri),
    };
    let response = conn.send(request).await.unwrap();
    let status = response.status();
    let transfer = response
        .headers()
        .get("x-xborder-transfer")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, transfer, body)
}
