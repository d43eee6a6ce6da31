use std::io::{Read as _, Write as _};
use std::iter;
use std::process::Command;

use age::secrecy::ExposeSecret as _;
use age::x25519::Identity;
use sha2::{Digest as _, Sha256};

use super::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Odd piece sizes: around and across age's 64 KiB chunk boundary.
const PIECES: [usize; 7] = [1, 7, 65537, 4096, 65535, 3, 100_003];

pub(super) fn payload(len: usize) -> Vec<u8> {
    // Not all zeros, not periodic on 64 KiB: a chunk mix-up would show.
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

/// Seals `plaintext` fed in `pieces` (cycled); returns everything emitted.
fn seal(
    recipient: &age::x25519::Recipient,
    plaintext: &[u8],
    pieces: &[usize],
) -> (Vec<u8>, Digests) {
    let mut sealer = Sealer::new(recipient).unwrap();
    let mut sent = Sent::sealed();
    let mut rest = plaintext;
    for &n in pieces.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        sent.take(sealer.update(piece).unwrap());
        rest = tail;
    }
    assert_eq!(sealer.plaintext_bytes(), plaintext.len() as u64);
    sent.take(sealer.finish().unwrap());
    sent.done()
}

/// What a connection took: the bytes, and the tally a receipt is made from.
pub(super) struct Sent {
    pub bytes: Vec<u8>,
    pub tally: Tally,
}

impl Sent {
    pub fn sealed() -> Self {
        Self {
            bytes: Vec::new(),
            tally: Tally::new(true),
        }
    }

    pub fn passed() -> Self {
        Self {
            bytes: Vec::new(),
            tally: Tally::new(false),
        }
    }

    /// Takes `piece` as a connection does; returns its length.
    pub fn take(&mut self, piece: Piece) -> usize {
        let bytes = self.tally.take(piece);
        self.bytes.extend_from_slice(&bytes);
        bytes.len()
    }

    pub fn done(self) -> (Vec<u8>, Digests) {
        let digests = self.tally.digests();
        (self.bytes, digests)
    }
}

pub(super) fn decrypt(identity: &Identity, ciphertext: &[u8]) -> Result<Vec<u8>, String> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|e| e.to_string())?;
    let mut reader = decryptor
        .decrypt(iter::once(identity as &dyn age::Identity))
        .map_err(|e| e.to_string())?;
    let mut plaintext = Vec::new();
    reader
        .read_to_end(&mut plaintext)
        .map_err(|e| e.to_string())?;
    Ok(plaintext)
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Runs Debian's `age -d` on `ciphertext`; fails the test if it is missing.
pub(super) fn age_cli_decrypt(identity: &Identity, ciphertext: &[u8]) -> std::process::Output {
    let mut key = tempfile::NamedTempFile::new().unwrap();
    writeln!(key, "{}", identity.to_string().expose_secret()).unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(ciphertext).unwrap();
    match Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key.path())
        .arg(file.path())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "the `age` CLI is not on PATH: install it (`apt-get install -y age`); \
             this test checks interop with it and must not be skipped"
        ),
        Err(e) => panic!("running `age -d`: {e}"),
    }
}

#[test]
fn round_trip_across_chunk_boundaries() {
    let identity = Identity::generate();
    let recipient = identity.to_public();
    for len in [
        0,
        1,
        64 * KIB - 1,
        64 * KIB,
        64 * KIB + 1,
        2 * 64 * KIB,
        MIB + 7,
    ] {
        let plaintext = payload(len);
        let (ciphertext, digests) = seal(&recipient, &plaintext, &PIECES);
        assert_eq!(
            decrypt(&identity, &ciphertext).unwrap(),
            plaintext,
            "len {len}"
        );
        assert_eq!(
            digests,
            Digests {
                plaintext_sha256: sha256(&plaintext),
                ciphertext_sha256: sha256(&ciphertext),
                plaintext_bytes: len as u64,
                ciphertext_bytes: ciphertext.len() as u64,
            },
            "len {len}"
        );
        // age's payload: a 16-byte nonce, then chunks with 16-byte tags, at
        // least one (the last may be empty only if it is the first).
        let chunks = len.div_ceil(CHUNK_SIZE).max(1);
        let header = ciphertext.len() - len - 16 * chunks - 16;
        assert!(ciphertext.starts_with(b"age-encryption.org/v1\n-> X25519 "));
        assert!(ciphertext[..header].ends_with(b"\n"), "len {len}");
    }
}

