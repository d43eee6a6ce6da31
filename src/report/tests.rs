use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::*;
use crate::audit::entry::FORMAT;

fn t(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("a test time is RFC 3339")
}

/// An audit log written by hand, one event at a time.
#[derive(Default)]
struct History {
    entries: Vec<Entry>,
}

impl History {
    fn push(&mut self, at: &str, event: Event) {
        self.entries.push(Entry {
            v: FORMAT,
            index: self.entries.len() as u64,
            at: t(at),
            prev: "00".repeat(32),
            event,
        });
    }

    fn file(
        &mut self,
        at: &str,
        jurisdiction: &str,
        categories: &[&str],
        state: &str,
        deadline: &str,
    ) -> RequestId {
        let request = RequestId::new();
        self.push(
            at,
            Event::RequestFiled {
                request,
                requester: format!("spiffe://{}.example/agency", jurisdiction.to_lowercase()),
                jurisdiction: jurisdiction.to_owned(),
                holder: "EE".to_owned(),
                categories: categories.iter().map(|c| (*c).to_owned()).collect(),
                targets: Vec::new(),
                urgency: "normal".to_owned(),
                state: state.to_owned(),
                deadline: t(deadline),
                policy: "p".to_owned(),
            },
        );
        self.push(
            at,
            Event::Finding {
                request,
                rule: "legal_basis".to_owned(),
                verdict: "pass".to_owned(),
                policy: "p".to_owned(),
            },
        );
        request
    }

    fn grant(&mut self, at: &str, request: RequestId, jurisdiction: &str) -> GrantId {
        let grant = GrantId::new();
        self.push(
            at,
            Event::Approval {
                request,
                by: "spiffe://ee.example/reviewer/anna".to_owned(),
                approvals: 1,
                required: 1,
                policy: "p".to_owned(),
            },
        );
        self.push(
            at,
            Event::GrantIssued {
                grant,
                request,
                grantee: "spiffe://fi.example/agency".to_owned(),
                jurisdiction: jurisdiction.to_owned(),
                categories: vec!["subscriber".to_owned()],
                approvers: vec!["spiffe://ee.example/reviewer/anna".to_owned()],
                expires_at: t("2027-01-01T00:00:00Z"),
                validation_due: None,
                notice_due: None,
                max_bytes: None,
                max_transfers: None,
                policy: "p".to_owned(),
            },
        );
        grant
    }

    fn deny(&mut self, at: &str, request: RequestId) {
        self.push(
            at,
            Event::RequestDenied {
                request,
                by: "spiffe://ee.example/reviewer/anna".to_owned(),
                reason_sha256: "r".to_owned(),
            },
        );
    }

    fn end(&mut self, at: &str, grant: GrantId, cause: &str) {
        self.push(
            at,
            Event::GrantEnded {
                grant,
                cause: cause.to_owned(),
                by: None,
                reason_sha256: None,
            },
        );
    }

    /// `allowed` is when it opened (None: no `transfer_allowed` entry).
    fn transfer(
        &mut self,
        allowed: Option<&str>,
        done: &str,
        grant: GrantId,
        category: &str,
        complete: bool,
        bytes: u64,
    ) {
        let transfer = TransferId::new();
        if let Some(at) = allowed {
            self.push(
                at,
                Event::TransferAllowed {
                    transfer,
                    grant,
                    grantee: "spiffe://fi.example/agency".to_owned(),
                    category: category.to_owned(),
                    target: crate::audit::entry::Pseudonym("ab".repeat(32)),
                },
            );
        }
        self.push(
            done,
            Event::TransferCompleted {
                transfer,
                grant,
                complete,
                incomplete: (!complete).then(|| "revoked".to_owned()),
                plaintext_sha256: "00".repeat(32),
                ciphertext_sha256: "00".repeat(32),
                plaintext_bytes: bytes,
                ciphertext_bytes: bytes + 200,
                encrypted: true,
            },
        );
    }
}

const FROM: &str = "2026-01-01T00:00:00Z";
const TO: &str = "2026-02-01T00:00:00Z";
const NOW: &str = "2026-02-10T00:00:00Z";
const LATER: &str = "2026-03-01T00:00:00Z";

