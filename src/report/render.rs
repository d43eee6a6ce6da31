//! A published report as JSON, CSV and Markdown.
//!
//! Hidden values: in JSON a `null`, named in its row's `suppressed` list (the
//! `publication` object says why: below `k`, or bytes withheld under noise);
//! in CSV and Markdown `<k` for a suppressed count, `suppressed` for bytes
//! summed over fewer than k transfers, `withheld` for bytes under noise.

use serde::Serialize;

use super::{Cell, Outcome, Published};
use crate::clock::Timestamp;

/// What a hidden value stands for, which decides how text shows it.
#[derive(Clone, Copy)]
enum Kind {
    Count,
    Bytes,
}

impl Published {
    /// Pretty JSON, one object; see the module docs for hidden values.
    pub fn to_json(&self) -> String {
        let report = JsonReport {
            report: "transparency",
            period: JsonPeriod {
                from: self.from,
                to: self.to,
            },
            as_of: self.as_of,
            publication: JsonPublication {
                k: self.k,
                epsilon: self.epsilon.map(|e| e.value()),
                plaintext_bytes: if self.epsilon.is_some() {
                    "withheld"
                } else {
                    "published"
                },
            },
            notes: self.notes(),
            requests: self
                .requests
                .iter()
                .map(|r| JsonRequests {
                    jurisdiction: &r.cell.jurisdiction,
                    category: &r.cell.category,
                    outcome: r.cell.outcome.as_str(),
                    count: shown(r.count),
                    suppressed: hidden(&[("count", r.count)]),
                })
                .collect(),
            grants_ended: self
                .grants_ended
                .iter()
                .map(|e| JsonEndings {
                    cause: &e.cause,
                    count: shown(e.count),
                    suppressed: hidden(&[("count", e.count)]),
                })
                .collect(),
            transfers: self
                .transfers
                .iter()
                .map(|t| JsonTransfers {
                    jurisdiction: &t.cell.jurisdiction,
                    category: &t.cell.category,
                    complete: shown(t.complete),
                    incomplete: shown(t.incomplete),
                    plaintext_bytes: shown(t.plaintext_bytes),
                    suppressed: hidden(&[
                        ("complete", t.complete),
                        ("incomplete", t.incomplete),
                        ("plaintext_bytes", t.plaintext_bytes),
                    ]),
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&report).expect("a report always serialises");
        text.push('\n');
        text
    }

    /// RFC 4180 CSV, CRLF line ends, one header line, one line per value:
    /// `from,to,section,jurisdiction,category,measure,value`, where `measure`
    /// is the outcome (requests), the cause (grants_ended) or `complete`,
    /// `incomplete`, `plaintext_bytes` (transfers).
    pub fn to_csv(&self) -> String {
        let (from, to) = (self.from.to_string(), self.to.to_string());
        let mut out = String::new();
        let mut line = |fields: &[&str]| {
            let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        };
        line(&[
            "from",
            "to",
            "section",
            "jurisdiction",
            "category",
            "measure",
            "value",
        ]);
        for r in &self.requests {
            line(&[
                &from,
                &to,
                "requests",
                &r.cell.jurisdiction,
                &r.cell.category,
                r.cell.outcome.as_str(),
                &self.text(r.count, Kind::Count),
            ]);
        }
        for e in &self.grants_ended {
            let count = self.text(e.count, Kind::Count);
            line(&[&from, &to, "grants_ended", "", "", &e.cause, &count]);
        }
        for t in &self.transfers {
            for (measure, cell, kind) in [
                ("complete", t.complete, Kind::Count),
                ("incomplete", t.incomplete, Kind::Count),
                ("plaintext_bytes", t.plaintext_bytes, Kind::Bytes),
            ] {
                line(&[
                    &from,
                    &to,
                    "transfers",
                    &t.cell.jurisdiction,
                    &t.cell.category,
                    measure,
                    &self.text(cell, kind),
                ]);
            }
        }
        out
    }

    /// A Markdown document: a heading per table, then notes on counting,
    /// suppression and noise.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Transparency report\n\nRequests filed from {} up to (not including) {}, \
             with their outcome as of {}; grants that ended and transfers that \
             completed in the same period.\n",
            self.from, self.to, self.as_of
        );

        out.push_str("\n## Requests by requester jurisdiction, category and outcome\n\n");
        if self.requests.is_empty() {
            out.push_str("No requests were filed in the period.\n");
        } else {
            let mut header = vec!["jurisdiction", "category"];
            header.extend(Outcome::ALL.map(Outcome::as_str));
            let rows: Vec<Vec<String>> = self
                .requests
                .chunk_by(|a, b| {
                    (&a.cell.jurisdiction, &a.cell.category)
                        == (&b.cell.jurisdiction, &b.cell.category)
                })
                .map(|cells| {
                    let mut row = vec![
                        md_text(&cells[0].cell.jurisdiction),
                        md_text(&cells[0].cell.category),
                    ];
                    row.extend(Outcome::ALL.map(|outcome| {
                        cells
                            .iter()
                            .find(|c| c.cell.outcome == outcome)
                            .map_or_else(String::new, |c| self.text(c.count, Kind::Count))
                    }));
                    row
                })
                .collect();
            md_table(&mut out, &header, 2, &rows);
        }

        out.push_str("\n## Grants ended, by cause\n\n");
        let rows: Vec<Vec<String>> = self
            .grants_ended
            .iter()
            .map(|e| vec![md_text(&e.cause), self.text(e.count, Kind::Count)])
            .collect();
        md_table(&mut out, &["cause", "grants"], 1, &rows);

        out.push_str("\n## Transfers completed, by grantee jurisdiction and category\n\n");
        if self.transfers.is_empty() {
            out.push_str("No transfers completed in the period.\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .transfers
                .iter()
                .map(|t| {
                    vec![
                        md_text(&t.cell.jurisdiction),
                        md_text(&t.cell.category),
                        self.text(t.complete, Kind::Count),
                        self.text(t.incomplete, Kind::Count),
                        self.text(t.plaintext_bytes, Kind::Bytes),
                    ]
                })
                .collect();
            md_table(
                &mut out,
                &[
                    "jurisdiction",
                    "category",
                    "complete",
                    "incomplete",
                    "plaintext bytes",
                ],
                2,
                &rows,
            );
        }

        out.push_str("\n## Notes\n\n");
        for note in self.notes() {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    /// How to read the report: counting, outcomes, suppression, noise.
    fn notes(&self) -> Vec<String> {
        let k = self.k;
        let mut notes = vec![
            "A request for several data categories is counted once under each of them, \
             so counts per category add up to more than the number of requests."
                .to_owned(),
            "Outcomes: approved (a grant was issued), denied (by a reviewer), refused \
             (by policy when filed), pending (awaiting review within its response deadline), \
             overdue (awaiting review past it)."
                .to_owned(),
        ];
        notes.push(if k > 1 {
            format!(
                "Suppression: a count from 1 to {} is shown as \"<{k}\" (null in JSON), and \
                 plaintext bytes summed over fewer than {k} transfers as \"suppressed\", so \
                 that small groups cannot be told apart. 0 means none.",
                k - 1
            )
        } else {
            "Suppression: none; every count is shown.".to_owned()
        });
        notes.push(match self.epsilon {
            Some(epsilon) => format!(
                "Noise: every count has discrete Laplace noise of scale {} (epsilon = {epsilon}) \
                 added, an integer, and is clamped at 0, before suppression, so counts are not exact and \
                 each is epsilon-differentially private for a single request, grant ending \
                 or transfer. Plaintext bytes are withheld (\"withheld\", null in JSON): a \
                 byte sum cannot be protected that way.",
                epsilon.scale()
            ),
            None => "Noise: none; counts are exact.".to_owned(),
        });
        notes
    }

    fn text(&self, cell: Cell, kind: Kind) -> String {
        match (cell, kind) {
            (Cell::Shown(n), _) => n.to_string(),
            (Cell::Suppressed, Kind::Count) => format!("<{}", self.k),
            (Cell::Suppressed, Kind::Bytes) => "suppressed".to_owned(),
            (Cell::Withheld, _) => "withheld".to_owned(),
        }
    }
}

// The JSON form, fields in the order they print.

#[derive(Serialize)]
struct JsonReport<'a> {
    report: &'static str,
    period: JsonPeriod,
    as_of: Timestamp,
    publication: JsonPublication,
    notes: Vec<String>,
    requests: Vec<JsonRequests<'a>>,
    grants_ended: Vec<JsonEndings<'a>>,
    transfers: Vec<JsonTransfers<'a>>,
}

#[derive(Serialize)]
struct JsonPeriod {
    from: Timestamp,
    /// Excluded.
    to: Timestamp,
}

#[derive(Serialize)]
struct JsonPublication {
    k: u64,
    epsilon: Option<f64>,
    plaintext_bytes: &'static str,
}

#[derive(Serialize)]
struct JsonRequests<'a> {
    jurisdiction: &'a str,
    category: &'a str,
    outcome: &'static str,
    count: Option<u64>,
    suppressed: Vec<&'static str>,
}

#[derive(Serialize)]
struct JsonEndings<'a> {
    cause: &'a str,
    count: Option<u64>,
    suppressed: Vec<&'static str>,
}

