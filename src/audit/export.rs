//! The audit export file: what an oversight body takes away and verifies
//! offline (`audit::verify`, `xborder audit verify`).
//!
//! JSON lines. Line 1 is the header:
//!
//! ```text
//! {"format":"xborder-audit-export","version":1,"origin":"<origin>","size":N,"checkpoint":"<signed note>"}
//! ```
//!
//! and lines 2 to N+1 are the log's entries, in index order, each exactly the
//! bytes the gateway hashed into the tree followed by `\n`. Nothing here
//! checks signatures or hashes: [`read_from`](Export::read_from) only
//! refuses files that are not exports at all, so that a tampered export
//! still reads and the verifier can name what was tampered with.
//!
//! This module owns the format: [`Export`] reads and writes a whole file,
//! [`ExportWriter`] writes one entry at a time for an exporter that pages
//! through a log too large to hold.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// The header's `format`.
pub const FORMAT: &str = "xborder-audit-export";
/// The header's `version`; readers refuse others.
pub const VERSION: u32 = 1;
/// The longest line (header or entry) a reader accepts, without its `\n`.
/// An entry is a few hundred bytes; the bound keeps a hostile file from
/// making the reader allocate without end.
pub const MAX_LINE: usize = 1 << 20;

/// Line 1 of an export: which log, how many entries, and its signed head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The log's origin, as its checkpoints carry it.
    pub origin: String,
    /// The number of entries that follow, the checkpoint's size.
    pub size: u64,
    /// The signed note (C2SP checkpoint) of the tree head at `size`.
    pub checkpoint: String,
}

/// A whole export in memory: its header and the entries' exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub header: Header,
    /// Entry `i` at position `i`, as the file holds it (no `\n`).
    pub entries: Vec<Vec<u8>>,
}

/// Why a file could not be read as an export. Each names its line (1 is
/// the header, 2 is entry 0).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("line {line}: {source}")]
    Io { line: u64, source: io::Error },
    #[error("line {line}: longer than {MAX_LINE} bytes")]
    LineTooLong { line: u64 },
    #[error("line {line}: ends without a newline (a truncated export?)")]
    NoFinalNewline { line: u64 },
    #[error("line {line}: empty")]
    EmptyLine { line: u64 },
    #[error("the file is empty, not an xborder audit export")]
    Empty,
    #[error("line 1: not an xborder audit export header: {why}")]
    Header { why: String },
    #[error("line 1: export format version {found}; this xborder reads version {VERSION}")]
    Version { found: u64 },
}

/// The header as it is written.
#[derive(Serialize)]
struct HeaderLine<'a> {
    format: &'a str,
    version: u32,
    origin: &'a str,
    size: u64,
    checkpoint: &'a str,
}

/// What a reader looks at first, before it knows the version's fields.
#[derive(Deserialize)]
struct Preamble {
    format: String,
    version: u64,
}

/// Version 1's header as it is read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    /// Checked through [`Preamble`].
    #[serde(rename = "format")]
    _format: serde::de::IgnoredAny,
    #[serde(rename = "version")]
    _version: serde::de::IgnoredAny,
    origin: String,
    size: u64,
    checkpoint: String,
}

impl Header {
    /// The header line, without its `\n`.
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(&HeaderLine {
            format: FORMAT,
            version: VERSION,
            origin: &self.origin,
            size: self.size,
            checkpoint: &self.checkpoint,
        })
        .expect("a header of strings and a number always serialises")
    }

    /// Parses line 1.
    pub fn parse(line: &[u8]) -> Result<Self, ExportError> {
        let why = |e: serde_json::Error| ExportError::Header { why: e.to_string() };
        let preamble: Preamble = serde_json::from_slice(line).map_err(why)?;
        if preamble.format != FORMAT {
            return Err(ExportError::Header {
                why: format!("`format` is `{}`, not `{FORMAT}`", preamble.format),
            });
        }
        if preamble.version != u64::from(VERSION) {
            return Err(ExportError::Version {
                found: preamble.version,
            });
        }
        let header: HeaderV1 = serde_json::from_slice(line).map_err(why)?;
        Ok(Self {
            origin: header.origin,
            size: header.size,
            checkpoint: header.checkpoint,
        })
    }
}

