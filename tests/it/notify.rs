//! Data-subject notification end to end: the real gateway, a webhook
//! receiver in the test that records every idempotency key it is sent, the
//! audit log read back over the admin API. The receiver counts what a
//! receiver that honours `Idempotency-Key` would act on: one per key.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use xborder::audit::entry::{Entry, Event, Pseudonymiser};
use xborder::clock::Timestamp;
use xborder::config::Config;
use xborder::notice::{NoticeState, NoticeView};
use xborder::store::Store;
use xborder::store::sqlite::SqliteStore;

use crate::binary::Served;
use crate::support::*;

/// One POST as the receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    key: String,
    content_type: String,
    body: Bytes,
}

/// A webhook receiver: records every POST and answers 200, the first one
/// only once [`Receiver::release`] is called when it holds.
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
}

impl Receiver {
    async fn start(listener: TcpListener, hold_first: bool) -> Self {
        let receiver = Self {
            seen: Arc::default(),
            gate: Arc::new(Semaphore::new(if hold_first { 0 } else { 1_000 })),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = serving.clone();
                let service = hyper::service::service_fn(move |request| {
                    let receiver = receiver.clone();
                    async move { receiver.answer(request).await }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        receiver
    }

    async fn answer(
        &self,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<http_body_util::Full<Bytes>>, hyper::Error> {
        let (parts, body) = request.into_parts();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let seen = Seen {
            key: header("idempotency-key"),
            content_type: header("content-type"),
            body: body.collect().await?.to_bytes(),
        };
        self.seen.lock().unwrap().push(seen);
        // Held: the gateway has sent the notice and waits for the answer.
        let _permit = self.gate.acquire().await;
        Ok(http::Response::new(http_body_util::Full::new(
            Bytes::from_static(b"{\"ok\":true}"),
        )))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets every held answer, and all later ones, go out.
    fn release(&self) {
        self.gate.add_permits(1_000);
    }

    /// The distinct keys: what a receiver honouring them acts on.
    fn keys(&self) -> BTreeSet<String> {
        self.seen().into_iter().map(|s| s.key).collect()
    }
}

/// A free port, not listened on: a receiver that is down.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// EE's config with notices going to `webhook`.
fn config_text(world: &World, upstream: SocketAddr, webhook: SocketAddr, timeout: &str) -> String {
    world.config_text(upstream)
        + &format!(
            "\n[notify]\nwebhook = \"http://{webhook}/notices\"\ntimeout = \"{timeout}\"\n\
             retry_min = \"100ms\"\nretry_max = \"400ms\"\n"
        )
}

/// `GET /v1/notices[?state=]` as a reviewer.
async fn notices(world: &World, admin_addr: SocketAddr, state: Option<&str>) -> Vec<Value> {
    let path = match state {
        Some(state) => format!("/v1/notices?state={state}"),
        None => "/v1/notices".to_owned(),
    };
    let (status, body) = send_json(
        &admin(world, "rita"),
        admin_addr,
        Method::GET,
        &path,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["notices"].as_array().unwrap().clone()
}

/// The whole audit log over the admin API, parsed.
async fn audit_events(world: &World, admin_addr: SocketAddr) -> Vec<Event> {
    let (status, body) = get(
        &admin(world, "olga"),
        admin_addr,
        "/v1/audit/entries?limit=10000",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| Entry::parse(line).unwrap().event)
        .collect()
}

/// The `notice_delivered` entries of the log, as (notice, attempts).
fn deliveries(events: &[Event]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::NoticeDelivered {
                notice, attempts, ..
            } => Some((notice.to_string(), *attempts)),
            _ => None,
        })
        .collect()
}

/// The gateway POSTs a due notice, the receiver takes it but holds its
/// answer, and the gateway is SIGKILLed: the store still says pending. After
/// a restart on the same data directory the notice goes again under the
/// same key, and the log records one delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_cut_off_by_sigkill_is_delivered_exactly_once_after_restart() {
    let world = World::new();
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let webhook = listener.local_addr().unwrap();
    let receiver = Receiver::start(listener, true).await;
    let text = config_text(&world, "127.0.0.1:9".parse().unwrap(), webhook, "60s");
    world.write("ee/gateway.toml", &text);
    let config = world.path("ee/gateway.toml");

    let mut served = Served::start(&config);
    let border = served.listening("border");
    let admin_addr = served.listening("admin");
    let police = world.fi_police();
    let (_, grant) = grant_with(
        &world,
        border,
        admin_addr,
        &police,
        &["subscriber"],
        json!({ "notify_after": "1s" }),
    )
    .await;
    let sent = eventually(Duration::from_secs(20), || async {
        !receiver.seen().is_empty()
    })
    .await;
    assert!(sent, "the notice was not sent");

    served.signal("KILL");
    let (exited_cleanly, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(!exited_cleanly, "SIGKILL is not a clean exit");
    receiver.release();

    // Between due and delivered: the receiver has it, the store does not know.
    let store_file = world.path("ee/data").join(SqliteStore::FILE_NAME);
    let names = Pseudonymiser::new(PSEUDONYM_KEY.to_vec()).unwrap();
    let store = SqliteStore::open(&store_file, names).unwrap();
    let pending: Vec<NoticeView> = store.notices(None).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].notice.grant_id.to_string(), grant);
    assert_eq!(
        (pending[0].state, pending[0].attempts),
        (NoticeState::Pending, 0)
    );
    let id = pending[0].notice.id.to_string();
    drop(store);

    let mut served = Served::start(&config);
    let admin_addr = served.listening("admin");
    let delivered = eventually(Duration::from_secs(20), || async {
        notices(&world, admin_addr, Some("delivered")).await.len() == 1
    })
    .await;
    assert!(delivered, "not delivered after the restart");

    let seen = receiver.seen();
    assert!(
        seen.len() >= 2,
        "sent once before the kill, again after: {seen:?}"
    );
    assert_eq!(receiver.keys(), BTreeSet::from([id.clone()]), "one key");
    for post in &seen {
        assert_eq!(post.body, seen[0].body, "the same bytes under the key");
        assert_eq!(post.content_type, "application/json");
    }
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["notice_id"], id.as_str());
    assert_eq!(body["grant_id"], grant.as_str());
    assert_eq!(body["targets"], json!(["+3725550123", "+3725550124"]));

    let view = &notices(&world, admin_addr, None).await[0];
    assert_eq!(view["state"], "delivered");
    assert_eq!(view["status"], 200);
    let events = audit_events(&world, admin_addr).await;
    assert_eq!(
        deliveries(&events),
        [(id.clone(), 1)],
        "one entry; the attempt cut off by the kill was never recorded"
    );
    let issued: Vec<Option<Timestamp>> = events
        .iter()
        .filter_map(|e| match e {
            Event::GrantIssued { notice_due, .. } => Some(*notice_due),
            _ => None,
        })
        .collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        issued[0].map(|t| t.to_string()),
        view["due_at"].as_str().map(str::to_owned)
    );

