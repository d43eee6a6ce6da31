//! A peer holding a grant token it should not use: forged, re-signed,
//! mangled, confused between algorithms and keys, presented over another
//! certificate, expired by a second, or too large to parse. Each is refused
//! with its own problem code, and a good peer is still served.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use xborder::grant::token::TokenKeys;
use xborder::pki::LeafSpec;

use super::{Fixture, TARGET_PATH};
use crate::support::*;

impl Fixture {
    async fn pull(&self, token: &str) -> (StatusCode, String) {
        self.pull_as(&self.police, TARGET_PATH, token).await
    }

    /// The gateway's token signing key, as read from its file.
    fn signing_key(&self) -> SigningKey {
        let pem = std::fs::read_to_string(self.world.path("ee/token-key.pem")).unwrap();
        SigningKey::from_pkcs8_pem(&pem).unwrap()
    }

    /// The gateway's published JWKS (`GET /v1/keys`).
    async fn jwks(&self) -> Value {
        let (status, jwks) = send_json(
            &self.world.client(Some(&self.police)),
            self.gateway.border,
            Method::GET,
            "/v1/keys",
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{jwks}");
        jwks
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The decoded JSON of a compact JWS's segment `i` (0 header, 1 payload).
fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

/// A compact JWS of the raw `header` and `payload` texts, signed with `key`.
fn sign_raw(key: &SigningKey, header: &str, payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

fn sign(key: &SigningKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, &header.to_string(), claims.to_string().as_bytes())
}

/// RFC 2104 HMAC-SHA-256 (no `hmac` crate among the dependencies).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mac = hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", b64(&mac))
}

#[tokio::test]
async fn forged_and_mangled_tokens_are_refused_with_their_code() {
    let fx = Fixture::new().await;
    let genuine = fx.token.clone();
    let claims = segment(&genuine, 1);
    let header = segment(&genuine, 0);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let ours = fx.signing_key();
    let jwks = fx.jwks().await;
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public = B64.decode(&x).unwrap();
    assert_eq!(
        public,
        ours.verifying_key().to_bytes(),
        "JWKS `x` is our key"
    );
    let ed = |extra: Value| {
        let mut h = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };

    // Sanity: re-signing the genuine claims ourselves is accepted, so every
    // refusal below is the one thing each case changes.
    assert_eq!(
        fx.pull(&sign(&ours, &ed(json!({})), &claims)).await,
        (StatusCode::OK, String::new())
    );

    let mut cases: Vec<(&str, String, StatusCode, &str)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = json!({ "alg": none, "typ": "at+jwt", "kid": kid });
        let unsigned = format!(
            "{}.{}.",
            b64(h.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        cases.push((
            "alg none",
            unsigned,
            StatusCode::UNAUTHORIZED,
            "token_algorithm",
        ));
        // The genuine signature kept, alg swapped.
        let parts: Vec<&str> = genuine.split('.').collect();
        let swapped = format!(
            "{}.{}.{}",
            b64(h.to_string().as_bytes()),
            parts[1],
            parts[2]
        );
        cases.push((
            "alg none, genuine signature",
            swapped,
            StatusCode::UNAUTHORIZED,
            "token_algorithm",
        ));
    }
    // Key confusion: HS256 keyed with the public key, as bytes and as the JWK `x` text.
    let h = json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid });
    cases.push((
        "HS256 keyed with the public key bytes",
        hs256(&public, &h, &claims),
        StatusCode::UNAUTHORIZED,
        "token_algorithm",
    ));
    cases.push((
        "HS256 keyed with the JWK x",
        hs256(x.as_bytes(), &h, &claims),
        StatusCode::UNAUTHORIZED,
        "token_algorithm",
    ));
    for alg in ["eddsa", "ES256", "Ed25519", "EdDSA ", ""] {
        cases.push((
            "another algorithm name",
            sign(&ours, &ed(json!({ "alg": alg })), &claims),
            StatusCode::UNAUTHORIZED,
            "token_algorithm",
        ));
    }
    for bad_kid in [
        json!("unknown-key"),
        json!("../../etc/passwd"),
        json!("../../../../../../dev/zero"),
        json!(format!("{kid}/../{kid}")),
        json!(""),
        json!(null),
    ] {
        cases.push((
            "kid naming no key of ours",
            sign(&ours, &ed(json!({ "kid": bad_kid })), &claims),
            StatusCode::UNAUTHORIZED,
            "token_unknown_key",
        ));
    }
    cases.push((
        "no kid at all",
        sign(&ours, &json!({ "alg": "EdDSA", "typ": "at+jwt" }), &claims),
        StatusCode::UNAUTHORIZED,
        "token_unknown_key",
    ));
    // Duplicate claim names: an earlier `sub` naming someone else, then the real one.
    let body = claims.to_string();
    let duplicated = format!(
        "{{\"sub\":\"spiffe://fi.xborder.test/agency/customs\",{}",
        &body[1..]
    );
    cases.push((
        "duplicate sub claim",
        sign_raw(&ours, &ed(json!({})).to_string(), duplicated.as_bytes()),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    let duplicated = format!(
        "{{\"jti\":\"00000000-0000-4000-8000-000000000000\",{}",
        &body[1..]
    );
    cases.push((
        "duplicate jti claim",
        sign_raw(&ours, &ed(json!({})).to_string(), duplicated.as_bytes()),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    // Duplicate header names: `alg` none then EdDSA.
    let dup_header = format!(r#"{{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#);
    cases.push((
        "duplicate alg header",
        sign_raw(&ours, &dup_header, body.as_bytes()),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    for bad in [
        "###.###.###",
        "e30.e30",
        "e30.e30.e30.e30",
        "....",
        "eyJhbGciOiJFZERTQSJ9.!!!.AAAA",
        "not a jwt",
    ] {
        cases.push((
            "bad base64 / shape",
            bad.to_owned(),
            StatusCode::UNAUTHORIZED,
            "token_malformed",
        ));
    }
    // The genuine token with standard (padded, +/) base64 in its header.
    let std_header = base64::engine::general_purpose::STANDARD.encode(header.to_string());
    let parts: Vec<&str> = genuine.split('.').collect();
    cases.push((
        "padded standard base64 header",
        format!("{std_header}.{}.{}", parts[1], parts[2]),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    cases.push((
        "crit header",
        sign(&ours, &ed(json!({ "crit": ["exp"], "exp": 1 })), &claims),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    cases.push((
        "empty crit",
        sign(&ours, &ed(json!({ "crit": [] })), &claims),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    cases.push((
        "nested JWT (cty JWT, payload a JWT)",
        sign_raw(
            &ours,
            &ed(json!({ "cty": "JWT" })).to_string(),
            genuine.as_bytes(),
        ),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    cases.push((
        "a receipt-typed JWS",
        sign(&ours, &ed(json!({ "typ": "xborder-receipt+jwt" })), &claims),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    let mut flipped = genuine.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    cases.push((
        "signature flipped",
        String::from_utf8(flipped).unwrap(),
        StatusCode::UNAUTHORIZED,
        "token_signature",
    ));
    let mut widened = claims.clone();
    widened["authorization_details"][0]["categories"] = json!(["subscriber", "content"]);
    cases.push((
        "claims widened, genuine signature kept",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(widened.to_string().as_bytes()),
            parts[2]
        ),
        StatusCode::UNAUTHORIZED,
        "token_signature",
    ));
    // Another gateway's key.
    let theirs = SigningKey::generate(&mut rand::rngs::OsRng);
    let their_kid = TokenKeys::from_signing_key(theirs.clone()).kid().to_owned();
    let mut foreign = claims.clone();
    foreign["iss"] = json!("spiffe://lv.xborder.test/gateway");
    foreign["aud"] = json!("spiffe://lv.xborder.test/gateway");
    cases.push((
        "another gateway's key, iss and aud",
        sign(
            &theirs,
            &json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": their_kid }),
            &foreign,
        ),
        StatusCode::UNAUTHORIZED,
        "token_unknown_key",
    ));
    cases.push((
        "another gateway's key under our kid",
        sign(&theirs, &ed(json!({})), &claims),
        StatusCode::UNAUTHORIZED,
        "token_signature",
    ));
    let mut wrong = claims.clone();
    wrong["aud"] = json!("spiffe://lv.xborder.test/gateway");
    cases.push((
        "wrong aud",
        sign(&ours, &ed(json!({})), &wrong),
        StatusCode::UNAUTHORIZED,
        "token_audience",
    ));
    let mut wrong = claims.clone();
    wrong["aud"] = json!(["spiffe://lv.xborder.test/gateway"]);
    cases.push((
        // RFC 7519 allows an array; grant tokens carry a string, and the
        // claims do not parse otherwise.
        "wrong aud as an array",
        sign(&ours, &ed(json!({})), &wrong),
        StatusCode::UNAUTHORIZED,
        "token_malformed",
    ));
    let mut wrong = claims.clone();
    wrong["iss"] = json!("spiffe://lv.xborder.test/gateway");
    cases.push((
        "wrong iss",
        sign(&ours, &ed(json!({})), &wrong),
        StatusCode::UNAUTHORIZED,
        "token_issuer",
    ));

    let mut failures = Vec::new();
    for (what, token, status, code) in &cases {
        let seen = fx.pull(token).await;
        println!("{what}: {} {}", seen.0.as_u16(), seen.1);
        if seen != (*status, (*code).to_owned()) {
            failures.push(format!(
                "{what}: expected {status} {code}, got {} {} (token {token:.80})",
                seen.0, seen.1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    fx.still_served().await;
    fx.shutdown().await;
}

/// A genuine token over another valid certificate: another holder of the
/// same SPIFFE ID, and another identity of the same jurisdiction.
#[tokio::test]
async fn a_token_over_another_certificate_is_not_bound() {
    let fx = Fixture::new().await;
    let same_id = fx.world.fi_police();
    let customs = fx
        .world
        .fi
        .issue(&LeafSpec::client(spiffe(
            "spiffe://fi.xborder.test/agency/customs",
        )))
        .unwrap();
    let other_grantee = grant_token(
        &fx.world,
        fx.gateway.border,
        fx.gateway.admin,
        &customs,
        &["subscriber"],
    )
    .await;
    for (cert, token) in [
        (&same_id, &fx.token),
        (&customs, &fx.token),
        (&fx.police, &other_grantee),
    ] {
        assert_eq!(
            fx.pull_as(cert, TARGET_PATH, token).await,
            (StatusCode::FORBIDDEN, "token_not_bound".to_owned()),
            "{}",
            cert.spiffe_id().as_str()
        );
    }
    fx.still_served().await;
    fx.shutdown().await;
}

#[tokio::test]
async fn a_token_expired_by_a_second_is_refused() {
    let fx = Fixture::new().await;
    let (short, _) = grant_with(
        &fx.world,
        fx.gateway.border,
        fx.gateway.admin,
        &fx.police,
        &["subscriber"],
        json!({ "lifetime": "1s" }),
    )
    .await;
    let exp = segment(&short, 1)["exp"].as_i64().unwrap();
    // Wait until the clock is past `exp` by at least a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while OffsetDateTime::now_utc().unix_timestamp() < exp + 1 {
        assert!(Instant::now() < deadline, "exp {exp} is not near");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fx.pull(&short).await,
        (StatusCode::UNAUTHORIZED, "token_expired".to_owned())
    );
    fx.still_served().await;
    fx.shutdown().await;
}

/// A 200 KiB bearer token: hyper's header limit (4xx, or a reset on h2) or
/// `token_malformed`; either way the listener still serves.
#[tokio::test]
async fn an_oversized_token_is_refused_and_the_listener_still_serves() {
    let fx = Fixture::new().await;
    let huge = "A".repeat(200 * 1024);
    let dotted = format!("{}.{}.{}", "A".repeat(1024), huge, "A".repeat(1024));
    for alpn in [&[&b"http/1.1"[..]][..], &[&b"h2"[..]][..]] {
        for token in [&huge, &dotted] {
            let client = fx.world.client_alpn(Some(&fx.police), alpn);
            let mut conn = client
                .connect(fx.gateway.border, "localhost")
                .await
                .unwrap();
            let seen = tokio::time::timeout(
                Duration::from_secs(10),
                get_with(&mut conn, TARGET_PATH, token),
            )
            .await
            .expect("answered or closed promptly");
            println!(
                "oversized token over {:?}: {:?}",
                String::from_utf8_lossy(alpn[0]),
                seen.as_ref()
                    .map(|(s, b)| (s.as_u16(), String::from_utf8_lossy(b).into_owned()))
                    .map_err(ToString::to_string)
            );
            match seen {
                Ok((StatusCode::UNAUTHORIZED, body)) => {
                    let problem: Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(problem["code"], "token_malformed");
                }
                Ok((status, _)) => assert!(
                    status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                        || status == StatusCode::BAD_REQUEST,
                    "{status}"
                ),
                // h2: the stream or connection is refused for its header list size.
                Err(_) => {}
            }
        }
    }
    fx.still_served().await;
    fx.shutdown().await;
}
