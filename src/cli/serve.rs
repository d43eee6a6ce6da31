//! `xborder serve`: run a gateway until SIGTERM or SIGINT.

use std::path::PathBuf;

use crate::config::Config;
use crate::server::{Gateway, Listeners};

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
        // Every file is checked before a port is bound.
        let listeners = config.listeners.clone();
        let gateway = Gateway::build(config).await?;
        let listeners = Listeners::bind(&listeners).await?;
        gateway.serve(listeners, shutdown.received()).await?;
        Ok(())
    })
}
