//! `xborder audit …`: the audit log as an oversight body handles it.
//! `export` downloads the log and its signed head from the admin listener
//! into one file; `verify`, `list` and `show` work offline on that file
//! (the format is `audit::export`'s, the checks `audit::verify`'s).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use clap::{ArgGroup, Subcommand};
use serde::Deserialize;

use super::admin_client::{self, AdminArgs, AdminClient};
use crate::atomic_file::{self, Readers};
use crate::audit::checkpoint::{Checkpoint, CheckpointError};
use crate::audit::entry::{Entry, Event};
use crate::audit::export::{Export, ExportWriter, Header};
use crate::audit::merkle::{self, Hash};
use crate::audit::verify::{self, VerifyError};
use crate::clock::Timestamp;
use crate::grant::GrantId;
use crate::request::RequestId;
use crate::transfer::receipt::Receipt;

#[cfg(test)]
mod tests;

/// The admin API's signed head of the audit log (a C2SP signed note).
const CHECKPOINT_PATH: &str = "/v1/audit/checkpoint";
/// The admin API's entries: `?start=S&limit=L` answers up to L entry lines
/// from index S as NDJSON.
const ENTRIES_PATH: &str = "/v1/audit/entries";

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Download the whole audit log and its signed head into one export file.
    Export(ExportArgs),
    /// Verify an export (or a receipt's inclusion) against the log's verifier key.
    Verify(VerifyArgs),
    /// List an export's entries, filtered. Does not verify: run `verify` first.
    List(ListArgs),
    /// Show one entry of an export, with its leaf hash.
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The export file to write; it appears only once complete.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Entries asked for per request.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    page: u64,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `xborder audit verify EXPORT --vkey …` checks a whole export;
/// `xborder audit verify --receipt … --proof … --vkey …` checks that a
/// receipt's transfer is in the signed log (inclusion only: the receipt's
/// own signature is checked by `xborder fetch`, not here).
#[derive(clap::Args)]
#[command(group(ArgGroup::new("key").required(true).args(["vkey", "vkey_file"])))]
#[command(after_help = "\
Examples:
  xborder audit verify audit.jsonl --vkey-file audit.vkey --since checkpoint-kept.txt
  xborder audit verify --receipt receipt.jws --proof proof.json --vkey-file audit.vkey

With --receipt only the receipt's inclusion in the signed log is checked, not
the receipt's signature (`xborder fetch` checks that).")]
pub struct VerifyArgs {
    /// The export file written by `xborder audit export`.
    #[arg(
        value_name = "EXPORT",
        required_unless_present = "receipt",
        conflicts_with = "receipt"
    )]
    export: Option<PathBuf>,
    /// The log's verifier key: `<name>+<key id>+<base64 key>`.
    #[arg(long, value_name = "VKEY")]
    vkey: Option<String>,
    /// A file holding the verifier key.
    #[arg(long, value_name = "FILE")]
    vkey_file: Option<PathBuf>,
    /// A signed checkpoint of this log you kept from before: check that the
    /// log only grew since (no entry of it rewritten).
    #[arg(long, value_name = "OLD_CHECKPOINT_FILE", conflicts_with = "receipt")]
    since: Option<PathBuf>,
    /// A transfer receipt (compact JWS): check that the log records it.
    /// Only inclusion is checked, not the receipt's signature.
    #[arg(long, value_name = "RECEIPT_JWS_FILE", requires = "proof")]
    receipt: Option<PathBuf>,
    /// The receipt's inclusion proof: JSON with `index`, `entry`,
    /// `checkpoint` and `proof` (base64 hashes).
    #[arg(long, value_name = "PROOF_JSON_FILE", requires = "receipt")]
    proof: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// The export file.
    #[arg(value_name = "EXPORT")]
    export: PathBuf,
    /// Only entries about this grant.
    #[arg(long, value_name = "ID")]
    grant: Option<GrantId>,
    /// Only entries about this request.
    #[arg(long, value_name = "ID")]
    request: Option<RequestId>,
    /// Only entries naming this identity (a peer, a reviewer).
    #[arg(long, value_name = "SPIFFE_ID")]
    peer: Option<String>,
    /// Only entries with this code (a denial's problem code, an ending's
    /// cause, a verdict, a filing's state).
    #[arg(long)]
    code: Option<String>,
    /// Only entries of this kind.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(Event::KINDS))]
    kind: Option<String>,
    /// Only entries at or after this time.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    from: Option<Timestamp>,
    /// Only entries before this time.
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    to: Option<Timestamp>,
    /// Print the matching entries' lines as they are in the log.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The export file.
    #[arg(value_name = "EXPORT")]
    export: PathBuf,
    /// The entry's index.
    index: u64,
}

