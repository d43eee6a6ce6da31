//! The sealing pipeline over arbitrary upstream bodies: any length around
//! age's 64 KiB chunks, split into frames at random, decrypts (with the age
//! crate, and for fixed cases with the `age` CLI) to exactly the input, and
//! the digests a receipt records are the SHA-256 of what went in and out.

use age::x25519::Identity;
use bytes::Bytes;
use proptest::prelude::*;

use super::tests::{age_cli_decrypt, decrypt, payload, sha256};
use super::*;

const KIB: usize = 1024;

/// Lengths at and around 0..4 whole chunks, or anywhere below 5 chunks.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        (0usize..=4, -1isize..=1).prop_map(|(k, d)| (k * CHUNK_SIZE).saturating_add_signed(d)),
        0usize..5 * CHUNK_SIZE,
    ]
}

/// Cut points of `len` bytes into frames: `cuts` as fractions of `len`, so
/// frames of 0 bytes, 1 byte, exact chunks and whole bodies all occur.
fn frames(plaintext: &[u8], cuts: &[u32]) -> Vec<Bytes> {
    let body = Bytes::copy_from_slice(plaintext);
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| (c as u64 * plaintext.len() as u64 / u32::MAX as u64) as usize)
        .collect();
    at.push(0);
    at.push(plaintext.len());
    at.sort_unstable();
    at.windows(2).map(|w| body.slice(w[0]..w[1])).collect()
}

/// The body through a sealing [`Wrapper`] frame by frame, as a transfer's
/// task feeds it: everything sent, and the digests for the receipt.
fn through(wrapper: Wrapper, frames: Vec<Bytes>) -> (Vec<u8>, Digests) {
    let mut wrapper = wrapper;
    let mut sent = Vec::new();
    for frame in frames {
        sent.extend_from_slice(&wrapper.update(frame).unwrap());
    }
    let (tail, digests) = wrapper.finish().unwrap();
    sent.extend_from_slice(&tail);
    (sent, digests)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_body_in_any_frames_decrypts_to_itself(
        len in length(), cuts in proptest::collection::vec(any::<u32>(), 0..12), chunk_cuts in any::<bool>(),
    ) {
        let identity = Identity::generate();
        let plaintext = payload(len);
        let mut cuts = cuts;
        if chunk_cuts {
            // Frames that end exactly on age's chunk boundaries.
            cuts.extend((1..=len / CHUNK_SIZE).map(|k| ((k * CHUNK_SIZE) as u64 * u32::MAX as u64 / len.max(1) as u64) as u32));
        }
        let frames = frames(&plaintext, &cuts);
        prop_assert_eq!(frames.iter().map(Bytes::len).sum::<usize>(), len);
        let sealer = Sealer::new(&identity.to_public()).unwrap();
        let (ciphertext, digests) = through(Wrapper::Seal(sealer), frames.clone());
        prop_assert!(decrypt(&identity, &ciphertext).unwrap() == plaintext, "len {}", len);
        prop_assert_eq!(digests, Digests {
            plaintext_sha256: sha256(&plaintext),
            ciphertext_sha256: sha256(&ciphertext),
            plaintext_bytes: len as u64,
            ciphertext_bytes: ciphertext.len() as u64,
        });
        // Another identity opens nothing.
        prop_assert!(decrypt(&Identity::generate(), &ciphertext).is_err());

        // A pass-through route sends the frames as they came and hashes them once.
        let (passed, digests) = through(Wrapper::Pass(PassThrough::new()), frames);
        prop_assert!(passed == plaintext);
        prop_assert_eq!((digests.plaintext_sha256, digests.ciphertext_sha256), (sha256(&plaintext), sha256(&plaintext)));
        prop_assert_eq!((digests.plaintext_bytes, digests.ciphertext_bytes), (len as u64, len as u64));
    }
}

#[test]
fn the_age_cli_opens_bodies_around_chunk_boundaries_in_odd_frames() {
    let identity = Identity::generate();
    for (len, cuts) in [
        (0, &[][..]),
        (1, &[0][..]),
        (2 * 64 * KIB, &[u32::MAX / 2][..]),
        (2 * 64 * KIB - 1, &[1, 2, 3][..]),
        (2 * 64 * KIB + 1, &[u32::MAX / 2 + 1, u32::MAX - 1][..]),
    ] {
        let plaintext = payload(len);
        let sealer = Sealer::new(&identity.to_public()).unwrap();
        let (ciphertext, digests) = through(Wrapper::Seal(sealer), frames(&plaintext, cuts));
        let output = age_cli_decrypt(&identity, &ciphertext);
        assert!(
            output.status.success(),
            "age -d failed on {len} bytes: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stdout == plaintext,
            "age -d output differs on {len} bytes"
        );
        assert_eq!(digests.plaintext_sha256, sha256(&output.stdout));
        assert_eq!(digests.ciphertext_sha256, sha256(&ciphertext));
    }
}
