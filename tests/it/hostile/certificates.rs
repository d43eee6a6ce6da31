//! A peer whose certificate must not get in: not valid yet, chained through
//! a leaf that is no CA, chained through an intermediate the CA does not
//! allow, or padded with more intermediates than any path may use. Each
//! handshake (or the admin listener) refuses it, and a good peer is still
//! served.

use std::sync::Arc;

use http::StatusCode;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use xborder::client::BorderClient;
use xborder::pki::LeafSpec;
use xborder::tls;

use super::Fixture;
use crate::support::*;

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

    client_with_chain(world, cert.der().clone(), &key, vec![not_a_ca.cert_der()])
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
