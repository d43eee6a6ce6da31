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
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::clock::Timestamp;
use crate::grant::{Grant, GrantId};
use crate::identity::{SpiffeId, Thumbprint};
use crate::request::Period;

mod provider;
#[cfg(test)]
mod tests;

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

/// The gateway's token keys: one Ed25519 signing key, plus keys that only
/// verify (the previous signing keys, while their tokens are alive).
pub struct TokenKeys {
    /// The signing key as PKCS#8 DER, the form jsonwebtoken hands the provider.
    /// Zeroized on drop by jsonwebtoken.
    encoding: EncodingKey,
    kid: String,
    /// Every key a token may name, the signing key's first.
    verifiers: Vec<KnownKey>,
}

struct KnownKey {
    kid: String,
    decoding: DecodingKey,
}

impl TokenKeys {
    /// Loads a PKCS#8 PEM Ed25519 private key to sign with, and any number of
    /// extra files that only verify: each either a PKCS#8 private key PEM or an
    /// SPKI public key PEM (`PUBLIC KEY`). Errors name the file.
    pub fn load(signing_key: &Path, verify_only: &[PathBuf]) -> Result<Self, TokenKeyError> {
        let mut keys = Self::from_signing_key(read_private(signing_key)?);
        for path in verify_only {
            let text = read(path)?;
            let key = match pem_label(path, &text)? {
                "PRIVATE KEY" => read_private(path)?.verifying_key(),
                "PUBLIC KEY" => {
                    VerifyingKey::from_public_key_pem(&text).map_err(|e| TokenKeyError::Key {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?
                }
                other => {
                    return Err(TokenKeyError::Label {
                        path: path.clone(),
                        found: other.to_owned(),
                        expected: "`PRIVATE KEY` (PKCS#8) or `PUBLIC KEY` (SPKI)",
                    });
                }
            };
            if key.is_weak() {
                return Err(TokenKeyError::Key {
                    path: path.clone(),
                    detail: "a small-order (weak) Ed25519 public key".into(),
                });
            }
            keys = keys.with_verify_only(key);
        }
        Ok(keys)
    }

    pub fn from_signing_key(key: SigningKey) -> Self {
        let encoding = EncodingKey::from_ed_der(&pkcs8_v1_der(&key));
        let public = key.verifying_key();
        let kid = jwk_thumbprint(&public);
        Self {
            encoding,
            verifiers: vec![KnownKey::new(kid.clone(), &public)],
            kid,
        }
    }

    pub fn with_verify_only(mut self, key: VerifyingKey) -> Self {
        let kid = jwk_thumbprint(&key);
        if !self.verifiers.iter().any(|k| k.kid == kid) {
            self.verifiers.push(KnownKey::new(kid, &key));
        }
        self
    }

    /// `kid` of the signing key: the RFC 7638 JWK thumbprint (SHA-256,
    /// base64url) of its public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Writes a new PKCS#8 PEM Ed25519 private key to `path` with mode 0600;
    /// used by `xborder pki dev`. Replaces an existing file atomically: the key
    /// goes to a temporary file created 0600 next to it, then is renamed over
    /// it, so the key is never readable by others, not even briefly, whatever
    /// the mode of the file it replaces.
    pub fn generate_file(path: &Path) -> Result<(), TokenKeyError> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        // PKCS#8 v1 (no public key), the form `openssl genpkey` writes.
        let pem = KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| TokenKeyError::Key {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        write_secret(path, pem.as_bytes()).map_err(|source| TokenKeyError::Write {
            path: path.to_owned(),
            source,
        })
    }

    fn known(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }
}

impl KnownKey {
    fn new(kid: String, key: &VerifyingKey) -> Self {
        Self {
            kid,
            decoding: DecodingKey::from_ed_der(key.as_bytes()),
        }
    }
}

/// Kids only: never key material.
impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field(
                "verify_only",
                &self
                    .verifiers
                    .iter()
                    .skip(1)
                    .map(|k| &k.kid)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
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
        header.kid = Some(keys.kid.clone());

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
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName => Self::Algorithm("EdDSA".into()),
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::InvalidSubject => Self::Malformed,
            // Key handling inside the provider: ours to fix, never the peer's.
            other => Self::Signing(format!("{other:?}")),
        }
    }
}

/// A token key file that cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    #[error("cannot read token key `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token key `{}` is not PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("token key `{}` is a `{found}` PEM; expected {expected}", path.display())]
    Label {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("token key `{}` is not a usable Ed25519 key: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("cannot write token key `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// RFC 7638 §3.2: the required members only, sorted, no whitespace.
fn jwk_thumbprint(key: &VerifyingKey) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(key.as_bytes())
    );
    B64.encode(Sha256::digest(jwk.as_bytes()))
}

/// RFC 8410 PKCS#8 v1 DER of an Ed25519 private key: a fixed 16-byte prefix
/// and the 32-byte seed. Built by hand because it cannot fail, unlike the
/// general encoder; v1 (no public key) spares the provider a point
/// decompression and consistency check on every signature.
fn pkcs8_v1_der(key: &SigningKey) -> Zeroizing<Vec<u8>> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = Zeroizing::new(key.to_bytes());
    let mut der = Zeroizing::new(Vec::with_capacity(48));
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(seed.as_slice());
    der
}

fn read(path: &Path) -> Result<Zeroizing<String>, TokenKeyError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| TokenKeyError::Read {
            path: path.to_owned(),
            source,
        })
}

fn pem_label<'a>(path: &Path, text: &'a str) -> Result<&'a str, TokenKeyError> {
    pem::decode_label(text.as_bytes()).map_err(|e| TokenKeyError::Pem {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn read_private(path: &Path) -> Result<SigningKey, TokenKeyError> {
    let text = read(path)?;
    match pem_label(path, &text)? {
        "PRIVATE KEY" => SigningKey::from_pkcs8_pem(&text).map_err(|e| TokenKeyError::Key {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        other => Err(TokenKeyError::Label {
            path: path.to_owned(),
            found: other.to_owned(),
            expected: "`PRIVATE KEY` (PKCS#8 Ed25519)",
        }),
    }
}

/// Temporary file created 0600 in the same directory, fsync, rename over
/// `path`, fsync the directory.
fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
    }
    result
}
