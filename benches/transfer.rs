//! End-to-end transfer benchmark, measured in one run, printed as one table.
//!
//! 1. **Primitives bound.** The three per-byte passes a sealed transfer costs
//!    the gateway, each over the same bytes: ChaCha20-Poly1305 in 64 KiB
//!    chunks (age's STREAM cipher), SHA-256 (run twice: plaintext and
//!    ciphertext) and the TLS record layer, priced as rustls does it: a
//!    loopback TLS 1.3 stream between a rustls server and client in this
//!    process (ring provider), N MiB written through it, so AES-GCM, framing
//!    and the socket copies are all in; the gateway's side is priced at half
//!    the pair's time. Bound = 1 / (1/chacha + 2/sha256 + 1/tls): one core
//!    doing every pass in sequence. Here the client shares the process (and
//!    the machine's two cores) with the gateway; `cargo bench --bench e2e`
//!    runs the gateway alone on one core and measures its CPU time.
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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use xborder::client::{self, BorderClient, Connection};
use xborder::server::{Gateway, Listeners};
use xborder::upstream_example;

mod common;

use common::bound::Bound;
use common::table::{MIB, Percentiles, Table, mb_per_s};
use common::world::{TARGET, World, connect};

/// Plaintext bytes per end-to-end transfer, and how many.
const E2E_BYTES: usize = 256 * MIB;
const E2E_ROUNDS: usize = 3;
/// Sequential small transfers, through the gateway and direct.
const SMALL_COUNT: usize = 2000;
const SMALL_WARMUP: usize = 50;
/// Time limits: every loop stops at its limit even if short of its count.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
const SMALL_LIMIT: Duration = Duration::from_secs(45);
/// The ratio end-to-end / bound the gateway should reach.
const RATIO_TARGET: f64 = 0.6;

fn main() {
    let mut table = Table::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built on this machine");

    // 1. Primitives, on this (main) thread while the runtime is idle.
    let bound = Bound::measure();
    bound.rows(&mut table);
    let bound = bound.sealed();

    // 2 and 3 against one gateway.
    runtime.block_on(async {
        let bench = Bench::start().await;
        bench.throughput(&mut table, bound).await;
        bench.latency(&mut table).await;
        bench.shutdown().await;
    });

    table.print();
    table.write_tsv("bench-transfer.tsv");
}

// ---------------------------------------------------------------------------
// The gateway

/// A running EE gateway with the example upstream, and FI's grant token.
struct Bench {
    _world: World,
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
        let world = World::new();
        let stop = CancellationToken::new();
        let upstream = upstream_example::spawn(loopback(), stop.clone())
            .await
            .expect("the example upstream binds 127.0.0.1:0");
        let config = xborder::config::Config::load(&world.gateway_config(upstream))
            .expect("the bench config is valid");
        let listeners = Listeners::bind(&config.listeners)
            .await
            .expect("the listeners bind 127.0.0.1:0");
        let gateway = Gateway::build(config).await.expect("the gateway starts");
        let border = listeners.border_addr();
        let admin = listeners.admin_addr().expect("an admin listener");
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            gateway
                .serve(listeners, async move { signal.cancelled().await })
                .await
                .expect("the gateway serves")
        });
        let token = world.grant_token(border, admin).await;
        let fi = world.client(&world.police);
        Self {
            _world: world,
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

    fn authorized(&self, path: &str) -> Request<xborder::wire::Body> {
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

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
