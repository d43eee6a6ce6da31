//! Policy evaluation per filed request, against the cost of what every
//! filing already pays: parsing and validating its JSON body.
//!
//! - `policy/evaluate/1_target` and `/10_targets`: the pair policy's findings.
//! - `request/validate` (baseline): `serde_json` parse + field validation
//!   (includes parsing the age recipient).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use xborder::clock::Timestamp;
use xborder::policy::{EmergencyApproval, PairPolicy, Policies};
use xborder::request::RequestBody;

fn body(targets: usize) -> String {
    let targets: Vec<String> = (0..targets).map(|i| format!("+37255501{i:02}")).collect();
    serde_json::json!({
        "legal_basis": "eu-2023-1543",
        "purpose": "investigation 2026/77 into card fraud",
        "categories": ["subscriber", "traffic"],
        "targets": targets,
        "period": { "from": "2026-01-01T00:00:00Z", "to": "2026-06-30T00:00:00Z" },
        "urgency": "normal",
        "recipient": "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        "justification": "the number confirmed fraudulent card payments",
    })
    .to_string()
}

fn policies() -> Policies {
    const DAY: u64 = 86_400;
    Policies::new([PairPolicy {
        holder: "EE".parse().unwrap(),
        requester: "FI".parse().unwrap(),
        legal_bases: vec!["mla".into(), "eu-2023-1543".into()],
        categories: ["subscriber", "ip_identification", "traffic", "content"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect(),
        forbidden_categories: vec![],
        max_targets: 10,
        max_period: Duration::from_secs(366 * DAY),
        max_lifetime: Duration::from_secs(30 * DAY),
        max_lifetime_emergency: Duration::from_secs(3 * DAY),
        approvals: [("content".parse().unwrap(), 2)].into_iter().collect(),
        response_deadline: Duration::from_secs(10 * DAY),
        response_deadline_emergency: Duration::from_secs(8 * 3600),
        notification_deferral_max: Duration::from_secs(90 * DAY),
        emergency: EmergencyApproval::OneThenValidate,
        emergency_validation: Duration::from_secs(48 * 3600),
        rate: Default::default(),
    }])
}

fn policy(c: &mut Criterion) {
    let policies = policies();
    let (ee, fi) = ("EE".parse().unwrap(), "FI".parse().unwrap());
    let now = Timestamp::parse("2026-11-23T12:00:00Z").unwrap();
    let mut group = c.benchmark_group("policy");
    for targets in [1, 10] {
        let text = body(targets);
        let scope = serde_json::from_str::<RequestBody>(&text)
            .unwrap()
            .validate()
            .unwrap();
        group.bench_function(format!("evaluate/{targets}_targets"), |b| {
            b.iter(|| policies.evaluate(&ee, &fi, black_box(&scope), now))
        });
    }
    group.finish();
    let text = body(1);
    c.bench_function("request/validate", |b| {
        b.iter(|| {
            serde_json::from_str::<RequestBody>(black_box(&text))
                .unwrap()
                .validate()
                .unwrap()
        })
    });
}

criterion_group!(benches, policy);
criterion_main!(benches);
