//! `xborder serve`: run a gateway until SIGTERM or SIGINT.

use std::path::PathBuf;

use crate::config::Config;
use crate::server::Gateway;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The gateway's configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Bad configuration exits here, before any port is bound.
    let config = Config::load(&args.config)?;
    super::runtime()?.block_on(async {
        let shutdown = super::ShutdownSignal::install()?;
        let gateway = Gateway::bind(config).await?;
        gateway.run(shutdown.received()).await;
        Ok(())
    })
}
