use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, KeypairBytes,
};
use ed25519_dalek::{Signer as _, SigningKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::keys::pkcs8_v1_der;
use super::*;
use crate::grant::{GrantState, Quotas};
use crate::request::{RequestId, Scope, Urgency};

const ISSUER: &str = "spiffe://ee.xborder.test/gateway";
const AUDIENCE: &str = "spiffe://ee.xborder.test/gateway";
/// 2001-09-09T01:46:40.250Z: long past, so any look at the system clock
/// would refuse these tokens as expired.
const ISSUED_MS: i64 = 1_000_000_000_250;
/// One hour and half a second later: `exp` must round the half second down.
const EXPIRES_MS: i64 = ISSUED_MS + 3_600_500;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn settings(leeway_secs: u64) -> TokenSettings {
    TokenSettings {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: Duration::from_secs(leeway_secs),
    }
}

fn tokens(signer: u8) -> Tokens {
    Tokens::new(TokenKeys::from_signing_key(key(signer)), settings(0))
}

fn cert() -> Thumbprint {
    Thumbprint::of(b"the grantee's leaf certificate")
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn grant() -> Grant {
    Grant {
        id: GrantId::new(),
        request_id: RequestId::new(),
        grantee: "spiffe://fi.xborder.test/agency/police".parse().unwrap(),
        grantee_jurisdiction: "FI".parse().unwrap(),
        holder: "EE".parse().unwrap(),
        thumbprint: cert().x5t_s256(),
        scope: Scope {
            legal_basis: "Regulation (EU) 2023/1543, Art. 5".into(),
            purpose: "investigation 2001/123".into(),
            categories: vec!["subscriber".parse().unwrap(), "traffic".parse().unwrap()],
            targets: vec!["+3725550100".into(), "user@example.ee".into()],
            period: Period {
                from: Timestamp::parse("2001-08-01T00:00:00Z").unwrap(),
                to: Timestamp::parse("2001-09-01T00:00:00Z").unwrap(),
            },
            urgency: Urgency::Normal,
            recipient: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into(),
            justification: "suspect's account".into(),
        },
        quotas: Quotas {
            max_bytes: Some(10 << 20),
            max_transfers: None,
        },
        used_bytes: 0,
        used_transfers: 0,
        approvers: vec!["spiffe://ee.xborder.test/staff/judge".parse().unwrap()],
        issued_at: at(ISSUED_MS),
        expires_at: at(EXPIRES_MS),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: String::new(),
    }
}

/// The refusal `result` must be, checked by its code.
fn refused(result: Result<GrantClaims, TokenError>, code: &str) -> TokenError {
    let err = result.expect_err("the token must be refused");
    assert_eq!(err.code(), code, "{err:?}");
    err
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A token built by hand: `header` and `claims` as JSON, `sign` over the
/// signing input.
fn craft(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

fn ed25519(signer: u8) -> impl FnOnce(&[u8]) -> Vec<u8> {
    move |input| key(signer).sign(input).to_bytes().to_vec()
}

fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "at+jwt", "kid": kid})
}

fn claims_json() -> Value {
    serde_json::to_value(GrantClaims::of(&grant(), &settings(0))).unwrap()
}

fn kid(signer: u8) -> String {
    TokenKeys::from_signing_key(key(signer)).kid().to_owned()
}

/// RFC 2104 HMAC-SHA256, for forging the classic algorithm-confusion token.
fn hmac_sha256(secret: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if secret.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<_>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn a_token_round_trips_to_the_grants_claims() {
    let tokens = tokens(1);
    let grant = grant();
    let token = tokens.issue(&grant).unwrap();

    let claims = tokens.verify(&token, &cert(), at(ISSUED_MS)).unwrap();
    assert_eq!(claims, GrantClaims::of(&grant, &settings(0)));
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.sub, "spiffe://fi.xborder.test/agency/police");
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!((claims.iat, claims.nbf), (1_000_000_000, 1_000_000_000));
    assert_eq!(claims.exp, 1_000_003_600, "exp rounds the half second down");
    assert_eq!(claims.grant_id().unwrap(), grant.id);
    assert_eq!(claims.cnf.x5t_s256, cert().x5t_s256());
    let [detail] = claims.authorization_details.as_slice() else {
        panic!("one authorization detail")
    };
    assert_eq!(detail.kind, "xborder_grant");
    assert_eq!(detail.categories, ["subscriber", "traffic"]);
    assert_eq!(detail.targets, grant.scope.targets);
    assert_eq!(detail.period, grant.scope.period);
    assert_eq!(detail.urgency, "normal");
    assert_eq!(
        (detail.max_bytes, detail.max_transfers),
        (Some(10 << 20), None)
    );
    assert_eq!(
        (detail.holder.as_str(), detail.requester.as_str()),
        ("EE", "FI")
    );

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref(), Some(tokens.keys.kid()));
    let payload: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(payload["cnf"], json!({"x5t#S256": cert().x5t_s256()}));
    assert_eq!(payload["authorization_details"][0]["type"], "xborder_grant");
}

