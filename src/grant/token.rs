//! Grant tokens: the signed JWT a requester presents on every transfer.
//!
//! An RFC 9068 access token (`typ: at+jwt`) signed with EdDSA (Ed25519), the
//! signing key named by `kid` (its RFC 7638 JWK thumbprint). The claims bind
//! it to the grantee's certificate (`cnf.x5t#S256`, RFC 8705) and carry the
//! grant's scope as one RFC 9396 `authorization_details` entry.
//!
//! [`Tokens::verify`] checks, in order: the header parses; `alg` is `EdDSA`;
//! `kid` names a key we hold; the signature (`verify_strict`); `iss`; `aud`;
//! `exp` and `nbf` against the caller's clock; the certificate binding. Each
//! refusal is its own [`TokenError`] with a stable code. It does not look at
//! the store: revoked, expired or exhausted grants are the caller's check.
//!
//! Tokens carry the targets in clear (base64 is not encryption): never log one.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::grant::{Grant, GrantId};
use crate::identity::{SpiffeId, Thumbprint};
use crate::request::Period;

mod keys;
mod provider;
#[cfg(test)]
mod tests;

pub use keys::{TokenKeyError, TokenKeys};

/// The JOSE `typ` of an RFC 9068 access token.
const TYP: &str = "at+jwt";
/// The one `authorization_details` type a grant token carries.
const DETAIL_TYPE: &str = "xborder_grant";

/// Token settings from the `[tokens]` config table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSettings {
    /// `iss` of the tokens we sign, and the only one we accept.
    pub issuer: String,
    /// `aud` of the tokens we sign, and the only one we accept.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in whole seconds (rounded down).
    pub leeway: Duration,
}

/// Issues and verifies grant tokens.
pub struct Tokens {
    keys: TokenKeys,
    settings: TokenSettings,
    header: Header,
    validation: Validation,
}

impl Tokens {
    pub fn new(keys: TokenKeys, settings: TokenSettings) -> Self {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TYP.to_owned());
        header.kid = Some(keys.kid().to_owned());

        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time is checked in `verify` against the caller's clock. jsonwebtoken
        // reads the system clock only when one of these two is on; its
        // required-claims check below is presence only.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        Self {
            keys,
            settings,
            header,
            validation,
        }
    }

    /// Signs the grant's token.
    pub fn issue(&self, grant: &Grant) -> Result<String, TokenError> {
        provider::ensure_installed()?;
        let claims = GrantClaims::of(grant, &self.settings);
        jsonwebtoken::encode(&self.header, &claims, &self.keys.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }

    /// Verifies `token` as presented at `now` over a client certificate with
    /// thumbprint `presented`. Grant state is the caller's check.
    pub fn verify(
        &self,
        token: &str,
        presented: &Thumbprint,
        now: Timestamp,
    ) -> Result<GrantClaims, TokenError> {
        provider::ensure_installed()?;
        let header = RawHeader::parse(token)?;
        // Before anything else: jsonwebtoken would refuse `none` and unknown
        // names as bad JSON, and we want the algorithm named in the refusal.
        if header.alg != "EdDSA" {
            return Err(TokenError::Algorithm(header.alg.chars().take(32).collect()));
        }
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        // `crit` names extensions the verifier must understand; we know none.
        if !typ_ok || header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.known(kid))
            .ok_or(TokenError::UnknownKey)?;

        let claims = jsonwebtoken::decode::<GrantClaims>(token, key, &self.validation)
            .map_err(|e| TokenError::from_jwt(e.into_kind()))?
            .claims;
        claims.check_shape()?;

        let now = now.unix_seconds();
        let leeway = i64::try_from(self.settings.leeway.as_secs()).unwrap_or(i64::MAX);
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(leeway) < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        if !constant_time_eq(
            claims.cnf.x5t_s256.as_bytes(),
            presented.x5t_s256().as_bytes(),
        ) {
            return Err(TokenError::NotBound);
        }
        Ok(claims)
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("keys", &self.keys)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The claims of a grant token.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GrantClaims {
    pub iss: String,
    /// The grantee's SPIFFE ID.
    pub sub: String,
    pub aud: String,
    /// Seconds: `iat` = `nbf` = the grant's `issued_at`, rounded down.
    pub iat: i64,
    pub nbf: i64,
    /// Seconds: the grant's `expires_at`, rounded down, never up.
    pub exp: i64,
    /// The grant id.
    pub jti: String,
    pub cnf: Confirmation,
    /// RFC 9396: one entry, type `xborder_grant`.
    pub authorization_details: Vec<AuthorizationDetail>,
}

/// RFC 8705 certificate binding.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// The grant's scope, as an RFC 9396 authorization details entry.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationDetail {
    /// Always `xborder_grant`.
    #[serde(rename = "type")]
    pub kind: String,
    pub legal_basis: String,
    pub purpose: String,
    pub categories: Vec<String>,
    pub targets: Vec<String>,
    pub period: Period,
    /// The requester's age X25519 recipient.
    pub recipient: String,
    pub urgency: String,
    /// `null` is unlimited.
    pub max_bytes: Option<u64>,
    /// `null` is unlimited.
    pub max_transfers: Option<u64>,
    /// The holder's jurisdiction.
    pub holder: String,
    /// The requester's (grantee's) jurisdiction.
    pub requester: String,
}

