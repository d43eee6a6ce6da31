//! Receipts: their JSON, and signing and verifying them with the token keys,
//! by the gateway and by a party that holds only its JWKS.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};

use super::*;
use crate::grant::token::{
    Jwk, Jwks, TokenError, TokenKeys, TokenSettings, Tokens, verify_receipt_with,
};
use crate::identity::Thumbprint;

const ISSUER: &str = "spiffe://ee.xborder.test/gateway";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn settings(issuer: &str) -> TokenSettings {
    TokenSettings {
        issuer: issuer.into(),
        audience: ISSUER.into(),
        leeway: Duration::ZERO,
    }
}

fn tokens(signer: u8) -> Tokens {
    Tokens::new(TokenKeys::from_signing_key(key(signer)), settings(ISSUER))
}

fn kid(signer: u8) -> String {
    TokenKeys::from_signing_key(key(signer)).kid().to_owned()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

/// Fixed ids, so that two calls build equal receipts.
fn opened() -> TransferOpen {
    TransferOpen {
        id: "0b6f9a44-5a3e-4f0e-9a8e-2f6f1d3c7b21".parse().unwrap(),
        grant_id: "5d1c0e2a-7f4b-4c8e-b3a9-6e2d8f1a0c47".parse().unwrap(),
        grantee: "spiffe://fi.xborder.test/agency/police".into(),
        route: "/v1/subscriber".into(),
        category: "subscriber".into(),
        target: "+3725550100".into(),
        started_at: at(1_000_000_000_250),
    }
}

fn receipt() -> Receipt {
    let open = opened();
    Receipt {
        plaintext_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ciphertext_sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
            .into(),
        plaintext_bytes: 4,
        ciphertext_bytes: 215,
        ended_at: at(1_000_000_001_750),
        complete: true,
        incomplete: None,
        encrypted: true,
        ..Receipt::interrupted(&open, at(0), true)
    }
}

/// The payload of a compact JWS as JSON.
fn payload(jws: &str) -> Value {
    let part = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// A JWS built by hand and signed with `signer`'s key.
fn craft(header: &Value, payload: &Value, signer: u8) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    );
    let signature = key(signer).sign(input.as_bytes());
    format!("{input}.{}", B64.encode(signature.to_bytes()))
}

fn header(typ: &str, signer: u8) -> Value {
    json!({"alg": "EdDSA", "typ": typ, "kid": kid(signer)})
}

/// What the gateway would sign for `receipt()`, as JSON to change.
fn claims() -> Value {
    let receipt = receipt();
    let mut claims = serde_json::to_value(&receipt).unwrap();
    claims["iss"] = json!(ISSUER);
    claims["iat"] = json!(receipt.ended_at.unix_seconds());
    claims
}

#[track_caller]
fn refused(result: Result<Receipt, TokenError>, code: &str) {
    match result {
        Err(e) => assert_eq!(e.code(), code, "{e:?}"),
        Ok(receipt) => panic!("expected {code}, the receipt verified: {receipt:?}"),
    }
}

#[test]
fn ids_and_causes_round_trip_through_text() {
    let id = TransferId::new();
    assert_eq!(id.to_string().parse::<TransferId>().unwrap(), id);
    assert!("not-a-uuid".parse::<TransferId>().is_err());
    for cause in Incomplete::ALL {
        assert_eq!(cause.as_str().parse::<Incomplete>().unwrap(), cause);
        assert_eq!(serde_json::to_value(cause).unwrap(), json!(cause.as_str()));
    }
    assert!("interupted".parse::<Incomplete>().is_err());
}

#[test]
fn a_receipt_is_plain_json() {
    let mut receipt = receipt();
    receipt.complete = false;
    receipt.incomplete = Some(Incomplete::ClientGone);
    receipt.audit_index = Some(7);
    let json = serde_json::to_value(&receipt).unwrap();
    assert_eq!(json["transfer_id"], json!(receipt.transfer_id.to_string()));
    assert_eq!(json["started_at"], "2001-09-09T01:46:40.25Z");
    assert_eq!(json["incomplete"], "client_gone");
    assert_eq!(json["audit_index"], 7);
    assert_eq!(json["plaintext_bytes"], 4);
    assert_eq!(serde_json::from_value::<Receipt>(json).unwrap(), receipt);
}