/// January 2026 at an EE data holder, seen on 10 February.
fn january() -> History {
    let mut h = History::default();
    // Before the period: a request, its grant, and a transfer that opens
    // before the period and completes in it.
    let old = h.file(
        "2025-12-20T09:00:00Z",
        "FI",
        &["subscriber"],
        "pending",
        LATER,
    );
    let g_old = h.grant("2025-12-21T09:00:00Z", old, "FI");
    h.end("2025-12-31T10:00:00Z", GrantId::new(), "manual");
    let early = h.file(
        "2025-12-22T09:00:00Z",
        "FI",
        &["subscriber"],
        "pending",
        LATER,
    );
    let g_early = h.grant("2026-01-02T09:00:00Z", early, "FI");
    h.transfer(
        Some("2025-12-31T23:59:00Z"),
        "2026-01-01T00:05:00Z",
        g_old,
        "subscriber",
        true,
        700,
    );

    // FI in the period.
    let r1 = h.file(
        "2026-01-02T10:00:00Z",
        "FI",
        &["subscriber"],
        "pending",
        LATER,
    );
    let g1 = h.grant("2026-01-03T10:00:00Z", r1, "FI");
    let r2 = h.file(
        "2026-01-05T10:00:00Z",
        "FI",
        &["subscriber", "content"],
        "pending",
        LATER,
    );
    let g2 = h.grant("2026-01-06T10:00:00Z", r2, "FI");
    let r3 = h.file("2026-01-07T10:00:00Z", "FI", &["content"], "pending", LATER);
    h.deny("2026-01-08T10:00:00Z", r3);
    h.file(
        "2026-01-10T10:00:00Z",
        "FI",
        &["subscriber"],
        "refused",
        LATER,
    );
    h.file(
        "2026-01-15T10:00:00Z",
        "FI",
        &["subscriber"],
        "pending",
        "2026-01-25T10:00:00Z",
    );
    h.file(
        "2026-01-20T10:00:00Z",
        "FI",
        &["content"],
        "pending",
        "2026-02-20T10:00:00Z",
    );

    // US in the period; the first filed exactly at `from`.
    h.file(FROM, "US", &["subscriber"], "pending", LATER);
    let r7 = h.file(
        "2026-01-03T10:00:00Z",
        "US",
        &["subscriber"],
        "pending",
        LATER,
    );
    h.deny("2026-01-04T10:00:00Z", r7);
    h.file(
        "2026-01-09T10:00:00Z",
        "US",
        &["content", "traffic"],
        "refused",
        LATER,
    );
    let r9 = h.file(
        "2026-01-28T10:00:00Z",
        "US",
        &["subscriber"],
        "pending",
        LATER,
    );
    h.grant("2026-02-02T10:00:00Z", r9, "US");
    // Overdue as of now; its approval comes after now and must not count.
    let r10 = h.file(
        "2026-01-29T10:00:00Z",
        "US",
        &["subscriber"],
        "pending",
        "2026-02-05T10:00:00Z",
    );
    h.grant("2026-02-15T10:00:00Z", r10, "US");

    // Grant endings: in the period, at its last millisecond, after it.
    h.end("2026-01-10T10:00:00Z", g_early, "manual");
    h.end("2026-01-20T10:00:00Z", g1, "expired");
    h.end("2026-01-25T10:00:00Z", g2, "exhausted");
    h.end("2026-01-31T23:59:59.999Z", GrantId::new(), "manual");
    h.end("2026-02-03T10:00:00Z", GrantId::new(), "validation_missed");

    // Transfers.
    h.transfer(
        Some("2026-01-04T10:00:00Z"),
        "2026-01-04T10:01:00Z",
        g1,
        "subscriber",
        true,
        1000,
    );
    h.transfer(
        Some("2026-01-07T10:00:00Z"),
        "2026-01-07T10:01:00Z",
        g2,
        "content",
        true,
        5000,
    );
    h.transfer(
        Some("2026-01-07T11:00:00Z"),
        "2026-01-07T11:01:00Z",
        g2,
        "subscriber",
        false,
        300,
    );
    h.transfer(
        None,
        "2026-01-12T10:00:00Z",
        GrantId::new(),
        "subscriber",
        true,
        42,
    );
    h.transfer(
        Some("2026-01-31T23:00:00Z"),
        TO,
        g_early,
        "subscriber",
        true,
        9999,
    );

    // At `to` and after now: outside.
    h.file(TO, "FI", &["content"], "pending", LATER);
    h.file("2026-02-11T10:00:00Z", "SE", &["content"], "pending", LATER);
    h
}

