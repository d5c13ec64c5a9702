//! The sandbox error type: every message names the object, the value and what to do.

use std::path::PathBuf;

/// What can go wrong while building, adopting or removing a pod sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An external command (iproute2) ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// An external command could not be started at all.
    #[error(
        "cannot run `{command}`: {source}; install iproute2 (`apt-get install iproute2`) and run as root"
    )]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A netlink request (links, addresses, routes) failed.
    #[error("cannot {action}: {source} (netlink; skiff must run as root)")]
    Netlink {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A pod CIDR in the configuration is not usable.
    #[error(
        "invalid pod CIDR {value:?}: {reason}; give one IPv4 (e.g. 10.244.0.0/24) and/or one IPv6 (e.g. fd00:10:244::/64) CIDR"
    )]
    Cidr { value: String, reason: String },
    /// Every address of a pod CIDR is taken.
    #[error(
        "pod CIDR {cidr} has no free address ({in_use} in use); remove pods or give the node a larger CIDR"
    )]
    Exhausted { cidr: String, in_use: usize },
    /// The persisted IPAM or sandbox state cannot be read.
    #[error(
        "state file {path} is unreadable: {reason}; move it away to start over (its pods get new addresses)"
    )]
    State { path: PathBuf, reason: String },
    /// A field of the pod spec cannot be turned into a sandbox.
    #[error("pod {pod}: invalid {field} {value:?}: {reason}")]
    InvalidSpec {
        pod: String,
        field: &'static str,
        value: String,
        reason: String,
    },
    /// No usable cgroup hierarchy was found.
    #[error("cgroups: {0}")]
    Cgroup(String),
    /// The pod has no sandbox on this node.
    #[error("pod uid {0} has no sandbox on this node; create it first")]
    NotFound(String),
    /// A TCP connection from inside a namespace failed.
    #[error("cannot connect to {addr} from network namespace {netns}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper thread that entered a namespace panicked or vanished.
    #[error("namespace helper thread for {0} ended without an answer")]
    Thread(PathBuf),
}

impl SandboxError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SandboxError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for sandbox results.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