#[derive(Serialize)]
struct JsonTransfers<'a> {
    jurisdiction: &'a str,
    category: &'a str,
    complete: Option<u64>,
    incomplete: Option<u64>,
    plaintext_bytes: Option<u64>,
    suppressed: Vec<&'static str>,
}

/// A shown value, or `null`.
fn shown(cell: Cell) -> Option<u64> {
    match cell {
        Cell::Shown(n) => Some(n),
        Cell::Suppressed | Cell::Withheld => None,
    }
}

/// The names of the values that are not shown.
fn hidden(cells: &[(&'static str, Cell)]) -> Vec<&'static str> {
    cells
        .iter()
        .filter(|(_, cell)| shown(*cell).is_none())
        .map(|(name, _)| *name)
        .collect()
}

/// A field quoted per RFC 4180 when it holds a comma, a quote or a line end.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// A pipe table; the first `keys` columns left-aligned, the rest right.
fn md_table(out: &mut String, header: &[&str], keys: usize, rows: &[Vec<String>]) {
    out.push_str(&format!("| {} |\n|", header.join(" | ")));
    for i in 0..header.len() {
        out.push_str(if i < keys { " --- |" } else { " ---: |" });
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
}

/// A label from the log as inert Markdown text: ASCII punctuation that
/// Markdown could read as syntax (or HTML) is backslash-escaped, line ends
/// and other control characters become spaces.
fn md_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push(' ');
        } else if c.is_ascii_punctuation() && !matches!(c, '_' | '-' | '.' | ':' | '/') {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    out
}
