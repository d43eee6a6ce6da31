//! The sealing pipeline over arbitrary upstream bodies: any length around
//! age's 64 KiB chunks, split into frames at random, decrypts (with the age
//! crate, and for fixed cases with the `age` CLI) to exactly the input, and
//! the digests a receipt records are the SHA-256 of what went in and out.

use age::x25519::Identity;
use bytes::Bytes;
use proptest::prelude::*;

use super::tests::{Sent, age_cli_decrypt, decrypt, payload, sha256};
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

/// The body through a sealing [`Envelope`] frame by frame, as a transfer's
/// task feeds it: everything sent, and the digests for the receipt.
fn through(envelope: Envelope, frames: Vec<Bytes>) -> (Vec<u8>, Digests) {
    let mut envelope = envelope;
    let mut sent = if envelope.seals() {
        Sent::sealed()
    } else {
        Sent::passed()
    };
    for frame in frames {
        sent.take(envelope.update(frame).unwrap());
    }
    sent.take(envelope.finish().unwrap());
    sent.done()
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
        let (ciphertext, digests) = through(Envelope::Seal(sealer), frames.clone());
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
        let (passed, digests) = through(Envelope::Pass, frames.clone());
        prop_assert!(passed == plaintext);
        prop_assert_eq!((digests.plaintext_sha256, digests.ciphertext_sha256), (sha256(&plaintext), sha256(&plaintext)));
        prop_assert_eq!((digests.plaintext_bytes, digests.ciphertext_bytes), (len as u64, len as u64));
    }

    /// A cut drops the pieces still queued: whatever prefix of the pieces a
    /// connection took, the tally names exactly those bytes, and the
    /// plaintext whose age chunks are among them (whole chunks only, since
    /// a chunk leaves whole or not at all).
    #[test]
    fn a_tally_of_any_prefix_names_exactly_what_left(
        len in length(), cuts in proptest::collection::vec(any::<u32>(), 0..12), taken in any::<prop::sample::Index>(),
    ) {
        let identity = Identity::generate();
        let plaintext = payload(len);
        let mut sealer = Sealer::new(&identity.to_public()).unwrap();
        let mut pieces: Vec<Piece> = frames(&plaintext, &cuts)
            .into_iter()
            .map(|frame| sealer.update(&frame).unwrap())
            .filter(|piece| !piece.is_empty())
            .collect();
        pieces.push(sealer.finish().unwrap());
        let taken = taken.index(pieces.len() + 1);
        let whole = taken == pieces.len();
        let mut sent = Sent::sealed();
        for piece in pieces.into_iter().take(taken) {
            sent.take(piece);
        }
        let (ciphertext, digests) = sent.done();
        prop_assert_eq!(digests.ciphertext_sha256, sha256(&ciphertext));
        prop_assert_eq!(digests.ciphertext_bytes, ciphertext.len() as u64);
        let sealed = usize::try_from(digests.plaintext_bytes).unwrap();
        prop_assert_eq!(digests.plaintext_sha256, sha256(&plaintext[..sealed]));
        if whole {
            prop_assert_eq!(sealed, len);
        } else {
            prop_assert_eq!(sealed % CHUNK_SIZE, 0);
            // Every chunk counted is in the ciphertext that left: the
            // header, then one sealed chunk per 64 KiB of plaintext.
            let chunks = sealed / CHUNK_SIZE;
            prop_assert!(ciphertext.len() >= chunks * SEALED_CHUNK_SIZE);
            prop_assert!(ciphertext.len() < (chunks + 1) * SEALED_CHUNK_SIZE + 256);
        }
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
        let (ciphertext, digests) = through(Envelope::Seal(sealer), frames(&plaintext, cuts));
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
