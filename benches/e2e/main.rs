//! xborder against the proxies a user would configure instead, in one run.
//!
//! nginx (1 worker) and haproxy (1 thread) terminate mutual TLS with the
//! same certificate and client CA as xborder and forward to the same sink;
//! every system under test is pinned to core 0, and this bench (load
//! generator and sink) to core 1. Each rate is reported raw and per SUT
//! core-second (rate / CPU time the SUT used, from `/proc`), and the goals
//! are ratios of per-core figures measured here, in the same run:
//!
//! - (a) the primitives' cost per byte and the bound a sealed transfer has
//!   on one core ([`common::bound`]);
//! - (b) sealed transfers (age on), 256 MiB downloads, against the bound;
//! - (c) pass-through transfers (`seal = false`: token-checked, metered,
//!   hashed, receipted, logged) against nginx and haproxy proxying the same
//!   bytes;
//! - (d) new mTLS handshakes per second (`GET /hs`, `Connection: close`,
//!   answered 404 by each without an upstream leg);
//! - (e) small transfers (200 B) on 64 keep-alive connections, with token
//!   check, rate limit, quota, receipt and audit entries for xborder, and
//!   p50/p99 latency;
//! - (f) resident memory per in-flight transfer: 200 slow transfers at once
//!   (the sink drips 16 KiB every 50 ms).
//!
//! `cargo bench --bench e2e` (needs `nginx`, `haproxy` and `taskset`; all
//! traffic on 127.0.0.1; every loop bounded by time). The table is also
//! written to `target/bench-e2e.tsv`. `E2E_ONLY=e` runs one part (letters
//! `b`-`f`), e.g. to attach a profiler to the system under test.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;
mod load;
mod sink;
mod sut;

use common::bound::Bound;
use common::table::{MIB, Percentiles, Table};
use common::world::{TARGET, World};
use load::{Client, Done, Target};
use sut::Sut;

/// Rounds of every measurement; medians are reported.
const RUNS: usize = 3;
const DURATION: Duration = Duration::from_secs(5);
const HANDSHAKE_CONNS: usize = 16;
const KEEP_ALIVE_CONNS: usize = 64;
const DOWNLOAD_BYTES: usize = 256 * MIB;
const IN_FLIGHT: usize = 200;

/// The goals, as ratios of per-core figures in the same run.
const SEALED_OF_BOUND: f64 = 0.6;
const PASS_OF_NGINX: f64 = 1.5;
const HANDSHAKES_OF_NGINX: f64 = 2.0;
const REQUESTS_OF_NGINX: f64 = 2.0;
const KIB_PER_TRANSFER: f64 = 256.0;

fn main() {
    for tool in ["nginx", "haproxy", "taskset"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!(
                "e2e bench: `{tool}` is not installed; \
                 `apt-get install -y nginx haproxy util-linux` and run again"
            );
            std::process::exit(2);
        }
    }
    sut::pin_self();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built on this machine");
    let mut table = Table::default();
    let bound = Bound::measure();
    bound.rows(&mut table);
    runtime.block_on(compare(&mut table, &bound));
    table.print();
    table.write_tsv("bench-e2e.tsv");
}

/// One system under test with the path it serves transfers on.
struct Case<'a> {
    label: &'static str,
    sut: &'a Sut,
    target: Target,
    path: String,
}

async fn compare(table: &mut Table, bound: &Bound) {
    let world = World::new();
    let sink = sink::spawn().await;
    let (xborder, admin) = Sut::xborder(&world, sink);
    let token: Arc<str> = world.grant_token(xborder.addr, admin).await.into();
    let nginx = Sut::nginx(&world, sink);
    let haproxy = Sut::haproxy(&world, sink);
    let client = Client::new(&world);
    let raw = format!("/v1/data/raw/{TARGET}");
    let cases = [
        Case {
            label: "nginx",
            sut: &nginx,
            target: Target {
                addr: nginx.addr,
                token: None,
            },
            path: raw.clone(),
        },
        Case {
            label: "haproxy",
            sut: &haproxy,
            target: Target {
                addr: haproxy.addr,
                token: None,
            },
            path: raw.clone(),
        },
        Case {
            label: "xborder pass-through",
            sut: &xborder,
            target: Target {
                addr: xborder.addr,
                token: Some(token.clone()),
            },
            path: raw.clone(),
        },
        Case {
            label: "xborder sealed",
            sut: &xborder,
            target: Target {
                addr: xborder.addr,
                token: Some(token),
            },
            path: format!("/v1/data/content/{TARGET}"),
        },
    ];
    // Warm every path once (first connections, the token cache, files).
    for case in &cases {
        let warm = format!("{}?bytes={}", case.path, 4 * MIB);
        client.download(&case.target, &warm, 1).await;
    }

    if only("bc") {
        downloads(table, &client, &cases, bound).await;
    }
    if only("d") {
        handshakes(table, &client, &cases[..3]).await;
    }
    if only("e") {
        keep_alive(table, &client, &cases).await;
    }
    if only("f") {
        in_flight(table, &client, &cases).await;
    }
}

