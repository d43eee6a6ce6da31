//! End-to-end transfer benchmark, measured in one run, printed as one table.
//!
//! 1. **Primitives bound.** The three per-byte passes a sealed transfer costs
//!    the gateway, each over the same bytes: ChaCha20-Poly1305 in 64 KiB
//!    chunks (age's STREAM cipher), SHA-256 (run twice: plaintext and
//!    ciphertext) and the TLS record layer, priced as rustls does it: a
//!    loopback TLS 1.3 stream between a rustls server and client in this
//!    process (ring provider), N MiB written through it, so AES-GCM, framing
//!    and the socket copies are all in. Bound = 1 / (1/chacha + 2/sha256 +
//!    1/tls): one core doing every pass in sequence.
//! 2. **End-to-end throughput, age on.** An EE gateway in a tempdir, set up as
//!    the integration tests do, the example upstream behind it; FI files a
//!    request, alice approves it, FI pulls `/v1/data/content/…?bytes=256 MiB`
//!    three times on one connection, reading every body to its end (bytes
//!    counted, not decrypted). Plaintext MB/s, and its ratio to the bound.
//! 3. **Latency of the checks.** 2000 sequential small transfers (a ~200 byte
//!    subscriber record) through the gateway on one keep-alive connection
//!    against 2000 direct plain-HTTP GETs to the upstream: p50 and p99 of
//!    each and the difference. Every gateway transfer writes its receipt to
//!    SQLite with a synchronous commit (fsync), and that is measured too.
//!
//! `cargo bench --bench transfer`; the table is also written as TSV to
//! `target/bench-transfer.tsv`. Every loop is bounded by count and by time;
//! all traffic stays on 127.0.0.1.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chacha20poly1305::aead::AeadInPlace as _;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use xborder::client::{self, BorderClient, Connection};
use xborder::grant::token::TokenKeys;
use xborder::identity::{Jurisdiction, SpiffeId};
use xborder::pki::{DevCa, Issued, LeafSpec};
use xborder::server::Gateway;
use xborder::{tls, upstream_example};

const MIB: usize = 1 << 20;
const CHUNK: usize = 64 << 10;
/// Bytes each primitive pass runs over.
const PRIMITIVE_BYTES: usize = 64 * MIB;
/// Passes per primitive; the fastest counts (least disturbed by the machine).
const PRIMITIVE_PASSES: usize = 5;
/// Bytes written through the loopback TLS stream, per pass.
const TLS_BYTES: usize = 256 * MIB;
const TLS_PASSES: usize = 2;
/// Plaintext bytes per end-to-end transfer, and how many.
const E2E_BYTES: usize = 256 * MIB;
const E2E_ROUNDS: usize = 3;
/// Sequential small transfers, through the gateway and direct.
const SMALL_COUNT: usize = 2000;
const SMALL_WARMUP: usize = 50;
/// Time limits: every loop stops at its limit even if short of its count.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
const SMALL_LIMIT: Duration = Duration::from_secs(45);
const TARGET: &str = "+3725550123";
/// The ratio end-to-end / bound the gateway should reach.
const RATIO_TARGET: f64 = 0.6;

fn main() {
    let mut table = Table::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built on this machine");

    // 1. Primitives, on this (main) thread while the runtime is idle.
    let data: Vec<u8> = (0..PRIMITIVE_BYTES)
        .map(|i| (i * 31 + i / 251) as u8)
        .collect();
    let chacha = mb_per_s(
        PRIMITIVE_BYTES,
        best_of(PRIMITIVE_PASSES, || chacha_pass(&data)),
    );
    let sha256 = mb_per_s(
        PRIMITIVE_BYTES,
        best_of(PRIMITIVE_PASSES, || sha256_pass(&data)),
    );
    drop(data);
    let (tls_time, suite) = runtime.block_on(tls_stream());
    let tls_rate = mb_per_s(TLS_BYTES, tls_time);
    let bound = 1.0 / (1.0 / chacha + 2.0 / sha256 + 1.0 / tls_rate);
    table.row(
        "chacha20poly1305 64KiB chunks",
        chacha,
        "MB/s",
        format!("in place, STREAM nonces, best of {PRIMITIVE_PASSES} x 64 MiB"),
    );
    table.row(
        "sha256",
        sha256,
        "MB/s",
        format!("64 KiB updates, best of {PRIMITIVE_PASSES} x 64 MiB"),
    );
    table.row(
        "tls1.3 loopback stream",
        tls_rate,
        "MB/s",
        format!(
            "{suite}, rustls+ring, writer and reader tasks, best of {TLS_PASSES} x {} MiB",
            TLS_BYTES / MIB
        ),
    );
    table.row(
        "bound 1/(1/chacha+2/sha256+1/tls)",
        bound,
        "MB/s",
        "one core, passes in sequence".to_owned(),
    );

    // 2 and 3 against one gateway.
    runtime.block_on(async {
        let bench = Bench::start().await;
        bench.throughput(&mut table, bound).await;
        bench.latency(&mut table).await;
        bench.shutdown().await;
    });

    table.print();
    let tsv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-transfer.tsv");
    match std::fs::write(&tsv, table.tsv()) {
        Ok(()) => println!("written to {}", tsv.display()),
        Err(e) => eprintln!("cannot write {}: {e}", tsv.display()),
    }
}

