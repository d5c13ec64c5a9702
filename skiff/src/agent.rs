//! `skiff agent`: node components against any Kubernetes API server (skiff's own or a real
//! cluster's), on this host's network or inside a named namespace (`--netns`). This build runs
//! the service proxy; the kubelet, DNS and ingress run in `skiff up`.
//!
//! A stop is half of a restart: SIGTERM keeps the routes and the pinned eBPF maps (under
//! `--bpffs`/skiff/<node>), and the next start adopts them, so established connections live
//! on; the programs' links are pinned there too (handed over), so they translate while no
//! agent runs, and the next start releases them once its own are attached. A crash pins
//! nothing: its programs go with it. `--cleanup` removes what a stopped agent keeps.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_proxy::routes::{self, ServiceRoute};

use crate::cli::{AgentArgs, Component, ProxyMode};
use crate::lock;
use crate::pod_netns::PodNetns;
use crate::up::north_south::{self, NorthSouth};
use crate::up::{admin, netns, proxy};

/// Runs the agent until SIGINT/SIGTERM (or, with `--cleanup`, cleans up), on the calling
/// thread.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    if args.cleanup {
        return cleanup(&args);
    }
    let unsupported: Vec<&str> = args
        .components
        .iter()
        .filter_map(|c| match c {
            Component::Proxy => None,
            Component::Kubelet => Some("kubelet"),
            Component::Dns => Some("dns"),
            Component::Ingress => Some("ingress"),
        })
        .collect();
    anyhow::ensure!(
        unsupported.is_empty(),
        "skiff agent runs only the service proxy in this build (--components proxy); {} run \
         in `skiff up`. Nothing was started.",
        unsupported.join(", ")
    );
    anyhow::ensure!(
        !args.components.is_empty(),
        "--components is empty: name at least `proxy`"
    );
    let service_cidrs = proxy::cidrs("service-cidr", &args.service_cidr)?;
    let lb_pool = proxy::cidrs("lb-pool", &args.lb_pool)?;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .context("--kubeconfig is required (only --cleanup runs without it)")?;
    let node_name = node_name(&args)?;
    if let Some(name) = &args.netns {
        check_netns(name)?;
    }
    let pins = pin_dir(&args.bpffs, &node_name);
    match args.proxy_mode {
        // Before anything is changed: without a BPF file system nothing can be kept for a
        // restart, which is part of what this mode promises.
        ProxyMode::Ebpf => skiff_ebpf::check_bpffs(&args.bpffs).map_err(|e| {
            anyhow::anyhow!(
                "--bpffs {}: {e}; or pass --bpffs with a mounted one, or --proxy-mode userspace. \
                 Nothing was started.",
                args.bpffs.display()
            )
        })?,
        ProxyMode::Userspace if pins.exists() => tracing::warn!(
            pins = %pins.display(),
            "pinned eBPF maps of an earlier agent are left unused: `skiff agent --cleanup` removes them"
        ),
        ProxyMode::Userspace => {}
    }
    let root = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The data plane's sockets live in the node namespace: with --netns, on a runtime whose
    // threads entered it; otherwise on the agent's own runtime, in its own namespace.
    let node_runtime = match &args.netns {
        Some(name) => Some(netns::node_runtime(name)?),
        None => None,
    };
    let node = node_runtime
        .as_ref()
        .map_or_else(|| root.handle().clone(), |r| r.handle().clone());
    let netns_path = node_netns_path(&args);
    root.block_on(async {
        let client = skiff_controller::standalone::client_from_kubeconfig(&kubeconfig)
            .await
            .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
        let addresses = node_addresses(&client, &node_name, &args.node_ip).await?;
        let pods = PodNetns::new(skiff_node::sandbox::NETNS_DIR, args.pod_netns_prefix.clone());
        let pods_now = if args.pod_netns_prefix.is_empty() {
            HashMap::new()
        } else {
            pods.current()
        };
        let cookies: Vec<u64> = pods_now.values().copied().collect();
        let started = proxy::start(
            args.proxy_mode,
            args.netns.as_deref(),
            &netns_path,
            &service_cidrs,
            &lb_pool,
            node.clone(),
            Some(&pins),
            &cookies,
        )?;
        let pod_watch = match (&started.sock_lb, args.pod_netns_prefix.is_empty()) {
            (_, true) => None,
            (None, false) => {
                tracing::info!(
                    "--pod-netns-prefix: the userspace data plane serves pods through the node's routes; nothing to follow"
                );
                None
            }
            (Some(lb), false) => {
                tracing::info!(dir = %pods.dir().display(), prefixes = ?args.pod_netns_prefix, found = pods_now.len(), "following pod network namespaces");
                Some((pods, lb.clone(), pods_now))
            }
        };
        if let Some(ns) = &started.north_south {
            // Now, not after the first sync: adopted maps go on serving established flows.
            let first = ns.clone();
            tokio::task::spawn_blocking(move || first.sync())
                .await
                .context("attaching the north-south load balancer")?
                .context("attaching the north-south load balancer")?;
        }
        // Our programs are attached: those a previous agent handed over can go (in userspace
        // mode too: a previous eBPF agent's must not go on translating).
        match skiff_ebpf::release_links(&pins) {
            Ok(0) => {}
            Ok(n) => tracing::info!(links = n, "released the programs the previous agent handed over"),
            Err(e) => tracing::warn!(error = %e, "cannot release the previous agent's programs"),
        }
        let result = serve(&args, client, node_name, addresses, &started, &node, pod_watch).await;
        // The routes and pinned maps stay for the next start (`--cleanup` removes them). After
        // a clean stop the programs stay attached too, pinned for the next start to take
        // over, so no packet of an established connection meets an untranslated node; after
        // an error they go with this process.
        hand_over(&started, &pins, result.is_ok());
        result
    })
}

