//! Signed tree heads as C2SP checkpoints (c2sp.org/tlog-checkpoint) in C2SP
//! signed notes (c2sp.org/signed-note) with Ed25519 keys, so any tlog
//! tooling (Go `sumdb/note`, witnesses) can check our log's heads.
//!
//! ```text
//! xborder.example/audit
//! 42
//! <base64 root hash>
//!
//! — xborder.example/audit <base64(key id ‖ Ed25519 signature)>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::merkle::Hash;

/// Signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
/// Every signature line starts with an em dash (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// More than the 16 the spec makes us accept; bounds the work of one note.
const MAX_SIGNATURES: usize = 100;

/// A tree head: the log `origin`, and the `root` of its first `size` leaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Why a note or key was refused. Deliberately coarse about signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed signed note")]
    MalformedNote,
    #[error("malformed checkpoint")]
    MalformedCheckpoint,
    #[error("the note carries no signature by the expected key")]
    NotSigned,
    #[error("the note's signature by the expected key does not verify")]
    BadSignature,
    #[error("invalid key name: empty, or contains a space or '+'")]
    InvalidKeyName,
    #[error("invalid checkpoint origin: empty, or contains a control character")]
    InvalidOrigin,
    #[error("malformed verifier key")]
    MalformedVerifierKey,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint body. Extension lines (any after the third) are
    /// opaque per the spec: accepted if non-empty, and dropped.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let malformed = CheckpointError::MalformedCheckpoint;
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .ok_or(malformed)?
            .split('\n')
            .collect();
        if lines.len() < 3 || lines.iter().any(|line| line.is_empty()) {
            return Err(malformed);
        }
        let origin = lines[0];
        check_origin(origin).map_err(|_| malformed)?;
        let size = parse_size(lines[1]).ok_or(malformed)?;
        let root: Hash = STANDARD
            .decode(lines[2])
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(malformed)?;
        // One encoding per root: refuse base64 that decodes but is not canonical.
        if STANDARD.encode(root) != lines[2] {
            return Err(malformed);
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Signs `checkpoint` as a signed note under `key_name`, which the spec
/// recommends be the origin.
pub fn sign(
    checkpoint: &Checkpoint,
    key_name: &str,
    key: &SigningKey,
) -> Result<String, CheckpointError> {
    check_origin(&checkpoint.origin)?;
    sign_note(&checkpoint.body(), key_name, key)
}

/// Verifies `note` carries a good signature by (`key_name`, `key`) and parses
/// its text as a checkpoint. Signatures by other keys are ignored, as the
/// spec requires (witness cosignatures, rotated keys); a bad signature by
/// this key refuses the whole note. The origin is not checked here: compare
/// it with the log you expect.
pub fn open(note: &str, key_name: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    Checkpoint::parse(open_note(note, key_name, key)?)
}

/// Signs any note text (which must end in a newline) with an Ed25519 key.
pub fn sign_note(text: &str, key_name: &str, key: &SigningKey) -> Result<String, CheckpointError> {
    check_key_name(key_name)?;
    if !text.ends_with('\n') || has_control_characters(text) {
        return Err(CheckpointError::MalformedNote);
    }
    let signature = key.sign(text.as_bytes());
    let mut blob = key_id(key_name, &key.verifying_key())
        .to_be_bytes()
        .to_vec();
    blob.extend_from_slice(&signature.to_bytes());
    Ok(format!(
        "{text}\n{SIGNATURE_PREFIX}{key_name} {}\n",
        STANDARD.encode(blob)
    ))
}

/// Verifies a signed note against one Ed25519 key and returns its text.
pub fn open_note<'a>(
    note: &'a str,
    key_name: &str,
    key: &VerifyingKey,
) -> Result<&'a str, CheckpointError> {
    let malformed = CheckpointError::MalformedNote;
    check_key_name(key_name)?;
    if !note.ends_with('\n') || has_control_characters(note) {
        return Err(malformed);
    }
    // The text ends at the last blank line; it keeps its final newline.
    let split = note.rfind("\n\n").ok_or(malformed)?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let lines: Vec<&str> = signatures
        .strip_suffix('\n')
        .ok_or(malformed)?
        .split('\n')
        .collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(malformed);
    }
    let id = key_id(key_name, key);
    let mut verified = false;
    for line in lines {
        let (name, blob) = line
            .strip_prefix(SIGNATURE_PREFIX)
            .and_then(|rest| rest.split_once(' '))
            .ok_or(malformed)?;
        check_key_name(name).map_err(|_| malformed)?;
        let blob = STANDARD.decode(blob).map_err(|_| malformed)?;
        let (line_id, signature) = match blob.split_first_chunk::<4>() {
            Some((line_id, signature)) if !signature.is_empty() => {
                (u32::from_be_bytes(*line_id), signature)
            }
            _ => return Err(malformed),
        };
        if name != key_name || line_id != id {
            continue; // Someone else's signature: not ours to judge.
        }
        if verified {
            return Err(malformed); // Two signatures by one key.
        }
        let signature =
            Signature::from_slice(signature).map_err(|_| CheckpointError::BadSignature)?;
        key.verify_strict(text.as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature)?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(CheckpointError::NotSigned)
    }
}

/// The signed-note key id of an Ed25519 key: the first four bytes, big
/// endian, of SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key).
pub fn key_id(key_name: &str, key: &VerifyingKey) -> u32 {
    let digest = Sha256::new()
        .chain_update(key_name.as_bytes())
        .chain_update([b'\n', ED25519])
        .chain_update(key.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The verifier key string auditors configure:
/// `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
pub fn format_vkey(key_name: &str, key: &VerifyingKey) -> Result<String, CheckpointError> {
    check_key_name(key_name)?;
    let mut typed = vec![ED25519];
    typed.extend_from_slice(key.as_bytes());
    Ok(format!(
        "{key_name}+{:08x}+{}",
        key_id(key_name, key),
        STANDARD.encode(typed)
    ))
}

/// Parses a verifier key string into its name and Ed25519 key, checking the
/// key id against the key.
pub fn parse_vkey(vkey: &str) -> Result<(String, VerifyingKey), CheckpointError> {
    let malformed = CheckpointError::MalformedVerifierKey;
    // Names have no '+', the base64 may: split at the first two only.
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(id), Some(typed)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed);
    };
    check_key_name(name).map_err(|_| malformed)?;
    if id.len() != 8
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(malformed);
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| malformed)?;
    let typed = STANDARD.decode(typed).map_err(|_| malformed)?;
    let key = match typed.split_first() {
        Some((&ED25519, key)) => {
            let key: &[u8; 32] = key.try_into().map_err(|_| malformed)?;
            VerifyingKey::from_bytes(key).map_err(|_| malformed)?
        }
        _ => return Err(malformed),
    };
    if key_id(name, &key) != id {
        return Err(malformed);
    }
    Ok((name.to_owned(), key))
}

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == '+';
    if name.is_empty() || name.chars().any(bad) {
        return Err(CheckpointError::InvalidKeyName);
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), CheckpointError> {
    if origin.is_empty() || origin.chars().any(char::is_control) {
        return Err(CheckpointError::InvalidOrigin);
    }
    Ok(())
}

/// ASCII control characters other than newline are banned from notes.
fn has_control_characters(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// Decimal, no sign, no leading zeros (except "0" itself), fits in u64.
fn parse_size(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests;