// ---------------------------------------------------------------------------
// Primitives

/// The fastest of `passes` runs of `pass`.
fn best_of(passes: usize, mut pass: impl FnMut()) -> Duration {
    (0..passes)
        .map(|_| {
            let start = Instant::now();
            pass();
            start.elapsed()
        })
        .min()
        .expect("at least one pass")
}

/// ChaCha20-Poly1305 over `data` in 64 KiB chunks, each with its own nonce,
/// as age's STREAM construction does (into a scratch chunk: no allocation).
fn chacha_pass(data: &[u8]) {
    let aead = ChaCha20Poly1305::new(&[7; 32].into());
    let mut chunk = vec![0u8; CHUNK];
    for (counter, piece) in data.chunks(CHUNK).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[3..11].copy_from_slice(&(counter as u64).to_be_bytes());
        let buf = &mut chunk[..piece.len()];
        buf.copy_from_slice(piece);
        let tag = aead
            .encrypt_in_place_detached(&nonce.into(), b"", buf)
            .expect("64 KiB is far below the AEAD's length limit");
        black_box(tag);
    }
    black_box(&chunk);
}

fn sha256_pass(data: &[u8]) {
    let mut hasher = Sha256::new();
    for piece in data.chunks(CHUNK) {
        hasher.update(piece);
    }
    black_box(hasher.finalize());
}

/// The fastest of [`TLS_PASSES`] passes of [`TLS_BYTES`] through a loopback
/// TLS 1.3 connection (each on a fresh connection, handshake not timed), and
/// the negotiated cipher suite.
async fn tls_stream() -> (Duration, String) {
    let ca = DevCa::new(&jurisdiction("EE")).expect("a dev CA can be made");
    let leaf = ca
        .issue(&LeafSpec::server(spiffe(
            "spiffe://ee.xborder.test/tls-bench",
        )))
        .expect("a dev CA issues a server leaf");
    let server = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
        .expect("the dev leaf and its key match");
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der())
        .expect("the dev CA is a usable root");
    let client = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));

    let mut best = Duration::MAX;
    let mut suite = String::new();
    // One short warm-up pass, then the measured ones.
    for (pass, bytes) in std::iter::once(16 * MIB)
        .chain(std::iter::repeat_n(TLS_BYTES, TLS_PASSES))
        .enumerate()
    {
        let listener = TcpListener::bind(loopback())
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let acceptor = acceptor.clone();
        let reader = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("the client connects");
            let _ = tcp.set_nodelay(true);
            let mut tls = acceptor.accept(tcp).await.expect("TLS handshake (server)");
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0;
            while got < bytes {
                let n = tls.read(&mut buf).await.expect("TLS read");
                assert!(n > 0, "stream ended after {got} of {bytes} bytes");
                got += n;
            }
            Instant::now()
        });
        let tcp = TcpStream::connect(addr)
            .await
            .expect("connect to 127.0.0.1");
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("localhost").expect("a valid server name");
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake (client)");
        suite = tls
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        let chunk = vec![0x5au8; CHUNK];
        let start = Instant::now();
        let write = async {
            for _ in 0..bytes / CHUNK {
                tls.write_all(&chunk).await.expect("TLS write");
            }
            tls.flush().await.expect("TLS flush");
        };
        tokio::time::timeout(ROUND_LIMIT, write)
            .await
            .expect("TLS pass within its time limit");
        let done = tokio::time::timeout(ROUND_LIMIT, reader)
            .await
            .expect("TLS reader within its time limit")
            .expect("TLS reader task");
        if pass > 0 {
            best = best.min(done - start);
        }
    }
    (best, suite)
}

