//! The notifier against a real SQLite file and a real HTTP receiver on
//! 127.0.0.1:0, on paused tokio time.
//!
//! Auto-advance is held off for the whole test (a blocking task stays
//! parked, see [`Anchor`]), so time moves only when a test advances it: a
//! socket that takes a moment to answer cannot fire the notifier's timeout,
//! and every attempt happens at a virtual instant the test can name to the
//! millisecond. Waits for the real work in between (sockets, SQLite) poll in
//! real time, bounded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::NoticeMetrics;
use super::{IDEMPOTENCY_KEY_HEADER, Notifier, NotifySettings, backoff};
use crate::audit::entry::{Entry, Event, Pseudonymiser};
use crate::clock::{Clock, Timestamp};
use crate::grant::GrantId;
use crate::grant::token::{TokenKeys, TokenSettings, Tokens};
use crate::identity::{PeerIdentity, Thumbprint};
use crate::notice::{NoticeState, NoticeView};
use crate::policy::{EmergencyApproval, PairPolicy, Policies};
use crate::request::{PeriodBody, RequestBody, Urgency};
use crate::review::{Review, Terms};
use crate::store::Approved;
use crate::store::sqlite::SqliteStore;

const DAY: u64 = 86_400;
const TARGET: &str = "+372 5555 0101";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Keeps tokio from auto-advancing paused time while it lives: a blocking
/// task counts as work in progress until it returns, which it does when
/// this is dropped.
struct Anchor {
    _release_on_drop: std::sync::mpsc::Sender<()>,
}

impl Anchor {
    fn hold() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Self {
            _release_on_drop: tx,
        }
    }
}

/// Sleeps 1 ms of real time (paused time does not move meanwhile).
async fn real_ms() {
    tokio::task::spawn_blocking(|| std::thread::sleep(ms(1)))
        .await
        .unwrap();
}

/// Gives the notifier 50 ms of real time, for checks that nothing happens.
async fn settle() {
    for _ in 0..50 {
        real_ms().await;
    }
}

/// Polls `check` for up to 5 s of real time; panics naming `what` if it never holds.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..5000 {
        if check().await {
            return;
        }
        real_ms().await;
    }
    panic!("never happened: {what}");
}

/// How the receiver answers one POST.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers: the notifier's timeout must end the attempt.
    Hang,
}

