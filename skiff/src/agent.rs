//! `skiff agent`: node components against any Kubernetes API server (skiff's own or a real
//! cluster's), on this host's network or inside a named namespace (`--netns`). This build runs
//! the service proxy; the kubelet, DNS and ingress run in `skiff up`.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_proxy::routes::{self, ServiceRoute};

use crate::cli::{AgentArgs, Component};
use crate::up::{admin, netns, proxy};

/// Runs the agent until SIGINT/SIGTERM, on the calling thread.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
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
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
    };
    let root = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    // The data plane's sockets live in the node namespace: with --netns, on a runtime whose
    // threads entered it; otherwise on the agent's own runtime, in its own namespace.
    let node_runtime = match &args.netns {
        Some(name) => {
            anyhow::ensure!(
                netns::path(name).exists(),
                "--netns {name}: {} does not exist (create it with `ip netns add {name}`)",
                netns::path(name).display()
            );
            Some(netns::node_runtime(name)?)
        }
        None => None,
    };
    let node = node_runtime
        .as_ref()
        .map_or_else(|| root.handle().clone(), |r| r.handle().clone());
    let netns_path = args
        .netns
        .as_deref()
        .map_or_else(|| PathBuf::from("/proc/self/ns/net"), netns::path);
    root.block_on(async {
        let client = skiff_controller::standalone::client_from_kubeconfig(&args.kubeconfig)
            .await
            .with_context(|| format!("--kubeconfig {}", args.kubeconfig.display()))?;
        let addresses = node_addresses(&client, &node_name, &args.node_ip).await?;
        let started = proxy::start(
            args.proxy_mode,
            args.netns.as_deref(),
            &netns_path,
            &service_cidrs,
            &lb_pool,
            node.clone(),
        )?;
        let result = serve(&args, client, node_name, addresses, &started, &node).await;
        // The routes go with the agent (a namespace of `skiff up` goes as a whole).
        routes::remove(args.netns.as_deref(), &service_cidrs, started.service_route);
        routes::remove(args.netns.as_deref(), &lb_pool, ServiceRoute::Local);
        result
    })
}

/// The proxy, its health-check NodePorts and the admin endpoint, until a signal.
async fn serve(
    args: &AgentArgs,
    client: kube::Client,
    node_name: String,
    addresses: Vec<IpAddr>,
    started: &proxy::Started,
    node: &tokio::runtime::Handle,
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
