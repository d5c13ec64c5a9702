//! Pod sandboxes: a network namespace per pod on the node bridge, IPAM, the pod cgroup and its DNS files.
//!
//! `SandboxManager` owns every sandbox of one node: `create` (idempotent per pod uid, re-adopts
//! after a kubelet restart), `remove`, `list`, `teardown_all`. A `Sandbox` spawns processes
//! inside the pod (`command`) and opens connections into it (`connect_tcp`).

mod cgroup;
mod cidr;
mod dns;
mod error;
mod exec;
mod fsutil;
mod hosts;
mod ip;
mod ipam;
mod names;
mod netlink;
mod netns;
mod pod;
mod pty;
mod quantity;
pub mod spawn;
mod spec;
mod state_mount;

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tracing::{info, warn};

pub use cgroup::{CgroupLayout, PodCgroup};
pub use cidr::IpCidr;
pub use dns::{ResolvConf, pod_resolv_conf};
pub use error::{Result, SandboxError};
pub use hosts::pod_hosts;
pub use ipam::Ipam;
pub use names::{netns_name, veth_name};
pub use netns::{
    NETNS_DIR, SocketMaker, connect_loopback_in, connect_tcp_in, list_netns, netns_path,
    run_in_netns, run_in_netns_async,
};
pub use spec::{DnsOption, DnsPolicy, HostAlias, PodDnsConfig, PodResources, PodSandboxSpec};

use exec::{Entry, enter_on_exec};
pub use exec::{Mount, register_with_reactor};
use fsutil::{write_atomic, write_in_place};
use ip::{Ip, is_missing};
use netlink::Netlink;
pub use pty::{Pty, PtyError, PtyMaster};

/// The default bridge name in the node namespace.
pub const DEFAULT_BRIDGE: &str = "skiff0";

/// How a node's sandboxes are built.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The node's network namespace (`/run/netns/X`); `None` = the current one (`skiff server`).
    pub node_netns: Option<PathBuf>,
    /// Prefix of pod netns names (`<prefix><uid>`), unique per cluster, e.g. `skiff-<name>-pod-`.
    /// Network namespaces with this prefix that no sandbox owns are deleted at start (if they
    /// hold only `lo` and `eth0`), so no other namespace name may start with it.
    pub name_prefix: String,
    /// The node's pod CIDRs (one IPv4 and/or one IPv6); the first address of each is the gateway.
    pub pod_cidrs: Vec<IpCidr>,
    /// Where the per-pod files live (`pods/<uid>/`: record, resolv.conf, hosts).
    pub state_dir: PathBuf,
    /// Mount a tmpfs of its own on `state_dir` (unmounted by `teardown_all`): for a node whose
    /// sandboxes all go when it stops (`skiff up`).
    pub state_on_tmpfs: bool,
    /// The cgroup pods go under: absolute (`/skiff`) from each hierarchy's root, or relative
    /// (`skiff-test`) to the cgroup this process is in.
    pub cgroup_parent: String,
    /// Cluster DNS server addresses (ClusterFirst); empty = pods get the node's resolv.conf.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// The node's resolv.conf (the kubelet's `--resolv-conf`), for `Default` and search domains.
    pub host_resolv_conf: PathBuf,
    /// The node's hosts file, which hostNetwork pods get.
    pub host_hosts_file: PathBuf,
    /// The bridge in the node namespace.
    pub bridge: String,
    /// Told about every pod network namespace (e.g. a data plane that acts only on its node's
    /// namespaces, and must know one before the pod's first process runs).
    pub netns_observer: Option<Arc<dyn NetnsObserver>>,
}

/// Learns of pod network namespaces: `created` before any container process runs in one (also
/// for a sandbox adopted after a restart), `removed` once its processes are gone, before the
/// namespace is deleted. Calls must be quick; they run on the sandbox manager's path.
pub trait NetnsObserver: Send + Sync + std::fmt::Debug {
    fn created(&self, netns: &Path);
    fn removed(&self, netns: &Path);
}