/// One POST as the receiver saw it, at the virtual time it arrived.
#[derive(Clone, Debug)]
struct Seen {
    at: Timestamp,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn key(&self) -> &str {
        self.headers[IDEMPOTENCY_KEY_HEADER].to_str().unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: records every POST, answers from a script (then 200).
#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

impl Receiver {
    async fn start(listener: TcpListener, clock: Clock, script: &[Answer]) -> Self {
        let receiver = Self {
            seen: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let serving = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (receiver, clock) = (serving.clone(), clock.clone());
                let service = hyper::service::service_fn(move |request| {
                    let (receiver, clock) = (receiver.clone(), clock.clone());
                    async move { Ok::<_, Infallible>(receiver.answer(request, &clock).await) }
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
        clock: &Clock,
    ) -> Response<Full<Bytes>> {
        let at = clock.now();
        let (parts, body) = request.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        self.seen.lock().unwrap().push(Seen {
            at,
            headers: parts.headers,
            body,
        });
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Status(200));
        match answer {
            Answer::Status(status) => {
                let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                *response.status_mut() = StatusCode::from_u16(status).unwrap();
                response
            }
            Answer::Hang => std::future::pending().await,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    review: Arc<Review>,
    registry: prometheus::Registry,
    stop: CancellationToken,
    notifier: Option<tokio::task::JoinHandle<()>>,
    _anchor: Anchor,
}

impl Fixture {
    fn new() -> Self {
        let anchor = Anchor::hold();
        let dir = tempfile::tempdir().unwrap();
        let names = Pseudonymiser::new(vec![9; 32]).unwrap();
        let store = SqliteStore::open(&dir.path().join("x.sqlite3"), names.clone()).unwrap();
        let policy = PairPolicy {
            holder: "EE".parse().unwrap(),
            requester: "FI".parse().unwrap(),
            legal_bases: vec!["eu-2023-1543".into()],
            categories: vec!["subscriber".parse().unwrap()],
            forbidden_categories: vec![],
            max_targets: 5,
            max_period: secs(366 * DAY),
            max_lifetime: secs(30 * DAY),
            max_lifetime_emergency: secs(3 * DAY),
            approvals: Default::default(),
            response_deadline: secs(10 * DAY),
            response_deadline_emergency: secs(8 * 3600),
            notification_deferral_max: secs(90 * DAY),
            emergency: EmergencyApproval::OneThenValidate,
            emergency_validation: secs(48 * 3600),
            rate: Default::default(),
        };
        let tokens = Tokens::new(
            TokenKeys::from_signing_key(ed25519_dalek::SigningKey::generate(
                &mut rand::rngs::OsRng,
            )),
            TokenSettings {
                issuer: "spiffe://ee.xborder.test/gateway".into(),
                audience: "spiffe://ee.xborder.test/gateway".into(),
                leeway: Duration::ZERO,
            },
        );
        let review = Arc::new(Review {
            store: Arc::new(store),
            policies: Policies::new([policy]),
            tokens: Arc::new(tokens),
            pseudonyms: names,
            clock: Clock::starting_at(Timestamp::parse("2026-11-23T12:00:00Z").unwrap()),
            holder: "EE".parse().unwrap(),
            rearm: Arc::new(Notify::new()),
            notices: Arc::new(Notify::new()),
            ended: broadcast::channel(16).0,
        });
        Self {
            _dir: dir,
            review,
            registry: prometheus::Registry::new(),
            stop: CancellationToken::new(),
            notifier: None,
            _anchor: anchor,
        }
    }

    /// Starts the notifier with `webhook` (if any), retries from 1 s to 4 s
    /// and a 10 s timeout.
    fn notify(&mut self, webhook: Option<SocketAddr>) {
        let settings = NotifySettings {
            webhook: webhook.map(|addr| format!("http://{addr}/notices").parse().unwrap()),
            timeout: secs(10),
            retry_min: secs(1),
            retry_max: secs(4),
        };
        let notifier = Notifier::new(
            self.review.store.clone(),
            self.review.clock.clone(),
            self.review.notices.clone(),
            settings,
            NoticeMetrics::register(&self.registry).unwrap(),
        );
        self.notifier = Some(tokio::spawn(notifier.run(self.stop.clone())));
    }

    fn now(&self) -> Timestamp {
        self.review.now()
    }

    /// Files and approves a request, notifying after `notify_after`.
    async fn grant(&self, notify_after: Duration) -> GrantId {
        let peer = PeerIdentity {
            spiffe_id: "spiffe://fi.xborder.test/agency/police".parse().unwrap(),
            jurisdiction: "FI".parse().unwrap(),
            thumbprint: Thumbprint::of(b"a certificate"),
        };
        let body = RequestBody {
            legal_basis: "eu-2023-1543".into(),
            purpose: "p".into(),
            categories: vec!["subscriber".into()],
            targets: vec![TARGET.into()],
            period: PeriodBody {
                from: "2026-01-01T00:00:00Z".into(),
                to: "2026-02-01T00:00:00Z".into(),
            },
            urgency: Urgency::Normal,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "j".into(),
        };
        let request = self.review.file(&peer, body).await.unwrap();
        let approver = "spiffe://ee.xborder.test/admin/alice".parse().unwrap();
        let terms = Terms {
            notify_after: Some(notify_after),
            ..Terms::default()
        };
        match self
            .review
            .approve(request.id, &approver, terms)
            .await
            .unwrap()
        {
            Approved::Granted(grant) => grant.id,
            other => panic!("not granted: {other:?}"),
        }
    }

    async fn notice(&self, grant: GrantId) -> NoticeView {
        let all = self.review.store.notices(None).await.unwrap();
        all.into_iter()
            .find(|n| n.notice.grant_id == grant)
            .expect("every grant has its notice")
    }

    /// Waits until `grant`'s notice has `attempts` recorded attempts.
    async fn attempted(&self, grant: GrantId, attempts: u32) -> NoticeView {
        until(&format!("{attempts} attempt(s) recorded"), || async {
            self.notice(grant).await.attempts >= attempts
        })
        .await;
        self.notice(grant).await
    }

    /// Every `notice_delivered` entry in the audit log.
    async fn deliveries(&self) -> Vec<Event> {
        let entries = self.review.store.audit_entries(0, 10_000).await.unwrap();
        entries
            .iter()
            .map(|bytes| Entry::parse(bytes).unwrap().event)
            .filter(|event| event.kind() == "notice_delivered")
            .collect()
    }

    /// One sample of the notice metrics, e.g. `outcome="failed"`.
    fn attempts_metric(&self, outcome: &str) -> f64 {
        let text = crate::metrics::render(&self.registry);
        let sample = format!("xborder_notice_deliveries_total{{outcome=\"{outcome}\"}}");
        text.lines()
            .find_map(|line| line.strip_prefix(sample.as_str())?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receiver(clock: &Clock, script: &[Answer]) -> (SocketAddr, Receiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, Receiver::start(listener, clock.clone(), script).await)
}

#[tokio::test(start_paused = true)]
async fn a_notice_goes_out_when_due_and_not_before() {
    let mut fixture = Fixture::new();
    let (addr, receiver) = receiver(&fixture.review.clock, &[]).await;
    fixture.notify(Some(addr));
    let issued = fixture.now();
    // The notifier sleeps until the first notice is due; a second, earlier
    // one must wake it.
    let late = fixture.grant(secs(3600)).await;
    let early = fixture.grant(secs(60)).await;
    let view = fixture.notice(early).await;
    assert_eq!(view.notice.due_at, issued.saturating_add(secs(60)));
    assert_eq!(view.state, NoticeState::Pending);

    settle().await;
    tokio::time::advance(secs(60) - ms(1)).await;
    settle().await;
    assert!(receiver.seen().is_empty(), "sent before it was due");
    tokio::time::advance(ms(1)).await;
    until("the early notice is delivered", || async {
        fixture.notice(early).await.state == NoticeState::Delivered
    })
    .await;

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let post = &seen[0];
    assert_eq!(post.at, view.notice.due_at, "sent exactly when due");
    assert_eq!(post.key(), view.notice.id.to_string());
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(post.headers[super::ATTEMPT_HEADER], "1");
    let body = post.json();
    let grant = fixture.review.store.grant(early).await.unwrap().unwrap();
    for (field, want) in [
        ("notice_id", view.notice.id.to_string()),
        ("grant_id", early.to_string()),
        ("request_id", grant.request_id.to_string()),
        ("requester", "spiffe://fi.xborder.test/agency/police".into()),
        ("requester_jurisdiction", "FI".into()),
        ("holder", "EE".into()),
        ("legal_basis", "eu-2023-1543".into()),
        ("grant_issued_at", grant.issued_at.to_string()),
        ("grant_expires_at", grant.expires_at.to_string()),
        ("due_at", view.notice.due_at.to_string()),
    ] {
        assert_eq!(body[field], want.as_str(), "{field} in {body}");
    }
    assert_eq!(body["categories"], serde_json::json!(["subscriber"]));
    assert_eq!(body["targets"], serde_json::json!([TARGET]), "in clear");
    assert_eq!(body["period"]["from"], "2026-01-01T00:00:00Z");
    assert!(
        body.get("attempts").is_none(),
        "the body is the same on every attempt"
    );

    let delivered = fixture.notice(early).await;
    assert_eq!(
        (delivered.attempts, delivered.status, delivered.delivered_at),
        (1, Some(200), Some(view.notice.due_at))
    );
    assert_eq!(
        fixture.deliveries().await,
        [Event::NoticeDelivered {
            notice: view.notice.id,
            grant: early,
            attempts: 1,
            status: 200,
        }]
    );
    assert_eq!(fixture.notice(late).await.state, NoticeState::Pending);
    until("the delivery counted", || async {
        fixture.attempts_metric("delivered") == 1.0
    })
    .await;
    assert_eq!(fixture.attempts_metric("failed"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_on_a_doubling_schedule() {
    let mut fixture = Fixture::new();
    let script = [
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(400),
        Answer::Status(502),
    ];
    let (addr, receiver) = receiver(&fixture.review.clock, &script).await;
    fixture.notify(Some(addr));
    let t0 = fixture.now();
    let grant = fixture.grant(Duration::ZERO).await;

    let failed = fixture.attempted(grant, 1).await;
    assert_eq!(failed.state, NoticeState::Pending);
    assert_eq!(failed.last_attempt_at, Some(t0));
    assert_eq!(failed.next_attempt_at, Some(t0.saturating_add(secs(1))));
    let error = failed.last_error.as_deref().unwrap();
    assert!(error.contains("500"), "{error}");

    // Waits of 1 s, 2 s, 4 s, then 4 s again (the cap); no attempt a
    // millisecond early.
    for (attempts, wait) in [(1, secs(1)), (2, secs(2)), (3, secs(4)), (4, secs(4))] {
        tokio::time::advance(wait - ms(1)).await;
        settle().await;
        assert_eq!(receiver.seen().len(), attempts, "retried early");
        tokio::time::advance(ms(1)).await;
        fixture.attempted(grant, attempts as u32 + 1).await;
    }
    until("delivered on the fifth attempt", || async {
        fixture.notice(grant).await.state == NoticeState::Delivered
    })
    .await;

    let seen = receiver.seen();
    let at: Vec<Timestamp> = seen.iter().map(|s| s.at).collect();
    let after = |s| t0.saturating_add(secs(s));
    assert_eq!(at, [t0, after(1), after(3), after(7), after(11)]);
    let id = fixture.notice(grant).await.notice.id.to_string();
    for (n, post) in seen.iter().enumerate() {
        assert_eq!(post.key(), id, "one key for every attempt");
        assert_eq!(post.body, seen[0].body, "the same bytes on every attempt");
        assert_eq!(post.headers[super::ATTEMPT_HEADER], (n + 1).to_string());
    }
    let delivered = fixture.notice(grant).await;
    assert_eq!((delivered.attempts, delivered.status), (5, Some(200)));
    match fixture.deliveries().await.as_slice() {
        [Event::NoticeDelivered { attempts: 5, .. }] => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(fixture.attempts_metric("failed"), 4.0);
    // The notifier counts a delivery once the store has it: a moment after
    // the state the test waited for.
    until("the delivery counted", || async {
        fixture.attempts_metric("delivered") == 1.0
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_and_a_silent_receiver_are_failed_attempts() {
    let mut fixture = Fixture::new();
    // A port nobody listens on, until the receiver starts on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    fixture.notify(Some(addr));
    let t0 = fixture.now();
    let grant = fixture.grant(Duration::ZERO).await;

    let refused = fixture.attempted(grant, 1).await;
    let error = refused.last_error.unwrap();
    assert!(error.contains("cannot connect"), "{error}");
    assert_eq!(refused.next_attempt_at, Some(t0.saturating_add(secs(1))));

    let listener = TcpListener::bind(addr).await.unwrap();
    let receiver = Receiver::start(listener, fixture.review.clock.clone(), &[Answer::Hang]).await;
    tokio::time::advance(secs(1)).await;
    until("the second attempt arrives", || async {
        receiver.seen().len() == 1
    })
    .await;
    // It hangs: the 10 s timeout ends the attempt, not a moment before.
    tokio::time::advance(secs(10) - ms(1)).await;
    settle().await;
    assert_eq!(fixture.notice(grant).await.attempts, 1);
    tokio::time::advance(ms(1)).await;
    let silent = fixture.attempted(grant, 2).await;
    let error = silent.last_error.unwrap();
    assert!(error.contains("no answer within 10s"), "{error}");
    let after = |s| t0.saturating_add(secs(s));
    assert_eq!(silent.next_attempt_at, Some(after(13)));

    tokio::time::advance(secs(2)).await;
    until("delivered on the third attempt", || async {
        fixture.notice(grant).await.state == NoticeState::Delivered
    })
    .await;
    let at: Vec<Timestamp> = receiver.seen().iter().map(|s| s.at).collect();
    assert_eq!(at, [after(1), after(13)]);
    assert_eq!(fixture.deliveries().await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_notifier_mid_attempt() {
    let mut fixture = Fixture::new();
    let (addr, receiver) = receiver(&fixture.review.clock, &[Answer::Hang]).await;
    fixture.notify(Some(addr));
    let grant = fixture.grant(Duration::ZERO).await;
    until("the attempt arrives", || async {
        receiver.seen().len() == 1
    })
    .await;
    fixture.stop.cancel();
    let notifier = fixture.notifier.take().unwrap();
    until("the notifier stops", || async { notifier.is_finished() }).await;
    let pending = fixture.notice(grant).await;
    assert_eq!((pending.state, pending.attempts), (NoticeState::Pending, 0));
}

#[tokio::test(start_paused = true)]
async fn without_a_webhook_notices_stay_pending() {
    let mut fixture = Fixture::new();
    fixture.notify(None);
    let grant = fixture.grant(Duration::ZERO).await;
    tokio::time::advance(secs(3600)).await;
    settle().await;
    let notice = fixture.notice(grant).await;
    assert_eq!((notice.state, notice.attempts), (NoticeState::Pending, 0));
    assert!(fixture.deliveries().await.is_empty());
}

#[test]
fn the_backoff_doubles_from_its_minimum_to_its_cap() {
    let (min, max) = (secs(1), secs(600));
    let waits: Vec<u64> = (0..12).map(|n| backoff(n, min, max).as_secs()).collect();
    assert_eq!(waits, [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600]);
    assert_eq!(backoff(u32::MAX, min, max), max);
    assert_eq!(backoff(40, secs(1), Duration::MAX), secs(1 << 31));
}
