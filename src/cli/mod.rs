//! The command line: one file per subcommand; each parses its arguments and
//! calls into the library, and is the one place where errors become messages.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub mod admin_client;
pub mod audit;
pub mod config;
pub mod demo;
pub mod example_upstream;
pub mod fetch;
pub mod grant;
pub mod pki;
pub mod policy;
pub mod report;
pub mod request;
pub mod serve;

#[derive(Parser)]
#[command(
    name = "xborder",
    version,
    about = "Mutual-TLS gateway for evidence that crosses a border"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: border, admin and ops listeners from one config file.
    Serve(serve::ServeArgs),
    /// Check a configuration file and every file it names, then exit.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Development PKI: CAs, gateway, client and admin certificates, age identities.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Walk through one exchange on loopback with a throwaway PKI.
    Demo(demo::DemoArgs),
    /// Fetch evidence under a grant: verify the receipt, decrypt.
    Fetch(fetch::FetchArgs),
    /// Serve the built-in example data service, for trying routes out.
    ExampleUpstream(example_upstream::ExampleUpstreamArgs),
    /// Review filed requests on the admin listener: list, show, approve, deny.
    #[command(subcommand)]
    Request(request::RequestCommand),
    /// Grants on the admin listener: list, show, validate, revoke.
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    /// Explain how the configured policy would decide a request, offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The audit log, for oversight: export it, verify it offline, list and show entries.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Transparency reports, from an audit export or the admin listener.
    #[command(subcommand)]
    Report(report::ReportCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match &cli.command {
        // The demo tells a story on stdout; the gateway's INFO lines on
        // stderr would interleave with it.
        Command::Demo(args) => args.log_level(),
        _ => "info",
    };
    init_logging(cli.log_format, level);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config(cmd) => config::run(cmd),
        Command::Pki(cmd) => pki::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::ExampleUpstream(args) => example_upstream::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Request(cmd) => request::run(cmd),
        Command::Grant(cmd) => grant::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Report(cmd) => report::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", crate::error::chain(&*err));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` refines the level (default `level`).
fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A multi-threaded runtime for the subcommands that serve.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The store runs on the blocking pool behind one connection's lock:
        // more threads than a few only wait for it, and each costs a stack
        // and allocator caches. Unbounded (tokio's default is 512), a burst
        // of 300 transfers spawned hundreds and doubled the p50 latency.
        .max_blocking_threads(8)
        .build()?)
}

/// SIGTERM and SIGINT, listened for from the moment this is created: a
/// signal that arrives before a handler exists would kill the process
/// instead of draining it.
struct ShutdownSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn received(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// Every argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "xborder", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