/// The proof file of `verify --receipt`.
#[derive(Deserialize)]
struct ProofFile {
    index: u64,
    /// The entry's line, exactly as logged.
    entry: String,
    /// The signed note of the head the proof leads to.
    checkpoint: String,
    /// Base64 hashes, bottom-up (RFC 9162).
    proof: Vec<String>,
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Export(args) => export(&args),
        AuditCommand::Verify(args) => verify_command(&args),
        AuditCommand::List(args) => list(&args),
        AuditCommand::Show(args) => show(&args),
    }
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin)?;
    let note = client.get_bytes(CHECKPOINT_PATH)?;
    let head = write_export(&args.out, &note, args.page, |start, limit| {
        Ok(client.get_bytes(&format!("{ENTRIES_PATH}?start={start}&limit={limit}"))?)
    })?;
    println!(
        "{}: {} entries of {}, with its signed head (check it with `xborder audit verify {} --vkey …`)",
        args.out.display(),
        head.size,
        head.origin,
        args.out.display()
    );
    Ok(())
}

/// Writes the export of the log up to the signed head `note` to `out`,
/// asking `fetch(start, limit)` for the entries a page at a time. `out`
/// appears only once every entry the head covers is written.
fn write_export(
    out: &Path,
    note: &[u8],
    page: u64,
    mut fetch: impl FnMut(u64, u64) -> anyhow::Result<Bytes>,
) -> anyhow::Result<Checkpoint> {
    let (note, head) = std::str::from_utf8(note)
        .ok()
        .and_then(|note| unverified_head(note).map(|head| (note.to_owned(), head)))
        .context("the admin listener's checkpoint is not a signed checkpoint")?;
    let header = Header {
        origin: head.origin.clone(),
        size: head.size,
        checkpoint: note,
    };
    atomic_file::write_with(out, Readers::Owner, |file| {
        let mut writer = ExportWriter::new(BufWriter::new(file), &header)?;
        while writer.written() < head.size {
            let start = writer.written();
            let limit = page.min(head.size - start);
            let lines = fetch(start, limit)?;
            let lines = page_lines(&lines, limit).map_err(|problem| {
                anyhow::anyhow!(
                    "the admin listener's entries from {start} (limit {limit}): {problem}; the checkpoint covers {} entries",
                    head.size
                )
            })?;
            for line in lines {
                writer.entry(line)?;
            }
        }
        writer.finish()?.into_inner().map_err(|e| e.into_error())?;
        Ok::<_, anyhow::Error>(())
    })
    .with_context(|| format!("--out {}: nothing written", out.display()))?;
    Ok(head)
}

/// The head a note states, without checking its signature: the exporter
/// only needs its size, and `verify` checks the note under the auditor's key.
fn unverified_head(note: &str) -> Option<Checkpoint> {
    let end = note.rfind("\n\n")?;
    Checkpoint::parse(&note[..=end]).ok()
}

/// The entry lines of one NDJSON page: at least one, at most `limit`, none
/// empty; the final newline is optional.
fn page_lines(page: &[u8], limit: u64) -> Result<Vec<&[u8]>, String> {
    let page = page.strip_suffix(b"\n").unwrap_or(page);
    if page.is_empty() {
        return Err("no entries".to_owned());
    }
    let lines: Vec<&[u8]> = page.split(|&b| b == b'\n').collect();
    if lines.iter().any(|line| line.is_empty()) {
        return Err("an empty line".to_owned());
    }
    if lines.len() as u64 > limit {
        return Err(format!("{} entries, more than asked for", lines.len()));
    }
    Ok(lines)
}

