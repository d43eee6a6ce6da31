//! Entry points for the fuzz targets in `fuzz/` and for their corpus replay
//! in `tests/it/fuzz_corpus.rs`: each runs one untrusted input through the
//! code the gateway runs on it, and panics only where an invariant breaks.
//! Not an API: fixed keys, fixed clock, no I/O.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::audit::entry::{Entry, Pseudonymiser};
use crate::audit::export::Export;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::error::Problem;
use crate::grant::token::{TokenKeys, TokenSettings, Tokens};
use crate::identity::Thumbprint;
use crate::policy::{EmergencyApproval, PairPolicy, Policies, Verdict};
use crate::request::{RequestBody, Scope};

/// `iss` and `aud` of the fuzz tokens.
pub const GATEWAY: &str = "spiffe://ee.xborder.test/gateway";
/// The audit log the fuzz exports claim to be.
pub const ORIGIN: &str = "ee.xborder.test/audit";
/// The fuzz clock: 2001-09-09T01:46:40Z.
pub const NOW: Timestamp = Timestamp::from_unix_ms(1_000_000_000_000);

/// The key that signs fuzz tokens (and, for the audit target, tree heads).
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// The certificate the fuzz tokens are bound to.
pub fn thumbprint() -> Thumbprint {
    Thumbprint::of(b"the grantee's certificate")
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        Tokens::new(
            TokenKeys::from_signing_key(signing_key()),
            TokenSettings {
                issuer: GATEWAY.to_owned(),
                audience: GATEWAY.to_owned(),
                leeway: Duration::ZERO,
            },
        )
    })
}

/// A compact JWS of `payload` under `header`, signed with [`signing_key`]:
/// lets the fuzzer reach the claims checks behind the signature.
pub fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let signature = signing_key().sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}

/// The header of the tokens [`Tokens::issue`] signs with [`signing_key`].
pub fn token_header(typ: &str) -> Vec<u8> {
    serde_json::json!({"alg": "EdDSA", "typ": typ, "kid": tokens().kid()})
        .to_string()
        .into_bytes()
}

/// A grant token or receipt as presented on the border. The first byte
/// picks the mode: even, the rest is the token's text; odd, the rest is a
/// claims payload that gets our header and signature, as a grant token (bit
/// 1 clear) or a receipt (bit 1 set).
pub fn token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode & 1 == 0 {
        match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        }
    } else {
        let typ = if mode & 2 == 0 {
            "at+jwt"
        } else {
            "xborder-receipt+jwt"
        };
        sign(&token_header(typ), rest)
    };
    let tokens = tokens();
    let first = tokens.verify(&text, &thumbprint(), NOW);
    // The second look is answered from the cache of verified tokens: it
    // must agree with the first.
    let second = tokens.verify(&text, &thumbprint(), NOW);
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a cached token's claims changed"),
        (Err(a), Err(b)) => assert_eq!(a.code(), b.code(), "a cached refusal changed"),
        _ => panic!("the cache turned {first:?} into {second:?}"),
    }
    if let Ok(claims) = first {
        assert!(
            claims.grant_id().is_ok(),
            "a verified token names its grant"
        );
        assert!(NOW.unix_seconds() < claims.exp, "a verified token is live");
        assert!(
            claims.nbf <= NOW.unix_seconds(),
            "a verified token is valid already"
        );
        let other = Thumbprint::of(b"someone else's certificate");
        assert!(
            tokens.verify(&text, &other, NOW).is_err(),
            "a verified token is bound to one certificate"
        );
    }
    if let Ok(receipt) = tokens.verify_receipt(&text) {
        assert!(receipt.is_consistent(), "a verified receipt is consistent");
    }
}

/// The policy the filing target evaluates against: EE data to FI.
fn policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let category = |name: &str| name.parse().expect("a standard category");
        const DAY: u64 = 86_400;
        Policies::new([PairPolicy {
            holder: "EE".parse().expect("EE is a jurisdiction"),
            requester: "FI".parse().expect("FI is a jurisdiction"),
            legal_bases: vec!["eu-2023-1543".into(), "mla".into()],
            categories: vec![
                category("subscriber"),
                category("traffic"),
                category("content"),
            ],
            forbidden_categories: vec![category("ip_identification")],
            max_targets: 3,
            max_period: Duration::from_secs(90 * DAY),
            max_lifetime: Duration::from_secs(30 * DAY),
            max_lifetime_emergency: Duration::from_secs(3 * DAY),
            approvals: [(category("content"), 2)].into_iter().collect(),
            response_deadline: Duration::from_secs(10 * DAY),
            response_deadline_emergency: Duration::from_secs(8 * 3600),
            notification_deferral_max: Duration::from_secs(90 * DAY),
            emergency: EmergencyApproval::OneThenValidate,
            emergency_validation: Duration::from_secs(48 * 3600),
            rate: Default::default(),
        }])
    })
}

