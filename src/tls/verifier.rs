//! Client certificate verification bound to jurisdictions.
//!
//! Each jurisdiction's CA is bound to one SPIFFE trust domain. A client
//! certificate is verified by the CA of the trust domain its SPIFFE ID names,
//! and by no other: a CA that is trusted for EE cannot vouch for an identity in
//! FI's trust domain. The chain checks themselves (signatures, validity, EKU
//! clientAuth, CRLs) are webpki's, through rustls' `WebPkiClientVerifier`;
//! a chain webpki accepted is remembered while it stays valid ([`verified`]).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::verified::{self, VerifiedChains};
use super::{LoadedAnchor, webpki_verifier};
use crate::identity::{self, IdentityError, Jurisdiction, TrustDomain};

/// The most intermediate certificates a peer may present. Each CA's own
/// path-length constraint still applies (the development CAs allow none);
/// this bounds the path building work a peer can ask of the gateway before
/// any signature is checked.
pub const MAX_INTERMEDIATES: usize = 4;

/// Verifies client certificates against the CA bound to their trust domain.
pub struct JurisdictionVerifier {
    anchors: Vec<Anchor>,
    hints: Vec<DistinguishedName>,
}

struct Anchor {
    jurisdiction: Jurisdiction,
    trust_domain: TrustDomain,
    webpki: Arc<dyn ClientCertVerifier>,
    /// Chains `webpki` accepted, for as long as this verifier lives.
    verified: VerifiedChains,
}

impl fmt::Debug for JurisdictionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.anchors
                    .iter()
                    .map(|a| (&a.jurisdiction, &a.trust_domain)),
            )
            .finish()
    }
}

/// Why a client certificate was refused, with what is known of the peer.
#[derive(Debug)]
pub struct Refusal {
    /// The SPIFFE ID the certificate claims, if it has a well-formed one.
    pub spiffe_id: Option<String>,
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.spiffe_id {
            Some(id) => write!(f, "{} (claimed SPIFFE ID {id})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Refusal {}

impl JurisdictionVerifier {
    pub fn new(anchors: Vec<(Jurisdiction, LoadedAnchor)>) -> Result<Self, String> {
        if anchors.is_empty() {
            return Err("no trust anchors".to_owned());
        }
        let mut built = Vec::with_capacity(anchors.len());
        let mut hints = Vec::new();
        for (jurisdiction, anchor) in anchors {
            let webpki = webpki_verifier(&anchor).map_err(|e| format!("{jurisdiction}: {e}"))?;
            hints.extend_from_slice(webpki.root_hint_subjects());
            built.push(Anchor {
                jurisdiction,
                trust_domain: anchor.trust_domain,
                webpki,
                verified: VerifiedChains::default(),
            });
        }
        Ok(Self {
            anchors: built,
            hints,
        })
    }

    fn refuse(spiffe_id: Option<String>, reason: impl Into<String>) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal {
            spiffe_id,
            reason: reason.into(),
        }))))
    }
}

impl ClientCertVerifier for JurisdictionVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let spiffe_id = match identity::spiffe_id_of(end_entity) {
            Ok(id) => id,
            Err(IdentityError::Unparseable) => {
                return Err(rustls::Error::InvalidCertificate(
                    CertificateError::BadEncoding,
                ));
            }
            Err(e) => return Err(Self::refuse(None, e.to_string())),
        };
        let claimed = Some(spiffe_id.to_string());
        if intermediates.len() > MAX_INTERMEDIATES {
            return Err(Self::refuse(
                claimed,
                format!(
                    "a chain of {} intermediate certificates; at most {MAX_INTERMEDIATES} are accepted",
                    intermediates.len()
                ),
            ));
        }
        let Some(anchor) = self
            .anchors
            .iter()
            .find(|a| &a.trust_domain == spiffe_id.trust_domain())
        else {
            return Err(Self::refuse(
                claimed,
                format!(
                    "trust domain {} is not bound to a trusted jurisdiction",
                    spiffe_id.trust_domain()
                ),
            ));
        };
        let chain = verified::key(end_entity, intermediates);
        if anchor.verified.accepts(&chain, now) {
            return Ok(ClientCertVerified::assertion());
        }
        match anchor
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(verified) => {
                anchor.verified.remember(chain, end_entity, intermediates);
                Ok(verified)
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                // Say so when another jurisdiction's CA issued it: a CA
                // vouching outside its trust domain is worth an operator's look.
                let issuer = self.anchors.iter().find(|other| {
                    other.trust_domain != anchor.trust_domain
                        && other
                            .webpki
                            .verify_client_cert(end_entity, intermediates, now)
                            .is_ok()
                });
                let reason = match issuer {
                    Some(other) => format!(
                        "issued by {}'s CA but claims {}'s trust domain {}",
                        other.jurisdiction, anchor.jurisdiction, anchor.trust_domain
                    ),
                    None => format!(
                        "not issued by {}'s CA (unknown issuer)",
                        anchor.jurisdiction
                    ),
                };
                Err(Self::refuse(claimed, reason))
            }
            Err(rustls::Error::InvalidCertificate(e)) => Err(Self::refuse(claimed, describe(&e))),
            Err(e) => Err(Self::refuse(claimed, e.to_string())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.anchors[0]
            .webpki
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.anchors[0]
            .webpki
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.anchors[0].webpki.supported_verify_schemes()
    }
}

/// Plain words for webpki's certificate errors, as an operator reads them in a log.
fn describe(e: &CertificateError) -> String {
    match e {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate not valid yet".into()
        }
        CertificateError::Revoked => "certificate revoked by its CA's CRL".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate lacks the clientAuth extended key usage".into()
        }
        CertificateError::UnknownRevocationStatus => {
            "revocation status unknown (no CRL from its issuer)".into()
        }
        CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => {
            "the CA's CRL has expired".into()
        }
        CertificateError::BadSignature => "certificate signature does not verify".into(),
        other => format!("certificate refused: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::{DevCa, LeafSpec};

    fn at(t: time::OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
    }

    /// A chain accepted once is accepted again without webpki, but never
    /// outside its certificates' validity, which webpki would refuse.
    #[test]
    fn an_accepted_chain_is_accepted_again_only_while_it_is_valid() {
        let jurisdiction: Jurisdiction = "EE".parse().unwrap();
        let ca = DevCa::new(&jurisdiction).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = (
            now - time::Duration::hours(1),
            now + time::Duration::hours(1),
        );
        let id = identity::SpiffeId::new(ca.trust_domain(), "police").unwrap();
        let leaf = ca
            .issue(&LeafSpec::client(id).valid(from, until))
            .unwrap()
            .cert_der();
        let verifier = JurisdictionVerifier::new(vec![(
            jurisdiction,
            LoadedAnchor {
                trust_domain: ca.trust_domain().clone(),
                ca: vec![ca.cert_der()],
                crls: vec![],
            },
        )])
        .unwrap();
        let verify = |t| verifier.verify_client_cert(&leaf, &[], at(t));

        verify(now).expect("valid now");
        assert!(
            verifier.anchors[0]
                .verified
                .accepts(&verified::key(&leaf, &[]), at(now)),
            "remembered"
        );
        verify(now).expect("still valid, from the cache");
        let expired = verify(until + time::Duration::seconds(1)).unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
        let early = verify(from - time::Duration::seconds(1)).unwrap_err();
        assert!(early.to_string().contains("not valid yet"), "{early}");
        verify(until).expect("valid up to its last second");
    }
}