impl SandboxConfig {
    /// A configuration with the defaults: current netns, `skiff0`, `cluster.local`,
    /// cluster DNS `10.96.0.10`, `/etc/resolv.conf`, `/etc/hosts`, cgroup parent `/skiff`.
    pub fn new(
        name_prefix: impl Into<String>,
        pod_cidrs: Vec<IpCidr>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        SandboxConfig {
            node_netns: None,
            name_prefix: name_prefix.into(),
            pod_cidrs,
            state_dir: state_dir.into(),
            state_on_tmpfs: false,
            cgroup_parent: "/skiff".into(),
            cluster_dns: vec![IpAddr::from([10, 96, 0, 10])],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts_file: "/etc/hosts".into(),
            bridge: DEFAULT_BRIDGE.into(),
            netns_observer: None,
        }
    }
}

/// What is persisted per sandbox (`pods/<uid>/sandbox.json`), enough to find and remove it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    uid: String,
    namespace: String,
    name: String,
    host_network: bool,
    hostname: String,
    netns: Option<String>,
    veth: Option<String>,
    ips: Vec<IpAddr>,
    /// Written true once every part exists; `false` only in a record made up from a uid (or
    /// left by an older version mid-create): such a sandbox is cleaned at next start.
    complete: bool,
}

/// A pod's sandbox: its addresses, namespace, cgroup and DNS files.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    /// The pod's IPs, IPv4 first (empty for hostNetwork pods: they have the node's).
    pub ips: Vec<IpAddr>,
    /// The pod's network namespace (for hostNetwork pods: the node's; `None` = current).
    pub netns_path: Option<PathBuf>,
    /// The host side of the pod's veth in the node namespace.
    pub veth: Option<String>,
    /// The pod's resolv.conf and hosts files, bind-mounted over /etc/ in its processes.
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub hostname: String,
    cgroup: PodCgroup,
}

impl Sandbox {
    /// The pod cgroup's directories, one per hierarchy (the unified one first when mounted).
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroup.paths()
    }

    /// The pod cgroup.
    pub fn cgroup(&self) -> &PodCgroup {
        &self.cgroup
    }

    /// A command whose process runs inside the pod: in its cgroup, its network namespace, its
    /// own hostname (UTS namespace, not for hostNetwork pods) and a private mount namespace
    /// where /etc/resolv.conf and /etc/hosts are the pod's. Used for exec and exec probes;
    /// containers start through [`Sandbox::spawn`], which does not copy skiff's memory.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(program);
        enter_on_exec(&mut cmd, self.base_entry()?);
        Ok(cmd)
    }

    /// A process of this pod (see [`Sandbox::command`]) with `mounts` (volumes), started by
    /// [`spawn::spawn`]: stdin `/dev/null`, stdout and stderr piped.
    pub fn spawn(
        &self,
        process: &spawn::ProcessSpec,
        mounts: &[Mount],
    ) -> std::result::Result<spawn::Process, spawn::SpawnError> {
        let entry = self.entry(mounts).map_err(spawn::SpawnError::Setup)?;
        spawn::spawn(process, entry)
    }

    /// What every process of this pod enters: cgroup, netns, DNS files, hostname.
    fn base_entry(&self) -> Result<Entry> {
        let mut entry = Entry::default();
        for procs in self.cgroup.procs_files() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&procs)
                .map_err(|e| SandboxError::io("open", &procs, e))?;
            entry.cgroup_procs.push(OwnedFd::from(f));
        }
        if let Some(p) = &self.netns_path {
            entry.netns = Some(netns::open_netns(p)?);
        }
        entry.binds = vec![
            (
                cstring(&self.resolv_conf)?,
                cstring(Path::new("/etc/resolv.conf"))?,
            ),
            (cstring(&self.hosts)?, cstring(Path::new("/etc/hosts"))?),
        ];
        if !self.host_network {
            entry.hostname = Some(self.hostname.as_bytes().to_vec());
        }
        Ok(entry)
    }

    /// A TCP connection to `port` on the pod's loopback (what port-forward does).
    pub async fn connect_tcp(&self, port: u16) -> Result<TcpStream> {
        connect_loopback_in(self.netns_path.as_deref(), port).await
    }

    /// How many processes of the pod the OOM killer killed.
    pub fn oom_kills(&self) -> Result<u64> {
        self.cgroup.oom_kills()
    }

    /// SIGKILL to every process of the pod.
    pub fn kill_all(&self) {
        self.cgroup.kill_all()
    }

    /// The processes in the pod cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.cgroup.pids()
    }
}

