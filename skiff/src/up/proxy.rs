//! The service proxy of `skiff up`: routes for the service CIDRs and the LoadBalancer pool in
//! the node namespace, the data plane (eBPF socket load balancing acting only on this node's
//! namespaces, else userspace with the reason logged), and the watcher that programs it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use skiff_ebpf::{SockLb, SockLbOptions};
use skiff_node::sandbox::NetnsObserver;
use skiff_proxy::Dataplane;
use skiff_proxy::ebpf::{EbpfDataplane, set_netns_allowed};
use skiff_proxy::routes::{self, Cidr, ServiceRoute};
use skiff_proxy::userspace::UserspaceDataplane;

use crate::cli::ProxyMode;

/// The chosen data plane, with what the kubelet must tell it.
pub struct Started {
    pub dataplane: Arc<dyn Dataplane>,
    /// Pod namespaces to allow on the socket load balancer (eBPF only).
    pub observer: Option<Arc<dyn NetnsObserver>>,
    /// How the service CIDRs are routed (what to remove when a host agent stops).
    pub service_route: ServiceRoute,
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
/// with the reason, where it cannot load or attach.
pub fn start(
    mode: ProxyMode,
    netns_name: Option<&str>,
    netns_path: &Path,
    service_cidrs: &[Cidr],
    lb_pool: &[Cidr],
    node: tokio::runtime::Handle,
) -> anyhow::Result<Started> {
    // Every LoadBalancer address is the node's own inside its namespace (they exist nowhere else).
    routes::install(netns_name, lb_pool, ServiceRoute::Local)
        .context("cannot route the LoadBalancer pool in the node netns")?;
    if mode == ProxyMode::Ebpf {
        match load_ebpf(netns_path) {
            Ok(lb) => {
                // Unknown service addresses are rejected before anything is programmed.
                routes::install(netns_name, service_cidrs, ServiceRoute::Unreachable)
                    .context("cannot route the service CIDRs in the node netns")?;
                let lb = Arc::new(Mutex::new(lb));
                tracing::info!("service proxy: eBPF socket load balancing");
                return Ok(Started {
                    dataplane: Arc::new(EbpfDataplane::new(lb.clone(), node)),
                    observer: Some(Arc::new(AllowPods(lb))),
                    service_route: ServiceRoute::Unreachable,
                });
            }
            Err(e) => tracing::warn!(
                "service proxy: the eBPF data plane cannot run here ({e:#}); using the userspace one"
            ),
        }
    }
    routes::install(netns_name, service_cidrs, ServiceRoute::Local)
        .context("cannot route the service CIDRs in the node netns")?;
    tracing::info!("service proxy: userspace");
    Ok(Started {
        dataplane: Arc::new(UserspaceDataplane::new(node)),
        observer: None,
        service_route: ServiceRoute::Local,
    })
}

fn load_ebpf(node_netns: &Path) -> anyhow::Result<SockLb> {
    let started = std::time::Instant::now();
    let mut lb = SockLb::load(SockLbOptions::default()).context("loading the BPF programs")?;
    // The node namespace first: nothing else is allowed until a pod namespace is made.
    let cookie = skiff_ebpf::netns_cookie(node_netns).context("the node netns cookie")?;
    lb.allow_netns(cookie)?;
    let cgroup = lb
        .attach_root()
        .context("attaching at the cgroup v2 root")?;
    tracing::info!(
        cgroup = %cgroup.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "socket load balancer attached"
    );
    Ok(lb)
}