/// Pins the eBPF programs' links in `pins` for the next agent (`keep`), else detaches them.
fn hand_over(started: &proxy::Started, pins: &Path, keep: bool) {
    if !keep {
        if let Some(ns) = &started.north_south {
            ns.detach_all();
        }
        return;
    }
    let mut handed = 0;
    if let Some(lb) = &started.sock_lb {
        match lock(lb).hand_over(pins) {
            Ok(n) => handed += n,
            Err(e) => tracing::warn!(error = %e, "socket load balancer links not handed over"),
        }
    }
    if let Some(ns) = &started.north_south {
        match ns.hand_over(pins) {
            Ok(n) => handed += n,
            Err(e) => tracing::warn!(error = %e, "north-south links not handed over"),
        }
    }
    if handed > 0 {
        tracing::info!(links = handed, pins = %pins.display(), "programs left attached for the next start (`skiff agent --cleanup` removes them)");
    }
}

/// What `--pod-netns-prefix` follows: the namespaces, the balancer, those allowed at start.
type FollowPods = (
    PodNetns,
    Arc<Mutex<skiff_ebpf::SockLb>>,
    HashMap<String, u64>,
);

/// `--node-name`, else the host name; it names the pin directory, so it must be one path
/// component.
fn node_name(args: &AgentArgs) -> anyhow::Result<String> {
    let name = match &args.node_name {
        Some(n) => n.clone(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    anyhow::ensure!(
        !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'),
        "--node-name {name:?}: want a node name (letters, digits, '-', '.')"
    );
    Ok(name)
}

/// Where this node's maps are pinned: `<bpffs>/skiff/<node>`.
fn pin_dir(bpffs: &Path, node_name: &str) -> PathBuf {
    bpffs.join("skiff").join(node_name)
}

fn check_netns(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        netns::path(name).exists(),
        "--netns {name}: {} does not exist (create it with `ip netns add {name}`)",
        netns::path(name).display()
    );
    Ok(())
}

fn node_netns_path(args: &AgentArgs) -> PathBuf {
    args.netns
        .as_deref()
        .map_or_else(|| PathBuf::from("/proc/self/ns/net"), netns::path)
}

/// `--cleanup`: removes the pinned maps, the routes (of either data plane) and, on kernels
/// before 6.6, tc filters a crashed agent left on the node's interfaces. Idempotent.
fn cleanup(args: &AgentArgs) -> anyhow::Result<()> {
    let service_cidrs = proxy::cidrs("service-cidr", &args.service_cidr)?;
    let lb_pool = proxy::cidrs("lb-pool", &args.lb_pool)?;
    let node_name = node_name(args)?;
    if let Some(name) = &args.netns {
        check_netns(name)?;
    }
    let pins = pin_dir(&args.bpffs, &node_name);
    let removed = skiff_ebpf::remove_pins(&pins)
        .with_context(|| format!("removing the pinned maps in {}", pins.display()))?;
    if let Some(parent) = pins.parent() {
        // shared by every node's agent: only when it is left empty
        let _ = std::fs::remove_dir(parent);
    }
    let netns = args.netns.as_deref();
    routes::remove(netns, &service_cidrs, ServiceRoute::Unreachable);
    routes::remove(netns, &service_cidrs, ServiceRoute::Local);
    routes::remove(netns, &lb_pool, ServiceRoute::Local);
    let netns_path = node_netns_path(args);
    let mut filters = 0;
    for (interface, _) in north_south::node_interfaces(netns)? {
        match skiff_ebpf::detach_leftover_filters(&netns_path, &interface) {
            Ok(true) => filters += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(interface, error = %e, "removing leftover tc filters"),
        }
    }
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "skiff agent cleaned up: node={node_name} pins={} ({}) routes removed, {filters} tc filters removed",
        pins.display(),
        if removed { "removed" } else { "none" },
    )?;
    out.flush()?;
    Ok(())
}

