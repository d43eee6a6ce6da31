//! Hostile peers: forged and mangled grant tokens, certificates that must
//! not get in, HTTP framing tricks, floods of connections and streams,
//! paths aimed past a route, and JSON built to exhaust a parser. Each case
//! asserts the exact refusal, and after each group a good peer still pulls a
//! transfer that decrypts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};
use http::{Method, StatusCode};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xborder::client::BorderClient;
use xborder::grant::token::TokenKeys;
use xborder::pki::{Issued, LeafSpec};
use xborder::tls;

use crate::support::*;

const TARGET_PATH: &str = "/v1/data/subscriber/+3725550123";

/// A gateway, FI's police, and a grant token for subscriber data.
struct Fixture {
    world: World,
    gateway: Running,
    police: Issued,
    token: String,
}

impl Fixture {
    async fn new() -> Self {
        let world = World::new();
        let gateway = Running::start(&world).await;
        let police = world.fi_police();
        let token = grant_token(
            &world,
            gateway.border,
            gateway.admin,
            &police,
            &["subscriber"],
        )
        .await;
        Self {
            world,
            gateway,
            police,
            token,
        }
    }

    /// A good peer is still served: a grant-token transfer answers 200 and decrypts.
    async fn still_served(&self) {
        let client = self.world.client(Some(&self.police));
        let mut conn = tokio::time::timeout(
            Duration::from_secs(20),
            client.connect(self.gateway.border, "localhost"),
        )
        .await
        .expect("a good peer connects promptly")
        .expect("a good peer's handshake succeeds");
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(30),
            get_with(&mut conn, TARGET_PATH, &self.token),
        )
        .await
        .expect("a good peer is answered promptly")
        .unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
        assert_eq!(record["target"], "+3725550123");
    }

    /// GET `path` with `token` over `cert`; the status and problem code.
    async fn pull_as(&self, cert: &Issued, path: &str, token: &str) -> (StatusCode, String) {
        let (status, body) = send_json(
            &self.world.client(Some(cert)),
            self.gateway.border,
            Method::GET,
            path,
            None,
            Some(token),
        )
        .await;
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    }

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

    async fn shutdown(self) {
        self.gateway.shutdown().await;
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

#[tokio::test]
async fn certificates_not_yet_valid_or_chained_through_a_leaf_are_refused() {
    let fx = Fixture::new().await;
    let now = OffsetDateTime::now_utc();
    let early = fx
        .world
        .fi
        .issue(
            &LeafSpec::client(spiffe("spiffe://fi.xborder.test/agency/police")).valid(
                now + time::Duration::days(1),
                now + time::Duration::days(30),
            ),
        )
        .unwrap();
    let seen = assert_refused(&fx.world.client(Some(&early)), fx.gateway.border).await;
    println!("not yet valid: {seen}");

    // An ordinary client leaf of EE's CA (CA:FALSE) used to sign another leaf,
    // presented as leaf + "intermediate", on both mTLS listeners.
    let for_border = chained_through_a_leaf(&fx.world, "spiffe://fi.xborder.test/agency/police");
    let seen = assert_refused(&for_border, fx.gateway.border).await;
    println!("chained through a leaf (FI, border): {seen}");
    let for_admin = chained_through_a_leaf(&fx.world, "spiffe://ee.xborder.test/admin/operator");
    let seen = assert_refused(&for_admin, fx.gateway.border).await;
    println!("chained through a leaf (EE operator, border): {seen}");
    match get(&for_admin, fx.gateway.admin, "/v1/requests").await {
        Ok((status, body)) => panic!(
            "admin served a leaf-signed chain with {status}: {}",
            String::from_utf8_lossy(&body)
        ),
        Err(e) => println!("chained through a leaf (EE operator, admin): {e}"),
    }
    fx.still_served().await;
    fx.shutdown().await;
}

/// A client presenting [leaf for `spiffe_id`, issuer] where the issuer is a
/// CA:FALSE client leaf of the CA of `spiffe_id`'s trust domain.
fn chained_through_a_leaf(world: &World, spiffe_id: &str) -> BorderClient {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca = if spiffe_id.starts_with("spiffe://ee.") {
        &world.ee
    } else {
        &world.fi
    };
    let domain = spiffe_id.split('/').nth(2).unwrap();
    let not_a_ca = ca
        .issue(&LeafSpec::client(spiffe(&format!(
            "spiffe://{domain}/agency/intermediate"
        ))))
        .unwrap();
    let mut issuer_params = CertificateParams::default();
    issuer_params.distinguished_name = DistinguishedName::new();
    // As `DevCa::issue` names its leaves: the last segment of the SPIFFE path.
    issuer_params
        .distinguished_name
        .push(DnType::CommonName, "intermediate");
    let issuer = Issuer::new(
        issuer_params,
        KeyPair::from_pem(&not_a_ca.key_pem()).unwrap(),
    );

    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "forged");
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(world.ee.cert_der()).unwrap();
    let signing = tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    let certified = CertifiedKey::new(vec![cert.der().clone(), not_a_ca.cert_der()], signing);
    let mut config = (*tls::client_config_with(roots, Arc::new(certified)).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    BorderClient::new(Arc::new(config))
}

/// A raw TLS stream to the border, as `cert`, offering only `alpn`.
async fn raw_tls(
    world: &World,
    addr: SocketAddr,
    cert: &Issued,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = world.client_config(Some(cert), &[alpn]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Writes `bytes` on a fresh HTTP/1.1 connection and reads whatever comes
/// back until the server closes (at most 1 MiB, 6 s).
async fn raw_h1(fx: &Fixture, bytes: &[u8]) -> String {
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"http/1.1").await;
    // The server may close mid-write, which is one of the acceptable outcomes.
    let _ = tls.write_all(bytes).await;
    let _ = tls.flush().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut buf = vec![0u8; 64 * 1024];
    while seen.len() < 1024 * 1024 {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// The status codes of the HTTP/1.1 responses in `raw`.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| raw.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn oversized_headers_get_431_or_a_close() {
    let fx = Fixture::new().await;
    let value = "v".repeat(8 * 1024);
    let mut request = format!("GET {TARGET_PATH} HTTP/1.1\r\nhost: localhost\r\n");
    for i in 0..100 {
        request.push_str(&format!("x-big-{i}: {value}\r\n"));
    }
    request.push_str(&format!("authorization: Bearer {}\r\n\r\n", fx.token));
    let seen = raw_h1(&fx, request.as_bytes()).await;
    println!("100 x 8 KiB headers over HTTP/1.1: {:?}", statuses(&seen));
    assert!(
        matches!(statuses(&seen).as_slice(), [] | [431]),
        "{seen:.300}"
    );

    // The same over HTTP/2 through hyper's client.
    let client = fx.world.client_alpn(Some(&fx.police), &[b"h2"]);
    let mut conn = client
        .connect(fx.gateway.border, "localhost")
        .await
        .unwrap();
    let mut request = xborder::client::get(TARGET_PATH.parse().unwrap());
    for i in 0..100 {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(format!("x-big-{i}").as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", fx.token).parse().unwrap(),
    );
    let seen = tokio::time::timeout(Duration::from_secs(10), conn.send(request))
        .await
        .expect("answered or reset promptly");
    match seen {
        Ok(response) => {
            println!("100 x 8 KiB headers over h2: {}", response.status());
            assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            );
        }
        Err(e) => println!("100 x 8 KiB headers over h2: refused: {e}"),
    }
    fx.still_served().await;
    fx.shutdown().await;
}

/// Request smuggling over HTTP/1.1: each request hides a second one
/// (`GET /v1/keys`) that a server with the wrong framing would answer.
#[tokio::test]
async fn smuggled_requests_are_never_interpreted() {
    let fx = Fixture::new().await;
    let smuggled = "GET /v1/keys HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let chunked_end = format!("0\r\n\r\n{smuggled}");
    let cases = [
        (
            "Content-Length and Transfer-Encoding: chunked",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n{chunked_end}",
                chunked_end.len()
            ),
        ),
        (
            "Transfer-Encoding: chunked and Content-Length",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "two Content-Length values",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\ncontent-length: {}\r\n\r\n{{}}{smuggled}",
                2 + smuggled.len()
            ),
        ),
        (
            "Content-Length: 2, N",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2, {}\r\n\r\n{{}}{smuggled}",
                2 + smuggled.len()
            ),
        ),
        (
            "Transfer-Encoding: xchunked",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: xchunked\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked, identity\r\n\r\n{chunked_end}"
            ),
        ),
        (
            "Transfer-Encoding with a space before the colon",
            format!(
                "POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding : chunked\r\ncontent-length: {}\r\n\r\n{chunked_end}",
                chunked_end.len()
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (what, request) in &cases {
        let seen = raw_h1(&fx, request.as_bytes()).await;
        let codes = statuses(&seen);
        println!("{what}: responses {codes:?}");
        let answered_smuggled = seen.contains("\"keys\"");
        if answered_smuggled || !matches!(codes.as_slice(), [] | [400]) {
            failures.push(format!("{what}: responses {codes:?}: {seen:.600}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    fx.still_served().await;
    fx.shutdown().await;
}

/// A thousand TCP connections that never start a handshake; a good peer is
/// served while they are open and after they are gone.
#[tokio::test]
async fn a_thousand_idle_connections_do_not_wedge_the_listener() {
    let fx = Fixture::new().await;
    let mut idle = Vec::with_capacity(1000);
    let started = Instant::now();
    for _ in 0..1000 {
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(fx.gateway.border),
        )
        .await
        .expect("connect promptly")
        .unwrap();
        idle.push(stream);
    }
    println!("1000 idle connections open in {:?}", started.elapsed());
    let served = Instant::now();
    fx.still_served().await;
    println!("good peer served in {:?} beside them", served.elapsed());
    drop(idle);
    fx.still_served().await;
    // The listener counts no connection of theirs as open.
    assert!(
        eventually(Duration::from_secs(5), || async {
            fx.gateway
                .metric(r#"xborder_open_connections{listener="border"}"#)
                .await
                .unwrap_or(0.0)
                == 0.0
        })
        .await
    );
    fx.shutdown().await;
}

/// HTTP/2 rapid reset (CVE-2023-44487), in raw frames: the `h2` crate is
/// not a dependency this package may name in tests, so HEADERS and
/// RST_STREAM are written by hand.
#[tokio::test]
async fn http2_rapid_reset_does_not_wedge_the_listener() {
    let fx = Fixture::new().await;
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"h2").await;
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.push(0x04); // :path, literal without indexing
    block.push(u8::try_from(PING.len()).unwrap());
    block.extend_from_slice(PING.as_bytes());
    block.push(0x01); // :authority
    block.push(9);
    block.extend_from_slice(b"localhost");
    let streams: u32 = 5000;
    let started = Instant::now();
    let mut written = 0;
    for i in 0..streams {
        let id = 1 + 2 * i;
        frame(&mut out, 0x1, 0x4 | 0x1, id, &block); // HEADERS, END_HEADERS|END_STREAM
        frame(&mut out, 0x3, 0, id, &8u32.to_be_bytes()); // RST_STREAM CANCEL
        if out.len() > 64 * 1024 {
            if tls.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        written = i + 1;
    }
    let _ = tls.write_all(&out).await;
    let _ = tls.flush().await;
    // Read what the server says: GOAWAY (and its code), or a close.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut buf = vec![0u8; 64 * 1024];
    while seen.len() < 8 * 1024 * 1024 {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let goaway = goaway_code(&seen);
    println!(
        "rapid reset: {written} of {streams} streams sent and reset in {:?}; GOAWAY {goaway:?}",
        started.elapsed()
    );
    drop(tls);
    // Bounded by `still_served`'s deadlines: a wedged listener fails there.
    fx.still_served().await;
    fx.shutdown().await;
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The error code of the first GOAWAY among the frames in `bytes`.
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let kind = rest[3];
        let payload = rest.get(9..9 + len)?;
        if kind == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        rest = &rest[9 + len..];
    }
    None
}

/// Paths aimed past the route into the upstream: refused with `bad_path`,
/// `route_not_found` or hyper's 400/414, or served with the upstream seeing
/// only the granted target (the example upstream echoes what it got).
#[tokio::test]
async fn paths_aimed_past_a_route_never_reach_an_unintended_upstream_path() {
    let fx = Fixture::new().await;
    let refused = [
        (
            "/v1/data/subscriber/../../admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123/../../../admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/./+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/%2e%2e/%2e%2e/admin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/%2E%2E/x",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/.%2e/x",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber%2F..%2Fcontent/+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%2F..%2F..%2Fadmin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%2f",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/..%5c..%5cadmin",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data/subscriber/+3725550123%00",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
        (
            "/v1/data//subscriber/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "//v1/data/subscriber/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscriberx/+3725550123",
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        (
            "/v1/data/subscriber/+3725559999/../+3725550123",
            StatusCode::BAD_REQUEST,
            "bad_path",
        ),
    ];
    let mut failures = Vec::new();
    for (path, status, code) in refused {
        let seen = fx.pull_as(&fx.police, path, &fx.token).await;
        println!("{path}: {} {}", seen.0.as_u16(), seen.1);
        if seen != (status, code.to_owned()) {
            failures.push(format!("{path}: expected {status} {code}, got {seen:?}"));
        }
    }

    // Served: the upstream saw only paths beneath /subscriber/ that start with the granted target.
    for (path, upstream_target) in [
        ("/v1/data/subscriber/+3725550123/", "+3725550123/"),
        ("/v1/data/subscriber//+3725550123", "/+3725550123"),
        ("/v1/data/subscriber/+3725550123//x", "+3725550123//x"),
        (
            "/v1/data/subscriber/+3725550123/%252e%252e/admin",
            "+3725550123/%252e%252e/admin",
        ),
    ] {
        let mut conn = fx
            .world
            .client(Some(&fx.police))
            .connect(fx.gateway.border, "localhost")
            .await
            .unwrap();
        let (status, body) = get_with(&mut conn, path, &fx.token).await.unwrap();
        if status != StatusCode::OK {
            println!("{path}: {status} {}", String::from_utf8_lossy(&body));
            continue;
        }
        let record: Value = serde_json::from_slice(&open_sealed(&body)).unwrap();
        println!(
            "{path}: 200, the upstream saw /subscriber/{}",
            record["target"]
        );
        if record["target"] != upstream_target {
            failures.push(format!("{path}: the upstream saw {}", record["target"]));
        }
    }

    // What the URI parser of hyper's client will not send: raw over HTTP/1.1.
    let long = format!("/v1/data/subscriber/{}", "a".repeat(64 * 1024));
    let raw_cases = [
        (
            "backslashes",
            "/v1/data/subscriber/..\\..\\admin".to_owned(),
            &[400][..],
        ),
        (
            "a backslash target",
            "/v1/data/subscriber/+3725550123\\..\\x".to_owned(),
            &[400][..],
        ),
        ("64 KiB path", long, &[400, 414, 431][..]),
    ];
    for (what, path, allowed) in raw_cases {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
            fx.token
        );
        let seen = raw_h1(&fx, request.as_bytes()).await;
        let codes = statuses(&seen);
        println!("{what}: {codes:?} {}", problem_code(&seen));
        let ok = match codes.as_slice() {
            [] => true,
            [code] => allowed.contains(code),
            _ => false,
        };
        if !ok || seen.contains("Mari Maasikas") {
            failures.push(format!("{what}: {seen:.400}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    fx.still_served().await;
    fx.shutdown().await;
}

fn problem_code(raw: &str) -> String {
    raw.split_once("\"code\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(code, _)| code.to_owned())
        .unwrap_or_default()
}

/// Filing with a body built to exhaust the parser or the memory.
#[tokio::test]
async fn hostile_json_bodies_are_refused() {
    let fx = Fixture::new().await;
    let client = fx.world.client(Some(&fx.police));
    let post = |body: Vec<u8>| {
        let client = client.clone();
        let border = fx.gateway.border;
        async move {
            let mut conn = client.connect(border, "localhost").await.unwrap();
            let request = http::Request::post("/v1/requests")
                .header("content-type", "application/json")
                .body(xborder::wire::full(body))
                .unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), conn.send(request))
                .await
                .expect("answered promptly")
                .unwrap();
            let (parts, body) = xborder::client::collect(response).await.unwrap();
            let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (
                parts.status,
                problem["code"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "100 000 nested arrays (over 64 KiB)",
            "[".repeat(100_000).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "60 000 nested arrays (under 64 KiB)",
            "[".repeat(60_000).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "30 000 nested arrays, closed",
            format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "nested objects in a field",
            format!(
                "{{\"purpose\":{}1{}}}",
                "{\"a\":".repeat(10_000),
                "}".repeat(10_000)
            )
            .into_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "a valid request padded past 64 KiB",
            {
                let mut body = request_body(&["subscriber"], "normal");
                body["justification"] = json!("x".repeat(70 * 1024));
                body.to_string().into_bytes()
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "1 MiB of whitespace",
            vec![b' '; 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    let mut failures = Vec::new();
    for (what, body, status, code) in cases {
        let seen = post(body).await;
        println!("{what}: {} {}", seen.0.as_u16(), seen.1);
        if seen != (status, code.to_owned()) {
            failures.push(format!("{what}: expected {status} {code}, got {seen:?}"));
        }
    }

    // A declared 10 GB body whose first 128 KiB arrive: refused once the cap is passed.
    let mut request =
        b"POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10000000000\r\n\r\n"
            .to_vec();
    request.extend(std::iter::repeat_n(b' ', 128 * 1024));
    let seen = raw_h1(&fx, &request).await;
    println!(
        "declared 10 GB, 128 KiB sent: {:?} {}",
        statuses(&seen),
        problem_code(&seen)
    );
    if statuses(&seen) != [413] || problem_code(&seen) != "body_too_large" {
        failures.push(format!("declared 10 GB: {seen:.400}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was filed.
    let (status, all) = send_json(
        &admin(&fx.world, "rita"),
        fx.gateway.admin,
        Method::GET,
        "/v1/requests",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        all["requests"].as_array().unwrap().len(),
        1,
        "only the fixture's"
    );
    fx.still_served().await;
    fx.shutdown().await;
}

/// A body that stalls: the headers declare 1 KiB, 5 bytes come, then
/// nothing. The connection must be cut within a bound (`timeouts.idle` is
/// 2 s and `header_read` 1 s in the test config), or a thousand such
/// clients hold a thousand connections and tasks for ever.
#[tokio::test]
async fn a_stalled_request_body_is_cut() {
    let fx = Fixture::new().await;
    let mut tls = raw_tls(&fx.world, fx.gateway.border, &fx.police, b"http/1.1").await;
    tls.write_all(
        b"POST /v1/requests HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1024\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let cut = loop {
        match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    println!(
        "stalled body: cut {cut} after {:?}, answered {:?}",
        started.elapsed(),
        statuses(&String::from_utf8_lossy(&seen))
    );
    assert!(cut, "still open after {:?}", started.elapsed());
    drop(tls);
    fx.still_served().await;
    fx.shutdown().await;
}

#[tokio::test]
async fn chains_deeper_than_allowed_are_refused() {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let fx = Fixture::new().await;
    let police = "spiffe://fi.xborder.test/agency/police";

    // A genuine intermediate CA under FI's CA, whose path length (0) allows
    // none: one level deeper than the CA permits.
    let mut root = CertificateParams::default();
    root.distinguished_name = DistinguishedName::new();
    root.distinguished_name
        .push(DnType::CommonName, "xborder dev CA FI");
    root.distinguished_name
        .push(DnType::OrganizationName, "xborder dev");
    let root = Issuer::new(root, KeyPair::from_pem(&fx.world.fi.key_pem()).unwrap());
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "FI issuing CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(30);
    // Control: a leaf signed by FI's CA as rebuilt here is served, so what
    // refuses the next one is the intermediate alone.
    let (direct, direct_key) = client_leaf(police, &root);
    let client = client_with_chain(&fx.world, direct, &direct_key, Vec::new());
    let (status, _) = get(&client, fx.gateway.border, PING).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "the control leaf is served");

    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate = params.signed_by(&intermediate_key, &root).unwrap();
    let issuing = Issuer::new(params, intermediate_key);
    let (leaf, leaf_key) = client_leaf(police, &issuing);
    let deeper = client_with_chain(
        &fx.world,
        leaf.clone(),
        &leaf_key,
        vec![intermediate.der().clone()],
    );
    let seen = assert_refused(&deeper, fx.gateway.border).await;
    println!("through an intermediate the CA does not allow: {seen}");

    // A chain padded with more intermediates than any path may use.
    let genuine = fx
        .world
        .fi
        .issue(&LeafSpec::client(spiffe(police)))
        .unwrap();
    let padded = vec![fx.world.fi.cert_der(); xborder::tls::MAX_INTERMEDIATES + 1];
    let key = KeyPair::from_pem(&genuine.key_pem()).unwrap();
    let long = client_with_chain(&fx.world, genuine.cert_der(), &key, padded);
    let seen = assert_refused(&long, fx.gateway.border).await;
    println!(
        "{} intermediates: {seen}",
        xborder::tls::MAX_INTERMEDIATES + 1
    );

    fx.still_served().await;
    fx.shutdown().await;
}

/// A client leaf for `spiffe_id` signed by `issuer`.
fn client_leaf(
    spiffe_id: &str,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (CertificateDer<'static>, rcgen::KeyPair) {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "police");
    params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.der().clone(), key)
}

/// A client that presents `leaf` then `chain`, trusting EE's CA for the server.
fn client_with_chain(
    world: &World,
    leaf: CertificateDer<'static>,
    key: &rcgen::KeyPair,
    chain: Vec<CertificateDer<'static>>,
) -> BorderClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(world.ee.cert_der()).unwrap();
    let signing = tls::provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    let mut certs = vec![leaf];
    certs.extend(chain);
    let certified = CertifiedKey::new(certs, signing);
    let mut config = (*tls::client_config_with(roots, Arc::new(certified)).unwrap()).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    BorderClient::new(Arc::new(config))
}