fn verify_command(args: &VerifyArgs) -> anyhow::Result<()> {
    let vkey = vkey(args)?;
    match (&args.export, &args.receipt, &args.proof) {
        (Some(path), None, None) => verify_export(path, args.since.as_deref(), &vkey),
        (None, Some(receipt), Some(proof)) => verify_receipt(receipt, proof, &vkey),
        _ => bail!("give an EXPORT, or --receipt with --proof"),
    }
}

fn verify_export(path: &Path, since: Option<&Path>, vkey: &str) -> anyhow::Result<()> {
    let export = read_export(path)?;
    let since = since
        .map(|path| read_note(path).with_context(|| format!("--since {}", path.display())))
        .transpose()?;
    let verified = verify::verify(&export, vkey, since.as_deref()).map_err(|err| {
        let hint = hint(&err, &export);
        anyhow::anyhow!("{err}{hint}")
    })?;
    let since = verified.since.map_or(String::new(), |old| {
        format!(
            ", consistent with the older checkpoint at size {}",
            old.size
        )
    });
    println!(
        "ok: {} entries, root {}, checkpoint signed by {}{since}",
        verified.size,
        STANDARD.encode(verified.root),
        verified.key_name
    );
    Ok(())
}

/// A hint for the mistake an auditor most likely made, as age's CLI does.
fn hint(err: &VerifyError, export: &Export) -> String {
    match err {
        VerifyError::CheckpointSignature {
            why: CheckpointError::NotSigned,
            key_name,
            ..
        } if *key_name != export.header.origin => format!(
            "\n  hint: the export is of the log `{}`, the key is named `{key_name}`; is it this log's key?",
            export.header.origin
        ),
        _ => String::new(),
    }
}

fn verify_receipt(receipt_path: &Path, proof_path: &Path, vkey: &str) -> anyhow::Result<()> {
    let flag = |flag: &str, path: &Path| format!("{flag} {}", path.display());
    let jws =
        std::fs::read_to_string(receipt_path).with_context(|| flag("--receipt", receipt_path))?;
    let receipt = receipt_payload(jws.trim()).with_context(|| flag("--receipt", receipt_path))?;
    let proof_text =
        std::fs::read_to_string(proof_path).with_context(|| flag("--proof", proof_path))?;
    let proof: ProofFile =
        serde_json::from_str(&proof_text).with_context(|| flag("--proof", proof_path))?;
    let hashes = proof
        .proof
        .iter()
        .enumerate()
        .map(|(i, hash)| {
            decode_hash(hash).with_context(|| {
                format!(
                    "{}: proof[{i}] is not a base64 SHA-256 hash",
                    flag("--proof", proof_path)
                )
            })
        })
        .collect::<anyhow::Result<Vec<Hash>>>()?;
    let head = verify::verify_receipt_inclusion(
        proof.entry.as_bytes(),
        proof.index,
        &hashes,
        &proof.checkpoint,
        vkey,
        &receipt,
    )?;
    println!(
        "ok: transfer {} under grant {} is entry {} of {}, in the checkpoint at size {} (only inclusion was checked, not the receipt's signature)",
        receipt.transfer_id, receipt.grant_id, proof.index, head.origin, head.size
    );
    Ok(())
}

/// The receipt in a compact JWS's payload, unchecked.
fn receipt_payload(jws: &str) -> anyhow::Result<Receipt> {
    let mut parts = jws.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a compact JWS (three base64url parts separated by dots)");
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .context("the JWS payload is not base64url")?;
    serde_json::from_slice(&payload).context("the JWS payload is not a transfer receipt")
}

fn decode_hash(text: &str) -> Option<Hash> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

fn vkey(args: &VerifyArgs) -> anyhow::Result<String> {
    match (&args.vkey, &args.vkey_file) {
        (Some(vkey), None) => Ok(vkey.trim().to_owned()),
        (None, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("--vkey-file {}", path.display()))?
            .trim()
            .to_owned()),
        _ => bail!("give one of --vkey and --vkey-file"),
    }
}

