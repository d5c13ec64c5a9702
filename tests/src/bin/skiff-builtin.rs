//! The built-in images outside the `skiff` binary, for tests: `skiff-builtin echo|grpc-echo|pause
//! [--port N] [--listen IP]`, the same argv an `ImageResolver` entrypoint gets.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use skiff_node::images::{echo, grpc_echo, pause};

#[derive(Debug, Parser)]
#[command(name = "skiff-builtin")]
struct Cli {
    #[command(subcommand)]
    image: Image,
}

#[derive(Debug, Subcommand)]
enum Image {
    Echo {
        #[arg(long, env = "PORT", default_value_t = echo::DEFAULT_PORT)]
        port: u16,
        #[arg(long, value_name = "IP")]
        listen: Option<IpAddr>,
    },
    GrpcEcho {
        #[arg(long, env = "PORT", default_value_t = grpc_echo::DEFAULT_PORT)]
        port: u16,
        #[arg(long, value_name = "IP")]
        listen: Option<IpAddr>,
    },
    Pause,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse().image) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(image: Image) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match image {
        Image::Echo { port, listen } => {
            let mut config = echo::EchoConfig::new(port);
            config.host = listen;
            runtime.block_on(echo::serve(config))?;
        }
        Image::GrpcEcho { port, listen } => {
            let mut config = grpc_echo::GrpcEchoConfig::new(port);
            config.host = listen;
            runtime.block_on(grpc_echo::serve(config))?;
        }
        Image::Pause => runtime.block_on(pause::run())?,
    }
    Ok(())
}
