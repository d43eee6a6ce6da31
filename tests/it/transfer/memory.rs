//! The operator's memory bound: a 1 GiB transfer moves through the real
//! gateway process with its resident memory staying under 64 MiB above
//! what it held before.

use http::StatusCode;
use http_body_util::BodyExt;

use crate::support::*;

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The stated bound: a 1 GiB transfer moves through the gateway process with
/// its resident memory staying under 64 MiB above what it held before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_transfer_streams_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    const BOUND: u64 = 64 << 20;
    let world = World::new();
    let upstream = xborder::upstream_example::spawn(loopback(), Default::default())
        .await
        .unwrap();
    world.config(upstream);
    let mut served = crate::binary::Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");
    let police = world.fi_police();
    let token = grant_token(&world, border, admin_addr, &police, &["content"]).await;
    let pid = served.pid();
    let before = rss_bytes(pid);

    let mut conn = world
        .client(Some(&police))
        .connect(border, "localhost")
        .await
        .unwrap();
    let request = xborder::client::bearer_get(
        format!("/v1/data/content/+3725550123?bytes={GIB}")
            .parse()
            .unwrap(),
        &token,
    );
    let response = conn.send(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let (mut received, mut peak, mut frames) = (0u64, before, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
            frames += 1;
            if frames % 256 == 0 {
                peak = peak.max(rss_bytes(pid));
            }
        }
    }
    peak = peak.max(rss_bytes(pid));
    // age adds 16 bytes per 64 KiB chunk and a header.
    assert!(
        received > GIB,
        "only {received} bytes of ciphertext arrived"
    );
    eprintln!(
        "1 GiB transfer: gateway RSS {} MiB before, peak {} MiB",
        before >> 20,
        peak >> 20
    );
    assert!(
        peak < before + BOUND,
        "gateway RSS grew from {} MiB to {} MiB",
        before >> 20,
        peak >> 20
    );
    served.signal("TERM");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok);
}
