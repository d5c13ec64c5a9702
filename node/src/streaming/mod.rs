//! The kubelet's HTTPS server: container logs, exec, attach and port-forward streams for the API server.
//!
//! - [`server`]: TLS (client certificate required, verified against the cluster CA), routes,
//!   protocol negotiation and upgrades.
//! - [`remotecommand`]: exec and attach over websocket (`v5`/`v4.channel.k8s.io`) and SPDY/3.1.
//! - [`portforward`]: SPDY/3.1 `portforward.k8s.io`, tunnelled in websocket or not.
//! - [`spdy`], [`ws`]: the two wire protocols.
//!
//! What the server needs from the rest of the kubelet is [`PodStreams`].

pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod status;
pub mod ws;

use std::path::PathBuf;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

pub use server::{DEFAULT_PORT, StreamingConfig, StreamingServer};

/// Errors of the streaming server and of what [`PodStreams`] answers.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Pod or container unknown on this node: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The runtime cannot do this (attach without support): 501.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else: 500.
    #[error("{0}")]
    Internal(String),
    /// Starting the server: the TLS material in the configuration.
    #[error("kubelet serving TLS: {what}: {message}")]
    Tls { what: &'static str, message: String },
    /// Starting the server: the listen address.
    #[error("kubelet server: cannot listen on {addr}: {source} (pick a free address or port)")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A container of a pod on this node, as [`PodStreams::container`] found it.
#[derive(Debug, Clone)]
pub struct ContainerTarget {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// `<root>/<ns>_<pod>_<uid>/<container>` (see [`crate::logs::container_log_dir`]).
    pub log_dir: PathBuf,
    /// The current instance: its log is `<log_dir>/<restart_count>.log`.
    pub restart_count: u32,
}

/// A pod on this node (port-forward has no container).
#[derive(Debug, Clone)]
pub struct PodTarget {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
}

/// What the client asked of an exec or attach.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command (exec only; empty for attach).
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    /// Never with `tty` (a terminal has one output).
    pub stderr: bool,
}

/// A terminal size from the client (`{"Width":..,"Height":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A boxed writer (a process's stdin).
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A boxed reader (a process's stdout or stderr).
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// A running exec (or an attachment): its stdio as asked, resizes, and its exit code.
pub struct ExecChild {
    pub stdin: Option<BoxWrite>,
    pub stdout: Option<BoxRead>,
    pub stderr: Option<BoxRead>,
    /// Where terminal resizes go (tty only).
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    /// Resolves to the exit code when the process ends.
    pub exit: BoxFuture<'static, Result<i32, StreamError>>,
}

impl std::fmt::Debug for ExecChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecChild")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// What the streaming server needs from the kubelet: find pods and containers, run commands in
/// them, and connect to their ports. The pod workers implement it with the pod sandboxes.
#[async_trait::async_trait]
pub trait PodStreams: Send + Sync + 'static {
    /// The container `container` of pod `namespace/pod` on this node, or
    /// [`StreamError::NotFound`].
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerTarget, StreamError>;

    /// The pod `namespace/pod` on this node, or [`StreamError::NotFound`].
    fn pod(&self, namespace: &str, pod: &str) -> Result<PodTarget, StreamError>;

    /// Starts `request.command` in the container.
    async fn exec(
        &self,
        target: &ContainerTarget,
        request: ExecRequest,
    ) -> Result<ExecChild, StreamError>;

    /// Whether [`Self::attach`] works; when not, `/attach` answers 501 before upgrading.
    fn supports_attach(&self) -> bool {
        false
    }

    /// Attaches to the container's main process stdio.
    async fn attach(
        &self,
        target: &ContainerTarget,
        _request: ExecRequest,
    ) -> Result<ExecChild, StreamError> {
        Err(StreamError::Unsupported(format!(
            "attach is not supported by this runtime (container {} of pod {}/{}); use exec",
            target.container, target.namespace, target.pod
        )))
    }

    /// A TCP connection to `port` of the pod (its IP, inside the node's network).
    async fn port_forward(&self, target: &PodTarget, port: u16) -> Result<TcpStream, StreamError>;
}
