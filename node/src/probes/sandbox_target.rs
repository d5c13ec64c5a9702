//! `ProbeTarget` for a pod sandbox: TCP from the node's namespace, exec inside the pod.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{ExecResult, ProbeTarget};
use crate::sandbox::{Mount, Sandbox, SandboxError, SandboxManager, SocketMaker};

/// Probes of one pod's containers: connections from the node netns, commands in the pod.
#[derive(Clone, Debug)]
pub struct SandboxProbeTarget {
    sandbox: Sandbox,
    node_sockets: Arc<SocketMaker>,
    mounts: Vec<Mount>,
    env: Vec<(String, String)>,
}

impl SandboxProbeTarget {
    pub fn new(manager: &SandboxManager, sandbox: Sandbox) -> SandboxProbeTarget {
        SandboxProbeTarget {
            node_sockets: manager.node_sockets(),
            sandbox,
            mounts: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Exec probes see the container's volumes and get its environment, as upstream
    /// (pass `PodVolumes::mounts` and `env::container_env` of the probed container).
    pub fn for_container(mut self, mounts: Vec<Mount>, env: Vec<(String, String)>) -> Self {
        self.mounts = mounts;
        self.env = env;
        self
    }
}

#[async_trait::async_trait]
impl ProbeTarget for SandboxProbeTarget {
    fn pod_ip(&self) -> Option<IpAddr> {
        self.sandbox.ips.first().copied()
    }

    async fn connect_tcp(&self, host: IpAddr, port: u16) -> std::io::Result<TcpStream> {
        self.node_sockets
            .connect(SocketAddr::new(host, port))
            .await
            .map_err(|e| match e {
                // Keep the OS error (its kind makes upstream's "connection refused" text).
                SandboxError::Connect { source, .. } => source,
                other => std::io::Error::other(other),
            })
    }

    async fn exec(&self, command: &[String], timeout: Duration) -> std::io::Result<ExecResult> {
        let Some((program, args)) = command.split_first() else {
            return Err(std::io::Error::other(
                "exec probe has an empty command; set probe.exec.command",
            ));
        };
        let mut cmd = self
            .sandbox
            .command_with_mounts(program, &self.mounts)
            .map_err(std::io::Error::other)?;
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(out) => {
                let out = out?;
                let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok(ExecResult::Exited {
                    code: out.status.code().unwrap_or(-1),
                    output,
                })
            }
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => Ok(ExecResult::TimedOut),
        }
    }
}