fn report(entries: Vec<Entry>) -> Transparency {
    Transparency::from_entries(entries, t(FROM), t(TO), t(NOW))
}

fn cell(jurisdiction: &str, category: &str, outcome: Outcome) -> RequestCell {
    RequestCell {
        jurisdiction: jurisdiction.to_owned(),
        category: category.to_owned(),
        outcome,
    }
}

fn transfers(jurisdiction: &str, category: &str) -> TransferCell {
    TransferCell {
        jurisdiction: jurisdiction.to_owned(),
        category: category.to_owned(),
    }
}

#[test]
fn counts_match_the_scripted_history_exactly() {
    use Outcome::*;
    let r = report(january().entries);
    assert_eq!((r.from, r.to, r.as_of), (t(FROM), t(TO), t(NOW)));
    assert_eq!(
        r.requests,
        BTreeMap::from([
            (cell("FI", "content", Approved), 1),
            (cell("FI", "content", Denied), 1),
            (cell("FI", "content", Pending), 1),
            (cell("FI", "subscriber", Approved), 2),
            (cell("FI", "subscriber", Refused), 1),
            (cell("FI", "subscriber", Overdue), 1),
            (cell("US", "content", Refused), 1),
            (cell("US", "subscriber", Approved), 1),
            (cell("US", "subscriber", Denied), 1),
            (cell("US", "subscriber", Pending), 1),
            (cell("US", "subscriber", Overdue), 1),
            (cell("US", "traffic", Refused), 1),
        ])
    );
    assert_eq!(
        r.grants_ended,
        BTreeMap::from([
            ("exhausted".to_owned(), 1),
            ("expired".to_owned(), 1),
            ("manual".to_owned(), 2)
        ])
    );
    let totals = |complete, incomplete, plaintext_bytes| TransferTotals {
        complete,
        incomplete,
        plaintext_bytes,
    };
    assert_eq!(
        r.transfers,
        BTreeMap::from([
            (transfers("FI", "content"), totals(1, 0, 5000)),
            (transfers("FI", "subscriber"), totals(2, 1, 2000)),
            (transfers(UNKNOWN, UNKNOWN), totals(1, 0, 42)),
        ])
    );
}

#[test]
fn entry_order_does_not_change_the_counts() {
    let entries = january().entries;
    let mut reversed = entries.clone();
    reversed.reverse();
    assert_eq!(report(entries), report(reversed));
}

#[test]
fn exact_publication_is_a_complete_grid_with_zeros_shown() {
    let r = report(january().entries);
    let p = r.publish(
        &Publication {
            k: 1,
            epsilon: None,
        },
        &mut StdRng::seed_from_u64(1),
    );
    // 2 jurisdictions × 4 standard categories × 5 outcomes.
    assert_eq!(p.requests.len(), 40);
    for row in &p.requests {
        let exact = r.requests.get(&row.cell).copied().unwrap_or(0);
        assert_eq!(row.count, Cell::Shown(exact), "{:?}", row.cell);
    }
    let causes: Vec<_> = p
        .grants_ended
        .iter()
        .map(|e| (e.cause.as_str(), e.count))
        .collect();
    assert_eq!(
        causes,
        [
            ("exhausted", Cell::Shown(1)),
            ("expired", Cell::Shown(1)),
            ("manual", Cell::Shown(2)),
            ("validation_missed", Cell::Shown(0)),
        ]
    );
    // FI and unknown × (4 standard categories + unknown).
    assert_eq!(p.transfers.len(), 10);
    let fi_subscriber = p
        .transfers
        .iter()
        .find(|t| t.cell == transfers("FI", "subscriber"))
        .unwrap();
    assert_eq!(
        (
            fi_subscriber.complete,
            fi_subscriber.incomplete,
            fi_subscriber.plaintext_bytes
        ),
        (Cell::Shown(2), Cell::Shown(1), Cell::Shown(2000))
    );
    let sorted = |keys: Vec<RequestCell>| keys.windows(2).all(|w| w[0] < w[1]);
    assert!(sorted(p.requests.iter().map(|r| r.cell.clone()).collect()));
}