#[test]
fn an_interrupted_receipt_closes_its_opening_and_vouches_for_nothing() {
    let open = opened();
    let receipt = Receipt::interrupted(&open, at(5), true);
    assert!(receipt.closes(&open));
    assert!(receipt.is_consistent());
    assert_eq!(receipt.incomplete, Some(Incomplete::Interrupted));
    assert_eq!((receipt.plaintext_bytes, receipt.ciphertext_bytes), (0, 0));
    assert!(receipt.plaintext_sha256.is_empty() && receipt.ciphertext_sha256.is_empty());

    let mut other = open.clone();
    other.target = "+3725550199".into();
    assert!(!receipt.closes(&other));
}

#[test]
fn a_receipt_round_trips_through_its_jws() {
    let tokens = tokens(1);
    let receipt = receipt();
    let jws = tokens.sign_receipt(&receipt).unwrap();
    assert_eq!(tokens.verify_receipt(&jws).unwrap(), receipt);

    let header = jsonwebtoken::decode_header(&jws).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.typ.as_deref(), Some("xborder-receipt+jwt"));
    assert_eq!(header.kid, Some(kid(1)));
    let payload = payload(&jws);
    assert_eq!(payload["iss"], ISSUER);
    assert_eq!(payload["iat"], 1_000_000_001, "ended_at, rounded down");
    assert_eq!(
        payload["ciphertext_sha256"],
        json!(receipt.ciphertext_sha256)
    );
    assert_eq!(
        tokens.sign_receipt(&receipt).unwrap(),
        jws,
        "signing reads no clock, and Ed25519 is deterministic"
    );
}

#[test]
fn an_incomplete_receipt_round_trips_too() {
    let tokens = tokens(1);
    let receipt = Receipt::interrupted(&opened(), at(2_000), false);
    let jws = tokens.sign_receipt(&receipt).unwrap();
    assert_eq!(tokens.verify_receipt(&jws).unwrap(), receipt);
}

#[test]
fn an_inconsistent_receipt_is_neither_signed_nor_accepted() {
    let mut both = receipt();
    both.incomplete = Some(Incomplete::Revoked);
    assert_eq!(
        tokens(1).sign_receipt(&both).unwrap_err().code(),
        "internal"
    );

    let mut claims = claims();
    claims["complete"] = json!(false);
    let jws = craft(&header("xborder-receipt+jwt", 1), &claims, 1);
    refused(tokens(1).verify_receipt(&jws), "token_malformed");
}

#[test]
fn a_hand_crafted_receipt_verifies_so_the_refusals_below_mean_something() {
    let jws = craft(&header("xborder-receipt+jwt", 1), &claims(), 1);
    assert_eq!(tokens(1).verify_receipt(&jws).unwrap(), receipt());
    let jws = craft(&header("application/Xborder-Receipt+JWT", 1), &claims(), 1);
    assert!(
        tokens(1).verify_receipt(&jws).is_ok(),
        "RFC 7515: the media type may be written in full, in any case"
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let tokens = tokens(1);
    let jws = tokens.sign_receipt(&receipt()).unwrap();
    let mut claims = payload(&jws);
    claims["plaintext_bytes"] = json!(3);
    let parts: Vec<&str> = jws.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(claims.to_string()),
        parts[2]
    );
    refused(tokens.verify_receipt(&tampered), "token_signature");
    refused(
        verify_receipt_with(&tokens.jwks(), ISSUER, &tampered),
        "token_signature",
    );
}

#[test]
fn a_receipt_of_another_key_is_refused() {
    let jws = tokens(2).sign_receipt(&receipt()).unwrap();
    refused(tokens(1).verify_receipt(&jws), "token_unknown_key");
    refused(
        verify_receipt_with(&tokens(1).jwks(), ISSUER, &jws),
        "token_unknown_key",
    );

    // Key 2 signs but names key 1: the signature is checked with key 1.
    let forged = craft(&header("xborder-receipt+jwt", 1), &claims(), 2);
    refused(tokens(1).verify_receipt(&forged), "token_signature");
    refused(
        verify_receipt_with(&tokens(1).jwks(), ISSUER, &forged),
        "token_signature",
    );
}

#[test]
fn a_wrong_or_missing_typ_is_refused() {
    for typ in ["at+jwt", "JWT", "xborder-receipt", ""] {
        let jws = craft(&header(typ, 1), &claims(), 1);
        refused(tokens(1).verify_receipt(&jws), "token_malformed");
        refused(
            verify_receipt_with(&tokens(1).jwks(), ISSUER, &jws),
            "token_malformed",
        );
    }
    let no_typ = json!({"alg": "EdDSA", "kid": kid(1)});
    let jws = craft(&no_typ, &claims(), 1);
    refused(tokens(1).verify_receipt(&jws), "token_malformed");
}