impl GrantClaims {
    pub fn grant_id(&self) -> Result<GrantId, TokenError> {
        self.jti.parse().map_err(|_| TokenError::Malformed)
    }

    fn of(grant: &Grant, settings: &TokenSettings) -> Self {
        let scope = &grant.scope;
        Self {
            iss: settings.issuer.clone(),
            sub: grant.grantee.to_string(),
            aud: settings.audience.clone(),
            iat: grant.issued_at.unix_seconds(),
            nbf: grant.issued_at.unix_seconds(),
            // `unix_seconds` floors: a token never outlives its grant.
            exp: grant.expires_at.unix_seconds(),
            jti: grant.id.to_string(),
            cnf: Confirmation {
                x5t_s256: grant.thumbprint.clone(),
            },
            authorization_details: vec![AuthorizationDetail {
                kind: DETAIL_TYPE.to_owned(),
                legal_basis: scope.legal_basis.clone(),
                purpose: scope.purpose.clone(),
                categories: scope.categories.iter().map(ToString::to_string).collect(),
                targets: scope.targets.clone(),
                period: scope.period,
                recipient: scope.recipient.clone(),
                urgency: scope.urgency.as_str().to_owned(),
                max_bytes: grant.quotas.max_bytes,
                max_transfers: grant.quotas.max_transfers,
                holder: grant.holder.to_string(),
                requester: grant.grantee_jurisdiction.to_string(),
            }],
        }
    }

    /// What the types cannot say: the ids parse, and there is exactly one
    /// detail, of our type.
    fn check_shape(&self) -> Result<(), TokenError> {
        let one_grant =
            matches!(self.authorization_details.as_slice(), [d] if d.kind == DETAIL_TYPE);
        if !one_grant || self.sub.parse::<SpiffeId>().is_err() {
            return Err(TokenError::Malformed);
        }
        self.grant_id().map(drop)
    }
}

/// Why a token was refused; each has a stable code. The text is safe to show
/// the peer: it names the token's own `alg` at most.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the grant token is malformed")]
    Malformed,
    /// The token's `alg`, up to 32 characters.
    #[error("the grant token's algorithm {0:?} is not accepted; grant tokens are EdDSA")]
    Algorithm(String),
    #[error("the grant token names no key of this gateway in `kid`")]
    UnknownKey,
    #[error("the grant token's signature does not verify")]
    Signature,
    #[error("the grant token has expired")]
    Expired,
    #[error("the grant token is not valid yet")]
    NotYetValid,
    #[error("the grant token is for another audience")]
    Audience,
    #[error("the grant token is from another issuer")]
    Issuer,
    #[error("the grant token is not bound to the certificate presented")]
    NotBound,
    /// Our fault: the detail is for the log, not the peer.
    #[error("grant tokens cannot be signed or verified (internal error)")]
    Signing(String),
}

impl TokenError {
    /// The stable problem code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::Algorithm(_) => "token_algorithm",
            Self::UnknownKey => "token_unknown_key",
            Self::Signature => "token_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Audience => "token_audience",
            Self::Issuer => "token_issuer",
            Self::NotBound => "token_not_bound",
            Self::Signing(_) => "internal",
        }
    }

    /// jsonwebtoken's refusals, met after our header checks passed.
    fn from_jwt(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            // Off in our `Validation`; mapped in case that ever changes.
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::InvalidSubject => Self::Malformed,
            // Key handling in the provider, or an algorithm refusal after our
            // own check passed `EdDSA`: ours to fix, never the peer's.
            other => Self::Signing(format!("{other:?}")),
        }
    }
}

/// The `alg`, `typ`, `kid` and `crit` of a JOSE header, as sent.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

impl RawHeader {
    fn parse(token: &str) -> Result<Self, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let json = B64.decode(header).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }
}

/// Equality without an early exit, so timing does not tell a prober how much
/// of a thumbprint matched. Lengths are public (an `x5t#S256` is always 43
/// characters). `subtle` is only a transitive dependency, and this is all we
/// need of it; `black_box` keeps the optimiser from adding the early exit back.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
