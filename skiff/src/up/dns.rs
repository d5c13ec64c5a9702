//! The cluster DNS of `skiff up`: the `kube-system/kube-dns` Service (ClusterIP `--cluster-dns`)
//! with an EndpointSlice pointing at the node's bridge address, one server listening there
//! inside the node namespace, and one on `--dns-port` on the host loopback.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use skiff_dns::{DnsConfig, DnsServer, PodRecords, Synced};

use crate::cli::{self, ClusterArgs};

/// Port the in-cluster DNS listens on behind the Service.
const DNS_PORT: u16 = 53;

/// The two running servers.
pub struct Dns {
    pub tasks: Vec<tokio::task::JoinHandle<Result<(), skiff_dns::DnsError>>>,
    pub synced: Vec<Synced>,
    /// Node server first.
    pub metrics: Vec<std::sync::Arc<skiff_dns::Metrics>>,
    /// Where the host loopback server listens (`--dns-port`, or the port picked for 0).
    pub host_addr: SocketAddr,
}

fn config(args: &ClusterArgs, listen: Vec<SocketAddr>) -> anyhow::Result<DnsConfig> {
    let mut config = DnsConfig {
        zone: args.cluster_domain.clone(),
        ttl: args.dns_ttl,
        listen,
        pods: match args.pods {
            cli::PodRecords::Insecure => PodRecords::Insecure,
            cli::PodRecords::Verified => PodRecords::Verified,
            cli::PodRecords::Disabled => PodRecords::Disabled,
        },
        ..DnsConfig::default()
    };
    if let Some(list) = &args.dns_upstream {
        config.forward.upstreams = list
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .map(|a| {
                let a = a.trim();
                a.parse::<SocketAddr>()
                    .or_else(|_| a.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .with_context(|| format!("--dns-upstream {a:?} is not an address"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    Ok(config)
}

/// Creates (or updates) the `kube-dns` Service and its EndpointSlice, binds both servers and
/// starts them. `gateways` are the node's bridge addresses (the Service's endpoints);
/// `node` is the node-netns runtime the in-cluster server binds on. Both serve from the root
/// runtime, where the API (and the host's upstreams) are reachable.
pub async fn start(
    args: &ClusterArgs,
    dns_port: u16,
    node_name: &str,
    gateways: &[IpAddr],
    node: &tokio::runtime::Runtime,
    plane: &crate::server::ControlPlane,
) -> anyhow::Result<Dns> {
    let client = &plane.client;
    publish_service(args, node_name, gateways, client).await?;
    let inside = config(
        args,
        gateways
            .iter()
            .map(|ip| SocketAddr::new(*ip, DNS_PORT))
            .collect(),
    )?;
    // Bound on a node-netns thread: the gateway addresses exist only there.
    let node_server = node
        .spawn(DnsServer::bind(inside))
        .await
        .context("the DNS bind task failed")?
        .context("cannot serve DNS on the node's bridge addresses")?;
    let outside = config(args, vec![SocketAddr::from(([127, 0, 0, 1], dns_port))])?;
    let host_server = DnsServer::bind(outside)
        .await
        .with_context(|| format!("cannot serve DNS on 127.0.0.1:{dns_port} (--dns-port)"))?;
    let host_addr = host_server
        .local_addrs()
        .first()
        .copied()
        .context("the DNS server bound no address")?;
    let mut dns = Dns {
        tasks: Vec::new(),
        synced: vec![node_server.synced(), host_server.synced()],
        metrics: vec![node_server.metrics(), host_server.metrics()],
        host_addr,
    };
    for server in [node_server, host_server] {
        dns.tasks
            .push(tokio::spawn(server.run(client.clone(), plane.stopped())));
    }
    Ok(dns)
}

/// The selector-less `kube-dns` Service and the EndpointSlice that sends it to the node.
async fn publish_service(
    args: &ClusterArgs,
    node_name: &str,
    gateways: &[IpAddr],
    client: &kube::Client,
) -> anyhow::Result<()> {
    let params = PatchParams::apply("skiff-up").force();
    let ports = json!([
        {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
        {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
    ]);
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": args.cluster_dns, "ports": ports},
    });
    services
        .patch("kube-dns", &params, &Patch::Apply(&service))
        .await
        .context("cannot create the kube-system/kube-dns Service")?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    for ip in gateways {
        let (family, name) = if ip.is_ipv6() {
            ("IPv6", "kube-dns-node-ipv6")
        } else {
            ("IPv4", "kube-dns-node-ipv4")
        };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "kube-system",
                "labels": {"kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "skiff-up"}},
            "addressType": family,
            "ports": ports,
            "endpoints": [{"addresses": [ip.to_string()], "nodeName": node_name,
                "conditions": {"ready": true, "serving": true, "terminating": false}}],
        });
        slices
            .patch(name, &params, &Patch::Apply(&slice))
            .await
            .context("cannot create the kube-dns EndpointSlice")?;
    }
    Ok(())
}