/// A busier month: enough requests for some cells to reach k = 5.
fn busy() -> Transparency {
    let mut h = History::default();
    for i in 0..6 {
        let r = h.file(
            "2026-01-02T10:00:00Z",
            "FI",
            &["subscriber"],
            "pending",
            LATER,
        );
        let g = h.grant("2026-01-03T10:00:00Z", r, "FI");
        h.end("2026-01-20T10:00:00Z", g, "expired");
        h.transfer(
            Some("2026-01-04T10:00:00Z"),
            "2026-01-04T10:01:00Z",
            g,
            "subscriber",
            i != 0,
            100,
        );
    }
    for _ in 0..4 {
        let r = h.file("2026-01-05T10:00:00Z", "FI", &["content"], "pending", LATER);
        h.deny("2026-01-06T10:00:00Z", r);
    }
    for _ in 0..5 {
        h.file(
            "2026-01-07T10:00:00Z",
            "US",
            &["subscriber"],
            "pending",
            LATER,
        );
    }
    let r = h.file("2026-01-08T10:00:00Z", "US", &["traffic"], "pending", LATER);
    let g = h.grant("2026-01-09T10:00:00Z", r, "US");
    h.end("2026-01-10T10:00:00Z", g, "manual");
    for _ in 0..3 {
        h.transfer(
            Some("2026-01-09T11:00:00Z"),
            "2026-01-09T11:01:00Z",
            g,
            "traffic",
            true,
            1,
        );
    }
    report(h.entries)
}

#[test]
fn counts_below_k_are_suppressed_with_their_bytes() {
    use Outcome::*;
    let p = busy().publish(&Publication::default(), &mut StdRng::seed_from_u64(1));
    let count = |j: &str, c: &str, o: Outcome| {
        p.requests
            .iter()
            .find(|r| r.cell == cell(j, c, o))
            .unwrap()
            .count
    };
    assert_eq!(count("FI", "subscriber", Approved), Cell::Shown(6));
    assert_eq!(count("FI", "content", Denied), Cell::Suppressed);
    assert_eq!(
        count("US", "subscriber", Pending),
        Cell::Shown(5),
        "k itself is shown"
    );
    assert_eq!(count("US", "traffic", Approved), Cell::Suppressed);
    assert_eq!(
        count("FI", "traffic", Denied),
        Cell::Shown(0),
        "zero stays zero"
    );

    let ended: BTreeMap<_, _> = p
        .grants_ended
        .iter()
        .map(|e| (e.cause.as_str(), e.count))
        .collect();
    assert_eq!(ended["expired"], Cell::Shown(6));
    assert_eq!(ended["manual"], Cell::Suppressed);
    assert_eq!(ended["exhausted"], Cell::Shown(0));

    let row = |j: &str, c: &str| {
        p.transfers
            .iter()
            .find(|t| t.cell == transfers(j, c))
            .unwrap()
    };
    let fi = row("FI", "subscriber");
    // 5 complete and 1 incomplete: the sum covers 6 transfers, so it shows.
    assert_eq!(
        (fi.complete, fi.incomplete, fi.plaintext_bytes),
        (Cell::Shown(5), Cell::Suppressed, Cell::Shown(600))
    );
    let us = row("US", "traffic");
    assert_eq!(
        (us.complete, us.incomplete, us.plaintext_bytes),
        (Cell::Suppressed, Cell::Shown(0), Cell::Suppressed)
    );
    let empty = row("US", "content");
    assert_eq!(
        (empty.complete, empty.plaintext_bytes),
        (Cell::Shown(0), Cell::Shown(0))
    );

    let csv = p.to_csv();
    assert!(csv.contains("requests,FI,content,denied,<5\r\n"), "{csv}");
    assert!(
        csv.contains("transfers,US,traffic,plaintext_bytes,suppressed\r\n"),
        "{csv}"
    );
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    let denied = json["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["jurisdiction"] == "FI" && r["category"] == "content" && r["outcome"] == "denied"
        })
        .unwrap();
    assert_eq!(denied["count"], serde_json::Value::Null);
    assert_eq!(denied["suppressed"], serde_json::json!(["count"]));
    assert_eq!(json["publication"]["k"], 5);
}