/// The proxy, its health-check NodePorts and the admin endpoint, until a signal.
async fn serve(
    args: &AgentArgs,
    client: kube::Client,
    node_name: String,
    addresses: Vec<IpAddr>,
    started: &proxy::Started,
    node: &tokio::runtime::Handle,
    pods: Option<FollowPods>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let state = skiff_proxy::Proxy::new(skiff_proxy::NodeInfo {
        name: node_name.clone(),
        zone: None,
        addresses: addresses.clone(),
    });
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}: cannot listen", args.admin_addr))?;
    let admin_addr = admin_listener.local_addr()?;
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        admin::Sources {
            proxy: state.clone(),
            dataplane: started.dataplane.clone(),
            dns: Vec::new(),
            ingress: None,
        },
        stopped(),
    ));
    let proxy_task = tokio::spawn(skiff_proxy::run_with(
        client,
        state.clone(),
        started.dataplane.clone(),
        skiff_proxy::Config::default(),
        stopped(),
    ));
    let health = node.spawn(skiff_proxy::health::serve(
        state.clone(),
        addresses.clone(),
        stopped(),
    ));
    let rescan = started
        .north_south
        .clone()
        .map(|ns: Arc<NorthSouth>| tokio::spawn(ns.follow(stopped())));
    let pod_watch = pods.map(|(pods, lb, known)| {
        let dir = pods.dir().to_owned();
        tokio::spawn(async move {
            if let Err(e) = pods.follow(lb, known, stopped()).await {
                tracing::error!(
                    "--pod-netns-prefix: cannot follow {}: {e:#}; pod namespaces made from now on are not load balanced",
                    dir.display()
                );
            }
        })
    });
    let mut synced = state.subscribe();
    let signal = crate::server::shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        r = synced.wait_for(|v| *v > 0) => {
            r.context("the service proxy stopped before its first sync")?;
            tracing::info!(node = %node_name, dataplane = started.dataplane.name(), ?addresses, admin = %admin_addr, "skiff agent: service proxy programmed");
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "skiff agent is ready: components=proxy node={node_name} admin={admin_addr}")?;
            out.flush()?;
        }
        () = &mut signal => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }
    signal.await;
    tracing::info!("skiff agent stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(admin, proxy_task, health);
    if let Some(rescan) = rescan {
        let _ = rescan.await;
    }
    if let Some(pod_watch) = pod_watch {
        let _ = pod_watch.await;
    }
    Ok(())
}

/// `--node-ip`, else the InternalIP addresses of the Node object.
async fn node_addresses(
    client: &kube::Client,
    node_name: &str,
    given: &[IpAddr],
) -> anyhow::Result<Vec<IpAddr>> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes
        .get_opt(node_name)
        .await
        .with_context(|| format!("cannot read Node {node_name}"))?
        .with_context(|| {
            format!("there is no Node {node_name}: pass --node-name, or --node-ip for NodePorts")
        })?;
    let ips: Vec<IpAddr> = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    anyhow::ensure!(
        !ips.is_empty(),
        "Node {node_name} has no InternalIP address: pass --node-ip"
    );
    Ok(ips)
}
