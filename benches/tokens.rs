//! Cost of grant tokens, per grant (issue) and per transfer (verify).
//!
//! - `token/issue`, `token/verify_cold`: ours, through jsonwebtoken and the
//!   EdDSA-only provider, verify including every claim check, each token
//!   seen for the first time (8 192 distinct tokens, twice the cache).
//! - `token/verify_cached`: the same token again, as on every transfer of a
//!   grant: the signature is remembered, time and binding checked anew.
//! - `receipt/sign`: a transfer's receipt signed as a JWS, as every
//!   transfer's close does.
//! - `ed25519/sign`, `ed25519/verify_strict`: the bare signature over a
//!   message as long as a typical token's signing input, the baseline. The
//!   ratio of the two is the JWT overhead: JSON, base64, header and claim
//!   checks (the signing key is decoded once, not on every call).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use xborder::clock::Timestamp;
use xborder::grant::token::{TokenKeys, TokenSettings, Tokens};
use xborder::grant::{Grant, GrantId, GrantState, Quotas};
use xborder::identity::Thumbprint;
use xborder::request::{Period, RequestId, Scope, Urgency};
use xborder::transfer::receipt::{Receipt, TransferId};

fn grant(thumbprint: &Thumbprint) -> Grant {
    let at = |text: &str| Timestamp::parse(text).unwrap();
    Grant {
        id: GrantId::new(),
        request_id: RequestId::new(),
        grantee: "spiffe://fi.xborder.test/agency/police".parse().unwrap(),
        grantee_jurisdiction: "FI".parse().unwrap(),
        holder: "EE".parse().unwrap(),
        thumbprint: thumbprint.x5t_s256(),
        scope: Scope {
            legal_basis: "Regulation (EU) 2023/1543, Art. 5".into(),
            purpose: "investigation 2026/123".into(),
            categories: vec!["subscriber".parse().unwrap(), "traffic".parse().unwrap()],
            targets: vec!["+3725550100".into(), "user@example.ee".into()],
            period: Period {
                from: at("2026-01-01T00:00:00Z"),
                to: at("2026-02-01T00:00:00Z"),
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
        issued_at: at("2026-03-01T12:00:00Z"),
        expires_at: at("2026-03-08T12:00:00Z"),
        validation_due: None,
        validated_by: None,
        state: GrantState::Active,
        ending: None,
        token: String::new(),
    }
}

fn tokens(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&[1; 32]);
    let tokens = Tokens::new(
        TokenKeys::from_signing_key(key.clone()),
        TokenSettings {
            issuer: "spiffe://ee.xborder.test/gateway".into(),
            audience: "spiffe://ee.xborder.test/gateway".into(),
            leeway: std::time::Duration::from_secs(30),
        },
    );
    let thumbprint = Thumbprint::of(b"the grantee's leaf certificate");
    let grant = grant(&thumbprint);
    let now = Timestamp::parse("2026-03-02T12:00:00Z").unwrap();
    let token = tokens.issue(&grant).unwrap();
    tokens.verify(&token, &thumbprint, now).unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    eprintln!(
        "token: {} bytes, signing input {} bytes",
        token.len(),
        signing_input.len()
    );

    let mut group = c.benchmark_group("token");
    group.bench_function("issue", |b| {
        b.iter(|| tokens.issue(black_box(&grant)).unwrap())
    });
    let distinct: Vec<String> = (0..8192)
        .map(|_| tokens.issue(&self::grant(&thumbprint)).unwrap())
        .collect();
    let mut next = 0;
    group.bench_function("verify_cold", |b| {
        b.iter(|| {
            next = (next + 1) % distinct.len();
            tokens
                .verify(black_box(&distinct[next]), &thumbprint, now)
                .unwrap()
        })
    });
    group.bench_function("verify_cached", |b| {
        b.iter(|| tokens.verify(black_box(&token), &thumbprint, now).unwrap())
    });
    group.finish();

    let receipt = Receipt {
        transfer_id: TransferId::new(),
        grant_id: grant.id,
        grantee: grant.grantee.to_string(),
        route: "/v1/data/subscriber".into(),
        category: "subscriber".into(),
        target: "+3725550100".into(),
        plaintext_sha256: "ab".repeat(32),
        ciphertext_sha256: "cd".repeat(32),
        plaintext_bytes: 200,
        ciphertext_bytes: 528,
        started_at: now,
        ended_at: now,
        complete: true,
        incomplete: None,
        audit_index: Some(1_234_567),
        encrypted: true,
    };
    let mut group = c.benchmark_group("receipt");
    group.bench_function("sign", |b| {
        b.iter(|| tokens.sign_receipt(black_box(&receipt)).unwrap())
    });
    group.finish();

    // The same bytes a token signature covers.
    let message = signing_input.as_bytes();
    let public = key.verifying_key();
    let signature = key.sign(message);
    let mut group = c.benchmark_group("ed25519");
    group.bench_function("sign", |b| b.iter(|| key.sign(black_box(message))));
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            public
                .verify_strict(black_box(message), &signature)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