#[test]
fn a_hand_crafted_token_verifies_so_the_refusals_below_mean_something() {
    let token = craft(&header("EdDSA", &kid(1)), &claims_json(), ed25519(1));
    assert!(tokens(1).verify(&token, &cert(), at(ISSUED_MS)).is_ok());
}

#[test]
fn alg_none_is_refused_in_any_spelling() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = craft(&header(alg, &kid(1)), &claims_json(), |_| Vec::new());
        let err = refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_algorithm",
        );
        assert!(
            matches!(&err, TokenError::Algorithm(a) if a == alg),
            "{err:?}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // RFC 4231 test case 2: the forger's HMAC is right, so the refusal is ours.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let public = key(1).verifying_key();
    let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
    for secret in [public.as_bytes().as_slice(), pem.as_bytes()] {
        let token = craft(&header("HS256", &kid(1)), &claims_json(), |input| {
            hmac_sha256(secret, input)
        });
        let err = refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_algorithm",
        );
        assert!(
            matches!(&err, TokenError::Algorithm(a) if a == "HS256"),
            "{err:?}"
        );
    }
}

#[test]
fn rs256_and_every_other_algorithm_are_refused() {
    for alg in [
        "RS256", "PS256", "ES256", "ES384", "HS512", "Ed25519", "ed25519", "eddsa", "EdDSA ", "",
    ] {
        let token = craft(&header(alg, &kid(1)), &claims_json(), |_| vec![7; 256]);
        let err = refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_algorithm",
        );
        assert!(
            matches!(&err, TokenError::Algorithm(a) if a == alg),
            "{alg}: {err:?}"
        );
    }
    // The name is kept short in the error, whatever was sent.
    let token = craft(
        &header(&"A".repeat(10_000), &kid(1)),
        &claims_json(),
        |_| Vec::new(),
    );
    let err = refused(
        tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
        "token_algorithm",
    );
    assert!(matches!(&err, TokenError::Algorithm(a) if a.len() == 32));
}

#[test]
fn an_unknown_kid_is_refused() {
    // Signed by a key we do not hold, naming it.
    let token = craft(&header("EdDSA", &kid(9)), &claims_json(), ed25519(9));
    assert!(matches!(
        refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_unknown_key"
        ),
        TokenError::UnknownKey
    ));
    // Signed by our key, naming another.
    let token = craft(&header("EdDSA", "not-a-kid"), &claims_json(), ed25519(1));
    refused(
        tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
        "token_unknown_key",
    );
}

#[test]
fn a_missing_kid_is_refused() {
    let token = craft(
        &json!({"alg": "EdDSA", "typ": "at+jwt"}),
        &claims_json(),
        ed25519(1),
    );
    assert!(matches!(
        refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_unknown_key"
        ),
        TokenError::UnknownKey
    ));
}

#[test]
fn a_tampered_payload_is_refused() {
    let tokens = tokens(1);
    let token = tokens.issue(&grant()).unwrap();
    let [head, _, signature] = token.split('.').collect::<Vec<_>>()[..] else {
        panic!("three parts")
    };
    let mut claims = claims_json();
    claims["authorization_details"][0]["targets"] =
        json!(["+3725550100", "user@example.ee", "everyone"]);
    let forged = format!("{head}.{}.{signature}", b64(claims.to_string().as_bytes()));
    assert!(matches!(
        refused(
            tokens.verify(&forged, &cert(), at(ISSUED_MS)),
            "token_signature"
        ),
        TokenError::Signature
    ));
}

