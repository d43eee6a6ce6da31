//! Acknowledged writes survive SIGKILL; nothing is half-written; a crash at
//! a random point never forks the audit log, loses a write or a notice,
//! revives a revoked grant or lets a quota overrun.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::binary::Served;
use crate::support::*;

/// What the gateway acknowledged before it was killed.
#[derive(Default)]
struct Acknowledged {
    /// Request id and the number of findings the 201 carried.
    filed: Vec<(String, usize)>,
    /// Request id → grant id of approvals answered 200.
    granted: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stream_of_writes_loses_no_acknowledged_write() {
    let world = World::new();
    world.config("127.0.0.1:9".parse().unwrap());
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");

    let police = world.fi_police();
    let acknowledged = Arc::new(Mutex::new(Acknowledged::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..3 {
        let (client, approver) = (world.client(Some(&police)), admin(&world, "alice"));
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.spawn(async move {
            let Ok(mut conn) = client.connect(border, "localhost").await else {
                return;
            };
            let Ok(mut admin_conn) = approver.connect(admin_addr, "localhost").await else {
                return;
            };
            // Bounded: at most 500 filings per writer.
            for i in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let body = request_body(&["subscriber"], "normal");
                let Some((status, filed)) =
                    try_send(&mut conn, Method::POST, "/v1/requests", Some(&body)).await
                else {
                    return;
                };
                assert_eq!(status, StatusCode::CREATED, "{filed}");
                let id = filed["id"].as_str().unwrap().to_owned();
                let findings = filed["findings"].as_array().unwrap().len();
                acknowledged.lock().await.filed.push((id.clone(), findings));
                // Every other request of writer 0 is approved at once.
                if writer == 0 && i % 2 == 0 {
                    let path = format!("/v1/requests/{id}/approve");
                    let Some((status, answer)) =
                        try_send(&mut admin_conn, Method::POST, &path, Some(&json!({}))).await
                    else {
                        return;
                    };
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    let grant = answer["grant"]["id"].as_str().unwrap().to_owned();
                    acknowledged.lock().await.granted.push((id, grant));
                }
            }
        });
    }

    // Kill mid-stream once a fair number of writes are acknowledged.
    let enough = eventually(Duration::from_secs(20), || async {
        acknowledged.lock().await.filed.len() >= 60
    })
    .await;
    assert!(enough, "the writers did not get going");
    served.signal("KILL");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(!ok, "SIGKILL should not look like a clean exit");
    stop.store(true, Ordering::Relaxed);
    while writers.join_next().await.is_some() {}

    // Restart on the same data directory: everything acknowledged is there.
    let mut served = Served::start(&world.path("ee/gateway.toml"));
    let border = served.listening("border");
    let admin_addr = served.listening("admin");
    let acknowledged = acknowledged.lock().await;
    assert!(
        acknowledged.granted.len() >= 5,
        "too few approvals to mean anything"
    );
    let mut conn = world
        .client(Some(&police))
        .connect(border, "localhost")
        .await
        .unwrap();
    for (id, findings) in &acknowledged.filed {
        let (status, view) = try_send(&mut conn, Method::GET, &format!("/v1/requests/{id}"), None)
            .await
            .unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged request {id} lost: {view}"
        );
        assert_eq!(
            view["findings"].as_array().unwrap().len(),
            *findings,
            "{id}"
        );
    }
    let mut admin_conn = admin(&world, "rita")
        .connect(admin_addr, "localhost")
        .await
        .unwrap();
    for (request, grant) in &acknowledged.granted {
        let (status, view) = try_send(
            &mut admin_conn,
            Method::GET,
            &format!("/v1/grants/{grant}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged grant {grant} lost");
        assert_eq!(view["request_id"], request.as_str());
    }

    // No half-written record: every stored request has its findings, and
    // every approved request its grant, whether or not it was acknowledged.
    let (_, all) = try_send(&mut admin_conn, Method::GET, "/v1/requests", None)
        .await
        .unwrap();
    let all = all["requests"].as_array().unwrap();
    assert!(all.len() >= acknowledged.filed.len());
    for request in all {
        assert_eq!(
            request["findings"].as_array().unwrap().len(),
            5,
            "{request}"
        );
        if request["state"] == "approved" {
            let grant = request["grant_id"]
                .as_str()
                .expect("an approved request names its grant");
            let (status, _) = try_send(
                &mut admin_conn,
                Method::GET,
                &format!("/v1/grants/{grant}"),
                None,
            )
            .await
            .unwrap();
            assert_eq!(status, StatusCode::OK);
        } else {
            assert_eq!(request["state"], "pending");
            assert!(request["grant_id"].is_null());
        }
    }
    served.signal("TERM");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok);
}

/// One JSON exchange; `None` once the gateway is gone.
async fn try_send(
    conn: &mut xborder::client::Connection,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Option<(StatusCode, Value)> {
    let bytes = body.map(Value::to_string).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(xborder::wire::full(bytes))
        .ok()?;
    let response = conn.send(request).await.ok()?;
    let (parts, body) = xborder::client::collect(response).await.ok()?;
    Some((
        parts.status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// What a crash round's workload saw acknowledged.
#[derive(Default)]
struct Ledger {
    /// Request ids answered 201.
    filed: Vec<String>,
    /// Grant id → its token, for approvals answered 200.
    granted: Vec<(String, String)>,
    /// Grants whose revocation was answered 200.
    revoked: Vec<String>,
}

/// One worker's bounded workload: file, approve (two transfers at most),
/// pull three times (the third must find the quota spent), revoke every
/// other grant. Stops at the first failed exchange: the gateway is gone.
async fn crash_workload(
    world: &World,
    police: &xborder::pki::Issued,
    border: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
) {
    let Ok(mut conn) = world
        .client(Some(police))
        .connect(border, "localhost")
        .await
    else {
        return;
    };
    let Ok(mut approver) = admin(world, "operator")
        .connect(admin_addr, "localhost")
        .await
    else {
        return;
    };
    for round in 0..40 {
        let body = request_body(&["subscriber"], "normal");
        let Some((status, filed)) =
            try_send(&mut conn, Method::POST, "/v1/requests", Some(&body)).await
        else {
            return;
        };
        assert_eq!(status, StatusCode::CREATED, "{filed}");
        let id = filed["id"].as_str().unwrap().to_owned();
        ledger.lock().await.filed.push(id.clone());
        let terms = json!({ "max_transfers": 2 });
        let path = format!("/v1/requests/{id}/approve");
        let Some((status, answer)) =
            try_send(&mut approver, Method::POST, &path, Some(&terms)).await
        else {
            return;
        };
        assert_eq!(status, StatusCode::OK, "{answer}");
        let grant = answer["grant"]["id"].as_str().unwrap().to_owned();
        let Some((_, view)) =
            try_send(&mut conn, Method::GET, &format!("/v1/requests/{id}"), None).await
        else {
            return;
        };
        let token = view["grant"]["token"].as_str().unwrap().to_owned();
        ledger
            .lock()
            .await
            .granted
            .push((grant.clone(), token.clone()));
        // Two transfers at most; a pull may also meet the pair's rate limit.
        // Every other grant is revoked after its first pull, and must then
        // refuse the rest.
        let revoke_after = if round % 2 == 0 { Some(1) } else { None };
        let mut served = 0;
        let mut revoked = false;
        for pull in 0..3 {
            if revoke_after == Some(pull) {
                let path = format!("/v1/grants/{grant}/revoke");
                let reason = json!({ "reason": "crash test" });
                let Some((status, answer)) =
                    try_send(&mut approver, Method::POST, &path, Some(&reason)).await
                else {
                    return;
                };
                assert_eq!(status, StatusCode::OK, "{answer}");
                ledger.lock().await.revoked.push(grant.clone());
                revoked = true;
            }
            let request = xborder::client::bearer_get(
                "/v1/data/subscriber/+3725550123".parse().unwrap(),
                &token,
            );
            let Ok(response) = conn.send(request).await else {
                return;
            };
            let status = response.status();
            let Ok((_, body)) = xborder::client::collect(response).await else {
                return;
            };
            let code = serde_json::from_slice::<Value>(&body).unwrap_or_default()["code"].clone();
            match (status, code.as_str()) {
                (StatusCode::OK, _) => {
                    assert!(!revoked, "grant {grant} served after its revocation");
                    served += 1;
                }
                (StatusCode::TOO_MANY_REQUESTS, _) => {}
                (StatusCode::FORBIDDEN, Some("grant_revoked")) => assert!(revoked),
                (StatusCode::FORBIDDEN, Some("grant_exhausted")) => assert_eq!(served, 2),
                other => panic!("pull {pull} under grant {grant}: {other:?}"),
            }
            assert!(served <= 2, "grant {grant} served {served} of 2 transfers");
        }
    }
}

/// The whole audit log as exported over admin, verified with its key; the
/// entries and the checkpoint note, so the next round can check it grew
/// from this one.
async fn verified_log(
    conn: &mut xborder::client::Connection,
    since: Option<&str>,
) -> (Vec<xborder::audit::entry::Entry>, String) {
    use xborder::audit::{checkpoint, entry::Entry, export, verify};
    let text = async |conn: &mut xborder::client::Connection, path: &str| {
        let response = conn
            .send(xborder::client::get(path.parse().unwrap()))
            .await
            .unwrap();
        let (parts, body) = xborder::client::collect(response).await.unwrap();
        assert_eq!(parts.status, StatusCode::OK, "{path}");
        String::from_utf8(body.to_vec()).unwrap()
    };
    let vkey = text(conn, "/v1/audit/vkey").await.trim().to_owned();
    let note = text(conn, "/v1/audit/checkpoint").await;
    let (name, key) = checkpoint::parse_vkey(&vkey).unwrap();
    let head = checkpoint::open(&note, &name, &key).unwrap();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    while (lines.len() as u64) < head.size {
        let page = text(
            conn,
            &format!("/v1/audit/entries?start={}&limit=5000", lines.len()),
        )
        .await;
        lines.extend(page.lines().map(|l| l.as_bytes().to_vec()));
    }
    lines.truncate(head.size as usize);
    let log = export::Export {
        header: export::Header {
            origin: head.origin.clone(),
            size: head.size,
            checkpoint: note.clone(),
        },
        entries: lines,
    };
    if let Err(e) = verify::verify(&log, &vkey, since) {
        panic!("the audit log does not verify after a crash: {e}");
    }
    let entries = log
        .entries
        .iter()
        .map(|l| Entry::parse(l).unwrap())
        .collect();
    (entries, note)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkills_leave_a_verifiable_log_and_every_acknowledged_write() {
    use rand::{Rng as _, SeedableRng as _};

    let world = World::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    world.config(upstream);
    let seed: u64 = std::env::var("XBORDER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (XBORDER_CRASH_SEED={seed} replays the kill points)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut kept: Option<String> = None;
    let police = world.fi_police();

    // Three killed runs, then one that checks the last crash and stops cleanly.
    for round in 0..4 {
        let mut served = Served::start(&world.path("ee/gateway.toml"));
        let border = served.listening("border");
        let admin_addr = served.listening("admin");
        check_invariants(&world, &police, border, admin_addr, &ledger, &mut kept).await;
        if round == 3 {
            served.signal("TERM");
            let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
                .await
                .unwrap();
            assert!(ok);
            break;
        }
        let kill_after = Duration::from_millis(rng.gen_range(50..500));
        let workload = async {
            tokio::join!(
                crash_workload(&world, &police, border, admin_addr, ledger.clone()),
                crash_workload(&world, &police, border, admin_addr, ledger.clone()),
            )
        };
        tokio::select! {
            _ = workload => {}
            _ = tokio::time::sleep(kill_after) => {}
        }
        served.signal("KILL");
        let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
            .await
            .unwrap();
        assert!(!ok, "SIGKILL is not a clean exit");
    }
    let ledger = ledger.lock().await;
    let granted = ledger.granted.len();
    eprintln!(
        "acknowledged across 3 kills: {} filings, {granted} grants, {} revocations",
        ledger.filed.len(),
        ledger.revoked.len()
    );
    assert!(granted >= 3, "the workload barely ran: {granted} grants");
    stop.cancel();
}

/// What must hold after any crash: see the assertions.
async fn check_invariants(
    world: &World,
    police: &xborder::pki::Issued,
    border: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    ledger: &Arc<Mutex<Ledger>>,
    kept: &mut Option<String>,
) {
    use xborder::audit::entry::Event;

    // The log verifies, and extends the head seen after the previous restart:
    // a crash never forks or rewrites it.
    let mut auditor = admin(world, "olga")
        .connect(admin_addr, "localhost")
        .await
        .unwrap();
    let (entries, note) = verified_log(&mut auditor, kept.as_deref()).await;
    *kept = Some(note);

    let ledger = ledger.lock().await;
    let mut staff = admin(world, "rita")
        .connect(admin_addr, "localhost")
        .await
        .unwrap();
    // Every acknowledged filing, approval and revocation is there.
    for id in &ledger.filed {
        let (status, _) = try_send(&mut staff, Method::GET, &format!("/v1/requests/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged request {id} lost");
    }
    for (grant, _) in &ledger.granted {
        let (status, _) = try_send(
            &mut staff,
            Method::GET,
            &format!("/v1/grants/{grant}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "acknowledged grant {grant} lost");
    }
    // No notice is lost: every grant that exists has exactly one.
    let (_, notices) = try_send(&mut staff, Method::GET, "/v1/notices", None)
        .await
        .unwrap();
    let mut noticed = std::collections::HashMap::<String, usize>::new();
    for notice in notices["notices"].as_array().unwrap() {
        *noticed
            .entry(notice["grant_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for (grant, _) in &ledger.granted {
        assert_eq!(noticed.get(grant), Some(&1), "grant {grant}'s notice");
    }
    // A revoked grant is never usable again.
    let mut peer = world
        .client(Some(police))
        .connect(border, "localhost")
        .await
        .unwrap();
    for grant in &ledger.revoked {
        let (status, view) = try_send(
            &mut staff,
            Method::GET,
            &format!("/v1/grants/{grant}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (status, view["state"].as_str()),
            (StatusCode::OK, Some("revoked")),
            "{grant}"
        );
        let token = &ledger
            .granted
            .iter()
            .find(|(g, _)| g == grant)
            .expect("a revoked grant was granted")
            .1;
        let request =
            xborder::client::bearer_get("/v1/data/subscriber/+3725550123".parse().unwrap(), token);
        let response = peer.send(request).await.unwrap();
        let (parts, body) = xborder::client::collect(response).await.unwrap();
        let code = serde_json::from_slice::<Value>(&body).unwrap_or_default()["code"].clone();
        assert_eq!(
            (parts.status, code.as_str()),
            (StatusCode::FORBIDDEN, Some("grant_revoked"))
        );
    }
    // Quotas: no grant ever opened more transfers than it allows, the log
    // and the counters agree, and no transfer is left open after a restart.
    let (_, grants) = try_send(&mut staff, Method::GET, "/v1/grants", None)
        .await
        .unwrap();
    let mut allowed = std::collections::HashMap::<String, u64>::new();
    let mut completed = std::collections::HashSet::new();
    for entry in &entries {
        match &entry.event {
            Event::TransferAllowed {
                grant, transfer, ..
            } => {
                *allowed.entry(grant.to_string()).or_default() += 1;
                completed.insert((transfer.to_string(), false));
            }
            Event::TransferCompleted { transfer, .. } => {
                completed.insert((transfer.to_string(), true));
            }
            _ => {}
        }
    }
    for grant in grants["grants"].as_array().unwrap() {
        let id = grant["id"].as_str().unwrap();
        assert_eq!(noticed.get(id), Some(&1), "grant {id} has no notice");
        let used = grant["used_transfers"].as_u64().unwrap();
        let max = grant["quotas"]["max_transfers"]
            .as_u64()
            .unwrap_or(u64::MAX);
        assert!(used <= max, "grant {id} opened {used} of {max} transfers");
        assert_eq!(
            allowed.get(id).copied().unwrap_or(0),
            used,
            "grant {id}: log and counter"
        );
    }
    for (transfer, _) in completed.iter().filter(|(_, done)| !done) {
        assert!(
            completed.contains(&(transfer.clone(), true)),
            "transfer {transfer} left open across a restart"
        );
    }
}
