//! Load on the real binary: 300 concurrent mTLS clients (HTTP/2 and
//! HTTP/1.1 mixed) pulling sealed transfers against a rate-limited pair.
//! Every answer is a whole, decryptable 200 or a `rate_limited` 429; the
//! gateway's memory and file descriptors return close to where they were,
//! its connection gauge returns to 0, and it still serves and exits 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use xborder::client::BorderClient;
use xborder::upstream_example::{self, pattern_byte};

use crate::binary::Served;
use crate::support::*;

const CLIENTS: usize = 300;
const PER_CLIENT: usize = 5;
const BYTES: u64 = 65_536;
/// Every this many transfers (counted across clients) is decrypted and compared.
const SAMPLE_EVERY: u64 = 50;
const LOAD_LIMIT: Duration = Duration::from_secs(30);
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const FD_MARGIN: usize = 10;
/// Resident memory may stay this far above the baseline once the load is
/// gone: freed pages are kept by the allocator (glibc's per-thread arenas
/// on the gateway's worker threads hold their top chunks and fragments)
/// rather than returned to the kernel, so RSS does not fall back exactly.
/// 32 MiB is well under what 300 connections with their TLS, HTTP/2 and
/// sealing buffers take at the peak, so a per-connection or per-transfer
/// leak over 1 500 transfers (≥ 22 KiB each) would still cross it.
const RSS_MARGIN: u64 = 32 << 20;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process's TCP sockets counted by the remote port (from the socket
/// inodes in /proc/<pid>/fd and /proc/<pid>/net/tcp), to name what holds
/// descriptors.
fn sockets_by_remote_port(pid: u32) -> BTreeMap<u16, usize> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut ports = BTreeMap::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(remote), Some(inode)) = (cols.get(2), cols.get(9)) else {
            continue;
        };
        if !inodes.contains(*inode) {
            continue;
        }
        let port = remote
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            .unwrap_or(0);
        *ports.entry(port).or_default() += 1;
    }
    ports
}

/// Whether the process has exited (a zombie awaiting `wait`, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

async fn metric(ops: SocketAddr, sample: &str) -> Option<f64> {
    let (_, body) = plain_get(ops, "/metrics").await;
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
}

const OPEN_BORDER: &str = "xborder_open_connections{listener=\"border\"}";

/// The length of an age file's payload (nonce and STREAM chunks): what
/// follows the header's `--- <MAC>` line. The header's own length varies
/// (the age crate adds a random grease stanza), the payload's does not.
fn payload_len(sealed: &[u8]) -> Option<usize> {
    let mac_line = sealed.windows(5).position(|w| w == b"\n--- ")? + 1;
    let end = mac_line + sealed[mac_line..].iter().position(|&b| b == b'\n')? + 1;
    Some(sealed.len() - end)
}

/// What one transfer came to.
enum Outcome {
    Ok(Duration),
    Limited,
    Failed(String),
}

