//! Replicas sharing one PostgreSQL: what a second replica adds, and how fast
//! an ending crosses to the other.
//!
//! 1. **Transfers per second, one replica against two.** A transfer's store
//!    work (`open_transfer` then `close_transfer`, each one transaction with
//!    its audit entry) is what replicas share; the TLS, sealing and proxying
//!    around it scale with the replicas' own cores. Each replica is a
//!    `PostgresStore` with its own pool, driven by 8 concurrent workers, for
//!    a fixed count of transfers under one grant. Printed: transfers/s for
//!    one and for two, and the ratio.
//! 2. **Revocation propagation.** Replica B's listener feeds a broadcast as
//!    the gateway's does; replica A ends a grant with `end_grant`; the time
//!    from A's call until B's broadcast fires, p50 and p99 over 200 grants.
//!
//! `cargo bench --bench replicas`. A real server from the system packages
//! (fsync on), as the tests start it; skipped with a message without one.
//! Bounded by count; loopback and a Unix socket only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use xborder::audit::entry::Pseudonymiser;
use xborder::clock::Timestamp;
use xborder::grant::{Cause, Grant, GrantId, GrantState, Quotas};
use xborder::policy::{Finding, Verdict};
use xborder::request::{Approval, Period, Request, RequestId, RequestState, Scope, Urgency};
use xborder::store::postgres::PostgresStore;
use xborder::store::{Approved, Decision, Store};
use xborder::transfer::receipt::{Receipt, TransferId, TransferOpen};

#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

const WORKERS: usize = 8;
const TRANSFERS: usize = 2_000;
const REVOCATIONS: usize = 200;

fn main() {
    let Some(server) = pg::Server::start_durable() else {
        eprintln!("no PostgreSQL: nothing measured");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let settings = server.database().await;
        let a = Arc::new(PostgresStore::open(settings.clone(), names()).await.unwrap());
        let b = Arc::new(PostgresStore::open(settings, names()).await.unwrap());

        // Warm the pools and the caches.
        let warm = grant(&a).await;
        run_transfers(std::slice::from_ref(&a), &warm, 200).await;

        let one = run_transfers(std::slice::from_ref(&a), &grant(&a).await, TRANSFERS).await;
        let two = run_transfers(&[a.clone(), b.clone()], &grant(&a).await, TRANSFERS).await;
        println!("transfers (open + close, each with its audit entry), {WORKERS} workers per replica, {TRANSFERS} transfers:");
        println!("  one replica:  {one:8.0} transfers/s");
        println!("  two replicas: {two:8.0} transfers/s  ({:.2}x one)", two / one);

        let (ended, _) = broadcast::channel(1024);
        let stop = CancellationToken::new();
        let (connected_tx, mut connected) = mpsc::unbounded_channel();
        let listener = tokio::spawn(
            b.listener(ended.clone(), Arc::new(tokio::sync::Notify::new()))
                .run(stop.clone(), Some(connected_tx)),
        );
        connected.recv().await.expect("B listens");
        let mut latencies = Vec::with_capacity(REVOCATIONS);
        for _ in 0..REVOCATIONS {
            let g = grant(&a).await;
            let mut rx = ended.subscribe();
            let start = Instant::now();
            a.end_grant(g.id, Cause::Manual, None, Some("bench"), now()).await.unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                    Ok(Ok(e)) if e.id == g.id => break,
                    Ok(_) => continue,
                    Err(_) => panic!("B never heard of the revocation"),
                }
            }
            latencies.push(start.elapsed());
        }
        stop.cancel();
        let _ = listener.await;
        latencies.sort();
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "revocation on A -> B's ended broadcast, {REVOCATIONS} grants: p50 {:?}, p99 {:?}, max {:?}",
            p(0.50),
            p(0.99),
            latencies[latencies.len() - 1]
        );
    });
}