// ---------------------------------------------------------------------------
// The gateway

/// A running EE gateway with the example upstream, and FI's grant token.
struct Bench {
    _dir: tempfile::TempDir,
    upstream: SocketAddr,
    border: SocketAddr,
    fi: BorderClient,
    token: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Bench {
    /// What the integration tests set up: a PKI for EE and FI in a tempdir,
    /// the gateway's files and config, the gateway on ephemeral loopback
    /// ports; then a request filed by FI and approved by alice.
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("a tempdir");
        let ee = DevCa::new(&jurisdiction("EE")).expect("EE's dev CA");
        let fi = DevCa::new(&jurisdiction("FI")).expect("FI's dev CA");
        let gateway_cert = ee
            .issue(&LeafSpec::server(spiffe(
                "spiffe://ee.xborder.test/gateway",
            )))
            .expect("the gateway's certificate");
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("a file under the tempdir"))
                .expect("create a directory in the tempdir");
            std::fs::write(&path, text).expect("write a file in the tempdir");
        };
        write("ee/ca.pem", &ee.cert_pem());
        write("ee/ca.crl", &ee.crl_pem(&[]).expect("an empty CRL"));
        write("fi/ca.pem", &fi.cert_pem());
        write("fi/ca.crl", &fi.crl_pem(&[]).expect("an empty CRL"));
        write("ee/gateway.pem", &gateway_cert.cert_pem());
        write("ee/gateway-key.pem", &gateway_cert.key_pem());
        TokenKeys::generate_file(&dir.path().join("ee/token-key.pem"))
            .expect("a token signing key");
        TokenKeys::generate_file(&dir.path().join("ee/audit-key.pem"))
            .expect("an audit signing key");
        write("ee/audit-pseudonym.key", &"ab".repeat(32));

        let stop = CancellationToken::new();
        let upstream = upstream_example::spawn(loopback(), stop.clone())
            .await
            .expect("the example upstream binds 127.0.0.1:0");
        write("ee/gateway.toml", &config_text(upstream));
        let config = xborder::config::Config::load(&dir.path().join("ee/gateway.toml"))
            .expect("the bench config is valid");
        let gateway = Gateway::bind(config).await.expect("the gateway starts");
        let border = gateway.border_addr();
        let admin_addr = gateway.admin_addr().expect("an admin listener");
        let signal = stop.clone();
        let task = tokio::spawn(gateway.run(async move { signal.cancelled().await }));

        let fi = client_for(&ee, &issue(&fi, "spiffe://fi.xborder.test/agency/police"));
        let alice = client_for(&ee, &issue(&ee, "spiffe://ee.xborder.test/admin/alice"));
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let body = serde_json::json!({
            "legal_basis": "eu-2023-1543",
            "purpose": "throughput benchmark",
            "categories": ["subscriber", "content"],
            "targets": [TARGET],
            "period": { "from": "2026-01-01T00:00:00Z", "to": "2026-06-30T00:00:00Z" },
            "urgency": "normal",
            "recipient": recipient,
            "justification": "measuring the gateway on loopback",
        });
        let mut conn = connect(&fi, border).await;
        let (status, filed) = send_json(&mut conn, Method::POST, "/v1/requests", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "filing: {filed}");
        let id = filed["id"]
            .as_str()
            .expect("a filed request has an id")
            .to_owned();
        let mut admin = connect(&alice, admin_addr).await;
        let approve = serde_json::json!({});
        let path = format!("/v1/requests/{id}/approve");
        let (status, answer) = send_json(&mut admin, Method::POST, &path, Some(&approve)).await;
        assert!(status.is_success(), "approval: {status}: {answer}");
        let path = format!("/v1/requests/{id}");
        let (status, view) = send_json(&mut conn, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "request view: {view}");
        let token = view["grant"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("an approved request carries its token: {view}"))
            .to_owned();
        Self {
            _dir: dir,
            upstream,
            border,
            fi,
            token,
            stop,
            task,
        }
    }

    /// Section 2: large sealed transfers on one connection.
    async fn throughput(&self, table: &mut Table, bound: f64) {
        let mut conn = connect(&self.fi, self.border).await;
        let protocol = if conn.is_http2() { "h2" } else { "http/1.1" };
        let path = format!("/v1/data/content/{TARGET}?bytes={E2E_BYTES}");
        // Warm-up: a small transfer over the same path.
        let warm = format!("/v1/data/content/{TARGET}?bytes={}", 4 * MIB);
        self.pull(&mut conn, &warm).await;
        let mut rates = Vec::new();
        let mut sealed = 0;
        for _ in 0..E2E_ROUNDS {
            let start = Instant::now();
            sealed = tokio::time::timeout(ROUND_LIMIT, self.pull(&mut conn, &path))
                .await
                .expect("a 256 MiB transfer within its time limit");
            rates.push(mb_per_s(E2E_BYTES, start.elapsed()));
        }
        assert!(
            sealed > E2E_BYTES,
            "sealed body of {sealed} bytes is shorter than its {E2E_BYTES} bytes of plaintext"
        );
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let best = sorted[sorted.len() - 1];
        let rounds = rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        table.row(
            "e2e sealed transfer 256 MiB (median)",
            median,
            "MB/s",
            format!(
                "ratio {:.2} of bound (target >= {RATIO_TARGET}); plaintext MB/s; {protocol}, mTLS; \
                 rounds: {rounds}; body {sealed} B",
                median / bound
            ),
        );
        table.row(
            "e2e sealed transfer 256 MiB (best)",
            best,
            "MB/s",
            format!("ratio {:.2} of bound", best / bound),
        );
    }

    /// Reads a transfer's sealed body to its end; the ciphertext bytes.
    async fn pull(&self, conn: &mut Connection, path: &str) -> usize {
        let response = conn
            .send(self.authorized(path))
            .await
            .expect("the gateway answers a transfer");
        let status = response.status();
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            panic!(
                "transfer refused: {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("the sealed body streams").data_ref() {
                bytes += data.len();
            }
        }
        bytes
    }

    /// Section 3: small transfers through the gateway against direct GETs.
    async fn latency(&self, table: &mut Table) {
        let path = format!("/v1/data/subscriber/{TARGET}");
        let mut conn = connect(&self.fi, self.border).await;
        let protocol = if conn.is_http2() { "h2" } else { "http/1.1" };
        let authorized = self.authorized(&path);
        let mut size = 0;
        let mut gateway = Vec::with_capacity(SMALL_COUNT);
        let deadline = Instant::now() + SMALL_LIMIT;
        for i in 0..SMALL_WARMUP + SMALL_COUNT {
            if Instant::now() >= deadline {
                break;
            }
            let mut request = client::get(authorized.uri().clone());
            *request.headers_mut() = authorized.headers().clone();
            let start = Instant::now();
            let response = conn.send(request).await.expect("the gateway answers");
            let (parts, body) = client::collect(response)
                .await
                .expect("a small sealed body");
            let elapsed = start.elapsed();
            assert_eq!(parts.status, StatusCode::OK, "small transfer");
            size = body.len();
            if i >= SMALL_WARMUP {
                gateway.push(elapsed);
            }
        }

        let tcp = TcpStream::connect(self.upstream)
            .await
            .expect("connect to the upstream");
        let _ = tcp.set_nodelay(true);
        let (mut send, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .expect("HTTP/1.1 handshake with the upstream");
        tokio::spawn(driver);
        let direct_path = format!("/subscriber/{TARGET}");
        let mut plain_size = 0;
        let mut direct = Vec::with_capacity(SMALL_COUNT);
        let deadline = Instant::now() + SMALL_LIMIT;
        for i in 0..SMALL_WARMUP + SMALL_COUNT {
            if Instant::now() >= deadline {
                break;
            }
            let request = Request::builder()
                .uri(direct_path.as_str())
                .header(http::header::HOST, "localhost")
                .body(http_body_util::Empty::<Bytes>::new())
                .expect("a well-formed request");
            let start = Instant::now();
            send.ready().await.expect("the upstream connection is open");
            let response = send
                .send_request(request)
                .await
                .expect("the upstream answers");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("the upstream's body")
                .to_bytes();
            let elapsed = start.elapsed();
            assert_eq!(status, StatusCode::OK, "direct GET");
            plain_size = body.len();
            if i >= SMALL_WARMUP {
                direct.push(elapsed);
            }
        }

        let note = "incl. receipt written to SQLite with fsync per transfer";
        let g = Percentiles::of(gateway);
        let d = Percentiles::of(direct);
        table.row(
            "small transfer via gateway p50",
            g.p50,
            "ms",
            format!(
                "{} sequential on one {protocol} mTLS conn, sealed body {size} B; {note}",
                g.n
            ),
        );
        table.row(
            "small transfer via gateway p99",
            g.p99,
            "ms",
            note.to_owned(),
        );
        table.row(
            "direct upstream GET p50",
            d.p50,
            "ms",
            format!(
                "{} sequential, plain HTTP/1.1 keep-alive, body {plain_size} B",
                d.n
            ),
        );
        table.row("direct upstream GET p99", d.p99, "ms", String::new());
        table.row(
            "gateway overhead p50",
            g.p50 - d.p50,
            "ms",
            "token, grant, scope, policy, rate checks, store, age seal, receipt (fsync), TLS"
                .to_owned(),
        );
        table.row("gateway overhead p99", g.p99 - d.p99, "ms", String::new());
    }

    fn authorized(&self, path: &str) -> Request<xborder::server::Body> {
        let mut request = client::get(path.parse().expect("bench paths are valid URIs"));
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {}", self.token)
                .parse()
                .expect("a JWT is a valid header value"),
        );
        request
    }

    async fn shutdown(self) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("gateway task failed: {e}"),
            Err(_) => eprintln!("gateway did not drain within 30 s"),
        }
    }
}