/// One transfer on `conn`: the whole body read, its size checked against
/// `payload` (the age payload's length), and decrypted when `sample`.
async fn transfer(
    conn: &mut xborder::client::Connection,
    path: &str,
    token: &str,
    payload: usize,
    sample: bool,
) -> Outcome {
    let started = Instant::now();
    let request = xborder::client::bearer_get(path.parse().unwrap(), token);
    let response = match conn.send(request).await {
        Ok(response) => response,
        Err(e) => return Outcome::Failed(format!("send: {e}")),
    };
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Outcome::Failed(format!("{status} body: {e}")),
    };
    match status {
        StatusCode::OK => {
            let got = payload_len(&body);
            if got != Some(payload) {
                return Outcome::Failed(format!(
                    "200 with an age payload of {got:?} bytes, expected {payload}"
                ));
            }
            if sample {
                let plaintext = tokio::task::spawn_blocking(move || {
                    std::panic::catch_unwind(|| open_sealed(&body)).ok()
                })
                .await
                .ok()
                .flatten();
                let whole = plaintext.is_some_and(|p| {
                    p.len() as u64 == BYTES && p.iter().zip(0..).all(|(&b, i)| b == pattern_byte(i))
                });
                if !whole {
                    return Outcome::Failed("200 whose plaintext is not the pattern".into());
                }
            }
            Outcome::Ok(started.elapsed())
        }
        StatusCode::TOO_MANY_REQUESTS => {
            let code = serde_json::from_slice::<Value>(&body)
                .map(|v| v["code"].clone())
                .unwrap_or(Value::Null);
            if code == "rate_limited" {
                Outcome::Limited
            } else {
                Outcome::Failed(format!("429 with code {code}"))
            }
        }
        other => Outcome::Failed(format!(
            "{other}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )),
    }
}

/// One client: its own connection (h2 or http/1.1), `PER_CLIENT` transfers in turn.
async fn client_run(
    client: BorderClient,
    border: SocketAddr,
    token: Arc<str>,
    payload: usize,
    counter: Arc<AtomicU64>,
) -> Vec<Outcome> {
    let path = format!("/v1/data/content/+3725550123?bytes={BYTES}");
    let mut conn = match client.connect(border, "localhost").await {
        Ok(conn) => conn,
        Err(e) => return vec![Outcome::Failed(format!("connect: {e}"))],
    };
    let mut outcomes = Vec::with_capacity(PER_CLIENT);
    for _ in 0..PER_CLIENT {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let outcome = transfer(
            &mut conn,
            &path,
            &token,
            payload,
            n.is_multiple_of(SAMPLE_EVERY),
        )
        .await;
        let failed = matches!(outcome, Outcome::Failed(_));
        outcomes.push(outcome);
        if failed {
            break;
        }
    }
    outcomes
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_leave_descriptors_and_connections_where_they_were() {
    three_hundred_clients(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_leave_memory_where_it_was() {
    three_hundred_clients(true).await;
}

/// The load; `check_memory`: RSS must also come back near its baseline.
async fn three_hundred_clients(check_memory: bool) {
    let test_started = Instant::now();
    let world = World::new();
    let stop = CancellationToken::new();
    let upstream = upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    // The pair is rate limited: a burst of 400, then 200 a second. The load
    // exceeds it on purpose, so 429s are expected alongside 200s. With 300
    // clients on 2 shared cores an answer can wait more than the harness's
    // 2 s idle timeout (p99 1.7 s alone, 2.5 s beside the rest of the
    // suite), which the gateway rightly closes as a stalled exchange. 4 s
    // leaves room, and still lets the upstream pool's idle connections go
    // (reaped within two idle periods) inside SETTLE_LIMIT.
    let text = world
        .config_text(upstream)
        .replace(
            "[policy.EE.FI.approvals]",
            "[policy.EE.FI.rate]\nrequests_per_second = 200\nrequest_burst = 400\n\n[policy.EE.FI.approvals]",
        )
        .replace("idle = \"2s\"", "idle = \"4s\"");
    assert!(text.contains("idle = \"4s\""));
    assert!(text.contains("request_burst = 400"));
    world.write("ee/gateway.toml", &text);
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");
    let ops = served.listening("ops");
    let pid = served.pid();
    let police = world.fi_police();
    let token: Arc<str> = grant_token(&world, border, admin_addr, &police, &["content"])
        .await
        .into();
    let path = format!("/v1/data/content/+3725550123?bytes={BYTES}");

    // Warm-up: one transfer, decrypted; its payload's size is every transfer's.
    let payload = {
        let mut conn = world
            .client(Some(&police))
            .connect(border, "localhost")
            .await
            .unwrap();
        let (status, sealed) = get_with(&mut conn, &path, &token).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let plaintext = open_sealed(&sealed);
        assert!(
            plaintext
                .iter()
                .zip(0..)
                .all(|(&b, i)| b == pattern_byte(i))
        );
        assert_eq!(plaintext.len() as u64, BYTES);
        payload_len(&sealed).expect("an age header")
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(ops, OPEN_BORDER).await == Some(0.0)
        })
        .await,
        "warm-up connections never closed"
    );
    let (rss_base, fds_base) = (rss_bytes(pid), fd_count(pid));
    assert!(rss_base > 0 && fds_base > 0, "cannot read /proc/{pid}");

    // The sampler: peak RSS and fds every 100 ms while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let (mut rss, mut fds) = (rss_base, fds_base);
            let deadline = Instant::now() + LOAD_LIMIT + Duration::from_secs(5);
            while sampling.load(Ordering::Relaxed) && Instant::now() < deadline {
                rss = rss.max(rss_bytes(pid));
                fds = fds.max(fd_count(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (rss, fds)
        })
    };

    let h2 = world.client_alpn(Some(&police), &[b"h2"]);
    let h1 = world.client_alpn(Some(&police), &[b"http/1.1"]);
    let counter = Arc::new(AtomicU64::new(0));
    let load_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let client = if i % 2 == 0 { h2.clone() } else { h1.clone() };
        tasks.spawn(client_run(
            client,
            border,
            token.clone(),
            payload,
            counter.clone(),
        ));
    }
    let mut outcomes = Vec::with_capacity(CLIENTS * PER_CLIENT);
    let mut wedged = None;
    let deadline = tokio::time::Instant::now() + LOAD_LIMIT;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(done))) => outcomes.extend(done),
            Ok(Some(Err(e))) => outcomes.push(Outcome::Failed(format!("client task: {e}"))),
            Ok(None) => break,
            Err(_) => {
                wedged = Some(tasks.len());
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    let load_time = load_started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let (rss_peak, fds_peak) = sampler.await.unwrap();

    let mut latencies = Vec::new();
    let mut limited = 0usize;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in &outcomes {
        match outcome {
            Outcome::Ok(latency) => latencies.push(*latency),
            Outcome::Limited => limited += 1,
            Outcome::Failed(why) => *failures.entry(why.clone()).or_default() += 1,
        }
    }
    latencies.sort();
    let ok = latencies.len();
    let per_second = ok as f64 / load_time.as_secs_f64();

    // After: every connection gone (the client tasks dropped theirs), the
    // gateway's descriptors and connection gauge back down.
    let settle_started = Instant::now();
    let mut open_after = None;
    let mut fds_after = fd_count(pid);
    while settle_started.elapsed() < SETTLE_LIMIT {
        open_after = metric(ops, OPEN_BORDER).await;
        fds_after = fd_count(pid);
        if open_after == Some(0.0) && fds_after <= fds_base + FD_MARGIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Freed memory goes back to the system within the allocator's decay time.
    let mut rss_after = rss_bytes(pid);
    while check_memory
        && rss_after >= rss_base + RSS_MARGIN
        && settle_started.elapsed() < SETTLE_LIMIT
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss_after = rss_bytes(pid);
    }
    let held = sockets_by_remote_port(pid);

    eprintln!(
        "load: clients {CLIENTS}, transfers {}, ok {ok}, 429 {limited}, failed {}, \
         {per_second:.0} transfers/s over {:.2} s, p50 {:.1} ms / p99 {:.1} ms, \
         RSS baseline {:.1} / peak {:.1} / after {:.1} MiB, \
         fds baseline {fds_base} / peak {fds_peak} / after {fds_after}, \
         open border connections after {open_after:?}, \
         gateway TCP sockets after by remote port {held:?} (upstream {})",
        outcomes.len(),
        failures.values().sum::<usize>(),
        load_time.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        mib(rss_base),
        mib(rss_peak),
        mib(rss_after),
        upstream.port(),
    );

    assert!(
        wedged.is_none(),
        "{} clients still unfinished after {LOAD_LIMIT:?}: gateway wedged? failures: {failures:?}",
        wedged.unwrap_or_default()
    );
    assert!(failures.is_empty(), "failures under load: {failures:?}");
    assert_eq!(outcomes.len(), CLIENTS * PER_CLIENT);
    // 429s are expected (1 500 requests against a burst of 400 and 200/s)
    // but not required: a slow machine may stretch the load past the refill.
    assert!(ok > 0, "nothing served: 429 {limited}");
    assert_eq!(
        open_after,
        Some(0.0),
        "border connections still open after {SETTLE_LIMIT:?}"
    );
    assert!(
        fds_after <= fds_base + FD_MARGIN,
        "gateway fds {fds_base} before, {fds_after} after {SETTLE_LIMIT:?}; \
         its TCP sockets by remote port: {held:?} (upstream is {upstream})"
    );
    assert!(
        !check_memory || rss_after < rss_base + RSS_MARGIN,
        "gateway RSS {:.1} MiB before, {:.1} MiB after",
        mib(rss_base),
        mib(rss_after)
    );

    // A good client is still served, whole.
    let mut conn = world
        .client(Some(&police))
        .connect(border, "localhost")
        .await
        .unwrap();
    let (status, sealed) =
        tokio::time::timeout(Duration::from_secs(5), get_with(&mut conn, &path, &token))
            .await
            .expect("served in time after the load")
            .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open_sealed(&sealed).len() as u64, BYTES);
    drop(conn);

    // SIGTERM: the gateway drains and exits 0, in bounded time.
    served.signal("TERM");
    let exit_started = Instant::now();
    while !exited(pid) && exit_started.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited(pid), "gateway still running 25 s after SIGTERM");
    let (clean, _) = served.wait();
    assert!(clean, "exit status not 0");
    stop.cancel();
    eprintln!(
        "load: whole test {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
