//! `xborder report transparency`: a transparency report, either recomputed
//! offline from an audit export (what an oversight body does) or asked of a
//! gateway's admin listener (what the operator publishes).

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use time::OffsetDateTime;

use super::admin_client::{AdminArgs, AdminClient};
use crate::audit::entry::Entry;
use crate::clock::Timestamp;
use crate::report::{ADMIN_PATH, Epsilon, Format, Publication, ReportQuery, Transparency};

#[derive(clap::Subcommand)]
pub enum ReportCommand {
    /// Requests by requester jurisdiction, category and outcome; grants ended
    /// by cause; transfers and bytes. Small counts are suppressed.
    Transparency(TransparencyArgs),
}

#[derive(clap::Args)]
#[command(group(
    clap::ArgGroup::new("source")
        .required(true)
        .multiple(true)
        .args(["export", "admin"])
))]
pub struct TransparencyArgs {
    /// Start of the period, included: requests filed from then on count.
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    from: Timestamp,
    /// End of the period, excluded.
    #[arg(long, value_name = "RFC3339", value_parser = rfc3339)]
    to: Timestamp,
    /// json, csv or markdown.
    #[arg(long, value_name = "FORMAT", default_value = "markdown")]
    format: Format,
    /// Show counts from 1 to K-1 as "<K" (0 or 1: show every count).
    /// Default: 5 with --export, the gateway's setting otherwise.
    #[arg(long, value_name = "K")]
    k: Option<u64>,
    /// Add discrete Laplace noise of scale 1/E to every count (differential
    /// privacy, 0.01 ≤ E ≤ 10; plaintext bytes are then withheld). Default:
    /// none with --export, the gateway's setting otherwise.
    #[arg(long, value_name = "E")]
    epsilon: Option<Epsilon>,
    /// Recompute the report from an audit export (JSON lines: a header line,
    /// then one entry per line) instead of asking a gateway; the admin flags
    /// are then ignored.
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
    /// With --export: outcomes as of this time instead of now, to reproduce a
    /// published report.
    #[arg(long, value_name = "RFC3339", requires = "export", value_parser = rfc3339)]
    as_of: Option<Timestamp>,
    /// The gateway's admin listener, to ask it for the report.
    #[arg(long, env = "XBORDER_ADMIN", value_name = "HOST:PORT")]
    admin: Option<String>,
    /// With --admin: the CA certificate (PEM) that issued the gateway's
    /// server certificate.
    #[arg(long, env = "XBORDER_CA", value_name = "PATH")]
    ca: Option<PathBuf>,
    /// With --admin: our admin client certificate (PEM).
    #[arg(long, env = "XBORDER_CERT", value_name = "PATH")]
    cert: Option<PathBuf>,
    /// With --admin: the private key (PEM) of `--cert`.
    #[arg(long, env = "XBORDER_KEY", value_name = "PATH")]
    key: Option<PathBuf>,
}

impl TransparencyArgs {
    /// The admin flags, which are optional here (unlike in the review
    /// commands) because `--export` needs none of them.
    fn gateway(&self) -> anyhow::Result<AdminArgs> {
        let (Some(admin), Some(ca), Some(cert), Some(key)) =
            (&self.admin, &self.ca, &self.cert, &self.key)
        else {
            bail!(
                "--admin needs --ca, --cert and --key (or XBORDER_CA, XBORDER_CERT, XBORDER_KEY)"
            );
        };
        Ok(AdminArgs {
            admin: admin.clone(),
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            json: false,
        })
    }
}

pub fn run(cmd: ReportCommand) -> anyhow::Result<()> {
    match cmd {
        ReportCommand::Transparency(args) => transparency(args),
    }
}

fn transparency(args: TransparencyArgs) -> anyhow::Result<()> {
    let query = ReportQuery {
        from: args.from,
        to: args.to,
        format: args.format,
        k: args.k,
        epsilon: args.epsilon,
    };
    // The same checks the admin listener makes, named by flag.
    if let Err(e) = ReportQuery::parse(&query.to_query_string()) {
        let problems: Vec<String> =
            e.0.iter()
                .map(|p| format!("--{}: {}", p.field, p.problem))
                .collect();
        bail!("{}", problems.join("\n"));
    }
    let body = match &args.export {
        Some(export) => {
            let now = args
                .as_of
                .unwrap_or_else(|| Timestamp::from_datetime(OffsetDateTime::now_utc()));
            if query.from > now {
                bail!("--from: the period starts after {now}");
            }
            let report = from_export(export, &query, now)?;
            let published = report.publish(
                &query.publication(&Publication::default()),
                &mut rand::thread_rng(),
            );
            query.format.render(&published)
        }
        None => AdminClient::new(&args.gateway()?)?
            .get_text(&format!("{ADMIN_PATH}?{}", query.to_query_string()))?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(body.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Counts the entries of an export as they are read, without holding them.
fn from_export(path: &Path, query: &ReportQuery, now: Timestamp) -> anyhow::Result<Transparency> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut lines = BufReader::new(file).lines().zip(1_u64..);
    let Some((header, _)) = lines.next() else {
        bail!("{shown} is empty; an audit export starts with a header line");
    };
    let header = header.with_context(|| format!("cannot read {shown}"))?;
    let is_object = serde_json::from_str::<serde_json::Value>(&header).is_ok_and(|v| v.is_object());
    if !is_object || Entry::parse(header.as_bytes()).is_ok() {
        bail!("{shown}:1: not an audit export header (a JSON object before the first entry)");
    }

    let mut problem = None;
    let entries = lines
        .filter(|(line, _)| line.as_ref().map_or(true, |l| !l.is_empty()))
        .map_while(|(line, number)| {
            let entry = line
                .with_context(|| format!("cannot read {shown}"))
                .and_then(|line| {
                    Entry::parse(line.as_bytes())
                        .with_context(|| format!("{shown}:{number}: not an audit entry"))
                });
            entry.map_err(|e| problem = Some(e)).ok()
        });
    let report = Transparency::from_entries(entries, query.from, query.to, now);
    match problem {
        Some(problem) => Err(problem),
        None => Ok(report),
    }
}

fn rfc3339(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse(text)
        .map_err(|_| format!("`{text}` is not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)"))
}