/// A signed note from a file, its end normalised to one newline (editors
/// and `curl > file` differ there; the signed text is not affected).
fn read_note(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(format!("{}\n", text.trim_end()))
}

fn read_export(path: &Path) -> anyhow::Result<Export> {
    let file = File::open(path).with_context(|| path.display().to_string())?;
    Export::read_from(BufReader::new(file)).with_context(|| path.display().to_string())
}

/// Each entry of the export, parsed, in order.
fn entries(export: &Export) -> anyhow::Result<Vec<(&[u8], Entry)>> {
    export
        .entries
        .iter()
        .enumerate()
        .map(|(position, line)| {
            Entry::parse(line)
                .map(|entry| (line.as_slice(), entry))
                .with_context(|| {
                    format!(
                        "entry {position}: not a valid audit entry (`xborder audit verify` tells what is wrong)"
                    )
                })
        })
        .collect()
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let export = read_export(&args.export)?;
    let entries = entries(&export)?;
    let matching: Vec<&(&[u8], Entry)> = entries
        .iter()
        .filter(|(_, entry)| matches(args, entry))
        .collect();
    if args.json {
        for (line, _) in matching {
            println!("{}", String::from_utf8_lossy(line));
        }
        return Ok(());
    }
    if matching.is_empty() {
        eprintln!("no entries match");
        return Ok(());
    }
    let none = || "-".to_owned();
    let rows: Vec<Vec<String>> = matching
        .iter()
        .map(|(_, entry)| {
            let event = &entry.event;
            vec![
                entry.index.to_string(),
                admin_client::short_time(entry.at),
                event.kind().to_owned(),
                event.grant().map_or_else(none, |g| g.to_string()),
                event.request().map_or_else(none, |r| r.to_string()),
                event.code().map_or_else(none, str::to_owned),
                event.identities().join(", "),
            ]
        })
        .collect();
    print!(
        "{}",
        admin_client::table(
            &[
                "INDEX",
                "TIME",
                "KIND",
                "GRANT",
                "REQUEST",
                "CODE",
                "IDENTITIES"
            ],
            &rows
        )
    );
    Ok(())
}

/// Whether an entry passes every filter given.
fn matches(args: &ListArgs, entry: &Entry) -> bool {
    let event = &entry.event;
    args.grant.is_none_or(|g| event.grant() == Some(g))
        && args.request.is_none_or(|r| event.request() == Some(r))
        && args
            .peer
            .as_deref()
            .is_none_or(|p| event.identities().contains(&p))
        && args.code.as_deref().is_none_or(|c| event.code() == Some(c))
        && args.kind.as_deref().is_none_or(|k| event.kind() == k)
        && args.from.is_none_or(|from| entry.at >= from)
        && args.to.is_none_or(|to| entry.at < to)
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let export = read_export(&args.export)?;
    let size = export.entries.len();
    let line = usize::try_from(args.index)
        .ok()
        .and_then(|i| export.entries.get(i))
        .with_context(|| {
            format!(
                "{}: no entry {} (it holds {size} entries)",
                args.export.display(),
                args.index
            )
        })?;
    let leaf = merkle::leaf_hash(line);
    let mut fields = vec![
        ("entry", args.index.to_string()),
        (
            "line",
            format!("{} of {}", args.index + 2, args.export.display()),
        ),
        ("leaf hash", hex::encode(leaf)),
        ("leaf hash (base64)", STANDARD.encode(leaf)),
    ];
    let pretty = match Entry::parse(line) {
        Ok(entry) => {
            if entry.index != args.index {
                fields.push((
                    "warning",
                    format!("the entry says it is entry {}", entry.index),
                ));
            }
            serde_json::to_string_pretty(&entry)?
        }
        Err(e) => {
            fields.push(("warning", format!("not a valid audit entry: {e}")));
            String::from_utf8_lossy(line).into_owned()
        }
    };
    print!("{}\n{pretty}\n", admin_client::fields(&fields));
    Ok(())
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text).map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
}
