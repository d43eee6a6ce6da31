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
//!
//! The same keys sign transfer receipts ([`Tokens::sign_receipt`]): a JWS of
//! its own `typ` (`xborder-receipt+jwt`), so neither kind passes for the
//! other. Parties without our keys verify receipts against the public key
//! set ([`Tokens::jwks`], [`verify_receipt_with`]).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::grant::{Grant, GrantId};
use crate::identity::{SpiffeId, Thumbprint};
use crate::request::Period;
use crate::transfer::receipt::Receipt;

mod keys;
#[cfg(test)]
mod props;
mod provider;
#[cfg(test)]
mod tests;

pub use keys::{Jwk, Jwks, TokenKeyError, TokenKeys};

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1).
/// The scheme is matched without regard to case, as RFC 9110 §11.1 says
/// schemes are; the border's checks and the local listener's relay both
/// read the token here, so neither can take a header the other ignores.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The JOSE `typ` of an RFC 9068 access token.
const TYP: &str = "at+jwt";
/// The JOSE `typ` of a transfer receipt.
const RECEIPT_TYP: &str = "xborder-receipt+jwt";
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

/// How many verified tokens [`Tokens::verify`] remembers; past it, it
/// starts over (a burst of new grants costs one signature check each).
const VERIFIED_CAP: usize = 4096;

/// Issues and verifies grant tokens.
pub struct Tokens {
    keys: TokenKeys,
    settings: TokenSettings,
    header: Header,
    validation: Validation,
    receipt_header: Header,
    receipt_validation: Validation,
    /// Claims of tokens whose signature and shape checked out, by the
    /// SHA-256 of the token's text: a grantee presents the same token on
    /// every transfer, and its signature cannot change. Time and the
    /// certificate binding are checked on every use, cached or not.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], GrantClaims>>,
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

        let mut receipt_header = header.clone();
        receipt_header.typ = Some(RECEIPT_TYP.to_owned());
        let receipt_validation = receipt_validation(&settings.issuer);
        Self {
            keys,
            settings,
            header,
            validation,
            receipt_header,
            receipt_validation,
            verified: Default::default(),
        }
    }

    /// The `kid` of the current signing key.
    pub fn kid(&self) -> &str {
        self.keys.kid()
    }

    /// Signs the grant's token.
    pub fn issue(&self, grant: &Grant) -> Result<String, TokenError> {
        let claims = GrantClaims::of(grant, &self.settings);
        sign_jws(&self.header, &claims, &self.keys.encoding)
    }

    /// Signs `receipt` with the current signing key: a compact JWS whose
    /// payload is the receipt's JSON plus `iss` and `iat`. `iat` is the
    /// receipt's `ended_at` (seconds, rounded down), so signing reads no clock
    /// and the same receipt always yields the same JWS.
    pub fn sign_receipt(&self, receipt: &Receipt) -> Result<String, TokenError> {
        if !receipt.is_consistent() {
            return Err(TokenError::Signing(format!(
                "receipt of transfer {} is inconsistent: complete = {}, incomplete = {:?}",
                receipt.transfer_id, receipt.complete, receipt.incomplete
            )));
        }
        let claims = ReceiptClaims {
            receipt: Cow::Borrowed(receipt),
            iss: Cow::Borrowed(&self.settings.issuer),
            iat: receipt.ended_at.unix_seconds(),
        };
        sign_jws(&self.receipt_header, &claims, &self.keys.encoding)
    }

    /// Verifies a receipt this gateway signed, with any key it holds (so
    /// receipts signed before a key rotation still verify): `alg`, `typ`,
    /// `kid`, the signature, `iss`, and that `complete` and `incomplete` agree.
    pub fn verify_receipt(&self, jws: &str) -> Result<Receipt, TokenError> {
        verify_receipt_jws(jws, &self.receipt_validation, |kid| {
            self.keys.known(kid).map(Cow::Borrowed)
        })
    }

    /// The public keys receipts (and grant tokens) verify with: the signing
    /// key first, then the verify-only ones. Serves as an RFC 7517 JWK Set.
    pub fn jwks(&self) -> Jwks {
        self.keys.jwks()
    }

    /// Verifies `token` as presented at `now` over a client certificate with
    /// thumbprint `presented`. Grant state is the caller's check.
    pub fn verify(
        &self,
        token: &str,
        presented: &Thumbprint,
        now: Timestamp,
    ) -> Result<GrantClaims, TokenError> {
        let key: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|verified| verified.get(&key).cloned());
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims: GrantClaims = verify_jws(token, TYP, &self.validation, |kid| {
                    self.keys.known(kid).map(Cow::Borrowed)
                })?;
                claims.check_shape()?;
                if let Ok(mut verified) = self.verified.lock() {
                    if verified.len() >= VERIFIED_CAP {
                        verified.clear();
                    }
                    verified.insert(key, claims.clone());
                }
                claims
            }
        };

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

