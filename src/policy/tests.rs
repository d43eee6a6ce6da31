use super::*;
use crate::request::{Period, Scope, Urgency};

fn j(cc: &str) -> Jurisdiction {
    cc.parse().unwrap()
}

fn c(name: &str) -> Category {
    name.parse().unwrap()
}

const DAY: u64 = 86_400;

fn ee_fi() -> PairPolicy {
    PairPolicy {
        holder: j("EE"),
        requester: j("FI"),
        legal_bases: vec!["eu-2023-1543".into(), "mla".into()],
        categories: vec![c("subscriber"), c("traffic"), c("content")],
        forbidden_categories: vec![c("ip_identification")],
        max_targets: 3,
        max_period: Duration::from_secs(90 * DAY),
        max_lifetime: Duration::from_secs(30 * DAY),
        max_lifetime_emergency: Duration::from_secs(3 * DAY),
        approvals: [(c("content"), 2)].into_iter().collect(),
        response_deadline: Duration::from_secs(10 * DAY),
        response_deadline_emergency: Duration::from_secs(8 * 3600),
        notification_deferral_max: Duration::from_secs(90 * DAY),
        emergency: EmergencyApproval::OneThenValidate,
        emergency_validation: Duration::from_secs(48 * 3600),
        rate: Default::default(),
    }
}

fn scope(categories: &[&str], targets: usize, days: u64, urgency: Urgency) -> Scope {
    let from = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    Scope {
        legal_basis: "eu-2023-1543".into(),
        purpose: "fraud investigation".into(),
        categories: categories.iter().map(|n| c(n)).collect(),
        targets: (0..targets).map(|i| format!("+372555000{i}")).collect(),
        period: Period {
            from,
            to: from.saturating_add(Duration::from_secs(days * DAY)),
        },
        urgency,
        recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
        justification: "needed".into(),
    }
}

fn verdicts(e: &Evaluation) -> Vec<(&str, Verdict)> {
    e.findings
        .iter()
        .map(|f| (f.rule.as_str(), f.verdict))
        .collect()
}

#[test]
fn a_proportionate_request_passes_every_hard_rule() {
    let now = Timestamp::parse("2026-11-23T12:00:00Z").unwrap();
    let e = ee_fi().evaluate(&scope(&["subscriber"], 1, 30, Urgency::Normal), now);
    assert!(!e.refused(), "{:?}", e.findings);
    assert!(e.findings.iter().all(|f| f.verdict == Verdict::Pass));
    assert_eq!(
        e.deadline,
        now.saturating_add(Duration::from_secs(10 * DAY))
    );
    assert_eq!((e.approvals_required, e.approvals_to_grant), (1, 1));
    assert_eq!(e.max_lifetime, Duration::from_secs(30 * DAY));
}

#[test]
fn an_over_broad_request_lists_every_failing_rule() {
    let mut s = scope(
        &["ip_identification", "subscriber", "location"],
        5,
        400,
        Urgency::Normal,
    );
    s.legal_basis = "curiosity".into();
    let e = ee_fi().evaluate(&s, Timestamp::from_unix_ms(0));
    assert!(e.refused());
    let failed: Vec<&str> = e.failures().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        failed,
        vec![
            "legal_basis",
            "category.ip_identification",
            "category.location",
            "targets",
            "period"
        ]
    );
    let localisation = e
        .failures()
        .find(|f| f.rule == "category.ip_identification")
        .unwrap();
    assert!(
        localisation.reason.contains("data localisation"),
        "{}",
        localisation.reason
    );
}

#[test]
fn content_needs_two_approvers_and_says_so() {
    let e = ee_fi().evaluate(
        &scope(&["subscriber", "content"], 1, 10, Urgency::Normal),
        Timestamp::from_unix_ms(0),
    );
    assert!(!e.refused());
    assert_eq!((e.approvals_required, e.approvals_to_grant), (2, 2));
    assert!(verdicts(&e).contains(&("approvals", Verdict::NeedsReview)));
    assert_eq!(e.validation_window, None);
}

#[test]
fn an_emergency_gets_the_short_deadline_and_one_approver_with_validation() {
    let now = Timestamp::from_unix_ms(0);
    let e = ee_fi().evaluate(&scope(&["content"], 1, 10, Urgency::Emergency), now);
    assert_eq!(
        e.deadline,
        now.saturating_add(Duration::from_secs(8 * 3600))
    );
    assert_eq!((e.approvals_required, e.approvals_to_grant), (2, 1));
    assert_eq!(e.validation_window, Some(Duration::from_secs(48 * 3600)));
    assert_eq!(e.max_lifetime, Duration::from_secs(3 * DAY));
    assert!(verdicts(&e).contains(&("emergency", Verdict::NeedsReview)));

    let mut as_normal = ee_fi();
    as_normal.emergency = EmergencyApproval::AsNormal;
    let e = as_normal.evaluate(&scope(&["content"], 1, 10, Urgency::Emergency), now);
    assert_eq!((e.approvals_required, e.approvals_to_grant), (2, 2));
    assert_eq!(e.validation_window, None);
}

#[test]
fn a_pair_without_policy_is_denied_by_default() {
    let policies = Policies::new([ee_fi()]);
    let s = scope(&["subscriber"], 1, 10, Urgency::Normal);
    let e = policies.evaluate(&j("EE"), &j("US"), &s, Timestamp::from_unix_ms(0));
    assert!(e.refused());
    assert_eq!(verdicts(&e), vec![("pair_policy", Verdict::Fail)]);
    assert!(e.findings[0].reason.contains("denied by default"));
    assert!(
        !policies
            .evaluate(&j("EE"), &j("FI"), &s, Timestamp::from_unix_ms(0))
            .refused()
    );
}

#[test]
fn the_policy_hash_changes_with_the_policy() {
    let a = ee_fi();
    let mut b = ee_fi();
    b.max_targets = 4;
    assert_eq!(a.hash(), ee_fi().hash());
    assert_ne!(a.hash(), b.hash());
    // Every decision records the hash of the policy that took it.
    let s = scope(&["subscriber"], 1, 10, Urgency::Normal);
    let e = Policies::new([a.clone()]).evaluate(&j("EE"), &j("FI"), &s, Timestamp::from_unix_ms(0));
    assert_eq!(e.policy_hash, a.hash());
}
