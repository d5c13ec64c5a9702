//! iproute2 commands in the node namespace or a pod namespace; a failure names the command
//! and carries its stderr.

use std::path::PathBuf;
use std::process::Stdio;

use super::error::{Result, SandboxError};
use super::exec::{Entry, enter_on_exec};
use super::netns::open_netns;

/// Runs `ip` in the node network namespace (`None`: the current one) or in a named pod one.
#[derive(Debug, Clone)]
pub(crate) struct Ip {
    node_netns: Option<PathBuf>,
}

impl Ip {
    pub(crate) fn new(node_netns: Option<PathBuf>) -> Self {
        Ip { node_netns }
    }

    /// An `ip` command that runs inside the node namespace, and how to name it in errors.
    fn in_node(&self, args: &[&str], shown: &str) -> Result<(tokio::process::Command, String)> {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(args);
        let shown = match &self.node_netns {
            Some(p) => {
                let entry = Entry {
                    netns: Some(open_netns(p)?),
                    ..Entry::default()
                };
                enter_on_exec(&mut cmd, entry);
                format!("ip {shown} (in netns {})", p.display())
            }
            None => format!("ip {shown}"),
        };
        Ok((cmd, shown))
    }

    /// `ip <args>` inside the node namespace.
    pub(crate) async fn node(&self, args: &[&str]) -> Result<String> {
        let (cmd, shown) = self.in_node(args, &args.join(" "))?;
        run(cmd, shown).await
    }

    /// `ip -n <netns> <args>` for a named (pod) namespace.
    pub(crate) async fn pod(&self, netns: &str, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.arg("-n").arg(netns).args(args);
        run(cmd, format!("ip -n {netns} {}", args.join(" "))).await
    }

    /// `ip netns <args>` (namespace names live in the mount namespace, not a netns).
    pub(crate) async fn netns(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.arg("netns").args(args);
        run(cmd, format!("ip netns {}", args.join(" "))).await
    }
}

async fn run(mut cmd: tokio::process::Command, shown: String) -> Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tracing::trace!(command = %shown, "running");
    let spawn_err = |source| SandboxError::Spawn {
        command: shown.clone(),
        source,
    };
    let child = cmd.spawn().map_err(spawn_err)?;
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SandboxError::Command {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether `err` is iproute2 saying the object is not there.
pub(crate) fn is_missing(err: &SandboxError) -> bool {
    matches!(err, SandboxError::Command { stderr, .. }
        if stderr.contains("Cannot find device") || stderr.contains("No such file") || stderr.contains("does not exist"))
}