/// Verifies a receipt with the public keys of the gateway that signed it, as
/// a party that holds no key of ours does: the key is the one in `jwks` whose
/// `kid` the JWS names; `iss` must be `issuer`. Checks as
/// [`Tokens::verify_receipt`] does.
pub fn verify_receipt_with(jwks: &Jwks, issuer: &str, jws: &str) -> Result<Receipt, TokenError> {
    verify_receipt_jws(jws, &receipt_validation(issuer), |kid| {
        jwks.decoding_key(kid).map(Cow::Owned)
    })
}

/// What jsonwebtoken checks of a receipt's claims: `iss` only. A receipt
/// does not expire and names no audience.
fn receipt_validation(issuer: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.set_required_spec_claims(&["iss"]);
    validation.set_issuer(&[issuer]);
    validation
}

fn verify_receipt_jws<'k>(
    jws: &str,
    validation: &Validation,
    key: impl FnOnce(&str) -> Option<Cow<'k, DecodingKey>>,
) -> Result<Receipt, TokenError> {
    let claims: ReceiptClaims<'static> = verify_jws(jws, RECEIPT_TYP, validation, key)?;
    let receipt = claims.receipt.into_owned();
    if !receipt.is_consistent() {
        return Err(TokenError::Malformed);
    }
    Ok(receipt)
}

/// Signs `claims` as a compact JWS under `header`.
fn sign_jws<T: Serialize>(
    header: &Header,
    claims: &T,
    key: &EncodingKey,
) -> Result<String, TokenError> {
    provider::ensure_installed()?;
    jsonwebtoken::encode(header, claims, key).map_err(|e| TokenError::Signing(e.to_string()))
}

/// Verifies a compact JWS of type `typ` and returns its claims. In order:
/// the header parses; `alg` is `EdDSA`; `typ` is `typ`; no `crit`; `key`
/// finds the key `kid` names; then jsonwebtoken checks the signature and
/// what `validation` asks of the claims.
fn verify_jws<'k, T: DeserializeOwned>(
    jws: &str,
    typ: &str,
    validation: &Validation,
    key: impl FnOnce(&str) -> Option<Cow<'k, DecodingKey>>,
) -> Result<T, TokenError> {
    provider::ensure_installed()?;
    let header = RawHeader::parse(jws)?;
    // Before anything else: jsonwebtoken would refuse `none` and unknown
    // names as bad JSON, and we want the algorithm named in the refusal.
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg.chars().take(32).collect()));
    }
    let typ_ok = header.typ.as_deref().is_some_and(|t| typ_is(t, typ));
    // `crit` names extensions the verifier must understand; we know none.
    if !typ_ok || header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(key)
        .ok_or(TokenError::UnknownKey)?;
    jsonwebtoken::decode::<T>(jws, &key, validation)
        .map(|data| data.claims)
        .map_err(|e| TokenError::from_jwt(e.into_kind()))
}

/// RFC 7515 §4.1.9: a `typ` may omit the `application/` of its media type,
/// and media types compare case-insensitively.
fn typ_is(typ: &str, expected: &str) -> bool {
    const PREFIX: &str = "application/";
    let bare = match typ.get(..PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    };
    bare.eq_ignore_ascii_case(expected)
}

/// The payload of a receipt JWS: the receipt's own fields, `iss` and `iat`.
#[derive(Serialize, Deserialize)]
struct ReceiptClaims<'a> {
    #[serde(flatten)]
    receipt: Cow<'a, Receipt>,
    iss: Cow<'a, str>,
    /// Seconds: the receipt's `ended_at`, rounded down.
    iat: i64,
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