#[test]
fn a_damaged_or_malleated_signature_is_refused() {
    let tokens = tokens(1);
    let token = tokens.issue(&grant()).unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = B64.decode(signature).unwrap();

    let mut flipped = signature.clone();
    flipped[10] ^= 1;
    // S + L, the same signature to a lax verifier (RFC 8032 §5.1.7 requires S < L).
    let l: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut malleated = signature.clone();
    let mut carry = 0u16;
    for (s, l) in malleated[32..].iter_mut().zip(l) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    for bad in [flipped, malleated, signature[..63].to_vec(), Vec::new()] {
        let token = format!("{input}.{}", b64(&bad));
        refused(
            tokens.verify(&token, &cert(), at(ISSUED_MS)),
            "token_signature",
        );
    }
}

#[test]
fn a_token_is_expired_from_exp_on_with_no_leeway() {
    let tokens = tokens(1);
    let token = tokens.issue(&grant()).unwrap();
    let exp_ms = 1_000_003_600 * 1000;
    assert!(tokens.verify(&token, &cert(), at(exp_ms - 1)).is_ok());
    assert!(matches!(
        refused(tokens.verify(&token, &cert(), at(exp_ms)), "token_expired"),
        TokenError::Expired
    ));
    // Still before the grant's own sunset: `exp` was rounded down, not up.
    assert!(exp_ms < EXPIRES_MS);
    refused(
        tokens.verify(&token, &cert(), at(EXPIRES_MS - 1)),
        "token_expired",
    );
}

#[test]
fn exp_within_the_leeway_is_accepted() {
    let tokens = Tokens::new(TokenKeys::from_signing_key(key(1)), settings(30));
    let token = tokens.issue(&grant()).unwrap();
    let exp_ms = 1_000_003_600 * 1000;
    assert!(tokens.verify(&token, &cert(), at(exp_ms)).is_ok());
    assert!(tokens.verify(&token, &cert(), at(exp_ms + 29_999)).is_ok());
    refused(
        tokens.verify(&token, &cert(), at(exp_ms + 30_000)),
        "token_expired",
    );
}

#[test]
fn nbf_in_the_future_is_refused() {
    let tokens = tokens(1);
    let token = tokens.issue(&grant()).unwrap();
    let nbf_ms = 1_000_000_000 * 1000;
    assert!(tokens.verify(&token, &cert(), at(nbf_ms)).is_ok());
    let err = refused(
        tokens.verify(&token, &cert(), at(nbf_ms - 1)),
        "token_not_yet_valid",
    );
    assert!(matches!(err, TokenError::NotYetValid));

    let lenient = Tokens::new(TokenKeys::from_signing_key(key(1)), settings(30));
    assert!(lenient.verify(&token, &cert(), at(nbf_ms - 30_000)).is_ok());
    refused(
        lenient.verify(&token, &cert(), at(nbf_ms - 30_001)),
        "token_not_yet_valid",
    );
}

#[test]
fn time_is_the_callers_clock_not_the_systems() {
    let tokens = tokens(1);
    // Valid in 2001 although the system clock says it expired long ago.
    let token = tokens.issue(&grant()).unwrap();
    assert!(tokens.verify(&token, &cert(), at(ISSUED_MS + 1000)).is_ok());
    // Expired at `now` although the system clock says it has years to run.
    let mut future = grant();
    future.issued_at = Timestamp::parse("2100-01-01T00:00:00Z").unwrap();
    future.expires_at = Timestamp::parse("2100-01-02T00:00:00Z").unwrap();
    let token = tokens.issue(&future).unwrap();
    refused(
        tokens.verify(
            &token,
            &cert(),
            Timestamp::parse("2100-01-02T00:00:00Z").unwrap(),
        ),
        "token_expired",
    );
}

#[test]
fn another_audience_is_refused() {
    let theirs = Tokens::new(
        TokenKeys::from_signing_key(key(1)),
        TokenSettings {
            audience: "spiffe://lv.xborder.test/gateway".into(),
            ..settings(0)
        },
    );
    let token = theirs.issue(&grant()).unwrap();
    assert!(matches!(
        refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_audience"
        ),
        TokenError::Audience
    ));
    // An array naming us too is not the one string we issue.
    let mut claims = claims_json();
    claims["aud"] = json!([AUDIENCE, "spiffe://lv.xborder.test/gateway"]);
    let token = craft(&header("EdDSA", &kid(1)), &claims, ed25519(1));
    refused(
        tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
        "token_malformed",
    );
}

