//! Records the store's unit tests share: a pending request as filed.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::request::{Finding, Period, Request, RequestId, RequestState, Scope, Urgency, Verdict};
use crate::store::Decision;

/// A pending request from FI's police to EE, answerable until `deadline`.
pub(crate) fn request_due(deadline: Timestamp) -> Request {
    let at = Timestamp::from_unix_ms;
    Request {
        id: RequestId::new(),
        requester: "spiffe://fi.xborder.test/police".parse().unwrap(),
        requester_jurisdiction: "FI".parse().unwrap(),
        holder: "EE".parse().unwrap(),
        thumbprint: "tp".into(),
        scope: Scope {
            legal_basis: "EIO".into(),
            purpose: "fraud".into(),
            categories: vec!["subscriber".parse().unwrap()],
            targets: vec!["+372 5555 0101".into()],
            period: Period {
                from: at(0),
                to: at(1),
            },
            urgency: Urgency::Normal,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "why".into(),
        },
        state: RequestState::Pending,
        findings: vec![Finding {
            rule: "legal_basis".into(),
            verdict: Verdict::Pass,
            reason: "ok".into(),
        }],
        policy_hash: "h".into(),
        filed_at: at(1_000),
        deadline,
        approvals: Vec::new(),
        decided_at: None,
        decided_by: None,
        reason: None,
        grant_id: None,
    }
}

/// A decision of the pair's policy: notify the subjects a minute after issue.
pub(crate) fn decision() -> Decision {
    Decision {
        policy: "policy".into(),
        notice_after: Duration::from_secs(60),
    }
}