#[test]
fn k_of_zero_or_one_suppresses_nothing() {
    let r = busy();
    for k in [0, 1] {
        let p = r.publish(
            &Publication { k, epsilon: None },
            &mut StdRng::seed_from_u64(1),
        );
        assert!(p.requests.iter().all(|r| matches!(r.count, Cell::Shown(_))));
        assert!(
            p.transfers
                .iter()
                .all(|t| matches!(t.plaintext_bytes, Cell::Shown(_)))
        );
    }
}

fn noisy(epsilon: f64, k: u64) -> Publication {
    Publication {
        k,
        epsilon: Some(Epsilon::new(epsilon).unwrap()),
    }
}

#[test]
fn noise_is_deterministic_under_a_seed_and_withholds_bytes() {
    let r = busy();
    let a = r.publish(&noisy(0.5, 5), &mut StdRng::seed_from_u64(7));
    let b = r.publish(&noisy(0.5, 5), &mut StdRng::seed_from_u64(7));
    let c = r.publish(&noisy(0.5, 5), &mut StdRng::seed_from_u64(8));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(
        a.transfers
            .iter()
            .all(|t| t.plaintext_bytes == Cell::Withheld)
    );
    // Noise comes before suppression: nothing from 1 to k - 1 is shown.
    let shown = a
        .requests
        .iter()
        .map(|r| r.count)
        .chain(a.grants_ended.iter().map(|e| e.count));
    for count in shown {
        assert!(!matches!(count, Cell::Shown(1..=4)), "{count:?}");
    }
    assert!(
        a.to_csv()
            .contains("transfers,FI,subscriber,plaintext_bytes,withheld\r\n")
    );
    let json: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    assert_eq!(json["publication"]["epsilon"], 0.5);
    assert_eq!(json["publication"]["plaintext_bytes"], "withheld");
}

/// `P(|X| = k)` of the discrete Laplace distribution of scale 1/ε.
fn discrete_laplace_pmf(epsilon: f64, k: u64) -> f64 {
    let p = (-epsilon).exp();
    let at_zero = (1.0 - p) / (1.0 + p);
    if k == 0 {
        at_zero
    } else {
        2.0 * at_zero * p.powi(k as i32)
    }
}

#[test]
fn discrete_laplace_draws_are_centred_symmetric_with_the_exact_variance() {
    for (epsilon, n, mean_bound, pmf_bound) in
        [(0.5, 200_000, 0.04, 0.005), (1.0, 200_000, 0.02, 0.005)]
    {
        let mut rng = StdRng::seed_from_u64(2026);
        let e = Epsilon::new(epsilon).unwrap();
        let draws: Vec<i64> = (0..n).map(|_| discrete_laplace(e, &mut rng)).collect();
        let nf = n as f64;
        let mean = draws.iter().sum::<i64>() as f64 / nf;
        let variance = draws
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / nf;
        // Var = 2p/(1 − p)², p = exp(−ε) (= exp(−1/t), t = 1/ε): 7.835 at
        // ε = 0.5, 1.841 at ε = 1. Standard errors of the mean about 0.006
        // and 0.003, of the variance about 0.04 and 0.01: bounds ≥ 6 of them.
        let p = (-epsilon).exp();
        let want = 2.0 * p / (1.0 - p).powi(2);
        assert!(mean.abs() < mean_bound, "ε {epsilon}: mean {mean}");
        assert!(
            (variance - want).abs() < want * 0.04,
            "ε {epsilon}: variance {variance}, want {want}"
        );
        // Symmetric: as many above 0 as below, and the exact mass at each |k|.
        let above = draws.iter().filter(|&&x| x > 0).count() as f64 / nf;
        let below = draws.iter().filter(|&&x| x < 0).count() as f64 / nf;
        assert!(
            (above - below).abs() < 0.01,
            "ε {epsilon}: {above} above, {below} below"
        );
        for k in 0..6u64 {
            let share = draws.iter().filter(|&&x| x.unsigned_abs() == k).count() as f64 / nf;
            let want = discrete_laplace_pmf(epsilon, k);
            assert!(
                (share - want).abs() < pmf_bound,
                "ε {epsilon}: P(|X| = {k}) = {share}, want {want}"
            );
        }
    }

    // The smallest ε: scale 100, variance 2p/(1 − p)² ≈ 19 998.
    let mut rng = StdRng::seed_from_u64(7);
    let e = Epsilon::new(Epsilon::MIN).unwrap();
    let n = 40_000;
    let draws: Vec<i64> = (0..n).map(|_| discrete_laplace(e, &mut rng)).collect();
    let mean = draws.iter().sum::<i64>() as f64 / n as f64;
    let variance = draws
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let p = (-Epsilon::MIN).exp();
    let want = 2.0 * p / (1.0 - p).powi(2);
    // Standard errors about 0.7 and 1.2 % of the variance.
    assert!(mean.abs() < 5.0, "mean {mean}");
    assert!(
        (variance - want).abs() < want * 0.08,
        "variance {variance}, want {want}"
    );
}