#[test]
fn any_piece_sizes_round_trip_including_empty_ones() {
    let identity = Identity::generate();
    let plaintext = payload(3 * 64 * KIB + 5);
    for pieces in [
        &[1][..],
        &[64 * KIB],
        &[plaintext.len()],
        &[0, 9, 0, 64 * KIB + 1],
    ] {
        // A 0-length piece would loop forever in `seal`; feed them by hand.
        let mut sealer = Sealer::new(&identity.to_public()).unwrap();
        let mut sent = Sent::sealed();
        let mut rest = &plaintext[..];
        for &n in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.max(1).min(rest.len()));
            sent.take(sealer.update(&[]).unwrap());
            sent.take(sealer.update(piece).unwrap());
            rest = tail;
        }
        sent.take(sealer.finish().unwrap());
        let (ciphertext, digests) = sent.done();
        assert_eq!(decrypt(&identity, &ciphertext).unwrap(), plaintext);
        assert_eq!(digests.ciphertext_sha256, sha256(&ciphertext));
        assert_eq!(digests.plaintext_sha256, sha256(&plaintext));
    }
}

#[test]
fn header_comes_with_the_first_update() {
    let identity = Identity::generate();
    let mut sealer = Sealer::new(&identity.to_public()).unwrap();
    let mut sent = Sent::sealed();
    let first = sent.take(sealer.update(&[]).unwrap());
    assert!(sent.bytes.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(sent.tally.digests().plaintext_bytes, 0);
    assert!(sealer.update(&[]).unwrap().is_empty());
    // Less than a chunk: age holds it for the last-chunk flag.
    assert!(sealer.update(&payload(64 * KIB)).unwrap().is_empty());
    // One more byte: the first chunk is sealed, not flagged last, and the
    // plaintext it completes is exactly that chunk.
    assert_eq!(sent.take(sealer.update(b"x").unwrap()), SEALED_CHUNK_SIZE);
    let digests = sent.tally.digests();
    assert_eq!(digests.plaintext_bytes, 64 * KIB as u64);
    assert_eq!(digests.plaintext_sha256, sha256(&payload(64 * KIB)));
    assert_eq!(sent.take(sealer.finish().unwrap()), 1 + 16);
    let (_, digests) = sent.done();
    assert_eq!(
        digests.ciphertext_bytes,
        (first + SEALED_CHUNK_SIZE + 17) as u64
    );
    assert_eq!(digests.plaintext_bytes, 64 * KIB as u64 + 1);
}

#[test]
fn age_cli_decrypts_what_we_seal() {
    let identity = Identity::generate();
    let recipient = identity.to_public();
    for len in [0, 1, 64 * KIB, MIB + 7] {
        let plaintext = payload(len);
        let (ciphertext, _) = seal(&recipient, &plaintext, &PIECES);
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
    }
}

/// Cut points: before any chunk, on a chunk boundary (age still holds the
/// full chunk), and after whole chunks went out.
const CUTS: [usize; 4] = [0, 10, 64 * KIB, 3 * 64 * KIB + 5];

#[test]
fn aborted_stream_is_rejected_by_age_and_the_cli() {
    let identity = Identity::generate();
    for cut in CUTS {
        let plaintext = payload(cut);
        let mut sealer = Sealer::new(&identity.to_public()).unwrap();
        let mut sent = Sent::sealed();
        for piece in plaintext.chunks(7 * KIB) {
            sent.take(sealer.update(piece).unwrap());
        }
        sent.take(sealer.update(&[]).unwrap());
        sealer.abort();
        let (ciphertext, digests) = sent.done();
        // The plaintext whose chunks went out: age still holds the last,
        // possibly full, chunk, which never leaves.
        let sealed = cut.saturating_sub(1) / CHUNK_SIZE * CHUNK_SIZE;
        assert_eq!(
            digests,
            Digests {
                plaintext_sha256: sha256(&plaintext[..sealed]),
                ciphertext_sha256: sha256(&ciphertext),
                plaintext_bytes: sealed as u64,
                ciphertext_bytes: ciphertext.len() as u64,
            },
            "cut at {cut}"
        );
        assert_rejected(&identity, &ciphertext, cut);
    }
}

#[test]
fn dropped_sealer_leaves_a_rejected_stream() {
    let identity = Identity::generate();
    for cut in CUTS {
        let mut ciphertext = Vec::new();
        {
            let mut sealer = Sealer::new(&identity.to_public()).unwrap();
            ciphertext.extend_from_slice(&sealer.update(&payload(cut)).unwrap().bytes);
        }
        assert_rejected(&identity, &ciphertext, cut);
    }
}

fn assert_rejected(identity: &Identity, ciphertext: &[u8], cut: usize) {
    match decrypt(identity, ciphertext) {
        Err(e) => assert!(e.contains("truncated"), "cut at {cut}: {e}"),
        Ok(p) => panic!(
            "cut at {cut}: age accepted a truncated stream ({} bytes)",
            p.len()
        ),
    }
    let output = age_cli_decrypt(identity, ciphertext);
    assert!(!output.status.success(), "cut at {cut}: age -d exited 0");
}

#[test]
fn memory_stays_bounded_over_64_mib() {
    // Structural: `update` hands out everything age wrote and keeps an empty
    // outbox (capacity 0); age's own chunk buffer is allocated once with
    // 64 KiB capacity and never grows. Asserted here after every call.
    let identity = Identity::generate();
    let plaintext = payload(64 * MIB);
    for pieces in [&[64 * KIB][..], &PIECES, &[plaintext.len()]] {
        let mut sealer = Sealer::new(&identity.to_public()).unwrap();
        let mut rest = &plaintext[..];
        let mut ciphertext = Sha256::new();
        let mut tally = Tally::new(true);
        for &n in pieces.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            let out = tally.take(sealer.update(piece).unwrap());
            ciphertext.update(&out);
            assert_eq!(sealer.outbox_capacity(), 0);
            // What one call holds: the ciphertext of what it was handed,
            // at most one chunk more (the one age had buffered), plus header.
            assert!(out.len() <= piece.len() + SEALED_CHUNK_SIZE + 256 + piece.len() / 4096);
            rest = tail;
        }
        ciphertext.update(tally.take(sealer.finish().unwrap()));
        let digests = tally.digests();
        let ciphertext: [u8; 32] = ciphertext.finalize().into();
        assert_eq!(digests.ciphertext_sha256, ciphertext);
        assert_eq!(digests.plaintext_sha256, sha256(&plaintext));
    }
}

