//! Client certificate chains a verifier has already accepted.
//!
//! A peer presents the same chain on every connection, and verifying it —
//! path building, the chain's signatures, the CRL's signature, all ECDSA —
//! was a third of a new connection's CPU time (perf, `cargo bench --bench
//! e2e`, part d). What webpki decides about a chain depends on the chain's
//! bytes, the verifier's anchors and CRLs, and the time; a verifier's
//! anchors and CRLs never change (a reload builds a new verifier, and with
//! it an empty cache), so an accepted chain stays accepted for as long as
//! the time is inside every presented certificate's validity. That window
//! is kept with the entry and checked on every use; outside it, or for a
//! chain never seen, the full verification runs. Refusals are never
//! remembered. The handshake's own signature (the peer's proof that it
//! holds the key) is checked on every connection, cached chain or not.

use std::collections::HashMap;
use std::sync::Mutex;

use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest as _, Sha256};

/// The most chains remembered per verifier; past it the cache starts over.
const CAPACITY: usize = 4096;

/// The times, in Unix seconds, within which every certificate of a chain is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    not_before: i64,
    not_after: i64,
}

#[derive(Default)]
pub(super) struct VerifiedChains {
    chains: Mutex<HashMap<[u8; 32], Window>>,
}

/// A chain's identity: the SHA-256 of its certificates, each length-prefixed.
pub(super) fn key(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    for cert in std::iter::once(end_entity).chain(intermediates) {
        hash.update((cert.len() as u64).to_be_bytes());
        hash.update(cert.as_ref());
    }
    hash.finalize().into()
}

impl VerifiedChains {
    /// Whether the chain `key` was accepted and `now` is inside its window.
    pub(super) fn accepts(&self, key: &[u8; 32], now: UnixTime) -> bool {
        let Ok(chains) = self.chains.lock() else {
            return false;
        };
        chains.get(key).is_some_and(|w| w.contains(now))
    }

    /// Remembers a chain the full verification accepted. A chain whose
    /// certificates cannot be read for their validity is not remembered.
    pub(super) fn remember(
        &self,
        key: [u8; 32],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) {
        let Some(window) = Window::of(std::iter::once(end_entity).chain(intermediates)) else {
            return;
        };
        if let Ok(mut chains) = self.chains.lock() {
            if chains.len() >= CAPACITY {
                chains.clear();
            }
            chains.insert(key, window);
        }
    }
}

impl Window {
    /// The intersection of the certificates' validity periods.
    fn of<'a>(certs: impl Iterator<Item = &'a CertificateDer<'a>>) -> Option<Self> {
        let mut window = Window {
            not_before: i64::MIN,
            not_after: i64::MAX,
        };
        for der in certs {
            let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
            let validity = cert.validity();
            window.not_before = window.not_before.max(validity.not_before.timestamp());
            window.not_after = window.not_after.min(validity.not_after.timestamp());
        }
        Some(window)
    }

    /// As webpki judges a certificate: valid from `notBefore` to `notAfter`, both included.
    fn contains(&self, now: UnixTime) -> bool {
        let Ok(now) = i64::try_from(now.as_secs()) else {
            return false;
        };
        self.not_before <= now && now <= self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_includes_both_ends_and_nothing_outside() {
        let window = Window {
            not_before: 100,
            not_after: 200,
        };
        let at = |s| UnixTime::since_unix_epoch(std::time::Duration::from_secs(s));
        assert!(!window.contains(at(99)));
        assert!(window.contains(at(100)));
        assert!(window.contains(at(200)));
        assert!(!window.contains(at(201)));
    }

    #[test]
    fn chains_differing_in_any_certificate_or_their_split_have_different_keys() {
        let a = CertificateDer::from(vec![1u8, 2, 3]);
        let b = CertificateDer::from(vec![4u8]);
        let ab = CertificateDer::from(vec![1u8, 2, 3, 4]);
        assert_ne!(key(&a, std::slice::from_ref(&b)), key(&ab, &[]));
        assert_ne!(key(&a, &[]), key(&a, std::slice::from_ref(&b)));
        assert_eq!(
            key(&a, std::slice::from_ref(&b)),
            key(&a, std::slice::from_ref(&b))
        );
    }
}
