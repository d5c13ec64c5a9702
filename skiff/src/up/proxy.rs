//! The service proxy of `skiff up` and `skiff agent`: routes for the service CIDRs and the
//! LoadBalancer pool in the node namespace, the data plane (eBPF: socket load balancing acting
//! only on this node's namespaces plus the tc north-south balancer on the node's interfaces;
//! else userspace with the reason logged), and the watcher that programs it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use skiff_ebpf::{NodePortLb, NodePortOptions, SockLb, SockLbOptions};
use skiff_node::sandbox::NetnsObserver;
use skiff_proxy::Dataplane;
use skiff_proxy::ebpf::{EbpfDataplane, set_netns_allowed};
use skiff_proxy::routes::{self, Cidr, ServiceRoute};
use skiff_proxy::userspace::UserspaceDataplane;

use crate::cli::ProxyMode;
use crate::up::north_south::NorthSouth;

/// The chosen data plane, with what the kubelet must tell it.
pub struct Started {
    pub dataplane: Arc<dyn Dataplane>,
    /// Pod namespaces to allow on the socket load balancer (eBPF only).
    pub observer: Option<Arc<dyn NetnsObserver>>,
    /// The tc balancer for traffic from outside the node (eBPF only); the caller attaches it
    /// ([`NorthSouth::sync`]) once the node's interfaces exist, and detaches it at exit.
    pub north_south: Option<Arc<NorthSouth>>,
    /// The socket load balancer (eBPF only), for callers that allow namespaces themselves.
    pub sock_lb: Option<Arc<Mutex<SockLb>>>,
}

/// Allows each pod namespace on the socket load balancer while it exists.
#[derive(Debug)]
struct AllowPods(Arc<Mutex<SockLb>>);

impl AllowPods {
    fn set(&self, netns: &Path, allow: bool) {
        if let Err(e) = set_netns_allowed(&self.0, netns, allow) {
            tracing::warn!(netns = %netns.display(), error = %e, "socket load balancer netns list");
        }
    }
}

impl NetnsObserver for AllowPods {
    fn created(&self, netns: &Path) {
        self.set(netns, true);
    }
    fn removed(&self, netns: &Path) {
        self.set(netns, false);
    }
}

/// Parses a comma-separated CIDR flag.
pub fn cidrs(flag: &str, value: &str) -> anyhow::Result<Vec<Cidr>> {
    value
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.parse::<Cidr>().with_context(|| format!("--{flag}")))
        .collect()
}

/// Sets the routes in the node namespace (`netns_name`; `None`: our own, at `netns_path`
/// `/proc/self/ns/net`), then loads the data plane for `mode`. eBPF falls back to userspace,
/// with the reason, where it cannot load. With `pins` (a directory on a BPF file system) the
/// eBPF maps are pinned there and a previous process's are adopted; the programs are
/// attached through links this process owns (the agent hands them over on a clean stop:
/// `SockLb::hand_over`, `NorthSouth::hand_over`). The socket
/// load balancer acts on the node namespace and the namespaces of `also_allowed` (cookies).
#[allow(clippy::too_many_arguments)]
pub fn start(
    mode: ProxyMode,
    netns_name: Option<&str>,
    netns_path: &Path,
    service_cidrs: &[Cidr],
    lb_pool: &[Cidr],
    node: tokio::runtime::Handle,
    pins: Option<&Path>,
    also_allowed: &[u64],
) -> anyhow::Result<Started> {
    // Every LoadBalancer address is the node's own inside its namespace (they exist nowhere else).
    routes::install(netns_name, lb_pool, ServiceRoute::Local)
        .context("cannot route the LoadBalancer pool in the node netns")?;
    if mode == ProxyMode::Ebpf {
        match load_ebpf(netns_path, pins, also_allowed) {
            Ok((lb, ns)) => {
                // Unknown service addresses are rejected before anything is programmed (a
                // previous run in the other mode may have left its kind of route).
                routes::remove(netns_name, service_cidrs, ServiceRoute::Local);
                routes::install(netns_name, service_cidrs, ServiceRoute::Unreachable)
                    .context("cannot route the service CIDRs in the node netns")?;
                let lb = Arc::new(Mutex::new(lb));
                let ns = Arc::new(Mutex::new(ns));
                tracing::info!(
                    pinned = pins.is_some(),
                    "service proxy: eBPF socket load balancing and tc north-south"
                );
                return Ok(Started {
                    dataplane: Arc::new(
                        EbpfDataplane::new(lb.clone(), node).with_north_south(ns.clone()),
                    ),
                    observer: Some(Arc::new(AllowPods(lb.clone()))),
                    north_south: Some(Arc::new(NorthSouth::new(ns, netns_name, netns_path))),
                    sock_lb: Some(lb),
                });
            }
            Err(e) => tracing::warn!(
                "service proxy: the eBPF data plane cannot run here ({e:#}); using the userspace one"
            ),
        }
    }
    routes::remove(netns_name, service_cidrs, ServiceRoute::Unreachable);
    routes::install(netns_name, service_cidrs, ServiceRoute::Local)
        .context("cannot route the service CIDRs in the node netns")?;
    tracing::info!("service proxy: userspace");
    Ok(Started {
        dataplane: Arc::new(UserspaceDataplane::new(node)),
        observer: None,
        north_south: None,
        sock_lb: None,
    })
}

fn load_ebpf(
    node_netns: &Path,
    pins: Option<&Path>,
    also_allowed: &[u64],
) -> anyhow::Result<(SockLb, NodePortLb)> {
    let started = std::time::Instant::now();
    let mut lb = SockLb::load(SockLbOptions {
        pin_dir: pins.map(Path::to_owned),
        ..SockLbOptions::default()
    })
    .context("loading the BPF programs")?;
    // The node namespace and the given ones, nothing else (pinned maps may list a previous
    // run's pod namespaces): pod namespaces are added as they are made.
    let cookie = skiff_ebpf::netns_cookie(node_netns).context("the node netns cookie")?;
    let mut allowed = vec![cookie];
    allowed.extend_from_slice(also_allowed);
    let stale = lb.set_allowed_netns(&allowed)?;
    if stale > 0 {
        tracing::info!(stale, "forgot network namespaces a previous run allowed");
    }
    // Loaded before anything is attached: without tc there is no eBPF data plane that
    // serves outside clients, and the userspace one is the fallback.
    let ns = NodePortLb::load(NodePortOptions {
        pin_dir: pins.map(Path::to_owned),
        ..NodePortOptions::default()
    })
    .context("loading the tc north-south program")?;
    let cgroup = lb
        .attach_root()
        .context("attaching at the cgroup v2 root")?;
    tracing::info!(
        cgroup = %cgroup.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        adopted_services = lb.service_count(),
        adopted_frontends = ns.frontend_count(),
        "socket load balancer attached"
    );
    Ok((lb, ns))
}
