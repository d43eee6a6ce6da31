//! The development PKI, made with rcgen: one CA per jurisdiction, gateway,
//! client and admin leaf certificates with SPIFFE IDs, CRLs, age identities,
//! and `xborder pki dev`'s ready-to-run file set.
//!
//! This is for development, examples and tests. It is not a production CA:
//! keys live in memory and in plain files, and nothing is audited.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::identity::{Jurisdiction, SpiffeId, TrustDomain};

mod dev_set;

pub use dev_set::{WrittenFile, dev_set_dir, dev_set_paths, write_dev_set};

/// A jurisdiction's development CA: ECDSA P-256, self-signed, `CA:TRUE`
/// with path length 0, so it signs leaves only.
pub struct DevCa {
    jurisdiction: Jurisdiction,
    trust_domain: TrustDomain,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// RFC 5280 wants CRL numbers to increase for one issuer.
    crl_number: AtomicU64,
}

impl DevCa {
    /// A fresh CA for `jurisdiction`, bound to its development trust domain,
    /// valid from an hour ago (tolerates clock skew) for a year.
    pub fn new(jurisdiction: &Jurisdiction) -> Result<Self, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("xborder dev CA {jurisdiction}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "xborder dev");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self {
            jurisdiction: jurisdiction.clone(),
            trust_domain: jurisdiction.dev_trust_domain(),
            issuer,
            crl_number: AtomicU64::new(1),
        })
    }

    pub fn jurisdiction(&self) -> &Jurisdiction {
        &self.jurisdiction
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf for `spec`. The SPIFFE ID is not checked against this
    /// CA's trust domain, on purpose: tests need mis-issued certificates.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        if spec.not_after <= spec.not_before {
            return Err(PkiError::Validity {
                not_before: spec.not_before,
                not_after: spec.not_after,
            });
        }
        let spiffe_uri = spec.spiffe_id.as_str().try_into()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let common_name = spec.spiffe_id.path().rsplit('/').next().unwrap_or_default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = vec![SanType::URI(spiffe_uri)];
        match &spec.usage {
            Usage::Server { dns, ips } => {
                for name in dns {
                    let dns_name = name
                        .as_str()
                        .try_into()
                        .map_err(|_| PkiError::DnsName(name.clone()))?;
                    params.subject_alt_names.push(SanType::DnsName(dns_name));
                }
                params
                    .subject_alt_names
                    .extend(ips.iter().copied().map(SanType::IpAddress));
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Usage::Client => {
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;

        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            spiffe_id: spec.spiffe_id.clone(),
            serial,
            cert,
            key,
        })
    }

    /// A CRL signed by this CA listing `revoked` (may be empty), valid from a
    /// minute ago for 30 days. Its CRL number is higher than the previous
    /// call's, so a reloader can tell newer from older.
    pub fn crl_pem(&self, revoked: &[&Issued]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let number = self.crl_number.fetch_add(1, Ordering::Relaxed);
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|issued| RevokedCertParams {
                    serial_number: issued.serial.clone(),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

impl fmt::Debug for DevCa {
    // By hand, so the CA key can never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa")
            .field("jurisdiction", &self.jurisdiction)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Usage {
    /// serverAuth EKU; DNS SANs and IP SANs besides the SPIFFE URI SAN.
    Server { dns: Vec<String>, ips: Vec<IpAddr> },
    /// clientAuth EKU only.
    Client,
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// The one URI SAN. It may name another trust domain than the issuing
    /// CA's, which is how tests make mis-issued certificates.
    pub spiffe_id: SpiffeId,
    pub usage: Usage,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A server leaf for `localhost`, `127.0.0.1` and `::1`, valid from an
    /// hour ago for 90 days.
    pub fn server(spiffe_id: SpiffeId) -> Self {
        Self::with_default_validity(
            spiffe_id,
            Usage::Server {
                dns: vec!["localhost".to_owned()],
                ips: vec![
                    IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(Ipv6Addr::LOCALHOST),
                ],
            },
        )
    }

    /// A client leaf, valid from an hour ago for 90 days.
    pub fn client(spiffe_id: SpiffeId) -> Self {
        Self::with_default_validity(spiffe_id, Usage::Client)
    }

    /// Replaces the validity period, e.g. for expired or not-yet-valid leaves.
    #[must_use]
    pub fn valid(self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Self {
            not_before,
            not_after,
            ..self
        }
    }

    fn with_default_validity(spiffe_id: SpiffeId, usage: Usage) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            spiffe_id,
            usage,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(90),
        }
    }
}

/// A leaf certificate and its key, as issued by a [`DevCa`].
pub struct Issued {
    spiffe_id: SpiffeId,
    serial: SerialNumber,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The leaf's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    pub fn serial(&self) -> &SerialNumber {
        &self.serial
    }
}

impl fmt::Debug for Issued {
    // By hand, so the leaf key can never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field("serial", &self.serial.to_string())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make a token signing key: {0}")]
    TokenKey(String),
    #[error("generating a key, certificate or CRL failed")]
    Generate(#[from] rcgen::Error),
    #[error("`{0}` cannot be a DNS name in a certificate")]
    DnsName(String),
    #[error("certificate validity ends ({not_after}) before it starts ({not_before})")]
    Validity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("jurisdiction {0} is listed twice")]
    DuplicateJurisdiction(Jurisdiction),
    #[error("cannot bind 127.0.0.1:0 to choose a free port")]
    FreePort(#[source] io::Error),
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A random 16-byte serial: the top bit cleared so the DER INTEGER is
/// positive, the next one set so it is never shortened below 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}