impl Export {
    /// Writes the file as it is held, even when the header's size and the
    /// entries disagree (a faithful copy of what was read); producers of new
    /// exports use [`ExportWriter`], which refuses to finish a short one.
    pub fn write_to(&self, out: impl Write) -> io::Result<()> {
        let mut out = out;
        write_line(&mut out, &self.header.to_line())?;
        for entry in &self.entries {
            check_entry(entry)?;
            write_line(&mut out, entry)?;
        }
        out.flush()
    }

    /// Reads a whole export. Lines are bounded by [`MAX_LINE`]; every line
    /// must end in `\n` and none may be empty. The entries are not parsed
    /// here: that, and every other check, is `audit::verify`'s.
    pub fn read_from(reader: impl BufRead) -> Result<Self, ExportError> {
        let mut reader = reader;
        let mut buf = Vec::new();
        if !read_line(&mut reader, &mut buf, 1)? {
            return Err(ExportError::Empty);
        }
        let header = Header::parse(&buf)?;
        let mut entries = Vec::new();
        let mut line = 2;
        while read_line(&mut reader, &mut buf, line)? {
            entries.push(buf.clone());
            line += 1;
        }
        Ok(Self { header, entries })
    }
}

/// Writes an export one entry at a time: the header first, then entries as
/// they come (a page at a time from the admin API), so the exporter never
/// holds the log. The export is complete only when [`finish`](Self::finish)
/// returns `Ok`, which it does only if exactly `header.size` entries were
/// written; write into a temporary file and publish it after that.
#[must_use = "an export is complete only once `finish` returns Ok"]
pub struct ExportWriter<W: Write> {
    out: W,
    size: u64,
    written: u64,
}

impl<W: Write> ExportWriter<W> {
    /// Writes the header.
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut out = out;
        let line = header.to_line();
        if line.len() > MAX_LINE {
            return Err(invalid(format!(
                "the header is longer than {MAX_LINE} bytes"
            )));
        }
        write_line(&mut out, &line)?;
        Ok(Self {
            out,
            size: header.size,
            written: 0,
        })
    }

    /// Writes the next entry's exact bytes.
    pub fn entry(&mut self, entry: &[u8]) -> io::Result<()> {
        if self.written == self.size {
            return Err(invalid(format!(
                "more entries than the {} the header announces",
                self.size
            )));
        }
        check_entry(entry).map_err(|e| invalid(format!("entry {}: {}", self.written, e)))?;
        write_line(&mut self.out, entry)?;
        self.written += 1;
        Ok(())
    }

    /// How many entries were written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks that every announced entry was written, flushes, and hands
    /// back the output.
    pub fn finish(self) -> io::Result<W> {
        let mut out = self.out;
        if self.written != self.size {
            return Err(invalid(format!(
                "the export is short: {} of the {} entries the header announces",
                self.written, self.size
            )));
        }
        out.flush()?;
        Ok(out)
    }
}

/// An entry must stay one non-empty line of bounded length, or the file
/// would read back as something else.
fn check_entry(entry: &[u8]) -> io::Result<()> {
    if entry.is_empty() {
        return Err(invalid("an entry is empty".to_owned()));
    }
    if entry.contains(&b'\n') {
        return Err(invalid("an entry contains a newline".to_owned()));
    }
    if entry.len() > MAX_LINE {
        return Err(invalid(format!("an entry is longer than {MAX_LINE} bytes")));
    }
    Ok(())
}

fn write_line(out: &mut impl Write, line: &[u8]) -> io::Result<()> {
    out.write_all(line)?;
    out.write_all(b"\n")
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Reads line number `line` into `buf`, without its `\n`, never holding
/// more than [`MAX_LINE`] bytes of it. `false` at the end of the file.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, line: u64) -> Result<bool, ExportError> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(ExportError::Io { line, source }),
        };
        if available.is_empty() {
            return if buf.is_empty() {
                Ok(false)
            } else {
                Err(ExportError::NoFinalNewline { line })
            };
        }
        let (chunk, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > MAX_LINE {
            return Err(ExportError::LineTooLong { line });
        }
        buf.extend_from_slice(chunk);
        let used = chunk.len() + usize::from(ended);
        reader.consume(used);
        if ended {
            return if buf.is_empty() {
                Err(ExportError::EmptyLine { line })
            } else {
                Ok(true)
            };
        }
    }
}