/// `count` transfers under `grant`, spread over `replicas` with
/// [`WORKERS`] workers each; transfers per second.
async fn run_transfers(replicas: &[Arc<PostgresStore>], grant: &Grant, count: usize) -> f64 {
    let workers = replicas.len() * WORKERS;
    let per_worker = count / workers;
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let store = replicas[w % replicas.len()].clone();
            let grant = grant.clone();
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    let open = TransferOpen {
                        id: TransferId::new(),
                        grant_id: grant.id,
                        grantee: grant.grantee.to_string(),
                        route: "/v1/data/subscriber".into(),
                        category: "subscriber".into(),
                        target: grant.scope.targets[0].clone(),
                        started_at: now(),
                    };
                    store.open_transfer(&open).await.unwrap();
                    let receipt = Receipt {
                        plaintext_sha256: "00".repeat(32),
                        ciphertext_sha256: "11".repeat(32),
                        plaintext_bytes: 200,
                        ciphertext_bytes: 400,
                        complete: true,
                        incomplete: None,
                        ..Receipt::interrupted(&open, now(), true)
                    };
                    store
                        .close_transfer(receipt, Box::new(|r| Ok(format!("h.{}.s", r.transfer_id))))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (per_worker * workers) as f64 / start.elapsed().as_secs_f64()
}

fn now() -> Timestamp {
    Timestamp::from_datetime(time::OffsetDateTime::now_utc())
}

fn names() -> Pseudonymiser {
    Pseudonymiser::new(vec![0x5a; 32]).expect("a 32-byte key")
}

/// A fresh active grant without quotas, issued through the store.
async fn grant(store: &PostgresStore) -> Grant {
    let filed = now();
    let request = Request {
        id: RequestId::new(),
        requester: "spiffe://fi.xborder.test/police/krp".parse().unwrap(),
        requester_jurisdiction: "FI".parse().unwrap(),
        holder: "EE".parse().unwrap(),
        thumbprint: "dGh1bWJwcmludA".into(),
        scope: Scope {
            legal_basis: "eu-2023-1543".into(),
            purpose: "benchmark".into(),
            categories: vec!["subscriber".parse().unwrap()],
            targets: vec!["+3725550123".into()],
            period: Period {
                from: Timestamp::from_unix_ms(1_700_000_000_000),
                to: Timestamp::from_unix_ms(1_700_086_400_000),
            },
            urgency: Urgency::Normal,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "benchmark".into(),
        },
        state: RequestState::Pending,
        findings: vec![Finding {
            rule: "legal_basis".into(),
            verdict: Verdict::Pass,
            reason: "accepted".into(),
        }],
        policy_hash: "p".into(),
        filed_at: filed,
        deadline: filed.saturating_add(Duration::from_secs(86_400)),
        approvals: Vec::new(),
        decided_at: None,
        decided_by: None,
        reason: None,
        grant_id: None,
    };
    store.insert_request(&request).await.unwrap();
    let grant = Grant {
        id: GrantId::new(),
        request_id: request.id,
        grantee: request.requester.clone(),
        grantee_jurisdiction: request.requester_jurisdiction.clone(),
        holder: request.holder.clone(),
        thumbprint: request.thumbprint.clone(),
        scope: request.scope.clone(),
        quotas: Quotas::default(),
        used_bytes: 0,
        used_transfers: 0,
        approvers: Vec::new(),
        issued_at: filed,
        expires_at: filed.saturating_add(Duration::from_secs(3_600)),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: "h.p.s".into(),
    };
    let approval = Approval {
        approver: "spiffe://ee.xborder.test/admin/alice".parse().unwrap(),
        at: filed,
    };
    let decision = Decision {
        policy: "p".into(),
        notice_after: Duration::from_secs(60),
    };
    match store
        .approve(request.id, approval, 1, grant, &decision)
        .await
        .unwrap()
    {
        Approved::Granted(grant) => *grant,
        other => panic!("{other:?}"),
    }
}
