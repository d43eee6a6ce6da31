//! Sealing a transfer's payload while it streams: encrypted to the grant's
//! recipient with age (X25519 recipient, binary format, the C2SP age spec).
//!
//! Memory is bounded by one 64 KiB age chunk plus the ciphertext of what the
//! caller hands to one [`Sealer::update`]; nothing touches the disk.
//!
//! The age trap (a stream writer that is never finished leaves a truncated
//! file) is closed by ownership: [`Sealer::finish`] is the only way to write
//! age's last chunk, and it consumes the sealer. Dropping a `Sealer`, calling
//! [`Sealer::abort`], or failing half-way all leave the ciphertext sent so far
//! without a last chunk, which every age decryptor rejects as truncated. That
//! is what cutting a transfer on revocation needs.
//!
//! What a receipt counts is what left, not what was sealed: a cut drops the
//! pieces still queued for the peer. So each [`Piece`] carries the plaintext
//! it completes (the count and running SHA-256 through the end of the last
//! age chunk it seals), and a [`Tally`] fed with the pieces the connection
//! took gives the [`Digests`] of exactly those: ciphertext hashed once, as
//! it leaves, and the plaintext whose chunks went with it.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::{fmt, iter, mem};

use age::stream::StreamWriter;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// age's plaintext chunk (C2SP age spec, "payload").
const CHUNK_SIZE: usize = 64 * 1024;
/// A sealed chunk: the plaintext chunk and its Poly1305 tag.
const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + 16;

/// Seals one payload to one recipient. Not `Clone`: one stream, one key, one
/// nonce sequence.
#[must_use = "a Sealer must be finished, or the ciphertext is truncated"]
pub struct Sealer {
    /// `None` once an error left age's stream in an unknown state.
    stream: Option<StreamWriter<Outbox>>,
    /// The other end of the [`Outbox`] age writes into. age 0.12's
    /// `StreamWriter` gives no access to its inner writer until `finish`, so
    /// the two ends share it; the lock is never contended (one owner).
    outbox: Arc<Mutex<Vec<u8>>>,
    /// Every plaintext byte accepted so far.
    accepted: Mark,
    /// The plaintext age has sealed: up to the last chunk boundary it passed.
    sealed: Mark,
}

/// A count of plaintext bytes and the SHA-256 of them, as it runs.
#[derive(Clone, Default)]
pub struct Mark {
    bytes: u64,
    sha256: Sha256,
}

/// Bytes to send the peer, and (for a sealed payload) the plaintext they
/// complete: everything up to the end of the last chunk among them.
pub struct Piece {
    pub bytes: Bytes,
    /// `None` for a pass-through payload, whose bytes are their own plaintext.
    plaintext: Option<Mark>,
}

/// What a sealed (or abandoned) payload amounted to; receipts and the audit
/// log carry these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    pub plaintext_sha256: [u8; 32],
    pub ciphertext_sha256: [u8; 32],
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
}

/// The digests of the pieces that left, fed one by one as the connection
/// takes them.
pub struct Tally {
    ciphertext: Mark,
    /// The plaintext completed by the last piece taken (sealed payloads).
    plaintext: Mark,
    sealed: bool,
}

