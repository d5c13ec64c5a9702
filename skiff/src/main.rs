//! The `skiff` binary: command line, configuration and wiring of the components. Thin.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let (name, issue) = match command {
        Command::Up(_) => ("skiff up", "the kubelet issue (#6)"),
        Command::Server(_) => ("skiff server", "the API server and kubelet issues (#4, #6)"),
        Command::Agent(_) => (
            "skiff agent",
            "the kubelet, proxy, DNS and ingress issues (#6-#9)",
        ),
        Command::Bench(_) => ("skiff bench", "the benchmarking issue (#10)"),
        Command::Echo(_) => ("skiff echo", "the kubelet issue (#6, built-in images)"),
    };
    anyhow::bail!(
        "`{name}` is not implemented yet in this build of skiff {}: it arrives with {issue}. Nothing was started.",
        env!("CARGO_PKG_VERSION")
    )
}