    served.signal("TERM");
    let (ok, _) = tokio::task::spawn_blocking(move || served.wait())
        .await
        .unwrap();
    assert!(ok);
}

/// The receiver is down (connections refused) when two notices fall due;
/// they stay pending, retried, and are delivered once each when it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_wait_for_a_receiver_that_is_down_and_are_delivered_once_each() {
    let world = World::new();
    let webhook = free_port();
    let stop = tokio_util::sync::CancellationToken::new();
    let upstream = xborder::upstream_example::spawn(loopback(), stop.clone())
        .await
        .unwrap();
    world.write(
        "ee/gateway.toml",
        &config_text(&world, upstream, webhook, "5s"),
    );
    let config = Config::load(&world.path("ee/gateway.toml")).unwrap();
    let gateway = Running::start_with(config, stop.clone()).await;
    let police = world.fi_police();
    let mut grants = BTreeSet::new();
    for _ in 0..2 {
        let (_, grant) = grant_with(
            &world,
            gateway.border,
            gateway.admin,
            &police,
            &["subscriber"],
            json!({ "notify_after": "0s" }),
        )
        .await;
        grants.insert(grant);
    }

    let retried = eventually(Duration::from_secs(20), || async {
        let pending = notices(&world, gateway.admin, Some("pending")).await;
        pending.len() == 2 && pending.iter().all(|n| n["attempts"].as_u64() >= Some(2))
    })
    .await;
    assert!(retried, "both notices should be pending and retried");
    let pending = notices(&world, gateway.admin, Some("pending")).await;
    for notice in &pending {
        let error = notice["last_error"].as_str().unwrap();
        assert!(error.contains("cannot connect"), "{error}");
        assert!(notice["next_attempt_at"].is_string());
    }
    let ids: BTreeSet<String> = pending
        .iter()
        .map(|n| n["notice_id"].as_str().unwrap().to_owned())
        .collect();
    let noticed: BTreeSet<String> = pending
        .iter()
        .map(|n| n["grant_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(noticed, grants);

    let receiver = Receiver::start(TcpListener::bind(webhook).await.unwrap(), false).await;
    let delivered = eventually(Duration::from_secs(20), || async {
        notices(&world, gateway.admin, Some("delivered"))
            .await
            .len()
            == 2
    })
    .await;
    assert!(delivered, "not delivered once the receiver was up");
    assert_eq!(
        receiver.seen().len(),
        2,
        "each sent once to the live receiver"
    );
    assert_eq!(receiver.keys(), ids);
    let events = audit_events(&world, gateway.admin).await;
    let logged: BTreeSet<String> = deliveries(&events).into_iter().map(|(n, _)| n).collect();
    assert_eq!(deliveries(&events).len(), 2);
    assert_eq!(logged, ids);

    let metric = |sample: &'static str| {
        let gateway = &gateway;
        async move { gateway.metric(sample).await.unwrap_or(-1.0) }
    };
    assert_eq!(metric(r#"xborder_notices{state="delivered"}"#).await, 2.0);
    assert_eq!(metric(r#"xborder_notices{state="pending"}"#).await, 0.0);
    assert_eq!(
        metric(r#"xborder_notice_deliveries_total{outcome="delivered"}"#).await,
        2.0
    );
    assert!(metric(r#"xborder_notice_deliveries_total{outcome="failed"}"#).await >= 4.0);
    gateway.shutdown().await;
    stop.cancel();
}

/// The approver's deferral is bounded by the pair's policy; none means the
/// cap. Only staff see notices: they hold targets in clear.
#[tokio::test]
async fn a_deferral_is_bounded_by_policy_and_notices_are_for_staff_only() {
    let world = World::new();
    let gateway = Running::start(&world).await;
    let police = world.fi_police();
    let (_, filed) = file(
        &world,
        gateway.border,
        &police,
        &request_body(&["subscriber"], "normal"),
    )
    .await;
    let id = filed["id"].as_str().unwrap();
    let approve = |terms: Value| {
        let world = &world;
        let admin_addr = gateway.admin;
        async move {
            send_json(
                &admin(world, "alice"),
                admin_addr,
                Method::POST,
                &format!("/v1/requests/{id}/approve"),
                Some(&terms),
                None,
            )
            .await
        }
    };

    let (status, problem) = approve(json!({ "notify_after": "91d" })).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("deferral_exceeds_policy")),
        "{problem}"
    );
    assert!(
        problem["title"].as_str().unwrap().contains("cap of 90d"),
        "names the cap: {problem}"
    );
    let (status, problem) = approve(json!({ "notify_after": "when it suits" })).await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("notify_after")),
        "{problem}"
    );
    assert!(notices(&world, gateway.admin, None).await.is_empty());

    let (status, answer) = approve(json!({})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let issued = Timestamp::parse(answer["grant"]["issued_at"].as_str().unwrap()).unwrap();
    let listed = notices(&world, gateway.admin, Some("pending")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["grant_id"], answer["grant"]["id"]);
    assert_eq!(
        listed[0]["due_at"].as_str().unwrap(),
        issued
            .saturating_add(Duration::from_secs(90 * 86_400))
            .to_string(),
        "no deferral given: the policy's cap"
    );
    assert_eq!(listed[0]["attempts"], 0);
    assert!(
        notices(&world, gateway.admin, Some("delivered"))
            .await
            .is_empty()
    );
    assert_eq!(
        gateway.metric(r#"xborder_notices{state="pending"}"#).await,
        Some(1.0)
    );

    let (status, problem) = send_json(
        &admin(&world, "olga"),
        gateway.admin,
        Method::GET,
        "/v1/notices",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("role_required"))
    );
    gateway.shutdown().await;
}
