//! The development PKI, made with rcgen: one CA per jurisdiction, gateway,
//! client and admin leaf certificates with SPIFFE IDs, CRLs, age identities,
//! and `xborder pki dev`'s ready-to-run file set.
//!
//! This is for development, examples and tests. It is not a production CA:
//! keys live in memory and in plain files, and nothing is audited.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use age::secrecy::ExposeSecret as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::identity::{Jurisdiction, SpiffeId, TrustDomain};

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

/// Writes a development set for `jurisdictions` into `out_dir`, one
/// directory per jurisdiction (`<out_dir>/ee/`): CA, CRL, gateway server and
/// client certificates, an admin client certificate, an age identity, and a
/// `gateway.toml` that trusts every CA of the set. Existing files are
/// replaced; see [`dev_set_paths`] to check first.
///
/// Each file is written atomically, keys with mode 0600 from the start.
pub fn write_dev_set(
    out_dir: &Path,
    jurisdictions: &[Jurisdiction],
) -> Result<Vec<WrittenFile>, PkiError> {
    for (i, jurisdiction) in jurisdictions.iter().enumerate() {
        if jurisdictions[..i].contains(jurisdiction) {
            return Err(PkiError::DuplicateJurisdiction(jurisdiction.clone()));
        }
    }
    let ports = free_ports(jurisdictions.len())?;
    // Everything is generated before anything is written, so a failure to
    // generate leaves the directory as it was.
    let parties = jurisdictions
        .iter()
        .zip(&ports)
        .map(|(jurisdiction, ports)| {
            let config = gateway_toml(jurisdiction, jurisdictions, ports);
            Party::new(jurisdiction, config)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut written = Vec::new();
    for party in &parties {
        let dir = dev_set_dir(out_dir, party.ca.jurisdiction());
        fs::create_dir_all(&dir).map_err(|source| PkiError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        for file in DevFile::ALL {
            let path = dir.join(file.name());
            write_atomic(&path, party.render(file).as_bytes(), file.secret())?;
            written.push(WrittenFile {
                path,
                what: file.what(),
                secret: file.secret(),
            });
        }
    }
    Ok(written)
}

/// The directory of `jurisdiction`'s files in a dev set: `<out_dir>/ee`.
pub fn dev_set_dir(out_dir: &Path, jurisdiction: &Jurisdiction) -> PathBuf {
    out_dir.join(jurisdiction.as_str().to_ascii_lowercase())
}

/// The paths [`write_dev_set`] would write, in the same order.
pub fn dev_set_paths(out_dir: &Path, jurisdictions: &[Jurisdiction]) -> Vec<PathBuf> {
    jurisdictions
        .iter()
        .flat_map(|jurisdiction| {
            let dir = dev_set_dir(out_dir, jurisdiction);
            DevFile::ALL.map(|file| dir.join(file.name()))
        })
        .collect()
}

/// One file that [`write_dev_set`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: PathBuf,
    /// What the file is, for people: "gateway server key".
    pub what: &'static str,
    /// A secret is written with mode 0600.
    pub secret: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
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

/// The files of one jurisdiction's dev set.
#[derive(Clone, Copy)]
enum DevFile {
    CaCert,
    CaKey,
    CaCrl,
    GatewayCert,
    GatewayKey,
    ClientCert,
    ClientKey,
    AdminCert,
    AdminKey,
    AgeIdentity,
    AgeRecipient,
    GatewayConfig,
}

impl DevFile {
    const ALL: [Self; 12] = [
        Self::CaCert,
        Self::CaKey,
        Self::CaCrl,
        Self::GatewayCert,
        Self::GatewayKey,
        Self::ClientCert,
        Self::ClientKey,
        Self::AdminCert,
        Self::AdminKey,
        Self::AgeIdentity,
        Self::AgeRecipient,
        Self::GatewayConfig,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CaCert => "ca.pem",
            Self::CaKey => "ca-key.pem",
            Self::CaCrl => "ca.crl",
            Self::GatewayCert => "gateway.pem",
            Self::GatewayKey => "gateway-key.pem",
            Self::ClientCert => "client.pem",
            Self::ClientKey => "client-key.pem",
            Self::AdminCert => "admin.pem",
            Self::AdminKey => "admin-key.pem",
            Self::AgeIdentity => "age-identity.txt",
            Self::AgeRecipient => "age-recipient.txt",
            Self::GatewayConfig => "gateway.toml",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::CaCert => "CA certificate",
            Self::CaKey => "CA key",
            Self::CaCrl => "CA revocation list (empty)",
            Self::GatewayCert => "gateway server certificate",
            Self::GatewayKey => "gateway server key",
            Self::ClientCert => "gateway client certificate (outbound identity)",
            Self::ClientKey => "gateway client key",
            Self::AdminCert => "admin client certificate",
            Self::AdminKey => "admin client key",
            Self::AgeIdentity => "age identity (decrypts received payloads)",
            Self::AgeRecipient => "age recipient (public key)",
            Self::GatewayConfig => "gateway config",
        }
    }

    fn secret(self) -> bool {
        matches!(
            self,
            Self::CaKey | Self::GatewayKey | Self::ClientKey | Self::AdminKey | Self::AgeIdentity
        )
    }
}

/// Everything one jurisdiction's party needs, made before anything is written.
struct Party {
    ca: DevCa,
    crl: String,
    gateway: Issued,
    client: Issued,
    admin: Issued,
    age: age::x25519::Identity,
    created: OffsetDateTime,
    config: String,
}

impl Party {
    fn new(jurisdiction: &Jurisdiction, config: String) -> Result<Self, PkiError> {
        let ca = DevCa::new(jurisdiction)?;
        let spiffe_id = |path| {
            SpiffeId::new(ca.trust_domain(), path)
                .expect("a dev trust domain and a constant path make a valid SPIFFE ID")
        };
        // The client certificate carries the gateway's own identity: it is
        // who a foreign gateway sees when this one calls out.
        let gateway = ca.issue(&LeafSpec::server(spiffe_id("gateway")))?;
        let client = ca.issue(&LeafSpec::client(spiffe_id("gateway")))?;
        let admin = ca.issue(&LeafSpec::client(spiffe_id("admin/operator")))?;
        Ok(Self {
            crl: ca.crl_pem(&[])?,
            ca,
            gateway,
            client,
            admin,
            age: age::x25519::Identity::generate(),
            created: OffsetDateTime::now_utc(),
            config,
        })
    }

    fn render(&self, file: DevFile) -> String {
        match file {
            DevFile::CaCert => self.ca.cert_pem(),
            DevFile::CaKey => self.ca.key_pem(),
            DevFile::CaCrl => self.crl.clone(),
            DevFile::GatewayCert => self.gateway.cert_pem(),
            DevFile::GatewayKey => self.gateway.key_pem(),
            DevFile::ClientCert => self.client.cert_pem(),
            DevFile::ClientKey => self.client.key_pem(),
            DevFile::AdminCert => self.admin.cert_pem(),
            DevFile::AdminKey => self.admin.key_pem(),
            // The layout age-keygen writes, so `age -i` reads it as is.
            DevFile::AgeIdentity => format!(
                "# created: {}\n# public key: {}\n{}\n",
                rfc3339_seconds(self.created),
                self.age.to_public(),
                self.age.to_string().expose_secret(),
            ),
            DevFile::AgeRecipient => format!("{}\n", self.age.to_public()),
            DevFile::GatewayConfig => self.config.clone(),
        }
    }
}

/// The ports of one gateway's listeners and of its example upstream.
struct Ports {
    border: u16,
    admin: u16,
    ops: u16,
    upstream: u16,
}

/// Four free loopback ports per gateway. Every listener stays bound until
/// all are chosen, so the OS cannot hand out the same port twice.
fn free_ports(gateways: usize) -> Result<Vec<Ports>, PkiError> {
    let listeners = (0..gateways * 4)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PkiError::FreePort)?;
    let ports = listeners
        .iter()
        .map(|listener| listener.local_addr().map(|addr| addr.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(PkiError::FreePort)?;
    Ok(ports
        .chunks_exact(4)
        .map(|p| Ports {
            border: p[0],
            admin: p[1],
            ops: p[2],
            upstream: p[3],
        })
        .collect())
}

/// `own`'s gateway config, trusting every CA of `set` (paths relative to the
/// config file, so the set can be moved as a whole).
fn gateway_toml(own: &Jurisdiction, set: &[Jurisdiction], ports: &Ports) -> String {
    let mut trust = String::new();
    for peer in set {
        let prefix = if peer == own {
            String::new()
        } else {
            format!("../{}/", peer.as_str().to_ascii_lowercase())
        };
        trust.push_str(&format!(
            "\n[trust.{peer}]\ntrust_domain = \"{domain}\"\nca = \"{prefix}ca.pem\"\ncrls = [\"{prefix}ca.crl\"]\n",
            domain = peer.dev_trust_domain(),
        ));
    }
    let Ports {
        border,
        admin,
        ops,
        upstream,
    } = ports;
    let domain = own.dev_trust_domain();
    format!(
        r#"# xborder gateway for {own}, made by `xborder pki dev`.
# Development only. Paths are relative to this file's directory.
jurisdiction = "{own}"
# Where the gateway keeps its state.
data_dir = "data"

# border: foreign peers (mTLS); admin: reviewers and operators (mTLS);
# ops: /metrics, /healthz, /readyz (plain HTTP).
[listeners]
border = "127.0.0.1:{border}"
admin = "127.0.0.1:{admin}"
ops = "127.0.0.1:{ops}"

# The gateway's own certificates: the server one for its listeners, the
# client one when it calls a foreign gateway.
[identity]
certificate = "gateway.pem"
key = "gateway-key.pem"
client_certificate = "client.pem"
client_key = "client-key.pem"

# How long each phase of a connection may take.
[timeouts]
tls_handshake = "10s"
header_read = "10s"
idle = "60s"
upstream_connect = "5s"
shutdown_grace = "30s"

# How often certificate, key and CRL files are checked for changes.
[reload]
interval = "5s"

# SPIFFE IDs allowed on the admin listener.
[admin]
identities = ["spiffe://{domain}/admin/operator"]

# One CA per jurisdiction, each bound to its trust domain, with its CRLs.
{trust}
# Border paths proxied to the local data service. The upstream is where the
# data service, or `xborder demo`'s example upstream, listens.
[[routes]]
prefix = "/v1/data/subscriber"
upstream = "http://127.0.0.1:{upstream}/subscriber"
category = "subscriber"
"#,
        trust = trust.trim_start(),
    )
}

/// `2025-01-31T12:00:00Z`: what age-keygen writes, without time's
/// formatting feature.
fn rfc3339_seconds(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
    )
}

/// Writes `path` so that a reader sees the old file or the whole new one:
/// a temporary file in the same directory, fsync, rename, fsync the
/// directory. A secret's temporary file is created with mode 0600, so its
/// contents are never readable by others, not even briefly.
fn write_atomic(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(".{}.tmp", hex::encode(rand::random::<[u8; 8]>())));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one returned below.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}
