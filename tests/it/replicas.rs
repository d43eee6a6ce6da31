//! Replicas sharing one PostgreSQL database: two gateways in this process,
//! each with its own listeners on real TLS sockets, one store between them.
//! Quotas are counted once, revocations reach the other replica's streams,
//! expiry ends a grant once, the audit log has one order, and a database
//! that goes away turns transfers into 503s until it is back.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use xborder::audit::entry::{Entry, Event, Pseudonymiser};
use xborder::audit::merkle::{self, MemoryTree};
use xborder::config::Config;
use xborder::store::Store;
use xborder::store::postgres::PostgresStore;

use crate::pg::{self, Server};
use crate::support::*;

/// EE's config with the shared store at `url`.
fn replica_config(world: &World, upstream: std::net::SocketAddr, url: &str, name: &str) -> Config {
    let text = format!(
        "{}\n[store]\nbackend = \"postgres\"\nurl_file = \"{name}.url\"\nconnect_timeout = \"1s\"\npool_size = 8\n",
        world.config_text(upstream)
    );
    world.write(&format!("ee/{name}.url"), url);
    world.write(&format!("ee/{name}.toml"), &text);
    Config::load(&world.path(&format!("ee/{name}.toml"))).unwrap()
}

/// Two replicas of EE's gateway on database `db` of `server`.
async fn two_replicas(world: &World, server: &Server) -> (Running, Running, String) {
    let db = format!("t_{}", uuid::Uuid::new_v4().simple());
    create_database(server, &db).await;
    let url = server.url(&db);
    // The data service outlives either replica: stopping A leaves B's
    // streams running (it ends with the test's runtime).
    let upstream = xborder::upstream_example::spawn(loopback(), CancellationToken::new())
        .await
        .unwrap();
    let a = Running::start_with(
        replica_config(world, upstream, &url, "a"),
        CancellationToken::new(),
    )
    .await;
    let b = Running::start_with(
        replica_config(world, upstream, &url, "b"),
        CancellationToken::new(),
    )
    .await;
    (a, b, url)
}

async fn create_database(server: &Server, name: &str) {
    let (client, conn) = server
        .url("postgres")
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
}

/// The store the replicas share, opened a third time, for the assertions.
async fn shared_store(url: &str) -> PostgresStore {
    let settings = xborder::store::postgres::PostgresSettings {
        connection: url.parse().unwrap(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
    };
    // Only read through: the key pseudonymises what a store writes.
    let names = Pseudonymiser::new(vec![7; 32]).unwrap();
    PostgresStore::open(settings, names).await.unwrap()
}

/// Every entry, checked: each at its index, each recording the root of the
/// log before it (one order, no fork), and the head the root of them all.
async fn checked_log(store: &PostgresStore) -> Vec<Entry> {
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    loop {
        let page = store.audit_entries(tree.size(), 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        for line in page {
            let entry = Entry::parse(&line).unwrap();
            assert_eq!(entry.index, tree.size(), "entries in index order");
            assert_eq!(
                entry.prev_root(),
                Some(tree.root()),
                "entry {} forks the log",
                entry.index
            );
            tree.append(merkle::leaf_hash(&line));
            entries.push(entry);
        }
    }
    assert_eq!(
        store.audit_head().await.unwrap(),
        (tree.size(), tree.root())
    );
    entries
}

/// A transfer of `bytes` from `border` under `token`, paused after its first
/// frame: its id, its body, and the connection it runs on (hold it).
async fn paused_transfer(
    world: &World,
    border: std::net::SocketAddr,
    police: &xborder::pki::Issued,
    token: &str,
    bytes: u64,
) -> (String, hyper::body::Incoming, xborder::client::Connection) {
    let mut conn = world
        .client(Some(police))
        .connect(border, "localhost")
        .await
        .unwrap();
    let response = conn
        .send(xborder::client::bearer_get(
            format!("/v1/data/content/+3725550123?bytes={bytes}")
                .parse()
                .unwrap(),
            token,
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-xborder-transfer"]
        .to_str()
        .unwrap()
        .to_owned();
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    (id, body, conn)
}

/// Reads `body` to its end within `within` (or fails with `expected`):
/// `Some(error)` if the stream was cut, `None` if it ended cleanly.
async fn read_to_end(
    body: &mut hyper::body::Incoming,
    within: Duration,
    expected: &str,
) -> Option<String> {
    tokio::time::timeout(within, async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e.to_string()),
                None => return None,
            }
        }
    })
    .await
    .expect(expected)
}

