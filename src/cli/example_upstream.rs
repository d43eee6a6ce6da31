//! `xborder example-upstream`: the built-in example data service on its own.

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::upstream_example;

#[derive(clap::Args)]
pub struct ExampleUpstreamArgs {
    /// Address to listen on (plain HTTP; keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
}

pub fn run(args: ExampleUpstreamArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async {
        let shutdown = super::ShutdownSignal::install()?;
        let stop = CancellationToken::new();
        let addr = upstream_example::spawn(args.listen, stop.clone()).await?;
        println!(
            "example upstream on http://{addr}: GET /subscriber/{{target}}, GET /content/{{target}}?bytes=N, POST /content/{{target}}"
        );
        shutdown.received().await;
        stop.cancel();
        Ok(())
    })
}
