//! `[identity]`, `[tokens]` and `[audit]`: the key material the gateway
//! names — our certificates and keys, the grant tokens' keys and claims, the
//! audit log's keys and origin. Only paths and names are checked here; the
//! files are read where they are used (`crate::tls`, the server at startup).

use std::path::PathBuf;
use std::time::Duration;

use super::{Validator, raw};
use crate::identity::TrustDomain;

/// Where the grant token keys are and what the tokens claim.
#[derive(Clone, Debug)]
pub struct TokenFiles {
    /// Ed25519 private key (PKCS#8 PEM) that signs new tokens.
    pub signing_key: PathBuf,
    /// Keys that only verify (previous signing keys, during rotation).
    pub verify_keys: Vec<PathBuf>,
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// The audit log's keys and name.
#[derive(Clone, Debug)]
pub struct AuditFiles {
    /// Ed25519 private key (PKCS#8 PEM) that signs tree heads (checkpoints).
    pub signing_key: PathBuf,
    /// Hex of at least 32 random bytes: the HMAC key that pseudonymises
    /// targets in audit entries.
    pub pseudonym_key: PathBuf,
    /// The log's name in its checkpoints and the signing key's name;
    /// defaults to `<our trust domain>/audit`.
    pub origin: String,
}

#[derive(Clone, Debug)]
pub struct IdentityFiles {
    /// Our server certificate chain (PEM, leaf first).
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// The certificate our gateway presents on its own outbound calls.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl Validator<'_> {
    pub(super) fn identity(&mut self, raw: &raw::Identity) -> IdentityFiles {
        let identity = IdentityFiles {
            certificate: self.path(&raw.certificate),
            key: self.path(&raw.key),
            client_certificate: raw.client_certificate.as_deref().map(|p| self.path(p)),
            client_key: raw.client_key.as_deref().map(|p| self.path(p)),
        };
        if identity.client_certificate.is_some() != identity.client_key.is_some() {
            self.errors.push(
                "identity.client_key",
                "`identity.client_certificate` and `identity.client_key` go together",
            );
        }
        identity
    }

    pub(super) fn tokens(
        &mut self,
        raw: Option<raw::Tokens>,
        own_domain: Option<&TrustDomain>,
        jurisdiction_known: bool,
    ) -> Option<TokenFiles> {
        let Some(raw) = raw else {
            self.errors.push(
                "tokens",
                "missing: add [tokens] with `signing_key`, the Ed25519 key that signs grant tokens",
            );
            return None;
        };
        let issuer = match (raw.issuer, own_domain) {
            (Some(issuer), _) => issuer,
            (None, Some(domain)) => format!("spiffe://{domain}/gateway"),
            (None, None) => {
                // Without a jurisdiction, that is the error already reported.
                if jurisdiction_known {
                    self.errors.push(
                        "tokens.issuer",
                        "cannot default without a trust anchor for our own jurisdiction",
                    );
                }
                return None;
            }
        };
        if issuer.trim().is_empty() {
            self.errors.push("tokens.issuer", "must not be empty");
        }
        let leeway = match raw.leeway {
            None => Some(Duration::ZERO),
            Some(text) => match humantime::parse_duration(&text) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.errors
                        .push("tokens.leeway", format!("`{text}` is not a duration ({e})"));
                    None
                }
            },
        };
        Some(TokenFiles {
            signing_key: self.path(&raw.signing_key),
            verify_keys: raw.verify_keys.iter().map(|p| self.path(p)).collect(),
            audience: raw.audience.unwrap_or_else(|| issuer.clone()),
            issuer,
            // A bad leeway is reported; none stands in for it.
            leeway: leeway.unwrap_or_default(),
        })
    }

    pub(super) fn audit(
        &mut self,
        raw: Option<raw::Audit>,
        own_domain: Option<&TrustDomain>,
        jurisdiction_known: bool,
    ) -> Option<AuditFiles> {
        let Some(raw) = raw else {
            self.errors.push(
                "audit",
                "missing: add [audit] with `signing_key` (Ed25519, signs tree heads) and \
                 `pseudonym_key` (hex HMAC key that pseudonymises targets)",
            );
            return None;
        };
        let origin = match (raw.origin, own_domain) {
            (Some(origin), _) => origin,
            (None, Some(domain)) => format!("{domain}/audit"),
            (None, None) => {
                if jurisdiction_known {
                    self.errors.push(
                        "audit.origin",
                        "cannot default without a trust anchor for our own jurisdiction",
                    );
                }
                return None;
            }
        };
        // A checkpoint's origin is its first line and the key's name: no
        // spaces, no '+', no control characters (C2SP signed-note).
        if origin.is_empty()
            || origin
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '+')
        {
            self.errors.push(
                "audit.origin",
                format!("`{origin}` must be non-empty, without spaces, '+' or control characters"),
            );
            return None;
        }
        Some(AuditFiles {
            signing_key: self.path(&raw.signing_key),
            pseudonym_key: self.path(&raw.pseudonym_key),
            origin,
        })
    }
}