/// The node's netlink socket; a panic while another thread held it makes it unusable.
fn lock_netlink(m: &std::sync::Mutex<Netlink>) -> Result<std::sync::MutexGuard<'_, Netlink>> {
    m.lock().map_err(|_| SandboxError::Netlink {
        action: "lock the node netlink socket".into(),
        source: std::io::Error::other("poisoned"),
    })
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        SandboxError::io(
            "use path",
            p,
            std::io::Error::other("path contains a NUL byte"),
        )
    })
}

/// Builds, adopts and removes the pod sandboxes of one node.
#[derive(Debug)]
pub struct SandboxManager {
    config: SandboxConfig,
    layout: CgroupLayout,
    ip: Ip,
    /// Netlink in the node namespace: pod veths are made and removed through it.
    node_netlink: Arc<std::sync::Mutex<Netlink>>,
    /// TCP sockets in the node namespace (probes to pod IPs), without a thread per socket.
    node_sockets: Arc<SocketMaker>,
    /// Address reservation and release (and the sandbox records) are serialised.
    ipam: tokio::sync::Mutex<Ipam>,
}

impl SandboxManager {
    /// Prepares the node (bridge with gateway addresses, forwarding in the node namespace) and
    /// cleans up what a crashed predecessor with the same prefix and state dir left behind.
    pub async fn new(config: SandboxConfig) -> Result<Self> {
        let started = Instant::now();
        let v4 = config.pod_cidrs.iter().filter(|c| !c.is_ipv6()).count();
        if config.pod_cidrs.is_empty() || v4 > 1 || config.pod_cidrs.len() - v4 > 1 {
            return Err(SandboxError::Cidr {
                value: config
                    .pod_cidrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                reason: "need one or two CIDRs, at most one per family".into(),
            });
        }
        if config.name_prefix.is_empty() {
            return Err(SandboxError::InvalidSpec {
                pod: "-".into(),
                field: "name_prefix",
                value: String::new(),
                reason: "must not be empty: it tells this node's pod namespaces apart".into(),
            });
        }
        let layout = CgroupLayout::detect()?;
        let ipam = Ipam::new(&config.pod_cidrs)?;
        if config.state_on_tmpfs {
            state_mount::ensure(&config.state_dir)?;
        }
        // Earlier versions kept the allocations in a file of their own; the records carry them.
        let _ = std::fs::remove_file(config.state_dir.join("ipam.json"));
        let node_netlink =
            run_in_netns(config.node_netns.as_deref(), Netlink::open)?.map_err(|e| {
                SandboxError::Netlink {
                    action: "open a netlink socket in the node namespace".into(),
                    source: e,
                }
            })?;
        let node_sockets = Arc::new(SocketMaker::start(config.node_netns.as_deref())?);
        let mgr = SandboxManager {
            node_sockets,
            node_netlink: Arc::new(std::sync::Mutex::new(node_netlink)),
            ip: Ip::new(config.node_netns.clone()),
            layout,
            config,
            ipam: ipam.into(),
        };
        mgr.ensure_bridge().await?;
        mgr.recover().await?;
        info!(
            bridge = %mgr.config.bridge,
            cidrs = ?mgr.config.pod_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            cgroups = mgr.layout.version(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pod sandbox manager ready"
        );
        Ok(mgr)
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// `v2`, `v1` or `hybrid`.
    pub fn cgroup_version(&self) -> &'static str {
        self.layout.version()
    }

    /// The sandbox of `spec.uid`: created, or the existing one when it is whole (after a
    /// kubelet restart). A broken or half-made one is removed and made again.
    pub async fn create(&self, spec: &PodSandboxSpec) -> Result<Sandbox> {
        spec.validate()?;
        let mut ipam = self.ipam.lock().await;
        if let Some(rec) = self.read_record(&spec.uid) {
            if rec.complete && self.alive(&rec).await {
                info!(pod = %spec.pod_name(), uid = %spec.uid, ips = ?rec.ips, "pod sandbox adopted");
                self.observe_created(&rec);
                return Ok(self.sandbox(&rec));
            }
            warn!(pod = %spec.pod_name(), uid = %spec.uid, "pod sandbox incomplete or broken; making it again");
            self.destroy(&rec, &mut ipam).await?;
        }
        let started = Instant::now();
        // Compute the DNS files first: a bad dnsConfig fails before anything is made.
        let host_resolv = match std::fs::read_to_string(&self.config.host_resolv_conf) {
            Ok(t) => ResolvConf::parse(&t),
            Err(e) => {
                warn!(path = %self.config.host_resolv_conf.display(), error = %e, "node resolv.conf unreadable; using none");
                ResolvConf::default()
            }
        };
        let resolv = pod_resolv_conf(
            spec,
            &self.config.cluster_dns,
            &self.config.cluster_domain,
            &host_resolv,
        )?
        .render();
        let mut rec = Record {
            uid: spec.uid.clone(),
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            host_network: spec.host_network,
            hostname: spec.hostname.clone(),
            netns: (!spec.host_network).then(|| netns_name(&self.config.name_prefix, &spec.uid)),
            veth: (!spec.host_network).then(|| veth_name(&self.config.name_prefix, &spec.uid)),
            ips: Vec::new(),
            complete: false,
        };
        // Only the addresses are taken under the lock (in memory); the namespaces, links and
        // cgroup of different pods are independent, so sandboxes are built concurrently. The
        // record is written once, when the sandbox is whole: a crash before that leaves parts
        // without a record, which start-up recovery sweeps by their names.
        if !spec.host_network {
            rec.ips = ipam.allocate(&spec.uid)?;
        }
        drop(ipam);
        match self.build(spec, &mut rec, &resolv).await {
            Ok(()) => {
                info!(
                    pod = %spec.pod_name(),
                    uid = %spec.uid,
                    ips = ?rec.ips,
                    host_network = spec.host_network,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pod sandbox created"
                );
                self.observe_created(&rec);
                Ok(self.sandbox(&rec))
            }
            Err(e) => {
                warn!(pod = %spec.pod_name(), uid = %spec.uid, error = %e, "pod sandbox creation failed; cleaning up");
                let mut ipam = self.ipam.lock().await;
                if let Err(e2) = self.destroy(&rec, &mut ipam).await {
                    warn!(uid = %spec.uid, error = %e2, "cleanup after failed creation failed");
                }
                Err(e)
            }
        }
    }

    fn observe_created(&self, rec: &Record) {
        if let (Some(ns), Some(o)) = (&rec.netns, &self.config.netns_observer) {
            o.created(&netns_path(ns));
        }
    }

    async fn build(&self, spec: &PodSandboxSpec, rec: &mut Record, resolv: &str) -> Result<()> {
        self.pod_cgroup(&spec.uid).create(&spec.resources)?;
        if !spec.host_network {
            self.setup_network(rec).await?;
        }
        let node_hosts = if spec.host_network {
            std::fs::read_to_string(&self.config.host_hosts_file).unwrap_or_default()
        } else {
            String::new()
        };
        let hosts = pod_hosts(spec, &rec.ips, &self.config.cluster_domain, &node_hosts);
        let dir = self.pod_dir(&spec.uid);
        std::fs::create_dir_all(&dir).map_err(|e| SandboxError::io("create directory", &dir, e))?;
        write_in_place(&dir.join("resolv.conf"), resolv.as_bytes())?;
        write_in_place(&dir.join("hosts"), hosts.as_bytes())?;
        rec.complete = true;
        self.write_record(rec)
    }

    /// The sandbox of `uid`, if one exists and is whole.
    pub async fn get(&self, uid: &str) -> Option<Sandbox> {
        let _guard = self.ipam.lock().await;
        self.read_record(uid)
            .filter(|r| r.complete)
            .map(|r| self.sandbox(&r))
    }

    /// Every whole sandbox of this node.
    pub async fn list(&self) -> Vec<Sandbox> {
        let _guard = self.ipam.lock().await;
        self.records()
            .into_iter()
            .filter(|r| r.complete)
            .map(|r| self.sandbox(&r))
            .collect()
    }

    /// The pod uids holding addresses, with their addresses (what IPAM has handed out).
    pub async fn allocations(&self) -> Vec<(String, Vec<IpAddr>)> {
        let ipam = self.ipam.lock().await;
        ipam.uids()
            .into_iter()
            .map(|u| {
                let ips = ipam.get(&u).map(<[IpAddr]>::to_vec).unwrap_or_default();
                (u, ips)
            })
            .collect()
    }

    /// Removes the sandbox of `uid`: kills its processes, deletes its veth, namespace and cgroup,
    /// releases its addresses and files. True if there was one.
    pub async fn remove(&self, uid: &str) -> Result<bool> {
        let ipam = self.ipam.lock().await;
        let rec = match self.read_record(uid) {
            Some(rec) => rec,
            None if spec::valid_uid(uid) => {
                // Nothing recorded, but parts may still exist (e.g. a record deleted by hand).
                let rec = self.derived_record(uid);
                let netns = rec.netns.as_deref().is_some_and(|n| netns_path(n).exists());
                let cgroup = self.pod_cgroup(uid).paths().iter().any(|p| p.exists());
                let ips = ipam.get(uid).is_some();
                if !(netns || cgroup || ips) {
                    return Ok(false);
                }
                rec
            }
            None => return Ok(false),
        };
        let started = Instant::now();
        drop(ipam);
        self.dismantle(&rec).await?;
        let mut ipam = self.ipam.lock().await;
        self.release(&rec, &mut ipam)?;
        info!(
            pod = %format!("{}/{}", rec.namespace, rec.name),
            uid,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "pod sandbox removed"
        );
        Ok(true)
    }

    /// Removes every sandbox whose uid is not in `keep` (the kubelet's garbage collection).
    pub async fn retain(&self, keep: &HashSet<String>) -> Result<Vec<String>> {
        let uids: Vec<String> = {
            let _guard = self.ipam.lock().await;
            self.records()
                .into_iter()
                .map(|r| r.uid)
                .filter(|u| !keep.contains(u))
                .collect()
        };
        for uid in &uids {
            self.remove(uid).await?;
        }
        Ok(uids)
    }

    /// Removes every sandbox, leftover namespace and pod cgroup of this manager, the bridge
    /// and the cgroup parent. The node namespace itself belongs to the caller.
    pub async fn teardown_all(&self) -> Result<()> {
        let mut ipam = self.ipam.lock().await;
        for rec in self.records() {
            self.destroy(&rec, &mut ipam).await?;
        }
        self.sweep(&HashSet::new(), &mut ipam).await?;
        match self.ip.node(&["link", "del", &self.config.bridge]).await {
            Ok(_) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e),
        }
        self.layout.remove_parent(&self.config.cgroup_parent);
        let _ = std::fs::remove_dir(self.config.state_dir.join("pods"));
        // Only a tmpfs this manager (or a crashed predecessor) mounted.
        state_mount::release(&self.config.state_dir);
        info!(bridge = %self.config.bridge, "pod sandboxes torn down");
        Ok(())
    }