#[test]
fn sealed_len_matches_what_age_writes() {
    // The capacity hint must be exact, or `update` reallocates mid-stream.
    let identity = Identity::generate();
    let mut sealer = Sealer::new(&identity.to_public()).unwrap();
    let _header = sealer.update(&[]).unwrap();
    for n in [
        0,
        1,
        64 * KIB - 1,
        64 * KIB,
        1,
        64 * KIB,
        3 * 64 * KIB + 2,
        5,
        7 * KIB,
    ] {
        let expected = sealed_len(sealer.plaintext_bytes(), n).unwrap_or(0);
        assert_eq!(
            sealer.update(&payload(n)).unwrap().bytes.len(),
            expected,
            "piece {n}"
        );
    }
}

#[test]
fn broken_sealer_refuses_to_continue() {
    let identity = Identity::generate();
    let mut sealer = Sealer::new(&identity.to_public()).unwrap();
    let _ = sealer.update(b"some").unwrap();
    sealer.stream = None; // what a failed write leaves
    assert!(matches!(sealer.update(b"more"), Err(SealError::Broken)));
    assert!(matches!(sealer.finish(), Err(SealError::Broken)));
}

#[test]
fn types_fit_a_tokio_transfer() {
    fn send<T: Send>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    send::<Sealer>();
    send::<Piece>();
    send::<Tally>();
    error::<SealError>();
    let identity = Identity::generate();
    let sealer = Sealer::new(&identity.to_public()).unwrap();
    assert_eq!(
        format!("{sealer:?}"),
        "Sealer { plaintext_bytes: 0, sealed_bytes: 0, broken: false, .. }"
    );
}
