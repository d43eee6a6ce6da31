//! Properties of policy evaluation over arbitrary requests: the verdict is
//! the conjunction of the hard rules, every rule is listed once, the order
//! of categories and targets does not matter, narrowing a request never
//! turns a pass into a refusal, and a pair without a policy is denied.

use proptest::prelude::*;

use super::*;
use crate::request::{Period, Scope, Urgency};

const DAY: u64 = 86_400;
const CATEGORIES: [&str; 6] = [
    "subscriber",
    "ip_identification",
    "traffic",
    "content",
    "location",
    "metadata",
];
const BASES: [&str; 3] = ["eu-2023-1543", "mla", "curiosity"];

fn j(cc: &str) -> Jurisdiction {
    cc.parse().unwrap()
}

fn c(name: &str) -> Category {
    name.parse().unwrap()
}

/// An EE → FI policy over a random choice of the categories.
fn policy() -> impl Strategy<Value = PairPolicy> {
    (
        proptest::sample::subsequence(CATEGORIES.to_vec(), 0..=6),
        proptest::sample::subsequence(CATEGORIES.to_vec(), 0..=2),
        proptest::sample::subsequence(BASES[..2].to_vec(), 0..=2),
        0usize..6,
        1u64..200,
        proptest::collection::btree_map(
            proptest::sample::select(CATEGORIES.to_vec()),
            1u32..4,
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(allowed, forbidden, bases, max_targets, max_days, approvals, validate)| PairPolicy {
                holder: j("EE"),
                requester: j("FI"),
                legal_bases: bases.iter().map(|b| b.to_string()).collect(),
                categories: allowed.iter().map(|n| c(n)).collect(),
                forbidden_categories: forbidden.iter().map(|n| c(n)).collect(),
                max_targets,
                max_period: Duration::from_secs(max_days * DAY),
                max_lifetime: Duration::from_secs(30 * DAY),
                max_lifetime_emergency: Duration::from_secs(3 * DAY),
                approvals: approvals.into_iter().map(|(k, v)| (c(k), v)).collect(),
                response_deadline: Duration::from_secs(10 * DAY),
                response_deadline_emergency: Duration::from_secs(8 * 3600),
                notification_deferral_max: Duration::from_secs(90 * DAY),
                emergency: if validate {
                    EmergencyApproval::OneThenValidate
                } else {
                    EmergencyApproval::AsNormal
                },
                emergency_validation: Duration::from_secs(48 * 3600),
                rate: Default::default(),
            },
        )
}

/// A validated scope: distinct categories, 1..8 targets, a period of up to a year.
fn scope() -> impl Strategy<Value = Scope> {
    (
        proptest::sample::select(BASES.to_vec()),
        proptest::sample::subsequence(CATEGORIES.to_vec(), 1..=4).prop_shuffle(),
        proptest::collection::vec("[+0-9a-z@.]{1,12}", 1..8),
        0i64..1_000_000,
        1u64..(365 * DAY),
        any::<bool>(),
    )
        .prop_map(
            |(basis, categories, targets, from_s, length_s, emergency)| {
                let from = Timestamp::from_unix_ms(1_767_225_600_000 + from_s * 1000);
                Scope {
                    legal_basis: basis.to_owned(),
                    purpose: "investigation".into(),
                    categories: categories.iter().map(|n| c(n)).collect(),
                    targets,
                    period: Period {
                        from,
                        to: from.saturating_add(Duration::from_secs(length_s)),
                    },
                    urgency: if emergency {
                        Urgency::Emergency
                    } else {
                        Urgency::Normal
                    },
                    recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
                        .into(),
                    justification: "needed".into(),
                }
            },
        )
}

const NOW: Timestamp = Timestamp::from_unix_ms(1_767_225_600_000);

/// The hard rules, read from the policy's words rather than the code.
fn should_refuse(p: &PairPolicy, s: &Scope) -> bool {
    !p.legal_bases.contains(&s.legal_basis)
        || s.categories
            .iter()
            .any(|c| p.forbidden_categories.contains(c) || !p.categories.contains(c))
        || s.targets.len() > p.max_targets
        || s.period.from.until(s.period.to) > p.max_period
}

fn rules(e: &Evaluation) -> Vec<(String, Verdict)> {
    let mut rules: Vec<_> = e
        .findings
        .iter()
        .map(|f| (f.rule.clone(), f.verdict))
        .collect();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    rules
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn refused_exactly_when_a_hard_rule_fails(p in policy(), s in scope()) {
        let e = p.evaluate(&s, NOW);
        prop_assert_eq!(e.refused(), should_refuse(&p, &s), "{:?}", e.findings);
        prop_assert_eq!(e.refused(), e.failures().next().is_some());
        // Only hard rules fail; review points never refuse.
        for f in e.failures() {
            prop_assert!(
                ["legal_basis", "targets", "period"].contains(&f.rule.as_str())
                    || f.rule.starts_with("category."),
                "{}", f.rule
            );
        }
    }

    #[test]
    fn every_rule_is_listed_once_and_deterministically(p in policy(), s in scope()) {
        let e = p.evaluate(&s, NOW);
        let mut expected: Vec<String> = ["pair_policy", "legal_basis", "targets", "period"]
            .iter().map(|r| r.to_string()).collect();
        expected.extend(s.categories.iter().map(|c| format!("category.{c}")));
        if e.approvals_required > 1 {
            expected.push("approvals".into());
        }
        if s.urgency == Urgency::Emergency {
            expected.push("emergency".into());
        }
        let mut listed: Vec<String> = e.findings.iter().map(|f| f.rule.clone()).collect();
        listed.sort();
        expected.sort();
        prop_assert_eq!(listed, expected);
        for f in &e.findings {
            prop_assert!(!f.reason.is_empty(), "{} has no reason", f.rule);
        }
        // The same request, evaluated again, gets the same findings word for word.
        prop_assert_eq!(&p.evaluate(&s, NOW).findings, &e.findings);
    }

    #[test]
    fn one_failing_rule_refuses_an_otherwise_passing_request(s in scope(), which in 0usize..4) {
        // A policy that passes `s`, then one rule tightened past it.
        let mut p = PairPolicy {
            legal_bases: vec![s.legal_basis.clone()],
            categories: s.categories.clone(),
            forbidden_categories: Vec::new(),
            max_targets: s.targets.len(),
            max_period: s.period.from.until(s.period.to),
            ..ee_fi_base()
        };
        prop_assert!(!p.evaluate(&s, NOW).refused());
        let failing = match which {
            0 => { p.legal_bases = vec!["another-basis".into()]; "legal_basis".to_owned() }
            1 => { p.forbidden_categories = vec![s.categories[0].clone()]; format!("category.{}", s.categories[0]) }
            2 => { p.max_targets = s.targets.len() - 1; "targets".to_owned() }
            _ => { p.max_period = s.period.from.until(s.period.to) - Duration::from_secs(1); "period".to_owned() }
        };
        let e = p.evaluate(&s, NOW);
        prop_assert!(e.refused());
        let failed: Vec<&str> = e.failures().map(|f| f.rule.as_str()).collect();
        prop_assert_eq!(failed, vec![failing.as_str()]);
    }

    #[test]
    fn order_of_categories_and_targets_does_not_matter(p in policy(), s in scope(), seed in any::<u64>()) {
        let mut shuffled = s.clone();
        let k = seed as usize;
        let n = shuffled.categories.len();
        shuffled.categories.rotate_left(k % n);
        shuffled.targets.reverse();
        let n = shuffled.targets.len();
        shuffled.targets.rotate_left((k / 7) % n);
        let (a, b) = (p.evaluate(&s, NOW), p.evaluate(&shuffled, NOW));
        prop_assert_eq!(rules(&a), rules(&b));
        prop_assert_eq!(a.refused(), b.refused());
        prop_assert_eq!((a.approvals_required, a.approvals_to_grant), (b.approvals_required, b.approvals_to_grant));
        prop_assert_eq!((a.deadline, a.max_lifetime, a.validation_window), (b.deadline, b.max_lifetime, b.validation_window));
    }

    #[test]
    fn a_narrower_request_is_never_refused_where_the_wider_passed(
        p in policy(), s in scope(), keep_c in any::<u64>(), keep_t in any::<u64>(), shrink in 0u64..1000,
    ) {
        let wide = p.evaluate(&s, NOW);
        let mut narrow = s.clone();
        // A non-empty subset of the categories and the targets, a sub-period.
        let subset = |n: usize, bits: u64| -> Vec<usize> {
            let picked: Vec<usize> = (0..n).filter(|i| bits >> (i % 64) & 1 == 1).collect();
            if picked.is_empty() { vec![0] } else { picked }
        };
        narrow.categories = subset(s.categories.len(), keep_c).into_iter().map(|i| s.categories[i].clone()).collect();
        narrow.targets = subset(s.targets.len(), keep_t).into_iter().map(|i| s.targets[i].clone()).collect();
        let length = s.period.from.until(s.period.to);
        narrow.period.to = s.period.from.saturating_add(length.mul_f64(shrink as f64 / 1000.0).max(Duration::from_millis(1)));
        prop_assert!(s.period.contains(&narrow.period));
        let e = p.evaluate(&narrow, NOW);
        if !wide.refused() {
            prop_assert!(!e.refused(), "{:?}", e.failures().collect::<Vec<_>>());
        }
        // Fewer categories never need more approvers.
        prop_assert!(e.approvals_required <= wide.approvals_required);
    }

    #[test]
    fn a_pair_without_policy_is_always_denied(p in policy(), s in scope(), requester in "[A-Z]{2}") {
        let policies = Policies::new([p]);
        prop_assume!(requester != "FI");
        let e = policies.evaluate(&j("EE"), &j(&requester), &s, NOW);
        prop_assert!(e.refused());
        prop_assert_eq!(e.findings.len(), 1);
        prop_assert_eq!(e.findings[0].rule.as_str(), "pair_policy");
        prop_assert!(e.policy_hash.is_empty());
        // Nor the other way round: EE → FI does not cover FI → EE.
        prop_assert!(policies.evaluate(&j("FI"), &j("EE"), &s, NOW).refused());
    }

    #[test]
    fn approvals_follow_the_strictest_category(p in policy(), s in scope()) {
        let e = p.evaluate(&s, NOW);
        let strictest = s.categories.iter().map(|c| p.approvals.get(c).copied().unwrap_or(1)).max().unwrap_or(1).max(1);
        prop_assert_eq!(e.approvals_required, strictest);
        prop_assert!(e.approvals_to_grant >= 1 && e.approvals_to_grant <= e.approvals_required);
        if s.urgency == Urgency::Normal {
            prop_assert_eq!(e.approvals_to_grant, e.approvals_required);
            prop_assert_eq!(e.validation_window, None);
        }
    }
}

/// A passing base with the request-independent terms of [`policy`].
fn ee_fi_base() -> PairPolicy {
    PairPolicy {
        holder: j("EE"),
        requester: j("FI"),
        legal_bases: Vec::new(),
        categories: Vec::new(),
        forbidden_categories: Vec::new(),
        max_targets: 0,
        max_period: Duration::ZERO,
        max_lifetime: Duration::from_secs(30 * DAY),
        max_lifetime_emergency: Duration::from_secs(3 * DAY),
        approvals: BTreeMap::new(),
        response_deadline: Duration::from_secs(10 * DAY),
        response_deadline_emergency: Duration::from_secs(8 * 3600),
        notification_deferral_max: Duration::from_secs(90 * DAY),
        emergency: EmergencyApproval::OneThenValidate,
        emergency_validation: Duration::from_secs(48 * 3600),
        rate: Default::default(),
    }
}
