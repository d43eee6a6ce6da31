//! `xborder pki`: make the development PKI (see [`crate::pki`]).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, bail};

use crate::identity::Jurisdiction;
use crate::pki;

#[derive(clap::Subcommand)]
pub enum PkiCommand {
    /// Write a development PKI: per jurisdiction a CA, CRL, gateway, client
    /// and admin certificates, an age identity and a runnable gateway.toml.
    /// Never use it in production.
    Dev(DevArgs),
}

#[derive(clap::Args)]
pub struct DevArgs {
    /// Directory to write into; each jurisdiction gets a subdirectory (`ee/`).
    #[arg(long)]
    out: PathBuf,
    /// Jurisdictions of the set, comma-separated; every gateway trusts all of them.
    #[arg(long, value_delimiter = ',', default_value = "EE,FI")]
    jurisdictions: Vec<String>,
    /// Replace files that already exist in --out.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Dev(args) => dev(args),
    }
}

fn dev(args: DevArgs) -> anyhow::Result<()> {
    let jurisdictions = parse_jurisdictions(&args.jurisdictions)?;
    if !args.force {
        // Keys are irreplaceable once configs and peers point at them, so
        // overwriting takes an explicit --force.
        if let Some(existing) = pki::dev_set_paths(&args.out, &jurisdictions)
            .into_iter()
            .find(|path| path.symlink_metadata().is_ok())
        {
            bail!(
                "{} already exists; pass --force to replace the dev PKI in {}",
                existing.display(),
                args.out.display()
            );
        }
    }
    let written = pki::write_dev_set(&args.out, &jurisdictions)
        .with_context(|| format!("writing the dev PKI to {}", args.out.display()))?;

    let width = written
        .iter()
        .map(|file| file.path.display().to_string().len())
        .max()
        .unwrap_or(0);
    for file in &written {
        let secret = if file.secret { " (secret, 0600)" } else { "" };
        println!(
            "{:<width$}  {}{secret}",
            file.path.display().to_string(),
            file.what
        );
    }
    if let Some(first) = jurisdictions.first() {
        println!(
            "\nStart {first}'s gateway: xborder serve --config {}",
            pki::dev_set_dir(&args.out, first)
                .join("gateway.toml")
                .display()
        );
    }
    Ok(())
}

fn parse_jurisdictions(values: &[String]) -> anyhow::Result<Vec<Jurisdiction>> {
    let mut jurisdictions: Vec<Jurisdiction> = Vec::with_capacity(values.len());
    for value in values {
        let jurisdiction = Jurisdiction::from_str(value.trim()).context("--jurisdictions")?;
        if jurisdictions.contains(&jurisdiction) {
            bail!("--jurisdictions: {jurisdiction} is listed twice");
        }
        jurisdictions.push(jurisdiction);
    }
    Ok(jurisdictions)
}