#[test]
fn epsilon_is_refused_outside_its_documented_range() {
    for bad in [1e-300, 0.0099, 10.01, 0.0, -0.5, f64::NAN, f64::INFINITY] {
        assert_eq!(Epsilon::new(bad), None, "{bad}");
    }
    for good in [Epsilon::MIN, 0.1, 1.0, Epsilon::MAX] {
        assert_eq!(Epsilon::new(good).map(Epsilon::value), Some(good));
    }
    let err = "1e-300".parse::<Epsilon>().unwrap_err();
    assert!(err.contains("0.01 ≤ ε ≤ 10"), "{err}");
    let err = ReportQuery::parse(&format!("from={FROM}&to={TO}&epsilon=1e-300")).unwrap_err();
    assert!(err.epsilon_out_of_range(), "{err}");
    let err = ReportQuery::parse(&format!("from={FROM}&to={TO}&k=x")).unwrap_err();
    assert!(!err.epsilon_out_of_range(), "{err}");
}

#[test]
fn noisy_counts_clamp_at_zero_and_at_the_top_and_never_wrap() {
    let e = Epsilon::new(Epsilon::MIN).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let p = (-Epsilon::MIN).exp();
    let (mut zeros, mut tops, n) = (0u32, 0u32, 20_000u32);
    for _ in 0..n {
        let low = noisy_count(0, e, &mut rng);
        // Noise of scale 100 stays far below a wrapped (huge) count.
        assert!(low < 100_000, "{low}");
        zeros += u32::from(low == 0);
        let high = noisy_count(u64::MAX, e, &mut rng);
        assert!(high > u64::MAX - 100_000, "{high}");
        tops += u32::from(high == u64::MAX);
    }
    // Both clamp exactly when the noise points out of range: P(X ≤ 0) = 1/(1 + p).
    let want = 1.0 / (1.0 + p);
    for (name, count) in [("zeros", zeros), ("tops", tops)] {
        let share = f64::from(count) / f64::from(n);
        assert!((share - want).abs() < 0.02, "{name}: {share}, want {want}");
    }

    // In a report: ε = 1e-300 once showed 18446744073709551615 for zeros.
    let mut r = Transparency::from_entries(Vec::new(), t(FROM), t(TO), t(NOW));
    r.requests
        .insert(cell("FI", "content", Outcome::Approved), 3);
    let published = r.publish(&noisy(Epsilon::MIN, 1), &mut StdRng::seed_from_u64(3));
    for row in &published.requests {
        let Cell::Shown(n) = row.count else {
            panic!("k = 1 suppresses nothing");
        };
        assert!(n < 100_000, "{row:?}");
    }
}