/// A `POST /v1/requests` body as the border reads it: parsed, validated,
/// evaluated against policy, and the refusal turned into its answer.
pub fn filing(data: &[u8]) {
    let body: RequestBody =
        match crate::server::api::parse_json(&bytes::Bytes::copy_from_slice(data)) {
            Ok(body) => body,
            Err(problem) => {
                assert_eq!(problem.response().status(), http::StatusCode::BAD_REQUEST);
                return;
            }
        };
    let scope = match body.validate() {
        Ok(scope) => scope,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused body names a field");
            let response = Problem::InvalidRequest(errors).response();
            assert_eq!(response.status(), http::StatusCode::BAD_REQUEST);
            return;
        }
    };
    evaluate(&scope);
}

fn evaluate(scope: &Scope) {
    let policies = policies();
    let ee = "EE".parse().expect("EE is a jurisdiction");
    let fi = "FI".parse().expect("FI is a jurisdiction");
    let evaluation = policies.evaluate(&ee, &fi, scope, NOW);
    assert_eq!(
        evaluation.refused(),
        evaluation
            .findings
            .iter()
            .any(|f| f.verdict == Verdict::Fail)
    );
    let rules = 4 + scope.categories.len();
    assert!(evaluation.findings.len() >= rules, "one finding per rule");
    assert!(evaluation.approvals_to_grant >= 1);
    assert!(evaluation.approvals_to_grant <= evaluation.approvals_required);
    let us = "US".parse().expect("US is a jurisdiction");
    assert!(
        policies.evaluate(&ee, &us, scope, NOW).refused(),
        "deny by default"
    );

    // What the audit log records of the filing parses back to itself.
    let names = Pseudonymiser::new(vec![7; 32]).expect("32 bytes is a key");
    let request = crate::request::Request {
        id: crate::request::RequestId::new(),
        requester: "spiffe://fi.xborder.test/police"
            .parse()
            .expect("a SPIFFE ID"),
        requester_jurisdiction: fi,
        holder: ee,
        thumbprint: thumbprint().x5t_s256(),
        scope: scope.clone(),
        state: crate::request::RequestState::Pending,
        findings: evaluation.findings,
        policy_hash: evaluation.policy_hash,
        filed_at: NOW,
        deadline: evaluation.deadline,
        approvals: Vec::new(),
        decided_at: None,
        decided_by: None,
        reason: None,
        grant_id: None,
    };
    for (index, event) in crate::audit::entry::Event::request_filed(&request, &names)
        .into_iter()
        .enumerate()
    {
        let entry = Entry {
            v: crate::audit::entry::FORMAT,
            index: index as u64,
            at: NOW,
            prev: hex::encode([0; 32]),
            event,
        };
        let bytes = entry.to_bytes();
        assert!(!bytes.contains(&b'\n'), "an entry is one line");
        assert_eq!(Entry::parse(&bytes).ok().as_ref(), Some(&entry));
    }
}

/// A config file's text, loaded as `xborder serve` loads it (file reads of
/// the keys and certificates it names happen later, at bind).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = Config::parse(Path::new("/nonexistent/fuzz/gateway.toml"), text) {
        assert!(!errors.0.is_empty(), "a refused config names a problem");
        let _ = errors.to_string();
    }
}

/// The verifier key of the fuzz audit log.
pub fn audit_vkey() -> String {
    crate::audit::checkpoint::format_vkey(ORIGIN, &signing_key().verifying_key())
        .expect("the origin is a valid key name")
}

/// An audit export as an auditor's `xborder audit verify` reads it, and each
/// of its lines as the entry decoder reads it.
pub fn audit(data: &[u8]) {
    let Ok(export) = Export::read_from(data) else {
        return;
    };
    let verified = crate::audit::verify::verify(&export, &audit_vkey(), None);
    if let Ok(verified) = &verified {
        assert_eq!(verified.size, export.entries.len() as u64);
    }
    for line in &export.entries {
        if let Ok(entry) = Entry::parse(line) {
            let _ = (entry.prev_root(), entry.event.kind(), entry.event.code());
            let _ = (
                entry.event.grant(),
                entry.event.request(),
                entry.event.transfer(),
            );
            let _ = entry.event.identities();
            assert_eq!(
                Entry::parse(&entry.to_bytes()).ok().as_ref(),
                Some(&entry),
                "an entry survives its own encoding"
            );
        }
    }
}
