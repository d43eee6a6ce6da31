//! The requester's side of a transfer: pull the sealed payload through a
//! foreign border with the grant token, check the gateway's receipt against
//! what arrived, and only then decrypt.
//!
//! The ciphertext is spooled to a temporary file beside the output (it is
//! safe on disk: only the recipient's age identity opens it) while its
//! SHA-256 is computed. The receipt must verify against the gateway's
//! published keys (`GET /v1/keys`), say the transfer was complete, and name
//! the same ciphertext hash and size. Decryption writes to another temporary
//! file that is renamed onto the output only when all of it decrypted: no
//! partial plaintext is ever left at the output path. A pass-through route's
//! payload (`encrypted: false` in its receipt) is the data service's own
//! end-to-end ciphertext and is kept as it came, once verified.
//!
//! The receipt's entry must also be in the gateway's audit log: the fetch
//! asks for an inclusion proof under a freshly signed tree head and checks
//! it against the log's verifier key (`GET /v1/audit/vkey`, over the same
//! authenticated connection as the receipt keys), so a receipt the gateway
//! signed but never logged is refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use http::StatusCode;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::audit::checkpoint::Checkpoint;
use crate::audit::verify::verify_receipt_inclusion;
use crate::client::{self, ClientError, Connection};
use crate::grant::token::{Jwks, verify_receipt_with};
use crate::transfer::receipt::Receipt;
use crate::wire::ReceiptInclusion;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the gateway refused the transfer: {status} {code}: {title}")]
    Refused {
        status: StatusCode,
        code: String,
        title: String,
    },
    #[error("`{0}` is not a path (e.g. /v1/data/subscriber/+3725550123)")]
    Path(String),
    #[error("the connection failed: {0}")]
    Connection(#[from] ClientError),
    #[error("the transfer was cut after {0} bytes of ciphertext: {1}")]
    Cut(u64, String),
    #[error("the gateway did not name the transfer (no x-xborder-transfer header)")]
    NoTransferId,
    #[error("the grant token is not a JWT with an issuer")]
    Token,
    #[error("the receipt is missing or unreadable: {0}")]
    Receipt(String),
    #[error("the receipt's signature does not verify against the gateway's keys: {0}")]
    ReceiptSignature(String),
    #[error("the receipt says the transfer is incomplete ({0})")]
    Incomplete(String),
    #[error(
        "the ciphertext does not match the receipt: received {got_bytes} bytes with SHA-256 {got}, receipt says {want_bytes} bytes with {want}"
    )]
    Mismatch {
        got: String,
        got_bytes: u64,
        want: String,
        want_bytes: u64,
    },
    #[error("the receipt is not proven to be in the gateway's audit log: {0}")]
    NotLogged(String),
    #[error("decryption failed: {0} (wrong identity, or the payload was altered)")]
    Decrypt(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a successful fetch verified.
#[derive(Debug)]
pub struct Fetched {
    pub receipt: Receipt,
    /// The signed tree head the receipt's entry was proven to be in.
    pub logged_in: Checkpoint,
    pub out: PathBuf,
}

/// Fetches `path` with `token` over `conn`, verifies, decrypts to `out`.
pub async fn fetch(
    conn: &mut Connection,
    path: &str,
    token: &str,
    identity: &age::x25519::Identity,
    out: &Path,
) -> Result<Fetched, FetchError> {
    let issuer = token_issuer(token)?;
    let target = uri(path)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let write_error = |source| FetchError::Write {
        path: dir.clone(),
        source,
    };

    let response = conn.send(client::bearer_get(target, token)).await?;
    if !response.status().is_success() {
        let (parts, body) = client::collect(response).await?;
        return Err(refusal(parts.status, &body));
    }
    let transfer = response
        .headers()
        .get(crate::wire::TRANSFER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or(FetchError::NoTransferId)?;

    // Spool the ciphertext, hashing it as it comes.
    let mut sealed = tempfile::Builder::new()
        .prefix(".xborder-sealed-")
        .tempfile_in(&dir)
        .map_err(write_error)?;
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| FetchError::Cut(received, e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            hash.update(&data);
            received += data.len() as u64;
            sealed.write_all(&data).map_err(write_error)?;
        }
    }
    sealed.flush().map_err(write_error)?;
    let got = hex::encode(hash.finalize());

    let receipt = receipt(conn, &transfer, token, &issuer).await?;
    let logged_in = inclusion(conn, &transfer, token, &receipt).await?;
    if let Some(cause) = receipt.incomplete {
        return Err(FetchError::Incomplete(cause.as_str().to_owned()));
    }
    if receipt.ciphertext_sha256 != got || receipt.ciphertext_bytes != received {
        return Err(FetchError::Mismatch {
            got,
            got_bytes: received,
            want: receipt.ciphertext_sha256,
            want_bytes: receipt.ciphertext_bytes,
        });
    }

    // A pass-through route's payload is the data service's own end-to-end
    // encryption: verified above, kept as it came.
    if !receipt.encrypted {
        sealed.as_file().sync_all().map_err(write_error)?;
        sealed.persist(out).map_err(|e| FetchError::Write {
            path: out.to_owned(),
            source: e.error,
        })?;
        return Ok(Fetched {
            receipt,
            logged_in,
            out: out.to_owned(),
        });
    }

    // Decrypt beside the output, then rename: all of it or nothing.
    let mut plain = tempfile::Builder::new()
        .prefix(".xborder-plain-")
        .tempfile_in(&dir)
        .map_err(write_error)?;
    let reader = std::fs::File::open(sealed.path()).map_err(write_error)?;
    let decryptor = age::Decryptor::new(std::io::BufReader::new(reader))
        .map_err(|e| FetchError::Decrypt(e.to_string()))?;
    let mut stream = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| FetchError::Decrypt(e.to_string()))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut plaintext_hash = Sha256::new();
    loop {
        let n = stream
            .read(&mut buf)
            .map_err(|e| FetchError::Decrypt(e.to_string()))?;
        if n == 0 {
            break;
        }
        plaintext_hash.update(&buf[..n]);
        plain.write_all(&buf[..n]).map_err(write_error)?;
    }
    if hex::encode(plaintext_hash.finalize()) != receipt.plaintext_sha256 {
        return Err(FetchError::Decrypt(
            "the plaintext's hash differs from the receipt's".into(),
        ));
    }
    plain.as_file().sync_all().map_err(write_error)?;
    plain.persist(out).map_err(|e| FetchError::Write {
        path: out.to_owned(),
        source: e.error,
    })?;
    Ok(Fetched {
        receipt,
        logged_in,
        out: out.to_owned(),
    })
}