/// Whether `E2E_ONLY` (e.g. `E2E_ONLY=de`, for profiling one part) asks
/// for any of the parts named by `letters`; without it, every part runs.
fn only(letters: &str) -> bool {
    std::env::var("E2E_ONLY").map_or(true, |only| letters.chars().any(|c| only.contains(c)))
}

/// Runs `work` and returns its output with the CPU seconds `sut` used.
async fn timed<T>(sut: &Sut, work: impl Future<Output = T>) -> (T, f64) {
    let before = sut.cpu_seconds();
    let out = work.await;
    (out, (sut.cpu_seconds() - before).max(1e-3))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn verdict(ratio: f64, goal: f64) -> &'static str {
    if ratio >= goal { "met" } else { "MISSED" }
}

/// Per-core medians of one measurement, by case label.
struct PerCore(Vec<(&'static str, f64)>);

impl PerCore {
    fn of(&self, label: &str) -> f64 {
        self.0
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, v)| *v)
            .expect("every case is measured")
    }
}

/// (b) and (c): 256 MiB downloads, one per run and case.
async fn downloads(table: &mut Table, client: &Client, cases: &[Case<'_>], bound: &Bound) {
    let mut rates = vec![Vec::new(); cases.len()];
    let mut cores = vec![Vec::new(); cases.len()];
    for _ in 0..RUNS {
        for (i, case) in cases.iter().enumerate() {
            let path = format!("{}?bytes={DOWNLOAD_BYTES}", case.path);
            let ((_, elapsed), cpu) =
                timed(case.sut, client.download(&case.target, &path, 1)).await;
            rates[i].push(DOWNLOAD_BYTES as f64 / elapsed.as_secs_f64() / 1e6);
            cores[i].push(DOWNLOAD_BYTES as f64 / cpu / 1e6);
        }
    }
    let mut per_core = PerCore(Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let rate = median(rates[i].clone());
        let core = median(cores[i].clone());
        per_core.0.push((case.label, core));
        table.row(
            &format!("download 256 MiB: {}", case.label),
            core,
            "MB/s",
            format!("per SUT core (raw {rate:.0} MB/s); median of {RUNS}"),
        );
    }
    let nginx = per_core.of("nginx");
    let pass = per_core.of("xborder pass-through");
    let sealed = per_core.of("xborder sealed");
    let ratio = pass / nginx;
    table.row(
        "(c) pass-through / nginx, per core",
        ratio,
        "x",
        format!(
            "goal >= {PASS_OF_NGINX}: {}; haproxy {:.2}x nginx; pass-through bound {:.0} MB/s",
            verdict(ratio, PASS_OF_NGINX),
            per_core.of("haproxy") / nginx,
            bound.pass_through()
        ),
    );
    let ratio = sealed / bound.sealed();
    table.row(
        "(b) sealed / bound, per core",
        ratio,
        "x",
        format!(
            "goal >= {SEALED_OF_BOUND}: {}; bound {:.0} MB/s",
            verdict(ratio, SEALED_OF_BOUND),
            bound.sealed()
        ),
    );
}

/// (d): new mTLS connections per second, one request each.
async fn handshakes(table: &mut Table, client: &Client, cases: &[Case<'_>]) {
    let mut per_core = PerCore(Vec::new());
    let mut all = Vec::new();
    for _ in 0..RUNS {
        for (i, case) in cases.iter().enumerate() {
            let (done, cpu) = timed(
                case.sut,
                client.handshakes(case.target.addr, HANDSHAKE_CONNS, DURATION),
            )
            .await;
            all.push((i, done, cpu));
        }
    }
    for (i, case) in cases.iter().enumerate() {
        let runs: Vec<&(usize, Done, f64)> = all.iter().filter(|(j, ..)| *j == i).collect();
        let core = median(runs.iter().map(|(_, d, cpu)| d.ok as f64 / cpu).collect());
        let rate = median(
            runs.iter()
                .map(|(_, d, _)| d.ok as f64 / DURATION.as_secs_f64())
                .collect(),
        );
        let failed: u64 = runs.iter().map(|(_, d, _)| d.failed).sum();
        let first = runs.iter().find_map(|(_, d, _)| d.first_failure.clone());
        per_core.0.push((case.sut.name, core));
        table.row(
            &format!("(d) handshakes/s: {}", case.sut.name),
            core,
            "/s",
            format!(
                "per SUT core (raw {rate:.0}/s, {HANDSHAKE_CONNS} conns); failed {failed}{}",
                first.map(|f| format!(" ({f})")).unwrap_or_default()
            ),
        );
    }
    let ratio = per_core.of("xborder") / per_core.of("nginx");
    table.row(
        "(d) xborder / nginx handshakes, per core",
        ratio,
        "x",
        format!(
            "goal >= {HANDSHAKES_OF_NGINX}: {}; haproxy {:.2}x nginx",
            verdict(ratio, HANDSHAKES_OF_NGINX),
            per_core.of("haproxy") / per_core.of("nginx")
        ),
    );
}

/// (e): small transfers on keep-alive connections.
async fn keep_alive(table: &mut Table, client: &Client, cases: &[Case<'_>]) {
    let mut all: Vec<(usize, Done, f64)> = Vec::new();
    for _ in 0..RUNS {
        for (i, case) in cases.iter().enumerate() {
            let (done, cpu) = timed(
                case.sut,
                client.keep_alive(&case.target, &case.path, KEEP_ALIVE_CONNS, DURATION),
            )
            .await;
            all.push((i, done, cpu));
        }
    }
    let mut per_core = PerCore(Vec::new());
    let mut p99 = PerCore(Vec::new());
    for (i, case) in cases.iter().enumerate() {
        let mut latencies = Vec::new();
        let mut cores = Vec::new();
        let mut rates = Vec::new();
        let mut failed = 0;
        let mut first = None;
        for (_, done, cpu) in all.iter_mut().filter(|(j, ..)| *j == i) {
            cores.push(done.ok as f64 / *cpu);
            rates.push(done.ok as f64 / DURATION.as_secs_f64());
            failed += done.failed;
            first = first.or(done.first_failure.take());
            latencies.append(&mut done.latencies);
        }
        let core = median(cores);
        let rate = median(rates);
        let p = Percentiles::of(latencies);
        per_core.0.push((case.label, core));
        p99.0.push((case.label, p.p99));
        table.row(
            &format!("(e) small transfers/s: {}", case.label),
            core,
            "/s",
            format!(
                "per SUT core (raw {rate:.0}/s, {KEEP_ALIVE_CONNS} keep-alive conns); \
                 p50 {:.2} ms, p99 {:.2} ms; failed {failed}{}",
                p.p50,
                p.p99,
                first.map(|f| format!(" ({f})")).unwrap_or_default()
            ),
        );
    }
    let nginx = per_core.of("nginx");
    for label in ["xborder pass-through", "xborder sealed"] {
        let ratio = per_core.of(label) / nginx;
        let latency = p99.of(label) <= p99.of("nginx");
        table.row(
            &format!("(e) {label} / nginx, per core"),
            ratio,
            "x",
            format!(
                "goal >= {REQUESTS_OF_NGINX}: {}; p99 {:.2} vs nginx {:.2} ms: {}",
                verdict(ratio, REQUESTS_OF_NGINX),
                p99.of(label),
                p99.of("nginx"),
                if latency { "met" } else { "MISSED" }
            ),
        );
    }
}

/// (f): resident memory per in-flight transfer.
async fn in_flight(table: &mut Table, client: &Client, cases: &[Case<'_>]) {
    for case in cases {
        // Let the allocator hand back what earlier rounds left (jemalloc
        // decays dirty pages after a second in xborder).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = case.sut.rss_kib();
        let start = Instant::now();
        let path = format!("{}?bytes={}&drip_ms=50", case.path, MIB);
        let peak = client
            .in_flight(&case.target, &path, IN_FLIGHT, || case.sut.rss_kib())
            .await;
        let per = peak.saturating_sub(before) as f64 / IN_FLIGHT as f64;
        let goal = if case.sut.name == "xborder" {
            format!(
                "; goal <= {KIB_PER_TRANSFER} KiB: {}",
                if per <= KIB_PER_TRANSFER {
                    "met"
                } else {
                    "MISSED"
                }
            )
        } else {
            String::new()
        };
        table.row(
            &format!("(f) KiB per in-flight transfer: {}", case.label),
            per,
            "KiB",
            format!(
                "RSS {before} -> {peak} KiB with {IN_FLIGHT} slow transfers open ({:.1} s){goal}",
                start.elapsed().as_secs_f64()
            ),
        );
    }
}