fn endings_of(entries: &[Entry], grant: &str) -> usize {
    entries
        .iter()
        .filter(
            |e| matches!(&e.event, Event::GrantEnded { grant: g, .. } if g.to_string() == grant),
        )
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_racing_on_two_replicas_never_exceed_the_transfer_quota() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        a.border,
        a.admin,
        &police,
        &["subscriber"],
        json!({ "max_transfers": 5 }),
    )
    .await;
    let path = "/v1/data/subscriber/+3725550123";
    let pulls = (0..24).map(|i| {
        let border = if i % 2 == 0 { a.border } else { b.border };
        let (world, police, token) = (&world, &police, &token);
        async move { pull_raw(world, border, police, Some(token), path).await }
    });
    let answers = futures_util::future::join_all(pulls).await;
    let ok = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(ok, 5, "exactly max_transfers succeed across both replicas");
    for (status, _, body) in answers.iter().filter(|(s, _, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::FORBIDDEN);
        assert_eq!(
            serde_json::from_slice::<Value>(body).unwrap()["code"],
            "grant_exhausted"
        );
    }
    let store = shared_store(&url).await;
    let stored = store.grant(grant.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(stored.used_transfers, 5);
    let entries = checked_log(&store).await;
    let allowed = entries
        .iter()
        .filter(|e| e.event.kind() == "transfer_allowed")
        .count();
    assert_eq!(allowed, 5);
    assert_eq!(endings_of(&entries, &grant), 1, "exhausted once");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_replica_cuts_a_stream_on_the_other_within_a_second() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (token, grant) =
        grant_with(&world, a.border, a.admin, &police, &["content"], json!({})).await;
    let total: u64 = 256 << 20;
    let (transfer, mut body, _conn) =
        paused_transfer(&world, b.border, &police, &token, total).await;

    revoke(&world, a.admin, &grant).await;
    let revoked_at = Instant::now();
    let ended = read_to_end(
        &mut body,
        Duration::from_secs(1),
        "replica B cuts the stream within a second of A's revocation",
    )
    .await;
    eprintln!(
        "stream on B cut {:?} after A answered the revocation",
        revoked_at.elapsed()
    );
    assert!(
        ended.is_some(),
        "the stream ended cleanly instead of being cut"
    );

    // B itself refuses the grant now, from the shared state.
    let (status, _, body) = pull_raw(
        &world,
        b.border,
        &police,
        Some(&token),
        "/v1/data/content/+3725550123",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "grant_revoked"
    );
    let receipt = crate::support::eventually(Duration::from_secs(5), || async {
        let (status, _, body) = pull_raw(
            &world,
            b.border,
            &police,
            None,
            &format!("/v1/transfers/{transfer}/receipt"),
        )
        .await;
        status == StatusCode::OK
            && serde_json::from_slice::<Value>(&body).unwrap()["receipt"]["incomplete"] == "revoked"
    })
    .await;
    assert!(
        receipt,
        "B's receipt says the transfer was cut by the revocation"
    );
    let entries = checked_log(&shared_store(&url).await).await;
    assert_eq!(endings_of(&entries, &grant), 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// Every replica's LISTEN connection is cut, and A revokes a grant before
/// they are back: the notification is lost, and B learns of the revocation
/// from the resync it runs when it reconnects, and cuts its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_sent_while_listen_was_down_reaches_the_other_replica_by_resync() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (token, grant) =
        grant_with(&world, a.border, a.admin, &police, &["content"], json!({})).await;
    let (_, mut body, _conn) = paused_transfer(&world, b.border, &police, &token, 256 << 20).await;

    let cut = terminate(&url, "xborder-listen").await;
    assert_eq!(cut, 2, "one LISTEN connection per replica");
    let (status, _) = send_json(
        &admin(&world, "operator"),
        a.admin,
        Method::POST,
        &format!("/v1/grants/{grant}/revoke"),
        Some(&json!({ "reason": "incident" })),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let ended = read_to_end(
        &mut body,
        Duration::from_secs(5),
        "B cuts the stream once its listener is back and has resynced",
    )
    .await;
    assert!(
        ended.is_some(),
        "the stream ended cleanly instead of being cut"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Ends the sessions named `application_name` in the database at `url`;
/// returns how many.
async fn terminate(url: &str, application_name: &str) -> i64 {
    let (client, conn) = url
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = task.await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_expires_once_although_both_replicas_schedule_it() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (_, grant) = grant_with(
        &world,
        a.border,
        a.admin,
        &police,
        &["subscriber"],
        json!({ "lifetime": "2s" }),
    )
    .await;
    let store = shared_store(&url).await;
    let id = grant.parse().unwrap();
    let expired = eventually(Duration::from_secs(10), || async {
        store.grant(id).await.unwrap().unwrap().state == xborder::grant::GrantState::Expired
    })
    .await;
    assert!(expired, "the grant expires at its sunset");
    // Both schedulers have had their chance to end it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entries = checked_log(&store).await;
    assert_eq!(
        endings_of(&entries, &grant),
        1,
        "one grant_ended, not one per replica"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A grant issued on A falls due while A is stopped: B learned its due time
/// as it learns endings, so B ends it at its sunset, once, and cuts the
/// stream it runs under it (before, only the issuing replica's scheduler
/// knew, and the grant stayed active until A came back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sunset_happens_on_time_while_the_issuing_replica_is_down() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        a.border,
        a.admin,
        &police,
        &["content"],
        json!({ "lifetime": "4s" }),
    )
    .await;
    let (transfer, mut body, _conn) =
        paused_transfer(&world, b.border, &police, &token, 256 << 20).await;
    a.shutdown().await;

    // A slow reader (a frame every 20 ms): it cannot finish before the
    // sunset, burns no core, and never looks like a stalled exchange.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Some(Err(e)) => return Some(e.to_string()),
                None => return None,
            }
        }
    })
    .await
    .expect("B cuts the stream at the sunset while A is down");
    assert!(
        ended.is_some(),
        "the stream ended cleanly instead of being cut"
    );
    let store = shared_store(&url).await;
    let id = grant.parse().unwrap();
    let stored = store.grant(id).await.unwrap().unwrap();
    assert_eq!(stored.state, xborder::grant::GrantState::Expired);
    let ending = stored.ending.expect("an expired grant records its ending");
    assert!(
        ending.at >= stored.expires_at,
        "ended at {} before its sunset {}",
        ending.at,
        stored.expires_at
    );
    let receipt = eventually(Duration::from_secs(5), || async {
        let (status, _, body) = pull_raw(
            &world,
            b.border,
            &police,
            None,
            &format!("/v1/transfers/{transfer}/receipt"),
        )
        .await;
        status == StatusCode::OK
            && serde_json::from_slice::<Value>(&body).unwrap()["receipt"]["incomplete"] == "expired"
    })
    .await;
    assert!(receipt, "B's receipt says the sunset cut the transfer");
    let entries = checked_log(&store).await;
    assert_eq!(endings_of(&entries, &grant), 1, "ended once");
    b.shutdown().await;
}