#[test]
fn another_issuer_is_refused() {
    let theirs = Tokens::new(
        TokenKeys::from_signing_key(key(1)),
        TokenSettings {
            issuer: "spiffe://lv.xborder.test/gateway".into(),
            ..settings(0)
        },
    );
    let token = theirs.issue(&grant()).unwrap();
    assert!(matches!(
        refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_issuer"
        ),
        TokenError::Issuer
    ));
}

#[test]
fn a_token_over_another_certificate_is_not_bound() {
    let tokens = tokens(1);
    let token = tokens.issue(&grant()).unwrap();
    let other = Thumbprint::of(b"someone else's certificate");
    assert!(matches!(
        refused(
            tokens.verify(&token, &other, at(ISSUED_MS)),
            "token_not_bound"
        ),
        TokenError::NotBound
    ));
}

#[test]
fn malformed_tokens_are_refused() {
    let tokens = tokens(1);
    let good = tokens.issue(&grant()).unwrap();
    let (_, payload_and_signature) = good.split_once('.').unwrap();
    let with_header = |h: &[u8]| format!("{}.{payload_and_signature}", b64(h));
    let shapes = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.extra"),
        "..".into(),
        format!("!!!.{payload_and_signature}"),
        format!("{}=.{payload_and_signature}", b64(br#"{"alg":"EdDSA"}"#)),
        with_header(b"not json"),
        with_header(br#"{"typ":"at+jwt"}"#),
        with_header(br#"{"alg":1}"#),
        with_header(br#"["EdDSA"]"#),
    ];
    for token in shapes {
        let err = refused(
            tokens.verify(&token, &cert(), at(ISSUED_MS)),
            "token_malformed",
        );
        assert!(matches!(err, TokenError::Malformed), "{token}: {err:?}");
    }
}

#[test]
fn a_header_we_did_not_write_is_malformed() {
    let kid = kid(1);
    for header in [
        json!({"alg": "EdDSA", "kid": kid}),
        json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid, "crit": ["exp"], "exp": 1}),
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": 7}),
    ] {
        let token = craft(&header, &claims_json(), ed25519(1));
        refused(
            tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_malformed",
        );
    }
    let token = craft(
        &json!({"alg": "EdDSA", "typ": "application/AT+JWT", "kid": kid}),
        &claims_json(),
        ed25519(1),
    );
    assert!(tokens(1).verify(&token, &cert(), at(ISSUED_MS)).is_ok());
}

#[test]
fn well_signed_claims_that_are_not_ours_are_malformed() {
    let kid = kid(1);
    let signed = |payload: &[u8]| {
        let input = format!(
            "{}.{}",
            b64(header("EdDSA", &kid).to_string().as_bytes()),
            b64(payload)
        );
        let signature = key(1).sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    };
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = claims_json();
        edit(&mut claims);
        signed(claims.to_string().as_bytes())
    };
    let tokens = vec![
        signed(b"not json"),
        signed(b"[]"),
        {
            let input = format!("{}.%%%", b64(header("EdDSA", &kid).to_string().as_bytes()));
            format!("{input}.{}", b64(&key(1).sign(input.as_bytes()).to_bytes()))
        },
        with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        with(&|c| drop(c.as_object_mut().unwrap().remove("cnf"))),
        with(&|c| c["exp"] = json!("tomorrow")),
        with(&|c| c["exp"] = json!(-1)),
        with(&|c| c["jti"] = json!("grant-1")),
        with(&|c| c["sub"] = json!("police")),
        with(&|c| c["authorization_details"] = json!([])),
        with(&|c| c["authorization_details"][0]["type"] = json!("payment_initiation")),
        with(&|c| {
            let detail = c["authorization_details"][0].clone();
            c["authorization_details"] = json!([detail.clone(), detail]);
        }),
    ];
    for token in tokens {
        let err = refused(
            self::tokens(1).verify(&token, &cert(), at(ISSUED_MS)),
            "token_malformed",
        );
        assert!(matches!(err, TokenError::Malformed));
    }
}

#[test]
fn a_token_of_the_old_key_verifies_after_rotation() {
    let old = tokens(1);
    let token = old.issue(&grant()).unwrap();
    let rotated = Tokens::new(
        TokenKeys::from_signing_key(key(2)).with_verify_only(key(1).verifying_key()),
        settings(0),
    );
    assert_eq!(
        rotated.verify(&token, &cert(), at(ISSUED_MS)).unwrap().jti,
        grant_id_of(&token)
    );
    // New tokens carry the new kid, and the old key alone does not know it.
    let new = rotated.issue(&grant()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(kid(2).as_str())
    );
    refused(
        old.verify(&new, &cert(), at(ISSUED_MS)),
        "token_unknown_key",
    );
    // Once the old key is dropped, its tokens are unknown.
    refused(
        tokens(2).verify(&token, &cert(), at(ISSUED_MS)),
        "token_unknown_key",
    );
}

fn grant_id_of(token: &str) -> String {
    let payload = B64.decode(token.split('.').nth(1).unwrap()).unwrap();
    serde_json::from_slice::<GrantClaims>(&payload).unwrap().jti
}

#[test]
fn keys_load_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let signing = dir.path().join("token-signing.pem");
    TokenKeys::generate_file(&signing).unwrap();
    // An old signing key as PKCS#8 v2 (with its public key), and a public key.
    let old = dir.path().join("old.pem");
    fs::write(
        &old,
        key(1).to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let public = dir.path().join("other.pub.pem");
    fs::write(
        &public,
        key(3)
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();

    let keys = TokenKeys::load(&signing, &[old, public]).unwrap();
    let new_kid = keys.kid().to_owned();
    assert!(![kid(1), kid(3)].contains(&new_kid));
    let tokens = Tokens::new(keys, settings(0));
    for signer in [1, 3] {
        let token = Tokens::new(TokenKeys::from_signing_key(key(signer)), settings(0))
            .issue(&grant())
            .unwrap();
        assert!(
            tokens.verify(&token, &cert(), at(ISSUED_MS)).is_ok(),
            "key {signer}"
        );
    }
    let token = tokens.issue(&grant()).unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid,
        Some(new_kid)
    );
    assert!(tokens.verify(&token, &cert(), at(ISSUED_MS)).is_ok());
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pem");
    TokenKeys::generate_file(&good).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let missing = dir.path().join("missing.pem");
    let garbage = write("garbage.pem", "not a key\n");
    let cert = write(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let p256 = write(
        "p256.pem",
        &rcgen::KeyPair::generate().unwrap().serialize_pem(),
    );
    let public = write(
        "public.pem",
        &key(1)
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    );

    for (signing, verify_only, path, kind) in [
        (&missing, &[][..], &missing, "read"),
        (&garbage, &[][..], &garbage, "pem"),
        (&cert, &[][..], &cert, "label"),
        (&p256, &[][..], &p256, "key"),
        // A public key cannot sign.
        (&public, &[][..], &public, "label"),
        (&good, &[missing.clone()][..], &missing, "read"),
        (&good, &[cert.clone()][..], &cert, "label"),
        (&good, &[p256.clone()][..], &p256, "key"),
    ] {
        let err = TokenKeys::load(signing, verify_only).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        let matched = match (&err, kind) {
            (TokenKeyError::Read { path: p, .. }, "read")
            | (TokenKeyError::Pem { path: p, .. }, "pem")
            | (TokenKeyError::Label { path: p, .. }, "label")
            | (TokenKeyError::Key { path: p, .. }, "key") => p == path,
            _ => false,
        };
        assert!(matched, "{kind}: {err:?}");
    }
}

#[test]
fn a_generated_key_file_is_0600_even_over_an_open_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token-signing.pem");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    TokenKeys::generate_file(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
    TokenKeys::load(&path, &[]).unwrap();
    // Nothing left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let missing_dir = dir.path().join("no/such/dir/key.pem");
    let err = TokenKeys::generate_file(&missing_dir).unwrap_err();
    assert!(
        matches!(&err, TokenKeyError::Write { path, .. } if *path == missing_dir),
        "{err:?}"
    );
}

#[test]
fn kid_is_the_rfc7638_thumbprint() {
    // RFC 8037 appendix A.1's key and the thumbprint appendix A.3 gives.
    let seed: [u8; 32] = B64
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .unwrap()
        .try_into()
        .unwrap();
    let keys = TokenKeys::from_signing_key(SigningKey::from_bytes(&seed));
    assert_eq!(keys.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    // And jsonwebtoken agrees, through our provider's key utilities.
    provider::ensure_installed().unwrap();
    let jwk = Jwk::from_encoding_key(&keys.encoding, Algorithm::EdDSA).unwrap();
    assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), keys.kid());
}