#[test]
fn published_noise_is_centred_and_zeros_clamp_rather_than_go_negative() {
    let mut big = Transparency::from_entries(Vec::new(), t(FROM), t(TO), t(NOW));
    big.requests
        .insert(cell("FI", "content", Outcome::Approved), 1000);
    let mut rng = StdRng::seed_from_u64(99);
    let (mut offsets, mut zeros, mut zero_cells) = (Vec::new(), 0u32, 0u32);
    for _ in 0..2_000 {
        let p = big.publish(&noisy(1.0, 1), &mut rng);
        for row in &p.requests {
            let Cell::Shown(n) = row.count else {
                panic!("k = 1 suppresses nothing");
            };
            if row.cell == cell("FI", "content", Outcome::Approved) {
                offsets.push(n as f64 - 1000.0);
            } else {
                zero_cells += 1;
                zeros += u32::from(n == 0);
            }
        }
    }
    let mean = offsets.iter().sum::<f64>() / offsets.len() as f64;
    let mean_abs = offsets.iter().map(|x| x.abs()).sum::<f64>() / offsets.len() as f64;
    assert!(mean.abs() < 0.15, "mean offset {mean}");
    // Discrete Laplace of scale 1 (p = e^-1): E|X| = 2p / (1 - p²) ≈ 0.851.
    assert!((mean_abs - 0.851).abs() < 0.15, "mean |offset| {mean_abs}");
    // A true zero shows as 0 whenever the noise is 0 or below: 1 / (1 + p).
    let share = f64::from(zeros) / f64::from(zero_cells);
    assert!((share - 0.731).abs() < 0.02, "share of zeros {share}");
}

#[test]
fn csv_has_one_header_and_quotes_per_rfc_4180() {
    let mut r = Transparency::from_entries(Vec::new(), t(FROM), t(TO), t(NOW));
    r.requests
        .insert(cell("X,\"Y\"", "line\nbreak", Outcome::Pending), 2);
    let csv = r
        .publish(
            &Publication {
                k: 1,
                epsilon: None,
            },
            &mut StdRng::seed_from_u64(1),
        )
        .to_csv();
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("from,to,section,jurisdiction,category,measure,value")
    );
    assert!(
        csv.contains(&format!(
            "{FROM},{TO},requests,\"X,\"\"Y\"\"\",\"line\nbreak\",pending,2\r\n"
        )),
        "{csv}"
    );
    assert!(csv.ends_with("\r\n"));
    // 1 jurisdiction × 5 categories × 5 outcomes + 4 causes, no transfers.
    assert_eq!(csv.matches(",requests,").count(), 25);
    assert_eq!(csv.matches(",grants_ended,,,").count(), 4);
    assert_eq!(csv.matches("\r\n").count(), 1 + 25 + 4);
}

#[test]
fn markdown_has_a_table_per_section_and_notes_on_suppression_and_noise() {
    let md = busy()
        .publish(&Publication::default(), &mut StdRng::seed_from_u64(1))
        .to_markdown();
    assert!(md.starts_with("# Transparency report\n"), "{md}");
    for heading in [
        "## Requests by requester jurisdiction, category and outcome",
        "## Grants ended, by cause",
        "## Transfers completed, by grantee jurisdiction and category",
        "## Notes",
    ] {
        assert!(md.contains(&format!("\n{heading}\n")), "{heading}\n{md}");
    }
    assert!(md.contains(
        "| jurisdiction | category | approved | denied | refused | pending | overdue |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n"
    ));
    assert!(
        md.contains("| FI | content | 0 | <5 | 0 | 0 | 0 |\n"),
        "{md}"
    );
    assert!(md.contains("| FI | subscriber | 5 | <5 | 600 |\n"), "{md}");
    assert!(md.contains("counted once under each"));
    assert!(md.contains("shown as \"<5\""));
    assert!(md.contains("Noise: none; counts are exact."));

    let noisy_md = busy()
        .publish(&noisy(0.5, 5), &mut StdRng::seed_from_u64(1))
        .to_markdown();
    assert!(
        noisy_md.contains("Laplace noise of scale 2 (epsilon = 0.5)"),
        "{noisy_md}"
    );
    assert!(noisy_md.contains("| withheld |"));

    let empty = Transparency::from_entries(Vec::new(), t(FROM), t(TO), t(NOW));
    let md = empty
        .publish(&Publication::default(), &mut StdRng::seed_from_u64(1))
        .to_markdown();
    assert!(md.contains("No requests were filed in the period."));
    assert!(md.contains("No transfers completed in the period."));
}

#[test]
fn markdown_escapes_labels_from_the_log() {
    let mut r = Transparency::from_entries(Vec::new(), t(FROM), t(TO), t(NOW));
    r.requests
        .insert(cell("A|<b>", "ip_identification", Outcome::Pending), 1);
    let md = r
        .publish(
            &Publication {
                k: 1,
                epsilon: None,
            },
            &mut StdRng::seed_from_u64(1),
        )
        .to_markdown();
    assert!(
        md.contains("| A\\|\\<b\\> | ip_identification | 0 | 0 | 0 | 1 | 0 |\n"),
        "{md}"
    );
}

