//! The ingress of `skiff up`: HTTP and HTTPS listeners on the host loopback (`--http-port`,
//! `--https-port`), the proxy's data plane on the node runtime (only sockets made in the node
//! netns reach pod IPs), the watches on the root runtime (the API is on the host loopback).

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use skiff_ingress::{ClassSelector, IngressConfig, Listeners, RoutingConfig};

use crate::cli::UpArgs;

/// Written to `status.loadBalancer.ingress` of our Ingresses: where the host reaches them.
const STATUS_ADDRESS: &str = "127.0.0.1";

/// The running ingress, stopped by its task once `up` is told to stop.
pub struct Ingress {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// True once every watch listed and the first route table is served.
    pub synced: tokio::sync::watch::Receiver<bool>,
    pub metrics: std::sync::Arc<skiff_ingress::Metrics>,
    /// Ends after the listeners closed (after `stopped` resolved).
    pub task: tokio::task::JoinHandle<()>,
}

fn bind(port: u16, flag: &str) -> anyhow::Result<std::net::TcpListener> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} ({flag})"))
}

/// Binds both listeners on the host loopback (the root netns), before anything else starts:
/// a taken port stops `up` at once.
pub fn listeners(args: &UpArgs) -> anyhow::Result<Listeners> {
    Ok(Listeners {
        http: Some(bind(args.http_port, "--http-port")?),
        https: Some(bind(args.https_port, "--https-port")?),
        ..Listeners::default()
    })
}

/// Creates the IngressClass `skiff` and starts the controller on `listeners`. Called on the
/// root runtime: the watches stay on it.
pub async fn start(
    args: &UpArgs,
    listeners: Listeners,
    client: kube::Client,
    node: &tokio::runtime::Runtime,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Ingress> {
    let config = IngressConfig {
        routing: RoutingConfig {
            classes: ClassSelector {
                extra_class: Some(args.cluster.ingress_class.clone()),
            },
            default_backend: args.cluster.default_backend.clone(),
        },
        create_class: Some(skiff_ingress::DEFAULT_CLASS_NAME.to_owned()),
        status_address: Some(STATUS_ADDRESS.to_owned()),
        ..IngressConfig::default()
    };
    let running = skiff_ingress::start_on(client, config, listeners, node.handle())
        .await
        .context("cannot start the ingress")?;
    let (http_addr, https_addr) = running
        .http_addr()
        .zip(running.https_addr())
        .context("the ingress serves no listener")?;
    let metrics = running.metrics();
    let (tx, synced) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut stopped = std::pin::pin!(stopped);
        let stop_early = tokio::select! {
            () = running.synced() => {
                let _ = tx.send(true);
                false
            }
            () = &mut stopped => true,
        };
        if !stop_early {
            stopped.await;
        }
        running.shutdown().await;
    });
    Ok(Ingress {
        http_addr,
        https_addr,
        synced,
        metrics,
        task,
    })
}
