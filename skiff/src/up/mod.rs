//! `skiff up`: a sandboxed single-node cluster — node netns `skiff-<name>`, the control plane
//! on the host loopback, the node components on a runtime whose threads live in the node netns.

pub(crate) mod admin;
mod apply;
mod dns;
mod ingress;
pub(crate) mod netns;
pub(crate) mod north_south;
pub(crate) mod proxy;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_apiserver::server::node_proxy::issue_kubelet_serving_cert;
use skiff_dns::Synced;
use skiff_node::config::{KubeletConfig, NodeAllocatable};
use skiff_node::images::{ImageMap, ImageResolver};
use skiff_node::registration::{self, NodeConfig};
use skiff_node::sandbox::{IpCidr, SandboxConfig, SandboxManager};
use skiff_node::streaming::StreamingConfig;

use crate::cli::UpArgs;
use crate::server::ControlPlane;

/// Runs `skiff up` to completion (until SIGINT/SIGTERM), on the calling thread.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    // A missing -f path is found before anything starts, not after the cluster is up.
    crate::manifests::expand_with(&args.cluster.manifests, true)?;
    let ingress_listeners = ingress::listeners(&args)?;
    let netns_name = format!("skiff-{}", args.name);
    // Leftovers of a crashed run with the same name go first (pod namespaces are swept by the
    // kubelet's SandboxManager, which knows their prefix and state dir).
    netns::remove(&netns_name);
    netns::create(&netns_name)?;
    let _guard = netns::Guard(netns_name.clone());
    let root = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let node = netns::node_runtime(&netns_name)?;
    root.block_on(run_cluster(&args, &netns_name, &node, ingress_listeners))
}

