//! `xborder config check`: validate a configuration and the files it names.

use std::path::PathBuf;

use anyhow::bail;

use crate::config::{Config, ConfigErrors};
use crate::tls::ServerTls;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Report every problem in a configuration file; exit non-zero if any.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { config: path } = cmd;
    let config = Config::load(&path)?;
    let mut problems = Vec::new();
    if let Err(errors) = ServerTls::load(&config) {
        problems.extend(errors);
    }
    if let Err(errors) = crate::server::load_tokens(&config) {
        problems.extend(errors.0);
    }
    if config.identity.client_certificate.is_some()
        && let Err(errors) = crate::tls::client_config(&config)
    {
        for error in errors {
            if !problems.contains(&error) {
                problems.push(error);
            }
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        eprintln!("{}", ConfigErrors(problems));
        bail!("{} has {count} problem(s)", path.display());
    }
    println!(
        "{}: ok ({} trust anchor(s), {} route(s), {} admin(s), {} pair polic(ies))",
        path.display(),
        config.trust.len(),
        config.routes.len(),
        config.admins.len(),
        config.policies.len()
    );
    Ok(())
}
