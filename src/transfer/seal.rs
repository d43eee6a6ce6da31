//! Sealing a transfer's payload while it streams: encrypted to the grant's
//! recipient with age (X25519 recipient, binary format, the C2SP age spec),
//! with SHA-256 of the plaintext and of the ciphertext taken on the way.
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
    plaintext_sha256: Sha256,
    plaintext_bytes: u64,
    ciphertext_sha256: Sha256,
    ciphertext_bytes: u64,
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
            plaintext_sha256: Sha256::new(),
            plaintext_bytes: 0,
            ciphertext_sha256: Sha256::new(),
            ciphertext_bytes: 0,
        })
    }

    /// Encrypts the next plaintext bytes and returns the ciphertext ready to
    /// send now: empty while age fills its 64 KiB chunk, the header on the
    /// first call. Copies `plaintext` once, into age's chunk.
    ///
    /// After an error the sealer is broken: later calls fail with
    /// [`SealError::Broken`], and the stream can only be abandoned.
    pub fn update(&mut self, plaintext: &[u8]) -> Result<Bytes, SealError> {
        let stream = self.stream.as_mut().ok_or(SealError::Broken)?;
        if let Some(sealed) = sealed_len(self.plaintext_bytes, plaintext.len()) {
            // One allocation of the exact size instead of doubling as age
            // writes chunk after chunk. Only a hint: age decides what it writes.
            lock(&self.outbox).reserve_exact(sealed);
        }
        // In age-sized pieces so the hash reads each one while the copy into
        // age's chunk has just brought it into the cache.
        for piece in plaintext.chunks(CHUNK_SIZE) {
            if let Err(e) = stream.write_all(piece) {
                self.stream = None;
                // What age produced before failing is never sent, so never hashed.
                lock(&self.outbox).clear();
                return Err(SealError::Encrypt(e));
            }
            self.plaintext_sha256.update(piece);
            self.plaintext_bytes += piece.len() as u64;
        }
        Ok(self.drain())
    }

    /// Ends the stream with age's last chunk; returns the rest of the
    /// ciphertext and the digests of the whole payload.
    pub fn finish(mut self) -> Result<(Bytes, Digests), SealError> {
        let stream = self.stream.take().ok_or(SealError::Broken)?;
        stream.finish().map_err(SealError::Encrypt)?;
        let tail = self.drain();
        Ok((tail, self.digests()))
    }

    /// Abandons the stream. The ciphertext sent so far has no last chunk, so
    /// age decryptors reject it as truncated. Returns the digests of the
    /// plaintext accepted so far (including what age buffered and never
    /// encrypted) and of the ciphertext returned so far.
    pub fn abort(mut self) -> Digests {
        // age's StreamWriter writes nothing on drop; this drops it unfinished.
        self.stream = None;
        self.digests()
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_bytes(&self) -> u64 {
        self.plaintext_bytes
    }

    /// Takes what age wrote since the last call; the outbox keeps no
    /// capacity between calls.
    fn drain(&mut self) -> Bytes {
        let ciphertext = mem::take(&mut *lock(&self.outbox));
        if ciphertext.is_empty() {
            return Bytes::new();
        }
        self.ciphertext_sha256.update(&ciphertext);
        self.ciphertext_bytes += ciphertext.len() as u64;
        Bytes::from(ciphertext)
    }

    fn digests(self) -> Digests {
        Digests {
            plaintext_sha256: self.plaintext_sha256.finalize().into(),
            ciphertext_sha256: self.ciphertext_sha256.finalize().into(),
            plaintext_bytes: self.plaintext_bytes,
            ciphertext_bytes: self.ciphertext_bytes,
        }
    }

    /// The outbox's capacity between calls (structurally 0).
    #[cfg(test)]
    fn outbox_capacity(&self) -> usize {
        lock(&self.outbox).capacity()
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("plaintext_bytes", &self.plaintext_bytes)
            .field("ciphertext_bytes", &self.ciphertext_bytes)
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

/// A route's payload passed through as the data service sent it: for
/// payloads that are already end-to-end encrypted to the requester. Still
/// counted, hashed (plaintext and ciphertext are the same bytes) and
/// receipted; never copied.
#[derive(Default)]
pub struct PassThrough {
    sha256: Sha256,
    bytes: u64,
}

impl PassThrough {
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&mut self, data: Bytes) -> Bytes {
        self.sha256.update(&data);
        self.bytes += data.len() as u64;
        data
    }

    fn digests(self) -> Digests {
        let sha256: [u8; 32] = self.sha256.finalize().into();
        Digests {
            plaintext_sha256: sha256,
            ciphertext_sha256: sha256,
            plaintext_bytes: self.bytes,
            ciphertext_bytes: self.bytes,
        }
    }
}

/// How a transfer's bytes go on their way: sealed with age to the grant's
/// recipient, or passed through (see [`PassThrough`]). One per transfer,
/// owned by its task: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Wrapper {
    Seal(Sealer),
    Pass(PassThrough),
}

impl Wrapper {
    /// What to send now for the next `data` from the upstream.
    pub fn update(&mut self, data: Bytes) -> Result<Bytes, SealError> {
        match self {
            Self::Seal(sealer) => sealer.update(&data),
            Self::Pass(pass) => Ok(pass.update(data)),
        }
    }

    /// The last bytes to send and the digests of the whole payload.
    pub fn finish(self) -> Result<(Bytes, Digests), SealError> {
        match self {
            Self::Seal(sealer) => sealer.finish(),
            Self::Pass(pass) => Ok((Bytes::new(), pass.digests())),
        }
    }

    /// The digests of what was accepted and sent, for a cut transfer.
    pub fn abort(self) -> Digests {
        match self {
            Self::Seal(sealer) => sealer.abort(),
            Self::Pass(pass) => pass.digests(),
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
