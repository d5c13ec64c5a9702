//! Container probes (startup, liveness, readiness): handlers, thresholds and the per-container prober.

mod grpc;
mod handler;
mod http;
mod sandbox_target;
mod worker;

use std::net::IpAddr;
use std::time::Duration;

use tokio::net::TcpStream;

pub use handler::{Outcome, run_handler};
pub use sandbox_target::SandboxProbeTarget;
pub use worker::{ProbeHandle, Prober, ProberOptions, Restart};

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// The word upstream puts in events: `Readiness probe failed: ...`.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// An Event the worker should record on the pod (reason `Unhealthy`, type Warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeEvent {
    pub container: String,
    pub kind: ProbeKind,
    /// Always `Unhealthy`, as upstream.
    pub reason: &'static str,
    /// e.g. `Readiness probe failed: HTTP probe failed with statuscode: 500`.
    pub message: String,
}

/// What a finished exec probe command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecResult {
    /// The command exited with this code (-1 when killed by a signal) and printed this.
    Exited { code: i32, output: String },
    /// The command did not finish within the probe's timeout (it was killed).
    TimedOut,
}

/// Where a container's probes connect and run: the pod's network namespace for exec, the
/// node's for TCP (as upstream, probes come from the node to the pod IP).
#[async_trait::async_trait]
pub trait ProbeTarget: Send + Sync {
    /// The default host of httpGet, tcpSocket and grpc probes (the pod IP); `None` for a
    /// hostNetwork pod, where probes go to 127.0.0.1.
    fn pod_ip(&self) -> Option<IpAddr>;
    /// A TCP connection to `host:port` from the node's network namespace.
    async fn connect_tcp(&self, host: IpAddr, port: u16) -> std::io::Result<TcpStream>;
    /// Runs `command` (argv) in the container; kills it after `timeout`.
    async fn exec(&self, command: &[String], timeout: Duration) -> std::io::Result<ExecResult>;
}

#[cfg(test)]
mod tests;
