//! Properties of grant tokens over arbitrary grants: issue then verify gives
//! back the grant's claims; any one changed byte, another certificate, or
//! the clock at `exp` is a refusal; and the cache of verified tokens never
//! lets a token through that a fresh check would refuse.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;

use super::*;
use crate::grant::{GrantState, Quotas};
use crate::request::{RequestId, Scope, Urgency};

const GATEWAY: &str = "spiffe://ee.xborder.test/gateway";

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: GATEWAY.into(),
        audience: GATEWAY.into(),
        leeway: Duration::ZERO,
    }
}

fn tokens() -> Tokens {
    Tokens::new(
        TokenKeys::from_signing_key(SigningKey::from_bytes(&[3; 32])),
        settings(),
    )
}

fn cert(n: u8) -> Thumbprint {
    Thumbprint::of(&[n; 40])
}

/// Grants with arbitrary text in every free field, 1..6 distinct
/// categories, 1..6 targets, quotas or none, a lifetime of 1 s to a year.
fn grant() -> impl Strategy<Value = Grant> {
    (
        ("\\PC{1,40}", "\\PC{1,40}", "\\PC{1,20}"),
        proptest::collection::btree_set("[a-z][a-z0-9_]{0,12}", 1..6),
        proptest::collection::vec("\\PC{1,30}", 1..6),
        (
            0i64..4_000_000_000_000,
            1_000i64..31_536_000_000,
            any::<bool>(),
        ),
        (any::<Option<u64>>(), any::<Option<u64>>()),
        ("[a-z]{1,8}", "[A-Z]{2}", "[A-Z]{2}"),
    )
        .prop_map(
            |(
                (basis, purpose, justification),
                categories,
                targets,
                (issued, life, emergency),
                (max_bytes, max_transfers),
                (who, from, to),
            )| {
                let issued_at = Timestamp::from_unix_ms(issued);
                Grant {
                    id: GrantId::new(),
                    request_id: RequestId::new(),
                    grantee: format!("spiffe://fi.xborder.test/{who}").parse().unwrap(),
                    grantee_jurisdiction: to.parse().unwrap(),
                    holder: from.parse().unwrap(),
                    thumbprint: cert(1).x5t_s256(),
                    scope: Scope {
                        legal_basis: basis,
                        purpose,
                        categories: categories.iter().map(|c| c.parse().unwrap()).collect(),
                        targets,
                        period: Period {
                            from: Timestamp::from_unix_ms(issued - 86_400_000),
                            to: issued_at,
                        },
                        urgency: if emergency {
                            Urgency::Emergency
                        } else {
                            Urgency::Normal
                        },
                        recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
                            .into(),
                        justification,
                    },
                    quotas: Quotas {
                        max_bytes,
                        max_transfers,
                    },
                    used_bytes: 0,
                    used_transfers: 0,
                    approvers: Vec::new(),
                    issued_at,
                    expires_at: Timestamp::from_unix_ms(issued + life),
                    validation_due: None,
                    validated_by: None,
                    state: GrantState::Active,
                    ending: None,
                    token: String::new(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn issue_then_verify_gives_back_the_grants_claims(g in grant()) {
        let tokens = tokens();
        let token = tokens.issue(&g).unwrap();
        let claims = tokens.verify(&token, &cert(1), g.issued_at).unwrap();
        prop_assert_eq!(&claims, &GrantClaims::of(&g, &settings()));
        prop_assert_eq!(claims.grant_id().unwrap(), g.id);
        prop_assert_eq!(&claims.sub, &g.grantee.to_string());
        let [detail] = claims.authorization_details.as_slice() else {
            panic!("one authorization detail");
        };
        prop_assert_eq!(&detail.legal_basis, &g.scope.legal_basis);
        prop_assert_eq!(&detail.purpose, &g.scope.purpose);
        let categories: Vec<String> = g.scope.categories.iter().map(ToString::to_string).collect();
        prop_assert_eq!(&detail.categories, &categories);
        prop_assert_eq!(&detail.targets, &g.scope.targets);
        prop_assert_eq!(detail.period, g.scope.period);
        prop_assert_eq!((detail.max_bytes, detail.max_transfers), (g.quotas.max_bytes, g.quotas.max_transfers));
        prop_assert_eq!(detail.urgency.as_str(), g.scope.urgency.as_str());
        // Twice: the second answer comes from the cache and is the same.
        prop_assert_eq!(tokens.verify(&token, &cert(1), g.issued_at).unwrap(), claims);
    }

    #[test]
    fn any_one_changed_byte_is_refused(g in grant(), at in any::<prop::sample::Index>(), byte in 0x20u8..0x7f) {
        let tokens = tokens();
        let token = tokens.issue(&g).unwrap();
        // Verified and cached first: the cache must not answer for a neighbour.
        tokens.verify(&token, &cert(1), g.issued_at).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(tokens.verify(&mutated, &cert(1), g.issued_at).is_err(), "byte {} -> {:?}", i, byte as char);
    }

    #[test]
    fn another_certificate_or_the_clock_at_exp_is_refused(g in grant(), other in 2u8..=255) {
        let tokens = tokens();
        let token = tokens.issue(&g).unwrap();
        let exp = Timestamp::from_unix_ms(g.expires_at.unix_seconds() * 1000);
        for _cached in 0..2 {
            prop_assert_eq!(tokens.verify(&token, &cert(other), g.issued_at).unwrap_err().code(), "token_not_bound");
            prop_assert_eq!(tokens.verify(&token, &cert(1), exp).unwrap_err().code(), "token_expired");
            prop_assert_eq!(tokens.verify(&token, &cert(1), exp.saturating_add(Duration::from_secs(86_400))).unwrap_err().code(), "token_expired");
            if exp.unix_ms() > g.issued_at.unix_seconds() * 1000 {
                prop_assert!(tokens.verify(&token, &cert(1), Timestamp::from_unix_ms(exp.unix_ms() - 1)).is_ok());
            }
        }
    }
}

/// The cache keeps a token's claims by its SHA-256, but time and the
/// certificate binding are checked on every use: a token verified once is
/// still refused at expiry and over another certificate.
#[test]
fn a_cached_token_is_still_refused_once_expired_or_over_another_certificate() {
    let tokens = tokens();
    let g = grant()
        .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
        .unwrap()
        .current();
    let token = tokens.issue(&g).unwrap();
    tokens.verify(&token, &cert(1), g.issued_at).unwrap();
    assert_eq!(
        tokens.verified.lock().unwrap().len(),
        1,
        "the token is now answered from the cache"
    );

    let refused = |cert: &Thumbprint, at: Timestamp| {
        tokens
            .verify(&token, cert, at)
            .expect_err("the cached token must be refused")
            .code()
    };
    assert_eq!(refused(&cert(2), g.issued_at), "token_not_bound");
    assert_eq!(refused(&cert(1), g.expires_at), "token_expired");
    assert_eq!(
        refused(
            &cert(1),
            Timestamp::from_unix_ms(g.issued_at.unix_ms() - 1000)
        ),
        "token_not_yet_valid"
    );
    // Still cached, and still good for its own certificate in its lifetime.
    assert_eq!(tokens.verified.lock().unwrap().len(), 1);
    assert!(tokens.verify(&token, &cert(1), g.issued_at).is_ok());
}