#[test]
fn receipts_and_grant_tokens_do_not_pass_for_each_other() {
    let tokens = tokens(1);
    let jws = tokens.sign_receipt(&receipt()).unwrap();
    let cert = Thumbprint::of(b"the grantee's leaf certificate");
    let refusal = tokens
        .verify(&jws, &cert, at(1_000_000_001_000))
        .unwrap_err();
    assert_eq!(refusal.code(), "token_malformed");
}

#[test]
fn another_issuer_is_refused() {
    let mut claims = claims();
    claims["iss"] = json!("spiffe://fi.xborder.test/gateway");
    let jws = craft(&header("xborder-receipt+jwt", 1), &claims, 1);
    refused(tokens(1).verify_receipt(&jws), "token_issuer");

    let ours = tokens(1).sign_receipt(&receipt()).unwrap();
    refused(
        verify_receipt_with(&tokens(1).jwks(), "spiffe://fi.xborder.test/gateway", &ours),
        "token_issuer",
    );

    claims.as_object_mut().unwrap().remove("iss");
    let jws = craft(&header("xborder-receipt+jwt", 1), &claims, 1);
    refused(tokens(1).verify_receipt(&jws), "token_malformed");
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    for alg in ["none", "HS256", "ES256"] {
        let header = json!({"alg": alg, "typ": "xborder-receipt+jwt", "kid": kid(1)});
        let jws = craft(&header, &claims(), 1);
        refused(tokens(1).verify_receipt(&jws), "token_algorithm");
    }
}

#[test]
fn the_jwks_is_rfc7517_json_and_verifies_after_a_round_trip() {
    let tokens = tokens(1);
    let jwks = tokens.jwks();
    let text = serde_json::to_string(&jwks).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json,
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64.encode(key(1).verifying_key().as_bytes()),
            "kid": kid(1),
            "alg": "EdDSA",
            "use": "sig",
        }]})
    );

    // Read by another JOSE library, the key's thumbprint is its kid.
    let theirs: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).unwrap();
    assert_eq!(
        theirs.keys[0]
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        kid(1)
    );

    let received: Jwks = serde_json::from_str(&text).unwrap();
    assert_eq!(received, jwks);
    let receipt = receipt();
    let jws = tokens.sign_receipt(&receipt).unwrap();
    assert_eq!(
        verify_receipt_with(&received, ISSUER, &jws).unwrap(),
        receipt
    );
}

#[test]
fn a_jwks_lists_the_verify_only_keys_after_the_signing_key() {
    let old = tokens(1).sign_receipt(&receipt()).unwrap();
    let rotated = Tokens::new(
        TokenKeys::from_signing_key(key(2)).with_verify_only(key(1).verifying_key()),
        settings(ISSUER),
    );
    let kids: Vec<_> = rotated
        .jwks()
        .keys
        .into_iter()
        .map(|k| k.kid.unwrap())
        .collect();
    assert_eq!(kids, [kid(2), kid(1)]);
    assert_eq!(rotated.verify_receipt(&old).unwrap(), receipt());
    assert_eq!(
        verify_receipt_with(&rotated.jwks(), ISSUER, &old).unwrap(),
        receipt()
    );
}

#[test]
fn a_jwks_key_unfit_for_eddsa_is_never_used() {
    let jws = tokens(1).sign_receipt(&receipt()).unwrap();
    let good = tokens(1).jwks().keys.remove(0);
    let unfit = [
        Jwk {
            alg: Some("ES256".into()),
            ..good.clone()
        },
        Jwk {
            key_use: Some("enc".into()),
            ..good.clone()
        },
        Jwk {
            crv: Some("X25519".into()),
            ..good.clone()
        },
        Jwk {
            x: Some(B64.encode([0u8; 31])),
            ..good.clone()
        },
        // The identity point: small order, a weak key.
        Jwk {
            x: Some(B64.encode({
                let mut identity = [0u8; 32];
                identity[0] = 1;
                identity
            })),
            ..good.clone()
        },
    ];
    for jwk in unfit {
        let jwks = Jwks {
            keys: vec![jwk.clone()],
        };
        refused(
            verify_receipt_with(&jwks, ISSUER, &jws),
            "token_unknown_key",
        );
    }

    // A key without `kid` is named by its thumbprint; one of another type
    // in the same set does not stop the set from parsing.
    let set = json!({"keys": [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "rsa-1"},
        {"kty": "OKP", "crv": "Ed25519", "x": good.x},
    ]});
    let jwks: Jwks = serde_json::from_value(set).unwrap();
    assert_eq!(verify_receipt_with(&jwks, ISSUER, &jws).unwrap(), receipt());
}