#[test]
fn the_hand_built_pkcs8_is_the_encoders() {
    let key = key(5);
    let encoded = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()
    .unwrap();
    assert_eq!(pkcs8_v1_der(&key).as_slice(), encoded.as_bytes());
    assert_eq!(
        SigningKey::from_pkcs8_der(&pkcs8_v1_der(&key)).unwrap(),
        key
    );
}

#[test]
fn debug_shows_kids_not_keys() {
    let keys = TokenKeys::from_signing_key(key(1)).with_verify_only(key(2).verifying_key());
    let text = format!("{:?}", Tokens::new(keys, settings(0)));
    assert!(text.contains(&kid(1)) && text.contains(&kid(2)), "{text}");
    for secret in [
        b64(&key(1).to_bytes()),
        hex::encode(key(1).to_bytes()),
        format!("{:?}", key(1).to_bytes()),
    ] {
        assert!(!text.contains(&secret), "{text}");
    }
}

#[test]
fn every_refusal_has_its_code() {
    let codes = [
        (TokenError::Malformed, "token_malformed"),
        (TokenError::Algorithm("none".into()), "token_algorithm"),
        (TokenError::UnknownKey, "token_unknown_key"),
        (TokenError::Signature, "token_signature"),
        (TokenError::Expired, "token_expired"),
        (TokenError::NotYetValid, "token_not_yet_valid"),
        (TokenError::Audience, "token_audience"),
        (TokenError::Issuer, "token_issuer"),
        (TokenError::NotBound, "token_not_bound"),
        (TokenError::Signing("detail for the log".into()), "internal"),
    ];
    for (err, code) in codes {
        assert_eq!(err.code(), code);
    }
    assert!(
        !TokenError::Signing("secret detail".into())
            .to_string()
            .contains("secret detail")
    );
}

