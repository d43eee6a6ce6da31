//! `xborder config check`: validate a configuration and the files it names.

use std::path::PathBuf;

use anyhow::bail;

use crate::config::{Checked, Config, ConfigErrors};

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Report every problem in a configuration file; exit non-zero if any.
    Check {
        /// The gateway's configuration file (TOML); relative paths in it are
        /// read from its directory.
        #[arg(long, short, value_name = "PATH")]
        config: PathBuf,
    },
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { config: path } = cmd;
    let Checked { config, errors } = Config::check(&path);
    let mut problems = errors;
    match &config {
        // Files are checked even when values elsewhere were bad: every
        // problem at once, not one stage at a time.
        Some(config) => {
            let files = crate::server::check_files(config).err();
            for error in files.into_iter().flat_map(|e| e.0) {
                if !problems.contains(&error) {
                    problems.push(error);
                }
            }
        }
        None => eprintln!(
            "{}: the files it names were not checked: the problems below leave no \
             configuration to check them against",
            path.display()
        ),
    }
    if !problems.is_empty() {
        let count = problems.len();
        eprintln!("{}", ConfigErrors(problems));
        bail!("{} has {count} problem(s)", path.display());
    }
    let Some(config) = config else {
        bail!("{}: no configuration", path.display());
    };
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
