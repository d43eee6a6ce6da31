//! rustls configurations for the gateway's TLS listeners and its outbound calls.
//!
//! A [`ServerTls`] is one consistent snapshot of every file the TLS layer
//! reads: our certificate and key, each jurisdiction's CA and CRLs. It is
//! built whole, checked (key matches certificate, certificate in date, CRLs
//! parse), and only then published; [`reload`] rebuilds it when a file changes
//! and keeps the old one when the new files are bad. Connections hold the
//! snapshot they were accepted under, so a reload never disturbs them.
//!
//! Only the ring provider is used, passed explicitly (never a process default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{Config, ConfigError, TrustAnchor};
use crate::identity::{Jurisdiction, TrustDomain};

pub mod reload;
mod verified;
mod verifier;

pub use verifier::{JurisdictionVerifier, MAX_INTERMEDIATES, Refusal};

/// The crypto provider every config in the gateway uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN protocols offered on TLS listeners, HTTP/2 first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One consistent set of server TLS configurations.
pub struct ServerTls {
    /// Foreign peers: client certificates from any trusted jurisdiction.
    pub border: Arc<ServerConfig>,
    /// Our own operators: client certificates from our own jurisdiction's CA.
    pub admin: Option<Arc<ServerConfig>>,
    /// Trust domain → jurisdiction, as bound in the snapshot's trust anchors.
    pub trust_domains: Vec<(TrustDomain, Jurisdiction)>,
    /// The `notAfter` of our certificate and of each CA, in Unix seconds.
    pub expiries: Vec<(String, i64)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("trust_domains", &self.trust_domains)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks every TLS file of `config`, reporting every problem.
    pub fn load(config: &Config) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut expiries = Vec::new();
        let key = certified_key(
            config,
            ("identity.certificate", &config.identity.certificate),
            ("identity.key", &config.identity.key),
            &mut errors,
        );
        if let Some(key) = &key
            && let Some(not_after) = not_after(&key.cert[0])
        {
            expiries.push(("identity.certificate".to_owned(), not_after));
        }
        if let (Some(cert), Some(k)) = (
            &config.identity.client_certificate,
            &config.identity.client_key,
        ) {
            certified_key(
                config,
                ("identity.client_certificate", cert),
                ("identity.client_key", k),
                &mut errors,
            );
        }

        let mut anchors = Vec::new();
        for (jurisdiction, anchor) in &config.trust {
            let key = format!("trust.{jurisdiction}");
            match trust_anchor(anchor, &key) {
                Ok(loaded) => {
                    // The soonest to expire is the one to watch.
                    if let Some(t) = loaded.ca.iter().filter_map(not_after).min() {
                        expiries.push((format!("trust.{jurisdiction}.ca"), t));
                    }
                    anchors.push((jurisdiction.clone(), loaded));
                }
                Err(e) => errors.push(config.error(e.0, e.1)),
            }
        }
        let (Some(key), true) = (key, errors.is_empty()) else {
            return Err(errors);
        };

        let border = JurisdictionVerifier::new(anchors.clone())
            .and_then(|v| server_config(Arc::new(v), key.clone()));
        let border = border.map_err(|e| vec![config.error("trust", e)])?;
        let admin = match config.listeners.admin {
            None => None,
            Some(_) => {
                let own: Vec<_> = anchors
                    .iter()
                    .filter(|(j, _)| *j == config.jurisdiction)
                    .cloned()
                    .collect();
                let admin = JurisdictionVerifier::new(own)
                    .and_then(|v| server_config(Arc::new(v), key.clone()))
                    .map_err(|e| vec![config.error(format!("trust.{}", config.jurisdiction), e)])?;
                Some(admin)
            }
        };
        Ok(Self {
            border,
            admin,
            trust_domains: anchors
                .iter()
                .map(|(j, a)| (a.trust_domain.clone(), j.clone()))
                .collect(),
            expiries,
        })
    }

    /// The jurisdiction bound to `domain` in this snapshot.
    pub fn jurisdiction_of(&self, domain: &TrustDomain) -> Option<&Jurisdiction> {
        self.trust_domains
            .iter()
            .find(|(d, _)| d == domain)
            .map(|(_, j)| j)
    }

    /// Every file this snapshot was read from, for change detection.
    pub fn files(config: &Config) -> Vec<PathBuf> {
        let mut files = vec![
            config.identity.certificate.clone(),
            config.identity.key.clone(),
        ];
        for anchor in config.trust.values() {
            files.push(anchor.ca.clone());
            files.extend(anchor.crls.iter().cloned());
        }
        files
    }
}

/// A CA certificate with the CRLs it signed and the trust domain bound to it.
#[derive(Clone)]
pub struct LoadedAnchor {
    pub trust_domain: TrustDomain,
    /// The CA's certificates: usually one; during a CA rotation the old and
    /// the new, both trusted for the same trust domain.
    pub ca: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

fn trust_anchor(anchor: &TrustAnchor, key: &str) -> Result<LoadedAnchor, (String, String)> {
    // read_certificates refuses a file without any certificate.
    let ca = read_certificates(&anchor.ca).map_err(|e| (format!("{key}.ca"), e))?;
    let mut crls = Vec::new();
    for (i, path) in anchor.crls.iter().enumerate() {
        let crl = read_crl(path).map_err(|e| (format!("{key}.crls[{i}]"), e))?;
        crls.push(crl);
    }
    Ok(LoadedAnchor {
        trust_domain: anchor.trust_domain.clone(),
        ca,
        crls,
    })
}

/// What is wrong with a certificate-and-key pair read from files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityFileError {
    /// The certificate file: unreadable, not PEM, empty, or out of date.
    Certificate(String),
    /// The key file: unreadable, not PEM, or a key type we cannot use.
    Key(String),
    /// Both read, but the key is not the certificate's.
    Mismatch,
}

