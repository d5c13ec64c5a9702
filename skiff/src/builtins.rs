//! The built-in images as subcommands: `skiff echo`, and the hidden `skiff grpc-echo` and `skiff pause`.

use anyhow::Context as _;
use skiff_node::images::{echo, grpc_echo, pause};

use crate::cli::{EchoArgs, GrpcEchoArgs};

pub fn echo(args: &EchoArgs) -> anyhow::Result<()> {
    let mut config = echo::EchoConfig::new(args.port);
    config.host = args.listen;
    runtime()?.block_on(echo::serve(config))?;
    Ok(())
}

pub fn grpc_echo(args: &GrpcEchoArgs) -> anyhow::Result<()> {
    let mut config = grpc_echo::GrpcEchoConfig::new(args.port);
    config.host = args.listen;
    runtime()?.block_on(grpc_echo::serve(config))?;
    Ok(())
}

pub fn pause() -> anyhow::Result<()> {
    // One thread is plenty to wait for a signal; a pod may run many pause containers.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(pause::run())
        .context("cannot wait for SIGTERM/SIGINT")
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}
