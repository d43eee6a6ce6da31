//! `xborder pki dev`'s file set: per jurisdiction a CA, CRL, gateway, client
//! and admin certificates, an age identity and a runnable `gateway.toml`.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use time::OffsetDateTime;

use super::{DevCa, Issued, LeafSpec, PkiError};
use crate::atomic_file::{self, Readers};
use crate::identity::{Jurisdiction, SpiffeId};

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
    TokenKey,
    AuditKey,
    PseudonymKey,
    GatewayConfig,
}

impl DevFile {
    const ALL: [Self; 15] = [
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
        Self::TokenKey,
        Self::AuditKey,
        Self::PseudonymKey,
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
            Self::TokenKey => "token-key.pem",
            Self::AuditKey => "audit-key.pem",
            Self::PseudonymKey => "audit-pseudonym.key",
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
            Self::TokenKey => "grant token signing key (Ed25519)",
            Self::AuditKey => "audit tree head signing key (Ed25519)",
            Self::PseudonymKey => "audit pseudonym key (HMAC, hex)",
            Self::GatewayConfig => "gateway config",
        }
    }

    fn secret(self) -> bool {
        matches!(
            self,
            Self::CaKey
                | Self::GatewayKey
                | Self::ClientKey
                | Self::AdminKey
                | Self::AgeIdentity
                | Self::TokenKey
                | Self::AuditKey
                | Self::PseudonymKey
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
    token_key: String,
    audit_key: String,
    pseudonym_key: String,
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
            token_key: token_key_pem()?,
            audit_key: token_key_pem()?,
            pseudonym_key: format!("{}\n", hex::encode(rand::random::<[u8; 32]>())),
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
            DevFile::TokenKey => self.token_key.clone(),
            DevFile::AuditKey => self.audit_key.clone(),
            DevFile::PseudonymKey => self.pseudonym_key.clone(),
            DevFile::GatewayConfig => self.config.clone(),
        }
    }
}

/// A fresh Ed25519 signing key (grant tokens, audit tree heads), PKCS#8 PEM.
fn token_key_pem() -> Result<String, PkiError> {
    use pkcs8::EncodePrivateKey as _;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    key.to_pkcs8_pem(pkcs8::LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| PkiError::TokenKey(e.to_string()))
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
    let mut policies = String::new();
    for peer in set.iter().filter(|p| *p != own) {
        policies.push_str(&format!(
            r#"[policy.{own}.{peer}]
legal_bases = ["eu-2023-1543", "mla"]
categories = ["subscriber", "ip_identification", "traffic", "content"]
forbidden_categories = []
max_targets = 10
max_period = "366d"
max_lifetime = "30d"
max_lifetime_emergency = "72h"

[policy.{own}.{peer}.approvals]
content = 2

"#
        ));
    }
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

# Grant tokens: signed with this Ed25519 key (add old keys to `verify_keys`
# when rotating, so tokens they signed keep verifying until they expire).
[tokens]
signing_key = "token-key.pem"

# The audit log: tree heads are signed with `signing_key` (auditors verify
# with its vkey, `GET /v1/audit/vkey`); targets are pseudonymised with the
# HMAC key in `pseudonym_key` (keep it secret, never rotate it silently).
[audit]
signing_key = "audit-key.pem"
pseudonym_key = "audit-pseudonym.key"

# Data-subject notices go to our own notification service when they fall
# due (JSON POST, the notice id as `Idempotency-Key`; retried until a 2xx).
# Without a webhook they wait in the outbox: GET /v1/notices.
# [notify]
# webhook = "http://127.0.0.1:9000/notices"

# Identities allowed on the admin listener, with their roles
# (reviewer: reads; approver: approves, denies, validates, revokes;
# operator: reads, revokes; auditor: reads the audit log and reports only).
[admin.identities]
"spiffe://{domain}/admin/operator" = ["operator", "approver", "reviewer"]

# One CA per jurisdiction, each bound to its trust domain, with its CRLs.
{trust}
# What each foreign jurisdiction may ask for (data held here → requester).
# Pairs not listed are refused: deny by default. Deadlines default to the
# e-Evidence Regulation's 10 days (8 hours in emergencies).
{policies}
# Border paths proxied to the local data service. The upstream is where the
# data service, or `xborder demo`'s example upstream, listens.
[[routes]]
prefix = "/v1/data/subscriber"
upstream = "http://127.0.0.1:{upstream}/subscriber"
category = "subscriber"
"#,
        trust = trust.trim_start(),
        policies = policies,
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

fn write_atomic(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let readers = if secret {
        Readers::Owner
    } else {
        Readers::Everyone
    };
    atomic_file::write(path, contents, readers).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}
