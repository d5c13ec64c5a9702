//! `skiff.dev/pause`: does nothing until SIGTERM or SIGINT, then exits 0.

/// Sleep until SIGTERM/SIGINT (needs a tokio runtime; a current-thread one is enough).
pub async fn run() -> std::io::Result<()> {
    let signal = super::signal::shutdown_signal()?;
    tracing::info!("pause: waiting for SIGTERM or SIGINT");
    let name = signal.wait().await;
    tracing::info!("{name}: pause exiting");
    Ok(())
}