/// EE's gateway config, as the integration tests write it, with rate limits
/// far above what loopback can reach and timeouts that outlast a 256 MiB body.
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
requests_per_second = 100000
request_burst = 100000

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
"#
    )
}

fn issue(ca: &DevCa, id: &str) -> Issued {
    ca.issue(&LeafSpec::client(spiffe(id)))
        .expect("a dev CA issues a client leaf")
}

/// A client presenting `cert` that trusts `ca` for the server, offering h2
/// and http/1.1, as the gateway's own outbound calls do.
fn client_for(ca: &DevCa, cert: &Issued) -> BorderClient {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert_der())
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

async fn connect(client: &BorderClient, addr: SocketAddr) -> Connection {
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
        .body(xborder::server::full(bytes))
        .expect("a well-formed request");
    let response = conn.send(request).await.expect("the gateway answers");
    let (parts, body) = client::collect(response).await.expect("a JSON body");
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, value)
}

fn jurisdiction(cc: &str) -> Jurisdiction {
    cc.parse().expect("bench jurisdictions are valid")
}

fn spiffe(id: &str) -> SpiffeId {
    id.parse().expect("bench SPIFFE IDs are valid")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Decimal megabytes per second.
fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

// ---------------------------------------------------------------------------
// Results

struct Percentiles {
    n: usize,
    p50: f64,
    p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles, in milliseconds.
    fn of(mut times: Vec<Duration>) -> Self {
        assert!(!times.is_empty(), "at least one timed run");
        times.sort();
        let rank = |p: usize| {
            let i = (times.len() * p).div_ceil(100).max(1) - 1;
            times[i].as_secs_f64() * 1e3
        };
        Self {
            n: times.len(),
            p50: rank(50),
            p99: rank(99),
        }
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<(String, f64, &'static str, String)>,
}

impl Table {
    fn row(&mut self, measure: &str, value: f64, unit: &'static str, comment: String) {
        self.rows.push((measure.to_owned(), value, unit, comment));
    }

    fn value(value: f64, unit: &str) -> String {
        match unit {
            "ms" => format!("{value:.3}"),
            _ => format!("{value:.0}"),
        }
    }

    fn print(&self) {
        let width = self
            .rows
            .iter()
            .map(|(m, ..)| m.len())
            .max()
            .unwrap_or(0)
            .max("measure".len());
        println!();
        println!(
            "{:<width$}  {:>10}  {:<5}  ratio/comment",
            "measure", "value", "unit"
        );
        println!("{}", "-".repeat(width + 34));
        for (measure, value, unit, comment) in &self.rows {
            println!(
                "{measure:<width$}  {:>10}  {unit:<5}  {comment}",
                Self::value(*value, unit)
            );
        }
        println!();
    }

    fn tsv(&self) -> String {
        let mut out = String::from("measure\tvalue\tunit\tratio/comment\n");
        for (measure, value, unit, comment) in &self.rows {
            out.push_str(&format!(
                "{measure}\t{}\t{unit}\t{comment}\n",
                Self::value(*value, unit)
            ));
        }
        out
    }
}