/// A replica that starts closes, as interrupted, the transfers a replica
/// that died left open, and leaves alone the one another replica is
/// streaming at that moment, which then completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starting_replica_closes_only_the_transfers_of_replicas_that_are_gone() {
    let Some(server) = pg::shared() else { return };
    let world = World::new();
    let (a, b, url) = two_replicas(&world, server).await;
    let police = world.fi_police();
    let (token, grant) =
        grant_with(&world, a.border, a.admin, &police, &["content"], json!({})).await;

    // A streams one transfer, paused after its first frame.
    let (live, mut body, _conn) = paused_transfer(&world, a.border, &police, &token, 4194304).await;

    // A replica opens one and dies: its session, and so its lock, ends.
    let before = count_advisory_locks(&url).await;
    let dead = {
        let store = shared_store(&url).await;
        let grant = store.grant(grant.parse().unwrap()).await.unwrap().unwrap();
        let open = xborder::transfer::receipt::TransferOpen {
            id: xborder::transfer::receipt::TransferId::new(),
            grant_id: grant.id,
            grantee: grant.grantee.to_string(),
            route: "/v1/data/content".into(),
            category: "content".into(),
            target: "+3725550123".into(),
            started_at: xborder::clock::Timestamp::from_datetime(time::OffsetDateTime::now_utc()),
        };
        store.open_transfer(&open).await.unwrap();
        open.id.to_string()
    };
    let released = eventually(Duration::from_secs(5), || async {
        count_advisory_locks(&url).await <= before
    })
    .await;
    assert!(
        released,
        "the dead replica's lock is released with its session"
    );

    // C starts: the dead replica's transfer is closed, A's is not.
    let c = Running::start_with(
        replica_config(&world, "127.0.0.1:9".parse().unwrap(), &url, "c"),
        CancellationToken::new(),
    )
    .await;
    let receipt = |id: String| {
        let (world, police) = (&world, &police);
        async move {
            let (status, _, body) = pull_raw(
                world,
                c.border,
                police,
                None,
                &format!("/v1/transfers/{id}/receipt"),
            )
            .await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (status, dead_receipt) = receipt(dead).await;
    assert_eq!(status, StatusCode::OK, "{dead_receipt}");
    assert_eq!(dead_receipt["receipt"]["incomplete"], "interrupted");
    let (status, problem) = receipt(live.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "transfer_open");

    // A's transfer runs to its end and is receipted complete.
    while let Some(frame) = body.frame().await {
        frame.expect("A's stream is not cut by C's start");
    }
    let complete = eventually(Duration::from_secs(5), || async {
        let (status, answer) = receipt(live.clone()).await;
        status == StatusCode::OK && answer["receipt"]["complete"] == true
    })
    .await;
    assert!(complete, "A's receipt says complete");
    checked_log(&shared_store(&url).await).await;
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

/// Advisory locks held in the database at `url`: one per live store.
async fn count_advisory_locks(url: &str) -> i64 {
    let (client, conn) = url
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    let _ = task.await;
    n
}

/// The database stops mid-traffic (fast, then immediate): transfers are
/// refused with 503 `store_unavailable`, admin writes fail, `/readyz` says
/// not ready; started again on the same socket and port, the same gateway
/// serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_postgres_is_down_transfers_fail_closed_and_recover_by_themselves() {
    let Some(server) = Server::start() else {
        return;
    };
    let world = World::new();
    let (a, b, _) = two_replicas(&world, &server).await;
    b.shutdown().await;
    let police = world.fi_police();
    let (token, grant) = grant_with(
        &world,
        a.border,
        a.admin,
        &police,
        &["subscriber", "content"],
        json!({}),
    )
    .await;
    let path = "/v1/data/subscriber/+3725550123";
    let pull = || pull_raw(&world, a.border, &police, Some(&token), path);
    assert_eq!(pull().await.0, StatusCode::OK);
    let receipt = |id: String| {
        let (world, police) = (&world, &police);
        async move {
            let (status, _, body) = pull_raw(
                world,
                a.border,
                police,
                None,
                &format!("/v1/transfers/{id}/receipt"),
            )
            .await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };

    for mode in ["fast", "immediate"] {
        // A stream opened before the outage, paused after its first frame.
        let (streaming, mut body, _conn) =
            paused_transfer(&world, a.border, &police, &token, 1048576).await;

        server.stop(mode);
        // It runs to its end while the database is away...
        while let Some(frame) = body.frame().await {
            frame.expect("a running stream needs no store until it closes");
        }
        let (status, _, body) = pull().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "mode {mode}");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["code"],
            "store_unavailable"
        );
        assert_eq!(
            plain_get(a.ops, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let (status, problem) = send_json(
            &admin(&world, "operator"),
            a.admin,
            Method::POST,
            &format!("/v1/grants/{grant}/revoke"),
            Some(&json!({ "reason": "during the outage" })),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
        assert_eq!(problem["code"], "store_unavailable");

        server.start_again();
        let back = eventually(Duration::from_secs(10), || async {
            pull().await.0 == StatusCode::OK
        })
        .await;
        assert!(
            back,
            "transfers are served again after the database returns ({mode})"
        );
        assert_eq!(plain_get(a.ops, "/readyz").await.0, StatusCode::OK);
        // ...and its receipt and audit entry are written once it is back.
        let receipted = eventually(Duration::from_secs(10), || async {
            let (status, answer) = receipt(streaming.clone()).await;
            status == StatusCode::OK && answer["receipt"]["complete"] == true
        })
        .await;
        assert!(
            receipted,
            "the transfer that ended during the outage is receipted after it ({mode})"
        );
    }
    a.shutdown().await;
}