/// Reads a certificate chain (leaf first) and its private key, and checks
/// that the leaf is in date and the key is its key. Both files are read
/// before reporting, so a caller can name every bad one at once.
pub fn identity_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<CertifiedKey>, Vec<IdentityFileError>> {
    let chain = read_certificates(cert).and_then(|chain| match chain.first() {
        Some(leaf) => check_in_date(leaf)
            .map(|()| chain.clone())
            .map_err(|e| format!("{}: {e}", cert.display())),
        None => Err(format!("{}: no certificate in the file", cert.display())),
    });
    let signer = read_private_key(key).and_then(|der| {
        provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| format!("{}: unusable key: {e}", key.display()))
    });
    let (chain, signer) = match (chain, signer) {
        (Ok(chain), Ok(signer)) => (chain, signer),
        (chain, signer) => {
            let mut errors = Vec::new();
            errors.extend(chain.err().map(IdentityFileError::Certificate));
            errors.extend(signer.err().map(IdentityFileError::Key));
            return Err(errors);
        }
    };
    let certified = CertifiedKey::new(chain, signer);
    if certified.keys_match().is_err() {
        return Err(vec![IdentityFileError::Mismatch]);
    }
    Ok(Arc::new(certified))
}

/// [`identity_from_files`] with its problems keyed to the config.
fn certified_key(
    config: &Config,
    (cert_key, cert_path): (&str, &Path),
    (key_key, key_path): (&str, &Path),
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<CertifiedKey>> {
    identity_from_files(cert_path, key_path)
        .map_err(|problems| {
            for problem in problems {
                errors.push(match problem {
                    IdentityFileError::Certificate(e) => config.error(cert_key, e),
                    IdentityFileError::Key(e) => config.error(key_key, e),
                    IdentityFileError::Mismatch => config.error(
                        key_key,
                        format!(
                            "{} does not match the certificate in `{cert_key}` ({})",
                            key_path.display(),
                            cert_path.display()
                        ),
                    ),
                });
            }
        })
        .ok()
}

fn server_config(
    verifier: Arc<JurisdictionVerifier>,
    key: Arc<CertifiedKey>,
) -> Result<Arc<ServerConfig>, String> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration for our own outbound calls: trusts every configured
/// CA as a server issuer and presents `identity.client_certificate`.
pub fn client_config(config: &Config) -> Result<Arc<ClientConfig>, Vec<ConfigError>> {
    let mut roots = RootCertStore::empty();
    let mut errors = Vec::new();
    for (jurisdiction, anchor) in &config.trust {
        match read_certificates(&anchor.ca) {
            Ok(certs) => {
                for cert in certs {
                    if let Err(e) = roots.add(cert) {
                        errors
                            .push(config.error(format!("trust.{jurisdiction}.ca"), e.to_string()));
                    }
                }
            }
            Err(e) => errors.push(config.error(format!("trust.{jurisdiction}.ca"), e)),
        }
    }
    let (Some(cert), Some(key)) = (
        &config.identity.client_certificate,
        &config.identity.client_key,
    ) else {
        errors.push(config.error("identity.client_certificate", "needed for outbound calls"));
        return Err(errors);
    };
    let key = certified_key(
        config,
        ("identity.client_certificate", cert),
        ("identity.client_key", key),
        &mut errors,
    );
    let Some(key) = key.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    client_config_with(roots, key).map_err(|e| vec![config.error("identity", e)])
}

/// The CA certificates in a PEM file, as roots to verify a server against.
pub fn roots_from_file(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for der in read_certificates(ca)? {
        roots
            .add(der)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A client configuration from parts, for callers that hold them in memory.
pub fn client_config_with(
    roots: RootCertStore,
    key: Arc<CertifiedKey>,
) -> Result<Arc<ClientConfig>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// All certificates in a PEM file.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    for cert in &certs {
        X509Certificate::from_der(cert)
            .map_err(|e| format!("{}: certificate does not parse: {e}", path.display()))?;
    }
    Ok(certs)
}

/// The one private key in a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{}: not a PEM private key: {e}", path.display()))
}

/// The CRL in a PEM or DER file.
pub fn read_crl(path: &Path) -> Result<CertificateRevocationListDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let crl = CertificateRevocationListDer::from_pem_slice(&bytes)
        .unwrap_or_else(|_| CertificateRevocationListDer::from(bytes));
    x509_parser::revocation_list::CertificateRevocationList::from_der(&crl)
        .map_err(|e| format!("{}: not a CRL: {e}", path.display()))?;
    Ok(crl)
}

fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn check_in_date(cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) =
        X509Certificate::from_der(cert).map_err(|e| format!("certificate does not parse: {e}"))?;
    let validity = parsed.validity();
    if !validity.is_valid() {
        return Err(format!(
            "certificate is not valid now (valid from {} to {})",
            validity.not_before, validity.not_after
        ));
    }
    Ok(())
}

/// Builds a WebPKI client verifier for one CA and its CRLs.
fn webpki_verifier(
    anchor: &LoadedAnchor,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for ca in &anchor.ca {
        roots
            .add(ca.clone())
            .map_err(|e| format!("CA certificate unusable: {e}"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(anchor.crls.iter().cloned())
        .build()
        .map_err(|e| format!("{e}"))
}