/// Sealing failed. Deliberately vague: the causes are age's, and they never
/// carry key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// age could not wrap a file key to the recipient.
    #[error("could not start an age stream to the recipient")]
    Recipient(#[source] age::EncryptError),
    /// age's stream refused to encrypt.
    #[error("age encryption failed")]
    Encrypt(#[source] io::Error),
    /// An earlier error left the stream unusable: it can only be abandoned.
    #[error("the age stream already failed")]
    Broken,
}

impl Sealer {
    /// Starts an age stream to `recipient`. The age header is produced at
    /// once and returned by the first [`update`](Self::update) or
    /// [`finish`](Self::finish).
    pub fn new(recipient: &age::x25519::Recipient) -> Result<Self, SealError> {
        let encryptor =
            age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
                .map_err(SealError::Recipient)?;
        let outbox = Arc::new(Mutex::new(Vec::new()));
        let stream = encryptor
            .wrap_output(Outbox(Arc::clone(&outbox)))
            .map_err(SealError::Encrypt)?;
        Ok(Self {
            stream: Some(stream),
            outbox,
            accepted: Mark::default(),
            sealed: Mark::default(),
        })
    }

    /// Encrypts the next plaintext bytes and returns the ciphertext ready to
    /// send now: empty while age fills its 64 KiB chunk, the header on the
    /// first call. Copies `plaintext` once, into age's chunk.
    ///
    /// After an error the sealer is broken: later calls fail with
    /// [`SealError::Broken`], and the stream can only be abandoned.
    pub fn update(&mut self, plaintext: &[u8]) -> Result<Piece, SealError> {
        let stream = self.stream.as_mut().ok_or(SealError::Broken)?;
        if let Some(sealed) = sealed_len(self.accepted.bytes, plaintext.len()) {
            // One allocation of the exact size instead of doubling as age
            // writes chunk after chunk. Only a hint: age decides what it writes.
            lock(&self.outbox).reserve_exact(sealed);
        }
        // In pieces that end on age's chunk boundaries, so the plaintext
        // sealed so far has a hash of its own, and so the hash reads each
        // piece while the copy into age's chunk has just brought it into the cache.
        let mut rest = plaintext;
        while !rest.is_empty() {
            let into_chunk = (self.accepted.bytes % CHUNK_SIZE as u64) as usize;
            if into_chunk == 0 && self.accepted.bytes > 0 {
                // age seals a full chunk when the byte after it arrives: now.
                self.sealed = self.accepted.clone();
            }
            let (piece, tail) = rest.split_at(rest.len().min(CHUNK_SIZE - into_chunk));
            if let Err(e) = stream.write_all(piece) {
                self.stream = None;
                // What age produced before failing is never sent, so never hashed.
                lock(&self.outbox).clear();
                return Err(SealError::Encrypt(e));
            }
            self.accepted.update(piece);
            rest = tail;
        }
        let bytes = self.drain();
        let plaintext = (!bytes.is_empty()).then(|| self.sealed.clone());
        Ok(Piece { bytes, plaintext })
    }

    /// Ends the stream with age's last chunk; returns the rest of the
    /// ciphertext, which completes the whole plaintext.
    pub fn finish(mut self) -> Result<Piece, SealError> {
        let stream = self.stream.take().ok_or(SealError::Broken)?;
        stream.finish().map_err(SealError::Encrypt)?;
        let bytes = self.drain();
        Ok(Piece {
            bytes,
            plaintext: Some(mem::take(&mut self.accepted)),
        })
    }

    /// Abandons the stream. The ciphertext sent so far has no last chunk, so
    /// age decryptors reject it as truncated.
    pub fn abort(mut self) {
        // age's StreamWriter writes nothing on drop; this drops it unfinished.
        self.stream = None;
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_bytes(&self) -> u64 {
        self.accepted.bytes
    }

    /// Takes what age wrote since the last call; the outbox keeps no
    /// capacity between calls.
    fn drain(&mut self) -> Bytes {
        Bytes::from(mem::take(&mut *lock(&self.outbox)))
    }

    /// The outbox's capacity between calls (structurally 0).
    #[cfg(test)]
    fn outbox_capacity(&self) -> usize {
        lock(&self.outbox).capacity()
    }
}

impl Mark {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    fn sha256(&self) -> [u8; 32] {
        self.sha256.clone().finalize().into()
    }
}

impl Piece {
    /// Bytes that are their own plaintext (a pass-through payload).
    pub fn passed(bytes: Bytes) -> Self {
        Self {
            bytes,
            plaintext: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Tally {
    /// For a payload sealed by the gateway, or passed through as it came.
    pub fn new(sealed: bool) -> Self {
        Self {
            ciphertext: Mark::default(),
            plaintext: Mark::default(),
            sealed,
        }
    }

    /// Counts `piece` as sent; returns its bytes for the wire.
    pub fn take(&mut self, piece: Piece) -> Bytes {
        self.ciphertext.update(&piece.bytes);
        if let Some(plaintext) = piece.plaintext {
            self.plaintext = plaintext;
        }
        piece.bytes
    }

    /// The digests of everything taken so far.
    pub fn digests(&self) -> Digests {
        let ciphertext_sha256 = self.ciphertext.sha256();
        let (plaintext_sha256, plaintext_bytes) = if self.sealed {
            (self.plaintext.sha256(), self.plaintext.bytes)
        } else {
            (ciphertext_sha256, self.ciphertext.bytes)
        };
        Digests {
            plaintext_sha256,
            ciphertext_sha256,
            plaintext_bytes,
            ciphertext_bytes: self.ciphertext.bytes,
        }
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("plaintext_bytes", &self.accepted.bytes)
            .field("sealed_bytes", &self.sealed.bytes)
            .field("broken", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

/// The writer age's stream writes ciphertext into; [`Sealer`] drains it.
struct Outbox(Arc<Mutex<Vec<u8>>>);

impl Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The outbox holds only bytes; a panic elsewhere cannot leave it half-updated
/// in a way that matters, so a poisoned lock is still usable.
fn lock(outbox: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    outbox.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ciphertext bytes age writes when `more` plaintext bytes follow `accepted`
/// ones. age keeps the last, possibly full, chunk until more data or `finish`
/// arrives (its last-chunk flag), so it seals a chunk only once the next byte
/// is known to exist.
fn sealed_len(accepted: u64, more: usize) -> Option<usize> {
    let buffered = if accepted == 0 {
        0
    } else {
        usize::try_from((accepted - 1) % CHUNK_SIZE as u64).ok()? + 1
    };
    let total = buffered.checked_add(more)?;
    match total {
        0 => None,
        total => ((total - 1) / CHUNK_SIZE)
            .checked_mul(SEALED_CHUNK_SIZE)
            .filter(|&n| n > 0),
    }
}

/// The envelope a transfer's bytes travel in: sealed with age to the grant's
/// recipient, or passed through as the data service sent them, for payloads
/// that are already end-to-end encrypted to the requester (still counted,
/// hashed and receipted; never copied). One per transfer, owned by its task:
/// the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Envelope {
    Seal(Sealer),
    Pass,
}

impl Envelope {
    /// What to send now for the next `data` from the upstream.
    pub fn update(&mut self, data: Bytes) -> Result<Piece, SealError> {
        match self {
            Self::Seal(sealer) => sealer.update(&data),
            Self::Pass => Ok(Piece::passed(data)),
        }
    }

    /// The last bytes to send.
    pub fn finish(self) -> Result<Piece, SealError> {
        match self {
            Self::Seal(sealer) => sealer.finish(),
            Self::Pass => Ok(Piece::passed(Bytes::new())),
        }
    }

    /// Abandons the payload: a sealed one stays truncated.
    pub fn abort(self) {
        if let Self::Seal(sealer) = self {
            sealer.abort();
        }
    }

    /// Whether the payload is sealed with age by the gateway.
    pub fn seals(&self) -> bool {
        matches!(self, Self::Seal(_))
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
