//! SIGTERM/SIGINT handling for the built-ins: installed before they serve, so an early SIGTERM is never fatal.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Installed SIGTERM and SIGINT handlers; `wait` resolves on the first of them.
#[derive(Debug)]
pub struct ShutdownSignal {
    term: Signal,
    int: Signal,
}

/// Install the handlers (needs a tokio runtime). From now on SIGTERM/SIGINT no longer kill
/// the process; they resolve [`ShutdownSignal::wait`].
pub fn shutdown_signal() -> std::io::Result<ShutdownSignal> {
    Ok(ShutdownSignal {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    })
}

impl ShutdownSignal {
    /// The name of the signal that arrived.
    pub async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
