//! The gateway's token keys: loading, `kid`s, writing a new one, and the
//! public key set (JWKS) that lets others verify what the gateway signs.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::{self, LineEnding};
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The gateway's token keys: one Ed25519 signing key, plus keys that only
/// verify (the previous signing keys, while their tokens are alive).
pub struct TokenKeys {
    /// The signing key as PKCS#8 DER, the form jsonwebtoken hands the provider.
    /// Zeroized on drop by jsonwebtoken.
    pub(super) encoding: EncodingKey,
    kid: String,
    /// Every key a token may name, the signing key's first.
    verifiers: Vec<KnownKey>,
}

struct KnownKey {
    kid: String,
    public: VerifyingKey,
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
        crate::atomic_file::write(path, pem.as_bytes(), crate::atomic_file::Readers::Owner).map_err(
            |source| TokenKeyError::Write {
                path: path.to_owned(),
                source,
            },
        )
    }

    /// The key `kid` names, if we hold it.
    pub(super) fn known(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| &k.decoding)
    }

    /// The public keys: the signing key's first, then the verify-only ones.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .verifiers
                .iter()
                .map(|k| Jwk::ed25519(&k.public, k.kid.clone()))
                .collect(),
        }
    }
}

impl KnownKey {
    fn new(kid: String, key: &VerifyingKey) -> Self {
        Self {
            kid,
            public: *key,
            decoding: decoding_key(key),
        }
    }
}

/// An RFC 7517 JWK Set: the gateway's public keys, for parties that verify
/// what it signs (receipts) without holding anything secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One RFC 7517 / RFC 8037 public key. Only `kty` is required when reading,
/// so a set that also holds keys of other types still parses; those keys are
/// never used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `OKP` for ours.
    pub kty: String,
    /// `Ed25519` for ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The raw 32-byte public key, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Ours: the RFC 7638 thumbprint, the `kid` our JWS headers carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwks {
    /// The first usable Ed25519 signature key named `kid` (a key without a
    /// `kid` is named by its RFC 7638 thumbprint).
    pub(super) fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .iter()
            .filter_map(Jwk::ed25519_key)
            .find(|(named, _)| named == kid)
            .map(|(_, key)| decoding_key(&key))
    }
}

impl Jwk {
    fn ed25519(key: &VerifyingKey, kid: String) -> Self {
        Self {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(B64.encode(key.as_bytes())),
            kid: Some(kid),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    /// The key and its name, if this is an Ed25519 key for EdDSA signatures
    /// that is not small-order.
    fn ed25519_key(&self) -> Option<(String, VerifyingKey)> {
        let okp = self.kty == "OKP" && self.crv.as_deref() == Some("Ed25519");
        let for_eddsa = self.alg.as_deref().is_none_or(|alg| alg == "EdDSA");
        let for_signatures = self.key_use.as_deref().is_none_or(|u| u == "sig");
        if !(okp && for_eddsa && for_signatures) {
            return None;
        }
        let bytes: [u8; 32] = B64.decode(self.x.as_deref()?).ok()?.try_into().ok()?;
        let key = VerifyingKey::from_bytes(&bytes).ok()?;
        if key.is_weak() {
            return None;
        }
        let kid = self.kid.clone().unwrap_or_else(|| jwk_thumbprint(&key));
        Some((kid, key))
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

/// The form the provider's verifier takes: the 32 raw bytes.
fn decoding_key(key: &VerifyingKey) -> DecodingKey {
    DecodingKey::from_ed_der(key.as_bytes())
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
pub(super) fn pkcs8_v1_der(key: &SigningKey) -> Zeroizing<Vec<u8>> {
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