/// Proves that `receipt`'s entry is in the gateway's signed audit log.
async fn inclusion(
    conn: &mut Connection,
    transfer: &str,
    token: &str,
    receipt: &Receipt,
) -> Result<Checkpoint, FetchError> {
    let not_logged = FetchError::NotLogged;
    let (parts, vkey) = client::collect(
        conn.send(client::bearer_get(uri("/v1/audit/vkey")?, token))
            .await?,
    )
    .await?;
    if parts.status != StatusCode::OK {
        return Err(not_logged(format!(
            "GET /v1/audit/vkey answered {}",
            parts.status
        )));
    }
    let vkey = std::str::from_utf8(&vkey)
        .map_err(|_| not_logged("the verifier key is not text".into()))?
        .trim()
        .to_owned();
    let path = format!("/v1/transfers/{transfer}/inclusion");
    let (status, answer) = get_json(conn, &path, token).await?;
    if status != StatusCode::OK {
        return Err(not_logged(format!(
            "{path} answered {status}: {}",
            answer["code"]
        )));
    }
    let proof: ReceiptInclusion =
        serde_json::from_value(answer).map_err(|e| not_logged(format!("{path}: {e}")))?;
    let hashes = proof
        .proof
        .iter()
        .map(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| not_logged(format!("{path}: `{h}` is not a base64 SHA-256 hash")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    verify_receipt_inclusion(
        proof.entry.as_bytes(),
        proof.index,
        &hashes,
        &proof.checkpoint,
        &vkey,
        receipt,
    )
    .map_err(|e| not_logged(e.to_string()))
}

/// Fetches and verifies the receipt of `transfer`; it is written as the
/// transfer closes, so a brief `transfer_open` is waited out.
pub(crate) async fn receipt(
    conn: &mut Connection,
    transfer: &str,
    token: &str,
    issuer: &str,
) -> Result<Receipt, FetchError> {
    let (status, keys) = get_json(conn, "/v1/keys", token).await?;
    if status != StatusCode::OK {
        return Err(FetchError::Receipt(format!(
            "GET /v1/keys answered {status}"
        )));
    }
    let jwks: Jwks = serde_json::from_value(keys)
        .map_err(|e| FetchError::Receipt(format!("the key set: {e}")))?;
    let path = format!("/v1/transfers/{transfer}/receipt");
    for attempt in 0..50 {
        let (status, answer) = get_json(conn, &path, token).await?;
        if status == StatusCode::CONFLICT && attempt < 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if status != StatusCode::OK {
            return Err(FetchError::Receipt(format!(
                "{path} answered {status}: {}",
                answer["code"]
            )));
        }
        let jws = answer["jws"]
            .as_str()
            .ok_or_else(|| FetchError::Receipt("no `jws` member".into()))?;
        return verify_receipt_with(&jwks, issuer, jws)
            .map_err(|e| FetchError::ReceiptSignature(e.to_string()));
    }
    Err(FetchError::Receipt("the transfer never closed".into()))
}

async fn get_json(
    conn: &mut Connection,
    path: &str,
    token: &str,
) -> Result<(StatusCode, serde_json::Value), FetchError> {
    let (parts, body) =
        client::collect(conn.send(client::bearer_get(uri(path)?, token)).await?).await?;
    Ok((
        parts.status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

fn refusal(status: StatusCode, body: &[u8]) -> FetchError {
    let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    FetchError::Refused {
        status,
        code: problem["code"].as_str().unwrap_or("unknown").to_owned(),
        title: problem["title"].as_str().unwrap_or("").to_owned(),
    }
}

fn uri(path: &str) -> Result<http::Uri, FetchError> {
    path.parse().map_err(|_| FetchError::Path(path.to_owned()))
}

/// The `iss` of a grant token: who must have signed the receipt.
pub(crate) fn token_issuer(token: &str) -> Result<String, FetchError> {
    let claims = token.split('.').nth(1).ok_or(FetchError::Token)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .map_err(|_| FetchError::Token)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&claims).map_err(|_| FetchError::Token)?;
    claims["iss"]
        .as_str()
        .map(str::to_owned)
        .ok_or(FetchError::Token)
}
