//! The gateway's token keys: loading, `kid`s, and writing a new one.

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
