//! The scheduler against a real SQLite file, on paused tokio time: grants end
//! exactly when due, not a millisecond early.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::run;
use crate::clock::{Clock, Timestamp};
use crate::grant::token::{TokenKeys, TokenSettings, Tokens};
use crate::grant::{Cause, GrantId, GrantState};
use crate::identity::{PeerIdentity, Thumbprint};
use crate::policy::{EmergencyApproval, PairPolicy, Policies};
use crate::request::{Period, RequestBody, Urgency};
use crate::review::{Review, Terms};
use crate::store::Approved;
use crate::store::sqlite::SqliteStore;

const DAY: u64 = 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    review: Arc<Review>,
    stop: CancellationToken,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = crate::audit::entry::Pseudonymiser::new(vec![9; 32]).unwrap();
        let store = SqliteStore::open(&dir.path().join("x.sqlite3"), names.clone()).unwrap();
        let policy = PairPolicy {
            holder: "EE".parse().unwrap(),
            requester: "FI".parse().unwrap(),
            legal_bases: vec!["eu-2023-1543".into()],
            categories: vec!["subscriber".parse().unwrap(), "content".parse().unwrap()],
            forbidden_categories: vec![],
            max_targets: 5,
            max_period: Duration::from_secs(366 * DAY),
            max_lifetime: Duration::from_secs(30 * DAY),
            max_lifetime_emergency: Duration::from_secs(3 * DAY),
            approvals: [("content".parse().unwrap(), 2)].into_iter().collect(),
            response_deadline: Duration::from_secs(10 * DAY),
            response_deadline_emergency: Duration::from_secs(8 * 3600),
            notification_deferral_max: Duration::from_secs(90 * DAY),
            emergency: EmergencyApproval::OneThenValidate,
            emergency_validation: Duration::from_secs(5),
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
        let stop = CancellationToken::new();
        tokio::spawn(run(review.clone(), stop.clone()));
        Self {
            _dir: dir,
            review,
            stop,
        }
    }

    /// Files and approves a request; returns the grant.
    async fn grant(&self, category: &str, urgency: Urgency, lifetime: Duration) -> GrantId {
        let peer = PeerIdentity {
            spiffe_id: "spiffe://fi.xborder.test/agency/police".parse().unwrap(),
            jurisdiction: "FI".parse().unwrap(),
            thumbprint: Thumbprint::of(b"a certificate"),
        };
        let body = RequestBody {
            legal_basis: "eu-2023-1543".into(),
            purpose: "p".into(),
            categories: vec![category.into()],
            targets: vec!["t".into()],
            period: crate::request::PeriodBody {
                from: "2026-01-01T00:00:00Z".into(),
                to: "2026-02-01T00:00:00Z".into(),
            },
            urgency,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "j".into(),
        };
        let request = self.review.file(&peer, body).await.unwrap();
        let approver = "spiffe://ee.xborder.test/admin/alice".parse().unwrap();
        let terms = Terms {
            lifetime: Some(lifetime),
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

    /// The grant's state once the scheduler is done with it: waits up to 2 s
    /// of real time (paused time stands still) for `done` to hold.
    async fn settled(
        &self,
        id: GrantId,
        done: impl Fn(GrantState) -> bool,
    ) -> (GrantState, Option<Cause>, Option<Timestamp>) {
        for _ in 0..2000 {
            let state = self.state(id).await;
            if done(state.0) {
                return state;
            }
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
                .await
                .unwrap();
        }
        self.state(id).await
    }

    async fn state(&self, id: GrantId) -> (GrantState, Option<Cause>, Option<Timestamp>) {
        let grant = self.review.store.grant(id).await.unwrap().unwrap();
        let ending = grant.ending.as_ref();
        (grant.state, ending.map(|e| e.cause), ending.map(|e| e.at))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sleeps on paused time, then gives the scheduler's store calls (blocking
/// threads, real time) 50 ms of real time to finish. Paused time does not
/// move meanwhile: tokio does not auto-advance while a blocking task runs.
async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
    for _ in 0..50 {
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_grant_ends_exactly_at_its_expiry() {
    let fixture = Fixture::new();
    let id = fixture
        .grant("subscriber", Urgency::Normal, Duration::from_secs(10))
        .await;
    let expires_at = fixture
        .review
        .store
        .grant(id)
        .await
        .unwrap()
        .unwrap()
        .expires_at;

    advance(fixture.review.now().until(expires_at) - Duration::from_millis(1)).await;
    assert_eq!(fixture.state(id).await.0, GrantState::Active, "ended early");
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        fixture.settled(id, |s| s != GrantState::Active).await,
        (GrantState::Expired, Some(Cause::Expired), Some(expires_at))
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_earlier_grant_rearms_the_scheduler() {
    let fixture = Fixture::new();
    let late = fixture
        .grant("subscriber", Urgency::Normal, Duration::from_secs(100))
        .await;
    advance(Duration::from_secs(1)).await;
    let early = fixture
        .grant("subscriber", Urgency::Normal, Duration::from_secs(10))
        .await;
    advance(Duration::from_secs(10)).await;
    let ended = |s| s != GrantState::Active;
    assert_eq!(fixture.settled(early, ended).await.0, GrantState::Expired);
    assert_eq!(fixture.state(late).await.0, GrantState::Active);
    advance(Duration::from_secs(90)).await;
    assert_eq!(fixture.settled(late, ended).await.0, GrantState::Expired);
}

#[tokio::test(start_paused = true)]
async fn an_unvalidated_emergency_grant_is_revoked_when_its_window_closes() {
    let fixture = Fixture::new();
    // `content` needs two approvers; in an emergency one grants, pending validation within 5 s.
    let id = fixture
        .grant("content", Urgency::Emergency, Duration::from_secs(3600))
        .await;
    advance(Duration::from_millis(4_999)).await;
    assert_eq!(fixture.state(id).await.0, GrantState::Active);
    advance(Duration::from_millis(1)).await;
    let (state, cause, _) = fixture.settled(id, |s| s != GrantState::Active).await;
    assert_eq!(
        (state, cause),
        (GrantState::Revoked, Some(Cause::ValidationMissed))
    );
}

#[tokio::test(start_paused = true)]
async fn a_validated_emergency_grant_lives_to_its_expiry() {
    let fixture = Fixture::new();
    let id = fixture
        .grant("content", Urgency::Emergency, Duration::from_secs(60))
        .await;
    let bob = "spiffe://ee.xborder.test/admin/bob".parse().unwrap();
    fixture.review.validate(id, &bob).await.unwrap();
    advance(Duration::from_secs(30)).await;
    assert_eq!(fixture.state(id).await.0, GrantState::Active);
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        fixture.settled(id, |s| s != GrantState::Active).await.1,
        Some(Cause::Expired)
    );
}

#[test]
fn periods_contain_their_subperiods() {
    let t = |s| Timestamp::parse(s).unwrap();
    let grant = Period {
        from: t("2026-01-01T00:00:00Z"),
        to: t("2026-02-01T00:00:00Z"),
    };
    assert!(grant.contains(&grant));
    assert!(!grant.contains(&Period {
        from: t("2025-12-31T00:00:00Z"),
        to: t("2026-01-15T00:00:00Z"),
    }));
}
