//! The kubelet's configuration: node identity, where state and logs live, sandboxes, images, serving.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::images::ImageResolver;
use crate::sandbox::SandboxConfig;
use crate::streaming::StreamingConfig;

/// Everything [`crate::kubelet::run`] needs besides the API client.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The Node object's name; the kubelet runs the pods whose `spec.nodeName` is this.
    pub node_name: String,
    /// The kubelet's own directory: container logs go under `<root_dir>/logs`.
    pub root_dir: PathBuf,
    /// How pod sandboxes are built (node netns, pod CIDRs, cgroup parent, DNS).
    pub sandbox: SandboxConfig,
    /// Image references to programs.
    pub images: ImageResolver,
    /// The kubelet HTTPS server (logs, exec, port-forward); `None` = not served.
    pub streaming: Option<StreamingConfig>,
    /// Set by [`crate::kubelet::run`] to the address the streaming server bound (useful with
    /// port 0): what the Node's `daemonEndpoints.kubeletEndpoint.Port` must say.
    pub streaming_addr: Arc<OnceLock<SocketAddr>>,
    /// The node's addresses: `hostIP(s)` of every pod, `podIP(s)` of hostNetwork pods.
    pub host_ips: Vec<IpAddr>,
    /// The node's allocatable `cpu` and `memory` (quantity strings), for resourceFieldRef env
    /// without a limit.
    pub node_allocatable: NodeAllocatable,
}

/// The node's allocatable resources as quantity strings (`"2"`, `"4Gi"`).
#[derive(Clone, Debug, Default)]
pub struct NodeAllocatable {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl KubeletConfig {
    /// The kubelet's folder for one pod (`<root_dir>/pods/<uid>`: its volumes).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// Where container log folders live (`<root_dir>/logs/<ns>_<pod>_<uid>/<container>/`).
    pub fn log_root(&self) -> PathBuf {
        self.root_dir.join("logs")
    }
}