#[test]
fn the_provider_refuses_other_algorithms_without_panicking() {
    provider::ensure_installed().unwrap();
    let claims = claims_json();
    for alg in [Algorithm::HS256, Algorithm::HS512] {
        let header = Header::new(alg);
        assert!(jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"k")).is_err());
    }
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        assert!(
            jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_rsa_der(b"k"))
                .is_err()
        );
    }
    assert!(
        jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_der(b"k")
        )
        .is_err()
    );
    // A mismatched EdDSA key is an error too.
    assert!(
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_der(b"k")
        )
        .is_err()
    );

    let token = craft(&json!({"alg": "HS256"}), &claims, |input| {
        hmac_sha256(b"k", input)
    });
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    let err = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"k"), &validation)
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::UnsupportedAlgorithm);
    // Only the exact 32 raw bytes make a verifying key.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    let token = craft(&header("EdDSA", &kid(1)), &claims, ed25519(1));
    let mut long = key(1).verifying_key().to_bytes().to_vec();
    long.push(0);
    let err = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_ed_der(&long), &validation)
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidEddsaKey);

    let jwk = Jwk::from_decoding_key(&DecodingKey::from_rsa_der(b"k"), None);
    assert!(jwk.is_err());
}

#[test]
fn only_our_provider_counts_as_installed() {
    static FOREIGN: jsonwebtoken::crypto::CryptoProvider = jsonwebtoken::crypto::CryptoProvider {
        signer_factory: |_, _| Err(ErrorKind::UnsupportedAlgorithm.into()),
        verifier_factory: |_, _| Err(ErrorKind::UnsupportedAlgorithm.into()),
        key_utils: jsonwebtoken::crypto::KeyUtils::new_unimplemented(),
    };
    provider::ensure_installed().unwrap();
    // A second install fails and reports what is there: ours.
    assert!(provider::is_ours(provider::PROVIDER.install_default()));
    assert!(provider::is_ours(Ok(())));
    assert!(!provider::is_ours(Err(&FOREIGN)));
}

#[test]
fn mutated_tokens_are_refused_and_never_panic() {
    let tokens = tokens(1);
    let good = tokens.issue(&grant()).unwrap();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \0";
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..3000 {
        let mut bytes = good.clone().into_bytes();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..3) {
                0 => bytes[i] = alphabet[rng.gen_range(0..alphabet.len())],
                1 => drop(bytes.remove(i)),
                _ => bytes.insert(i, alphabet[rng.gen_range(0..alphabet.len())]),
            }
        }
        let Ok(token) = String::from_utf8(bytes) else {
            continue;
        };
        if token != good {
            assert!(
                tokens.verify(&token, &cert(), at(ISSUED_MS)).is_err(),
                "{token}"
            );
        }
    }
}
