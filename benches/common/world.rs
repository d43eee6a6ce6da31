//! A gateway's world in a tempdir, as the integration tests set it up: dev
//! CAs for EE (the holder) and FI (the requester), the gateway's
//! certificate and keys, its config with a policy for FI and routes to one
//! upstream; and a grant for FI's police, filed, approved and its token
//! fetched over the gateway's own APIs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use xborder::client::{self, BorderClient, Connection};
use xborder::grant::token::TokenKeys;
use xborder::pki::{DevCa, Issued, LeafSpec};
use xborder::tls;

/// The one target every bench transfer names.
pub const TARGET: &str = "+3725550123";

pub struct World {
    dir: tempfile::TempDir,
    pub ee: DevCa,
    pub fi: DevCa,
    /// The gateway's server certificate (also the peers' in a comparison).
    pub gateway: Issued,
    /// FI's police: the requester, holder of the grant.
    pub police: Issued,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a tempdir");
        let ee = DevCa::new(&"EE".parse().expect("EE")).expect("EE's dev CA");
        let fi = DevCa::new(&"FI".parse().expect("FI")).expect("FI's dev CA");
        let gateway = issue_server(&ee, "spiffe://ee.xborder.test/gateway");
        let police = issue(&fi, "spiffe://fi.xborder.test/agency/police");
        let world = Self {
            dir,
            ee,
            fi,
            gateway,
            police,
        };
        world.write("ee/ca.pem", &world.ee.cert_pem());
        world.write("ee/ca.crl", &world.ee.crl_pem(&[]).expect("an empty CRL"));
        world.write("fi/ca.pem", &world.fi.cert_pem());
        world.write("fi/ca.crl", &world.fi.crl_pem(&[]).expect("an empty CRL"));
        world.write("ee/gateway.pem", &world.gateway.cert_pem());
        world.write("ee/gateway-key.pem", &world.gateway.key_pem());
        TokenKeys::generate_file(&world.path("ee/token-key.pem")).expect("a token signing key");
        TokenKeys::generate_file(&world.path("ee/audit-key.pem")).expect("an audit signing key");
        world.write("ee/audit-pseudonym.key", &"ab".repeat(32));
        world
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("a file under the tempdir"))
            .expect("create a directory in the tempdir");
        std::fs::write(&path, text).expect("write a file in the tempdir");
    }

    /// Writes EE's gateway config for `upstream` and returns its path.
    pub fn gateway_config(&self, upstream: SocketAddr) -> PathBuf {
        self.write("ee/gateway.toml", &config_text(upstream));
        self.path("ee/gateway.toml")
    }

    /// A client with `cert` that trusts EE's CA for the server, offering h2
    /// and http/1.1, as the gateway's own outbound calls do.
    pub fn client(&self, cert: &Issued) -> BorderClient {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ee.cert_der())
            .expect("the dev CA is a usable root");
        let key = tls::provider()
            .key_provider
            .load_private_key(cert.key_der())
            .expect("ring loads a dev key");
        let certified = CertifiedKey::new(vec![cert.cert_der()], key);
        let config = tls::client_config_with(roots, Arc::new(certified))
            .expect("a client config from a dev certificate");
        BorderClient::new(config)
    }

    /// FI's police file a request for [`TARGET`] on `border`, alice approves
    /// it on `admin`; the grant's token.
    pub async fn grant_token(&self, border: SocketAddr, admin: SocketAddr) -> String {
        let requester = self.client(&self.police);
        let alice = self.client(&issue(&self.ee, "spiffe://ee.xborder.test/admin/alice"));
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let body = serde_json::json!({
            "legal_basis": "eu-2023-1543",
            "purpose": "benchmark",
            "categories": ["subscriber", "traffic", "content"],
            "targets": [TARGET],
            "period": { "from": "2026-01-01T00:00:00Z", "to": "2026-06-30T00:00:00Z" },
            "urgency": "normal",
            "recipient": recipient,
            "justification": "measuring the gateway on loopback",
        });
        let mut conn = connect(&requester, border).await;
        let (status, filed) = send_json(&mut conn, Method::POST, "/v1/requests", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "filing: {filed}");
        let id = filed["id"]
            .as_str()
            .expect("a filed request has an id")
            .to_owned();
        let mut admin = connect(&alice, admin).await;
        let approve = serde_json::json!({});
        let path = format!("/v1/requests/{id}/approve");
        let (status, answer) = send_json(&mut admin, Method::POST, &path, Some(&approve)).await;
        assert!(status.is_success(), "approval: {status}: {answer}");
        let path = format!("/v1/requests/{id}");
        let (status, view) = send_json(&mut conn, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "request view: {view}");
        view["grant"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("an approved request carries its token: {view}"))
            .to_owned()
    }
}

fn issue(ca: &DevCa, id: &str) -> Issued {
    ca.issue(&LeafSpec::client(id.parse().expect("a SPIFFE ID")))
        .expect("a dev CA issues a client leaf")
}

fn issue_server(ca: &DevCa, id: &str) -> Issued {
    ca.issue(&LeafSpec::server(id.parse().expect("a SPIFFE ID")))
        .expect("a dev CA issues a server leaf")
}

pub async fn connect(client: &BorderClient, addr: SocketAddr) -> Connection {
    client
        .connect(addr, "localhost")
        .await
        .expect("an mTLS connection to the gateway")
}

async fn send_json(
    conn: &mut Connection,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(xborder::wire::full(bytes))
        .expect("a well-formed request");
    let response = conn.send(request).await.expect("the gateway answers");
    let (parts, body) = client::collect(response).await.expect("a JSON body");
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, value)
}

/// EE's gateway config, as the integration tests write it, with rate limits
/// far above what loopback can reach and timeouts that outlast a 256 MiB
/// body. Routes (all to `upstream`): subscriber and content sealed, traffic
/// `/v1/data/raw` passed through.
fn config_text(upstream: SocketAddr) -> String {
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
tls_handshake = "5s"
header_read = "5s"
idle = "60s"
upstream_connect = "2s"
shutdown_grace = "5s"

[tokens]
signing_key = "token-key.pem"

[audit]
signing_key = "audit-key.pem"
pseudonym_key = "audit-pseudonym.key"

[admin.identities]
"spiffe://ee.xborder.test/admin/alice" = ["approver"]

[policy.EE.FI]
legal_bases = ["eu-2023-1543"]
categories = ["subscriber", "traffic", "content"]
forbidden_categories = ["ip_identification"]
max_targets = 5
max_period = "366d"
max_lifetime = "30d"
max_lifetime_emergency = "3d"

[policy.EE.FI.rate]
bytes_per_second = 4000000000
byte_burst = 4000000000
requests_per_second = 1000000
request_burst = 1000000

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
upstream = "http://{upstream}/content"
category = "content"
parameters = ["bytes", "drip_ms"]

[[routes]]
prefix = "/v1/data/raw"
upstream = "http://{upstream}/raw"
category = "traffic"
seal = false
parameters = ["bytes", "drip_ms"]
"#
    )
}