fn query_errors(query: &str) -> Vec<(String, String)> {
    ReportQuery::parse(query)
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| (e.field, e.problem))
        .collect()
}

#[test]
fn report_queries_parse_and_round_trip() {
    let q = ReportQuery::parse(
        "from=2026-01-01T00%3A00%3A00Z&to=2026-02-01T02:00:00+02:00&format=csv&k=10&epsilon=0.25",
    )
    .unwrap();
    assert_eq!((q.from, q.to), (t(FROM), t(TO)));
    assert_eq!((q.format, q.k), (Format::Csv, Some(10)));
    assert_eq!(q.epsilon.map(Epsilon::value), Some(0.25));
    assert_eq!(ReportQuery::parse(&q.to_query_string()).unwrap(), q);

    let q = ReportQuery::parse(&format!("from={FROM}&to={TO}")).unwrap();
    assert_eq!((q.format, q.k, q.epsilon), (Format::Json, None, None));
    let defaults = Publication {
        k: 3,
        epsilon: Epsilon::new(1.0),
    };
    assert_eq!(q.publication(&defaults), defaults);
    let q = ReportQuery::parse(&format!("from={FROM}&to={TO}&k=0")).unwrap();
    assert_eq!(q.publication(&defaults).k, 0);
}

#[test]
fn report_query_errors_name_every_bad_parameter() {
    assert_eq!(
        query_errors(""),
        [
            (
                "from".to_owned(),
                "is required (RFC 3339, e.g. 2026-01-01T00:00:00Z)".to_owned()
            ),
            (
                "to".to_owned(),
                "is required (RFC 3339, e.g. 2026-01-01T00:00:00Z)".to_owned()
            ),
        ]
    );
    let errors = query_errors(
        "from=yesterday&to=2026-01-01T00:00:00Z&format=pdf&k=-1&epsilon=0&colour=red&to=x",
    );
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["colour", "to", "from", "format", "k", "epsilon"],
        "{errors:?}"
    );
    assert!(errors[1].1.contains("more than once"));
    assert!(errors[2].1.contains("`yesterday` is not an RFC 3339 time"));
    for bad in [
        "0", "-1", "NaN", "inf", "abc", "", "1e-300", "0.009", "10.5",
    ] {
        let errors = query_errors(&format!("from={FROM}&to={TO}&epsilon={bad}"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "epsilon");
        assert!(errors[0].1.contains("greater than 0"), "{bad}: {errors:?}");
    }
    for (from, to) in [(TO, FROM), (FROM, FROM)] {
        let errors = query_errors(&format!("from={from}&to={to}"));
        assert_eq!(errors.len(), 1);
        assert!(errors[0].1.contains("the period is empty"), "{errors:?}");
    }
    let errors = query_errors(&format!("from={FROM}&to={TO}&k=%zz"));
    assert_eq!(
        errors,
        [(
            "k".to_owned(),
            "is not valid percent-encoded UTF-8".to_owned()
        )]
    );
    let message = ReportQuery::parse("from=x").unwrap_err().to_string();
    assert!(
        message.starts_with("from: `x` is not an RFC 3339 time; to: is required"),
        "{message}"
    );
}

#[test]
fn render_answers_with_the_content_type_and_refuses_future_periods() {
    let entries = january().entries;
    let defaults = Publication::default();
    for (format, content_type) in [
        ("json", "application/json"),
        ("csv", "text/csv; charset=utf-8; header=present"),
        ("markdown", "text/markdown; charset=utf-8"),
    ] {
        let query =
            ReportQuery::parse(&format!("from={FROM}&to={TO}&format={format}&k=1")).unwrap();
        let (ct, body) = render(entries.clone(), &query, t(NOW), &defaults).unwrap();
        assert_eq!(ct, content_type);
        if format == "csv" {
            assert!(
                body.contains("requests,FI,subscriber,approved,2\r\n"),
                "{body}"
            );
        }
    }
    let query = ReportQuery::parse(&format!("from={LATER}&to=2026-04-01T00:00:00Z")).unwrap();
    let err = render(entries, &query, t(NOW), &defaults).unwrap_err();
    assert_eq!(err.0[0].field, "from");
}