    /// A TCP connection from the node namespace to `addr` (probes to a pod IP).
    pub async fn connect_from_node(&self, addr: SocketAddr) -> Result<TcpStream> {
        self.node_sockets.connect(addr).await
    }

    /// What makes sockets in the node namespace (shared with the probes of every pod).
    pub fn node_sockets(&self) -> Arc<SocketMaker> {
        self.node_sockets.clone()
    }

    // --- internals ---

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(uid)
    }

    fn pod_cgroup(&self, uid: &str) -> PodCgroup {
        self.layout
            .pod(&self.config.cgroup_parent, &names::cgroup_leaf(uid))
    }

    fn sandbox(&self, rec: &Record) -> Sandbox {
        let dir = self.pod_dir(&rec.uid);
        Sandbox {
            uid: rec.uid.clone(),
            namespace: rec.namespace.clone(),
            name: rec.name.clone(),
            host_network: rec.host_network,
            ips: rec.ips.clone(),
            netns_path: match &rec.netns {
                Some(n) => Some(netns_path(n)),
                None => self.config.node_netns.clone(),
            },
            veth: rec.veth.clone(),
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            hostname: rec.hostname.clone(),
            cgroup: self.pod_cgroup(&rec.uid),
        }
    }

    fn write_record(&self, rec: &Record) -> Result<()> {
        let path = self.pod_dir(&rec.uid).join("sandbox.json");
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| SandboxError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// The record of `uid`; an unreadable one comes back as an incomplete record with the
    /// derived names, so that it gets cleaned up.
    fn read_record(&self, uid: &str) -> Option<Record> {
        let dir = self.pod_dir(uid);
        if !dir.is_dir() {
            return None;
        }
        let path = dir.join("sandbox.json");
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        {
            Some(r) if r.uid == uid => Some(r),
            _ => {
                warn!(path = %path.display(), "sandbox record missing or unreadable; treating the sandbox as leftover");
                Some(self.derived_record(uid))
            }
        }
    }

    /// An incomplete record with the names derived from `uid`, to remove what may exist.
    fn derived_record(&self, uid: &str) -> Record {
        Record {
            uid: uid.to_string(),
            namespace: String::new(),
            name: String::new(),
            host_network: false,
            hostname: String::new(),
            netns: Some(netns_name(&self.config.name_prefix, uid)),
            veth: Some(veth_name(&self.config.name_prefix, uid)),
            ips: Vec::new(),
            complete: false,
        }
    }

    fn records(&self) -> Vec<Record> {
        let Ok(dir) = std::fs::read_dir(self.config.state_dir.join("pods")) else {
            return Vec::new();
        };
        let mut uids: Vec<String> = dir
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|u| spec::valid_uid(u))
            .collect();
        uids.sort();
        uids.iter().filter_map(|u| self.read_record(u)).collect()
    }

    /// Whether every part of a complete sandbox still exists.
    async fn alive(&self, rec: &Record) -> bool {
        if !self.pod_cgroup(&rec.uid).paths().iter().all(|p| p.is_dir()) {
            return false;
        }
        match (&rec.netns, &rec.veth) {
            (Some(ns), Some(veth)) => {
                netns_path(ns).exists()
                    && self.ip.pod(ns, &["link", "show", "eth0"]).await.is_ok()
                    && self.ip.node(&["link", "show", veth]).await.is_ok()
            }
            _ => rec.host_network,
        }
    }

    async fn ensure_bridge(&self) -> Result<()> {
        let br = self.config.bridge.as_str();
        if let Err(e) = self.ip.node(&["link", "show", br]).await {
            if !is_missing(&e) {
                return Err(e);
            }
            let mac = names::bridge_mac(&format!("{}{}", self.config.name_prefix, br));
            self.ip
                .node(&["link", "add", br, "address", &mac, "type", "bridge"])
                .await?;
        }
        for cidr in &self.config.pod_cidrs {
            let gw = cidr.gateway().ok_or_else(|| SandboxError::Cidr {
                value: cidr.to_string(),
                reason: "too small to have a gateway".into(),
            })?;
            let addr = format!("{gw}/{}", cidr.prefix());
            if cidr.is_ipv6() {
                self.ip
                    .node(&["-6", "addr", "replace", &addr, "dev", br, "nodad"])
                    .await?;
            } else {
                self.ip.node(&["addr", "replace", &addr, "dev", br]).await?;
            }
        }
        self.ip.node(&["link", "set", br, "up"]).await?;
        // Forwarding inside the node namespace only (pods reach services and each other
        // through it); the node namespace of `skiff up` has no uplink, so nothing leaves.
        let has_v6 = self.config.pod_cidrs.iter().any(IpCidr::is_ipv6);
        let has_v4 = self.config.pod_cidrs.iter().any(|c| !c.is_ipv6());
        let sysctls: Vec<&'static str> = [
            has_v4.then_some("/proc/sys/net/ipv4/ip_forward"),
            has_v6.then_some("/proc/sys/net/ipv6/conf/all/forwarding"),
        ]
        .into_iter()
        .flatten()
        .collect();
        run_in_netns_async(self.config.node_netns.clone(), move || -> Result<()> {
            for p in sysctls {
                std::fs::write(p, "1").map_err(|e| SandboxError::io("write sysctl", p, e))?;
            }
            Ok(())
        })
        .await??;
        Ok(())
    }

    /// The pod's namespace, its veth on the bridge (with hairpin: a pod reaching itself
    /// through a service IP comes back out of its own port), addresses and default routes —
    /// over netlink, on a blocking thread: a few syscalls, no processes.
    async fn setup_network(&self, rec: &Record) -> Result<()> {
        let (Some(ns), Some(veth)) = (rec.netns.clone(), rec.veth.clone()) else {
            return Ok(());
        };
        let node = self.node_netlink.clone();
        let bridge = self.config.bridge.clone();
        let addrs: Vec<(IpAddr, u8, bool)> = rec
            .ips
            .iter()
            .zip(&self.config.pod_cidrs)
            .map(|(ip, cidr)| (*ip, cidr.prefix(), cidr.is_ipv6()))
            .collect();
        let gateways: Vec<IpAddr> = self
            .config
            .pod_cidrs
            .iter()
            .filter_map(IpCidr::gateway)
            .collect();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let nl_err = |action: String| {
                move |source: std::io::Error| SandboxError::Netlink { action, source }
            };
            if netns_path(&ns).exists() {
                netns::delete_netns(&ns)?;
            }
            let mut pod = netns::create_netns(&ns)?;
            let pod_fd = netns::open_netns(&netns_path(&ns))?;
            {
                let mut node = lock_netlink(&node)?;
                node.del_link(&veth)
                    .map_err(nl_err(format!("delete stale link {veth}")))?;
                node.add_veth(&veth, "eth0", pod_fd.as_fd())
                    .map_err(nl_err(format!(
                        "add veth {veth} with peer eth0 in netns {ns}"
                    )))?;
                let index = node
                    .require_index(&veth)
                    .map_err(nl_err(format!("find link {veth}")))?;
                let master = node
                    .require_index(&bridge)
                    .map_err(nl_err(format!("find bridge {bridge}")))?;
                node.set_no_ipv6_link_local(index)
                    .map_err(nl_err(format!("set addrgenmode none on {veth}")))?;
                node.set_up(index, Some(master))
                    .map_err(nl_err(format!("put {veth} on {bridge} and up")))?;
                node.set_hairpin(index)
                    .map_err(nl_err(format!("set hairpin on {veth}")))?;
            }
            // In a fresh namespace the loopback is always index 1.
            pod.set_up(1, None)
                .map_err(nl_err(format!("set lo up in netns {ns}")))?;
            let eth0 = pod
                .require_index("eth0")
                .map_err(nl_err(format!("find eth0 in netns {ns}")))?;
            for (ip, prefix, v6) in addrs {
                // No duplicate address detection: IPAM already made the address unique.
                pod.add_addr(eth0, ip, prefix, v6)
                    .map_err(nl_err(format!("add {ip}/{prefix} to eth0 in netns {ns}")))?;
            }
            pod.set_up(eth0, None)
                .map_err(nl_err(format!("set eth0 up in netns {ns}")))?;
            for gw in gateways {
                pod.replace_default_route(gw, eth0)
                    .map_err(nl_err(format!("add default route via {gw} in netns {ns}")))?;
            }
            Ok(())
        })
        .await
        .map_err(|_| SandboxError::Thread(netns_path(rec.netns.as_deref().unwrap_or_default())))?
    }

    /// Removes every part of a sandbox that exists; missing parts are fine.
    async fn destroy(&self, rec: &Record, ipam: &mut Ipam) -> Result<()> {
        self.dismantle(rec).await?;
        self.release(rec, ipam)
    }

    /// The parts of `destroy` that are the pod's alone (processes, links, namespace, cgroup):
    /// safe without the IPAM lock, so removals do not hold up other pods' creation.
    async fn dismantle(&self, rec: &Record) -> Result<()> {
        let cg = self.pod_cgroup(&rec.uid);
        cg.kill_all();
        if let Some(veth) = rec.veth.clone() {
            let node = self.node_netlink.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut node = lock_netlink(&node)?;
                node.del_link(&veth)
                    .map(drop)
                    .map_err(|source| SandboxError::Netlink {
                        action: format!("delete link {veth}"),
                        source,
                    })
            })
            .await
            .map_err(|_| SandboxError::Thread(PathBuf::new()))??;
        }
        if let (Some(ns), Some(o)) = (&rec.netns, &self.config.netns_observer) {
            o.removed(&netns_path(ns));
        }
        if let Some(ns) = &rec.netns {
            netns::delete_netns(ns)?;
        }
        cg.remove().await
    }

    /// The shared parts of `destroy`: the addresses and the record (under the IPAM lock).
    fn release(&self, rec: &Record, ipam: &mut Ipam) -> Result<()> {
        ipam.release(&rec.uid);
        let dir = self.pod_dir(&rec.uid);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SandboxError::io("remove", dir, e)),
        }
    }

    /// Start-up cleanup: half-made or broken sandboxes, then anything with our names that no
    /// sandbox owns. Whole sandboxes stay, to be re-adopted by `create`.
    async fn recover(&self) -> Result<()> {
        let mut ipam = self.ipam.lock().await;
        let mut known = HashSet::new();
        for rec in self.records() {
            if rec.complete && self.alive(&rec).await {
                ipam.adopt(&rec.uid, &rec.ips);
                known.insert(rec.uid.clone());
            } else {
                warn!(uid = %rec.uid, pod = %format!("{}/{}", rec.namespace, rec.name), "removing leftover pod sandbox");
                self.destroy(&rec, &mut ipam).await?;
            }
        }
        self.sweep(&known, &mut ipam).await
    }

    /// Whether the namespace holds nothing but `lo` and `eth0`, as a pod's (or a half-made
    /// pod's) does: a safety net against deleting someone else's namespace that happens to
    /// share our prefix.
    async fn looks_like_pod_netns(&self, name: &str) -> bool {
        match self.ip.pod(name, &["-o", "link", "show"]).await {
            Ok(out) => out.lines().all(|l| {
                let dev = l.split(':').nth(1).unwrap_or("").trim();
                let dev = dev.split('@').next().unwrap_or(dev);
                dev == "lo" || dev == "eth0"
            }),
            Err(_) => false,
        }
    }

    /// Deletes pod namespaces, addresses and pod cgroups of uids not in `known`.
    async fn sweep(&self, known: &HashSet<String>, ipam: &mut Ipam) -> Result<()> {
        let node_ns = self.config.node_netns.as_deref();
        let prefix = &self.config.name_prefix;
        for name in list_netns(prefix) {
            let uid = &name[prefix.len()..];
            if Some(netns_path(&name).as_path()) == node_ns
                || !spec::valid_uid(uid)
                || known.contains(uid)
            {
                continue;
            }
            if !self.looks_like_pod_netns(&name).await {
                warn!(netns = %name, "namespace has our prefix but devices a pod never has; leaving it alone");
                continue;
            }
            warn!(netns = %name, "deleting leftover pod network namespace");
            // Its cgroup (below) holds its processes; the namespace goes when they do.
            match self.ip.netns(&["delete", &name]).await {
                Ok(_) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e),
            }
        }
        for uid in ipam.uids() {
            if !known.contains(&uid) {
                warn!(uid = %uid, "releasing leftover pod addresses");
                ipam.release(&uid);
            }
        }
        for leaf in self.layout.children(&self.config.cgroup_parent, "pod") {
            let uid = &leaf["pod".len()..];
            if !known.contains(uid) {
                warn!(cgroup = %leaf, "removing leftover pod cgroup");
                self.layout
                    .pod(&self.config.cgroup_parent, &leaf)
                    .remove()
                    .await?;
            }
        }
        Ok(())
    }
}
