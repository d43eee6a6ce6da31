//! Who a peer is, derived only from its verified certificate.
//!
//! A peer's identity is a SPIFFE ID taken from the URI SAN of its leaf
//! certificate, the jurisdiction whose CA verified the chain, and the SHA-256
//! thumbprint of the leaf (RFC 8705 `x5t#S256`) that grant tokens bind to.
//! Nothing here trusts a header or a body field: a [`PeerIdentity`] can only be
//! built from a certificate that the TLS layer has already verified.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A legal area: an ISO 3166-1 alpha-2 code (`EE`, `FI`) or `EU`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction(String);

impl Jurisdiction {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The development trust domain bound to this jurisdiction: `<cc>.xborder.test`.
    pub fn dev_trust_domain(&self) -> TrustDomain {
        TrustDomain(format!("{}.xborder.test", self.0.to_ascii_lowercase()))
    }
}

impl FromStr for Jurisdiction {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdentityError::Jurisdiction(s.to_owned()))
        }
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE trust domain: lowercase DNS-like name (`ee.xborder.test`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;

    /// The SPIFFE spec allows `[a-z0-9.-_]` in a trust domain.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdentityError::TrustDomain(s.to_owned()))
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `spiffe://<trust-domain>/<path>`, parsed by the rules of the SPIFFE ID spec.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: String,
    trust_domain: TrustDomain,
}

impl SpiffeId {
    pub fn new(trust_domain: &TrustDomain, path: &str) -> Result<Self, IdentityError> {
        format!("spiffe://{trust_domain}/{}", path.trim_start_matches('/')).parse()
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path part, including its leading `/`.
    pub fn path(&self) -> &str {
        &self.uri["spiffe://".len() + self.trust_domain.0.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::SpiffeId(s.to_owned());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (domain, path) = rest.split_once('/').ok_or_else(bad)?;
        let trust_domain: TrustDomain = domain.parse().map_err(|_| bad())?;
        // Path segments: non-empty, not `.`/`..`, characters `[A-Za-z0-9.-_]`.
        let segments_ok = path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        });
        if !segments_ok || s.len() > 2048 {
            return Err(bad());
        }
        Ok(Self {
            uri: s.to_owned(),
            trust_domain,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// SHA-256 of a leaf certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thumbprint([u8; 32]);

impl Thumbprint {
    pub fn of(cert_der: &[u8]) -> Self {
        Self(Sha256::digest(cert_der).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The RFC 8705 `x5t#S256` form: base64url without padding.
    pub fn x5t_s256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl fmt::Debug for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Thumbprint({})", self.x5t_s256())
    }
}

/// The verified identity of a peer on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub spiffe_id: SpiffeId,
    pub jurisdiction: Jurisdiction,
    pub thumbprint: Thumbprint,
}

impl PeerIdentity {
    /// Builds the identity of a leaf certificate that `jurisdiction`'s CA has
    /// verified. The SPIFFE ID's trust domain must be `trust_domain`, the one
    /// bound to that CA.
    pub fn from_verified_leaf(
        leaf_der: &[u8],
        jurisdiction: Jurisdiction,
        trust_domain: &TrustDomain,
    ) -> Result<Self, IdentityError> {
        let spiffe_id = spiffe_id_of(leaf_der)?;
        if spiffe_id.trust_domain() != trust_domain {
            return Err(IdentityError::TrustDomainMismatch {
                spiffe_id: spiffe_id.to_string(),
                jurisdiction: jurisdiction.to_string(),
                expected: trust_domain.to_string(),
            });
        }
        Ok(Self {
            spiffe_id,
            jurisdiction,
            thumbprint: Thumbprint::of(leaf_der),
        })
    }
}

/// The one SPIFFE ID in a certificate's URI SANs.
///
/// The SPIFFE X.509-SVID spec requires exactly one URI SAN; a certificate
/// with none, several, or one that is not a SPIFFE ID is refused.
pub fn spiffe_id_of(cert_der: &[u8]) -> Result<SpiffeId, IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|_| IdentityError::Unparseable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparseable)?
        .ok_or(IdentityError::NoSpiffeId)?;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => uri.parse(),
        (None, _) => Err(IdentityError::NoSpiffeId),
        (Some(_), Some(_)) => Err(IdentityError::SeveralUris),
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    #[error("`{0}` is not a jurisdiction (two upper-case letters, e.g. EE)")]
    Jurisdiction(String),
    #[error("`{0}` is not a SPIFFE trust domain (lower-case letters, digits, `.-_`)")]
    TrustDomain(String),
    #[error("`{0}` is not a SPIFFE ID (spiffe://<trust-domain>/<path>)")]
    SpiffeId(String),
    #[error("certificate cannot be parsed")]
    Unparseable,
    #[error("certificate has no SPIFFE ID in its URI SAN")]
    NoSpiffeId,
    #[error("certificate has more than one URI SAN")]
    SeveralUris,
    #[error(
        "SPIFFE ID {spiffe_id} is outside trust domain {expected}, the one bound to {jurisdiction}'s CA"
    )]
    TrustDomainMismatch {
        spiffe_id: String,
        jurisdiction: String,
        expected: String,
    },
}

serde_as_string!(Jurisdiction);
serde_as_string!(SpiffeId);
serde_as_string!(TrustDomain);

/// What an identity on the admin listener may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads requests, findings and grants.
    Reviewer,
    /// Approves, denies, validates emergency grants, revokes.
    Approver,
    /// Runs the gateway: reads everything, revokes grants (incident response).
    Operator,
    /// An oversight body: reads the audit log and transparency reports only.
    Auditor,
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reviewer" => Ok(Self::Reviewer),
            "approver" => Ok(Self::Approver),
            "operator" => Ok(Self::Operator),
            "auditor" => Ok(Self::Auditor),
            other => Err(format!(
                "`{other}` is not a role (reviewer, approver, operator, auditor)"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reviewer => "reviewer",
            Self::Approver => "approver",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_parse_by_the_spec() {
        let id: SpiffeId = "spiffe://ee.xborder.test/gateway".parse().unwrap();
        assert_eq!(id.trust_domain().as_str(), "ee.xborder.test");
        assert_eq!(id.path(), "/gateway");
        for bad in [
            "https://ee.xborder.test/gateway",
            "spiffe://ee.xborder.test",
            "spiffe://ee.xborder.test/",
            "spiffe://EE.xborder.test/gateway",
            "spiffe://ee.xborder.test/a//b",
            "spiffe://ee.xborder.test/a/../b",
            "spiffe://ee.xborder.test/a?b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn jurisdictions_are_two_upper_case_letters() {
        assert!("EE".parse::<Jurisdiction>().is_ok());
        assert!("EU".parse::<Jurisdiction>().is_ok());
        for bad in ["ee", "EST", "E", "", "E1"] {
            assert!(bad.parse::<Jurisdiction>().is_err(), "{bad} parsed");
        }
        let ee: Jurisdiction = "EE".parse().unwrap();
        assert_eq!(ee.dev_trust_domain().as_str(), "ee.xborder.test");
    }
}