async fn run_cluster(
    args: &UpArgs,
    netns_name: &str,
    node: &tokio::runtime::Runtime,
    ingress_listeners: skiff_ingress::Listeners,
) -> anyhow::Result<()> {
    let data_dir = args
        .cluster
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".skiff").join(&args.name));
    let plane = ControlPlane::start(&args.cluster, &data_dir, [127, 0, 0, 1].into()).await?;
    let kubeconfig = plane.server.kubeconfig_path().to_path_buf();
    let pod_cidrs = node_pod_cidrs(&args.cluster.pod_cidr)?;

    let mut sandbox_config = SandboxConfig::new(
        format!("{netns_name}-pod-"),
        pod_cidrs.clone(),
        data_dir.join("sandbox"),
    );
    sandbox_config.node_netns = Some(netns::path(netns_name));
    // Everything `up` runs goes when it stops, so its sandbox state lives on a tmpfs.
    sandbox_config.state_on_tmpfs = true;
    sandbox_config.cluster_domain = args.cluster.cluster_domain.clone();
    sandbox_config.cgroup_parent = format!("/skiff-{}", args.name);
    let service_cidrs = proxy::cidrs("service-cidr", &args.cluster.service_cidr)?;
    let lb_pool = proxy::cidrs("lb-pool", &args.cluster.lb_pool)?;
    let dataplane = proxy::start(
        args.cluster.proxy_mode,
        Some(netns_name),
        &netns::path(netns_name),
        &service_cidrs,
        &lb_pool,
        node.handle().clone(),
        // `up` removes everything at exit: nothing to keep for a next run
        None,
        // its pod namespaces are the kubelet's, allowed through `netns_observer`
        &[],
    )?;
    sandbox_config.netns_observer = dataplane.observer.clone();
    // The node's own addresses: NodePorts, health checks and the in-cluster DNS listen there.
    let gateways: Vec<std::net::IpAddr> = pod_cidrs.iter().filter_map(IpCidr::gateway).collect();
    let proxy_state = skiff_proxy::Proxy::new(skiff_proxy::NodeInfo {
        name: args.name.clone(),
        zone: None,
        // NodePorts listen on the node's own addresses: its bridge gateways.
        addresses: gateways.clone(),
    });
    // On the root runtime, as everything that talks to the API; the data plane makes its
    // sockets on the node runtime.
    let proxy_task = tokio::spawn(skiff_proxy::run_with(
        plane.client.clone(),
        proxy_state.clone(),
        dataplane.dataplane.clone(),
        skiff_proxy::Config::default(),
        plane.stopped(),
    ));
    let proxy_synced = proxy_state.subscribe();
    // healthCheckNodePorts (externalTrafficPolicy: Local) answer on the node's addresses, so
    // the server's listeners are made on the node runtime; it reads only the proxy's state.
    let health = node.spawn(skiff_proxy::health::serve(
        proxy_state.clone(),
        proxy_state.node().addresses.clone(),
        plane.stopped(),
    ));
    let ingress = ingress::start(
        args,
        ingress_listeners,
        plane.client.clone(),
        node,
        plane.stopped(),
    )
    .await?;
    tracing::info!(
        http = %ingress.http_addr,
        https = %ingress.https_addr,
        class = skiff_ingress::DEFAULT_CLASS_NAME,
        "ingress on the host loopback"
    );
    // The kubelet runs on the root runtime: its streaming server must listen on the host
    // loopback, where the API server reaches it; everything it does to pods names the node
    // and pod namespaces explicitly (iproute2 `-n`, setns before exec and connect).
    let issued = issue_kubelet_serving_cert(&data_dir, &args.name, &["127.0.0.1".to_owned()])
        .context("cannot issue the kubelet's serving certificate")?;
    let mut streaming = StreamingConfig::new(
        issued.cert_pem,
        issued.key_pem,
        plane.server.ca_pem().to_owned(),
    );
    streaming.addr = ([127, 0, 0, 1], 0).into();
    let image_map = match &args.cluster.image_map {
        Some(path) => {
            Some(ImageMap::load(path).with_context(|| format!("--image-map {}", path.display()))?)
        }
        None => None,
    };
    let kubelet_config = KubeletConfig {
        node_name: args.name.clone(),
        root_dir: data_dir.join("kubelet"),
        sandbox: sandbox_config.clone(),
        images: ImageResolver::new(
            image_map,
            std::env::current_exe().context("cannot find the skiff binary for built-in images")?,
        ),
        streaming: Some(streaming),
        streaming_addr: Default::default(),
        host_ips: Vec::new(),
        node_allocatable: NodeAllocatable::default(),
    };
    let bound = kubelet_config.streaming_addr.clone();
    let kubelet = tokio::spawn(skiff_node::kubelet::run(
        plane.client.clone(),
        kubelet_config,
        plane.stopped(),
    ));
    let kubelet_port = loop {
        if let Some(addr) = bound.get() {
            break addr.port();
        }
        if kubelet.is_finished() {
            // It stopped before serving: say why instead of registering a node nobody runs.
            return match kubelet.await {
                Ok(Ok(())) => Err(anyhow::anyhow!("the kubelet stopped before it served")),
                Ok(Err(e)) => Err(e).context("the kubelet could not start"),
                Err(e) => Err(e).context("the kubelet task failed"),
            };
        }
        if *plane.stopping.borrow() {
            break 0;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // After the kubelet's sandbox manager made the bridge, where the node's addresses are:
    // the tc balancer serves NodePorts and LoadBalancer IPs there to clients outside the
    // node namespace (the host's loopback ports are proxied by sockets, not through it).
    let north_south = match &dataplane.north_south {
        Some(ns) => {
            let first = ns.clone();
            match tokio::task::spawn_blocking(move || first.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "attaching the north-south load balancer"),
                Err(e) => tracing::warn!(error = %e, "attaching the north-south load balancer"),
            }
            Some(tokio::spawn(ns.clone().follow(plane.stopped())))
        }
        None => None,
    };
    // DNS listens on the bridge's addresses too.
    let dns = dns::start(
        &args.cluster,
        args.dns_port,
        &args.name,
        &gateways,
        node,
        &plane,
    )
    .await?;
    tracing::info!(addr = %dns.host_addr, "cluster DNS on the host loopback");
    let admin_listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
    tracing::info!(
        addr = %admin_listener.local_addr()?,
        "admin endpoint: /metrics, /proxy/dump, /healthz"
    );
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        admin::Sources {
            proxy: proxy_state.clone(),
            dataplane: dataplane.dataplane.clone(),
            dns: dns.metrics.clone(),
            ingress: Some(ingress.metrics.clone()),
        },
        plane.stopped(),
    ));
    let mut node_config = NodeConfig::new(args.name.clone(), kubelet_port);
    node_config.pod_cidrs = pod_cidrs.iter().map(ToString::to_string).collect();
    // The API server reaches the kubelet over the host loopback (see ARCHITECTURE.md).
    node_config.internal_ips = vec![[127, 0, 0, 1].into()];
    // On the root runtime: a kube client makes its connections from the thread that awaits the
    // request, and the API listens on the host loopback, which the node netns cannot reach.
    let registration = tokio::spawn(registration::run(
        plane.client.clone(),
        node_config,
        plane.stopped(),
    ));

    let nodes: Api<Node> = Api::all(plane.client.clone());
    let mut stopping = plane.stopping.clone();
    loop {
        if *stopping.borrow() {
            break;
        }
        // Ready once the node is, the proxy programmed its first table, DNS synced and the
        // ingress serves its first route table.
        if *proxy_synced.borrow() > 0
            && dns.synced.iter().all(Synced::is_synced)
            && *ingress.synced.borrow()
            && let Ok(Some(n)) = nodes.get_opt(&args.name).await
            && node_ready(&n)
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "skiff is ready: kubeconfig={}", kubeconfig.display())?;
            out.flush()?;
            if !args.cluster.manifests.is_empty() {
                let outcome = apply::apply(&plane.client, &args.cluster.manifests)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!("{e:#}");
                        apply::Outcome {
                            applied: 0,
                            failed: 1,
                        }
                    });
                if outcome.failed > 0 {
                    tracing::error!(
                        applied = outcome.applied,
                        failed = outcome.failed,
                        "some -f manifests were not applied (see above); the cluster keeps running"
                    );
                } else {
                    tracing::info!(applied = outcome.applied, "-f manifests applied");
                }
            }
            break;
        }
        tokio::select! {
            _ = stopping.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    plane.wait().await;
    for task in dns.tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cluster DNS failed"),
            Err(e) => tracing::warn!(error = %e, "cluster DNS ended abnormally"),
        }
    }
    if let Err(e) = ingress.task.await {
        tracing::warn!(error = %e, "the ingress ended abnormally");
    }
    if let Err(e) = admin.await {
        tracing::warn!(error = %e, "the admin endpoint ended abnormally");
    }
    if let Err(e) = health.await {
        tracing::warn!(error = %e, "the health-check server ended abnormally");
    }
    if let Err(e) = proxy_task.await {
        tracing::warn!(error = %e, "the service proxy ended abnormally");
    }
    if let Err(e) = dataplane.dataplane.shutdown().await {
        tracing::warn!(error = %e, "stopping the data plane");
    }
    if let Some(task) = north_south
        && let Err(e) = task.await
    {
        tracing::warn!(error = %e, "the north-south rescan ended abnormally");
    }
    if let Some(ns) = &dataplane.north_south {
        ns.detach_all();
    }
    match kubelet.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the kubelet failed"),
        Err(e) => tracing::warn!(error = %e, "the kubelet ended abnormally"),
    }
    match registration.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "node registration failed"),
        Err(e) => tracing::warn!(error = %e, "node registration ended abnormally"),
    }
    // The stopped kubelet leaves its sandboxes; `up` removes everything it made.
    let sandboxes = SandboxManager::new(sandbox_config)
        .await
        .context("cannot reopen the pod sandboxes to remove them")?;
    if let Err(e) = sandboxes.teardown_all().await {
        tracing::warn!(error = %e, "cannot tear down every pod sandbox");
    }
    // The socket load balancer's links go with its last handle (nothing is pinned), the tc
    // links were detached above (and would go with the netns and the process anyway).
    drop(dataplane);
    tracing::info!("skiff up stopped");
    Ok(())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node's pod CIDRs: the first /24 (IPv4) and /64 (IPv6) of each cluster pod CIDR.
fn node_pod_cidrs(cluster: &str) -> anyhow::Result<Vec<IpCidr>> {
    cluster
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let cidr: IpCidr = c
                .parse()
                .with_context(|| format!("--pod-cidr {c:?} is not a CIDR"))?;
            let want = if cidr.is_ipv6() { 64 } else { 24 };
            anyhow::ensure!(
                cidr.prefix() <= want,
                "--pod-cidr {c} is smaller than a /{want}: give a larger range"
            );
            Ok(IpCidr::new(cidr.network(), want)?)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn node_cidrs_are_the_first_24_and_64() {
        let cidrs = super::node_pod_cidrs("10.244.0.0/16,fd00:10:244::/56").unwrap();
        let s: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["10.244.0.0/24", "fd00:10:244::/64"]);
        assert!(super::node_pod_cidrs("10.0.0.0/28").is_err());
    }
}
