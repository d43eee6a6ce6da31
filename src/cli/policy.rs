//! `xborder policy explain`: how the configured policy would decide a request
//! body, before anyone files it. Reads the config and the body; touches no
//! store and no network.
//!
//! Exit status: 0 admissible, 1 refused at filing (a hard rule fails),
//! 2 nothing to evaluate (the request file or the config is unusable). The
//! refusal goes through the usual error path of `main`; the one exit with 2
//! is taken here, in [`run`], because `main` maps every error to 1.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors};
use crate::identity::Jurisdiction;
use crate::policy::{Evaluation, Verdict};
use crate::request::{FieldError, RequestBody, Urgency};

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a request body (as for `POST /v1/requests`) against the
    /// config's policy and list every rule's finding. Exit 0 admissible,
    /// 1 refused, 2 invalid input.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// The gateway's configuration; its `jurisdiction` is the data holder.
    #[arg(long, short)]
    config: PathBuf,
    /// The requesting jurisdiction (default: the first other jurisdiction in `[trust]`).
    #[arg(long, value_name = "CC")]
    requester: Option<Jurisdiction>,
    /// The request body (JSON); `-` reads standard input.
    #[arg(value_name = "REQUEST.json")]
    request: PathBuf,
}

/// Why there is nothing to evaluate.
#[derive(Debug, thiserror::Error)]
enum ExplainError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a request body: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: invalid request:{}", path.display(), list(errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
    #[error("--requester is required: {} trusts no jurisdiction but its own ({holder})", config.display())]
    NoRequester {
        config: PathBuf,
        holder: Jurisdiction,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("\n  {}: {}", e.field, e.problem))
        .collect()
}

/// What policy decided.
enum Decision {
    Admissible,
    Refused,
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Explain(args) = cmd;
    match explain(&args) {
        Ok(Decision::Admissible) => Ok(()),
        Ok(Decision::Refused) => anyhow::bail!("the request would be refused at filing"),
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}

fn explain(args: &ExplainArgs) -> Result<Decision, ExplainError> {
    let config = Config::load(&args.config)?;
    let holder = &config.jurisdiction;
    let requester = match &args.requester {
        Some(requester) => requester.clone(),
        None => config
            .trust
            .keys()
            .find(|j| *j != holder)
            .cloned()
            .ok_or_else(|| ExplainError::NoRequester {
                config: args.config.clone(),
                holder: holder.clone(),
            })?,
    };
    let body = read_body(&args.request)?;
    let scope = body.validate().map_err(|errors| ExplainError::Invalid {
        path: args.request.clone(),
        errors,
    })?;
    let now = Clock::system().now();
    let evaluation = config.policies.evaluate(holder, &requester, &scope, now);

    let pair = format!("{holder} → {requester}");
    let header = match config.policies.pair(holder, &requester) {
        Some(policy) => {
            let (due, kind) = match scope.urgency {
                Urgency::Normal => (policy.response_deadline, "normal"),
                Urgency::Emergency => (policy.response_deadline_emergency, "emergency"),
            };
            format!(
                "policy {pair} ({})  response due within {} ({kind} request; by {})",
                evaluation.policy_hash.chars().take(12).collect::<String>(),
                span(due),
                super::admin_client::short_time(evaluation.deadline),
            )
        }
        None => format!("policy {pair}: none configured (denied by default)"),
    };
    println!("{header}");
    for finding in &evaluation.findings {
        println!("{finding}");
    }
    println!("{}", verdict(&evaluation));
    Ok(if evaluation.refused() {
        Decision::Refused
    } else {
        Decision::Admissible
    })
}

fn read_body(path: &Path) -> Result<RequestBody, ExplainError> {
    let read_error = |source| ExplainError::Read {
        path: path.to_owned(),
        source,
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(read_error)?;
        text
    } else {
        std::fs::read_to_string(path).map_err(read_error)?
    };
    serde_json::from_str(&text).map_err(|source| ExplainError::Json {
        path: path.to_owned(),
        source,
    })
}

/// The last line: what a filing would get.
fn verdict(evaluation: &Evaluation) -> String {
    if evaluation.refused() {
        return format!(
            "REFUSED at filing: {} hard rule(s) fail",
            evaluation.failures().count()
        );
    }
    let review: Vec<&str> = evaluation
        .findings
        .iter()
        .filter(|f| f.verdict == Verdict::NeedsReview)
        .map(|f| f.rule.as_str())
        .collect();
    if review.is_empty() {
        "ADMISSIBLE".to_owned()
    } else {
        format!("ADMISSIBLE: needs review of {}", review.join(", "))
    }
}

/// A deadline as the regulation states it: whole days or hours when it is.
fn span(d: Duration) -> String {
    const HOUR: u64 = 3600;
    const DAY: u64 = 24 * HOUR;
    match d.as_secs() {
        s if s > 0 && s.is_multiple_of(DAY) => format!("{} day(s)", s / DAY),
        s if s > 0 && s.is_multiple_of(HOUR) => format!("{} hour(s)", s / HOUR),
        _ => humantime::format_duration(d).to_string(),
    }
}
