//! Cost of knowing who a peer is, per new connection.
//!
//! - `peer_identity`: SPIFFE ID, jurisdiction and thumbprint from a verified leaf.
//! - `verify/webpki` vs `verify/jurisdiction`: rustls' WebPKI client verifier
//!   alone (the baseline) against ours, which first picks the CA bound to the
//!   SPIFFE trust domain and then runs the same WebPKI checks. The ratio of the
//!   two is the overhead of binding CAs to trust domains.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use xborder::identity::{Jurisdiction, PeerIdentity};
use xborder::pki::{DevCa, LeafSpec};
use xborder::tls::{self, JurisdictionVerifier, LoadedAnchor};

fn identity(c: &mut Criterion) {
    let ee: Jurisdiction = "EE".parse().unwrap();
    let fi: Jurisdiction = "FI".parse().unwrap();
    let ee_ca = DevCa::new(&ee).unwrap();
    let fi_ca = DevCa::new(&fi).unwrap();
    let leaf = fi_ca
        .issue(&LeafSpec::client(
            "spiffe://fi.xborder.test/agency/police".parse().unwrap(),
        ))
        .unwrap()
        .cert_der();
    let crl = |ca: &DevCa| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateRevocationListDer::from_pem_slice(
            ca.crl_pem(&[]).unwrap().as_bytes(),
        )
        .unwrap()
    };
    let anchor = |ca: &DevCa| LoadedAnchor {
        trust_domain: ca.trust_domain().clone(),
        ca: vec![ca.cert_der()],
        crls: vec![crl(ca)],
    };

    c.bench_function("peer_identity", |b| {
        let domain = fi.dev_trust_domain();
        b.iter(|| PeerIdentity::from_verified_leaf(black_box(&leaf), fi.clone(), &domain).unwrap())
    });

    let mut group = c.benchmark_group("verify");
    let now = UnixTime::now();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fi_ca.cert_der()).unwrap();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .with_crls([crl(&fi_ca)])
        .build()
        .unwrap();
    group.bench_function("webpki", |b| {
        b.iter(|| {
            webpki
                .verify_client_cert(black_box(&leaf), &[], now)
                .unwrap()
        })
    });
    let ours = JurisdictionVerifier::new(vec![
        (ee.clone(), anchor(&ee_ca)),
        (fi.clone(), anchor(&fi_ca)),
    ])
    .unwrap();
    group.bench_function("jurisdiction", |b| {
        b.iter(|| ours.verify_client_cert(black_box(&leaf), &[], now).unwrap())
    });
    group.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
