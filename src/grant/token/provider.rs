//! jsonwebtoken's crypto backend: Ed25519 over ed25519-dalek, nothing else.
//!
//! Why hand-written: since version 10 jsonwebtoken carries no crypto of its
//! own, and its two built-in providers do not fit. `rust_crypto` pulls in the
//! `rsa` crate (RUSTSEC-2023-0071, the Marvin timing side channel, unfixed)
//! plus HMAC and ECDSA we never accept; `aws_lc_rs` adds a second C crypto
//! library next to ring. We sign and verify one algorithm, with a crate we
//! already have, so the provider is small and refuses everything else with an
//! error, never a panic (the defaults jsonwebtoken falls back to panic).
//! Verification is `verify_strict`: it also rejects small-order public keys
//! and non-canonical `R`, which plain `verify` lets through.
//!
//! jsonwebtoken keeps its provider in a process-wide `OnceLock` that can be
//! set once, and fills it with the panicking default on first use if nobody
//! did. [`ensure_installed`] installs ours before our first use and refuses to
//! work over any other provider (see [`is_ours`]).

use std::sync::OnceLock;

use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result as JwtResult};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::TokenError;

/// Ours; compared by address with what jsonwebtoken has installed.
pub(super) static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::UnsupportedAlgorithm.into()),
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Installs [`PROVIDER`] as jsonwebtoken's process default, once; fails if
/// another provider got there first (including jsonwebtoken's panicking
/// fallback, which it installs when anything uses it before we did).
pub(super) fn ensure_installed() -> Result<(), TokenError> {
    static OURS: OnceLock<bool> = OnceLock::new();
    if *OURS.get_or_init(|| is_ours(PROVIDER.install_default())) {
        Ok(())
    } else {
        Err(TokenError::Signing(
            "another jsonwebtoken crypto provider is installed in this process; \
             grant tokens need the EdDSA-only one in grant::token::provider"
                .into(),
        ))
    }
}

/// Whether the result of `install_default` leaves our provider installed:
/// `Err` carries the one already there, which is fine only if it is ours.
pub(super) fn is_ours(installed: Result<(), &'static CryptoProvider>) -> bool {
    match installed {
        Ok(()) => true,
        Err(existing) => std::ptr::eq(existing, &PROVIDER),
    }
}

fn signer_factory(alg: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    if *alg != Algorithm::EdDSA {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(Ed25519Signer(signing_key(key.as_bytes())?)))
}

/// The most signing keys [`signing_key`] remembers: the gateway signs with
/// one (tokens and receipts), tests with a few.
const REMEMBERED_KEYS: usize = 8;

/// The signing key of a PKCS#8 document, decoded once per key. jsonwebtoken
/// asks for a signer on every signature, and decoding derives the public
/// key, a base-point multiplication as dear as the signature itself: the
/// receipt of every transfer paid for two.
fn signing_key(der: &[u8]) -> JwtResult<SigningKey> {
    static KEYS: std::sync::Mutex<Vec<([u8; 32], SigningKey)>> = std::sync::Mutex::new(Vec::new());
    let id: [u8; 32] = Sha256::digest(der).into();
    let mut keys = KEYS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, key)) = keys.iter().find(|(known, _)| *known == id) {
        return Ok(key.clone());
    }
    let key = SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    if keys.len() == REMEMBERED_KEYS {
        keys.remove(0);
    }
    keys.push((id, key.clone()));
    Ok(key)
}

fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    if *alg != Algorithm::EdDSA {
        return Err(ErrorKind::UnsupportedAlgorithm.into());
    }
    if key.family() != AlgorithmFamily::Ed {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    // Exactly the 32 raw bytes: no prefix slicing of longer input.
    let bytes: &[u8; 32] = key
        .try_get_as_bytes()?
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(Ed25519Verifier(key)))
}

fn ed_pub_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> JwtResult<Vec<u8>> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidEddsaKey.into());
    }
    let key = SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(key.verifying_key().to_bytes().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> JwtResult<Vec<u8>> {
    Ok(match hash {
        ThumbprintHash::SHA256 => Sha256::digest(data).to_vec(),
        ThumbprintHash::SHA384 => Sha384::digest(data).to_vec(),
        ThumbprintHash::SHA512 => Sha512::digest(data).to_vec(),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    })
}

struct Ed25519Signer(SigningKey);

impl signature::Signer<Vec<u8>> for Ed25519Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let signature: Signature = signature::Signer::try_sign(&self.0, msg)?;
        Ok(signature.to_bytes().to_vec())
    }
}

impl JwtSigner for Ed25519Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct Ed25519Verifier(VerifyingKey);

impl signature::Verifier<Vec<u8>> for Ed25519Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let signature = Signature::from_slice(signature)?;
        self.0.verify_strict(msg, &signature)
    }
}

impl JwtVerifier for Ed25519Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}
