//! Ingress controller and L7 proxy on pingora: Ingresses compiled into one immutable route
//! table, TLS certificates from Secrets chosen by SNI, per-request balancing.
//!
//! Flow: `watch` (kube-runtime watchers) → `model` (objects cut down to what routing needs,
//! invalid parts reported as `Problem`s) → `compile` (class selection, per-host merging,
//! EndpointSlice resolution) → `table` (the `RouteTable` snapshot) and `tls` (the certificate
//! snapshot), both swapped whole through `ArcSwap` → `server` (our accept loops on the caller's
//! runtime; `h1` reads HTTP/1.x heads, `lean` proxies the common HTTP/1.1 request itself over
//! `pool`ed upstream connections, `h2down` serves HTTP/2 connections (to HTTP backends over the
//! same pool, to GRPC/H2C backends over `h2pool`), both through `upstream`; pingora's
//! `HttpProxy` the rest) → `proxy` (the `ProxyHttp` phases: route,
//! answer 404/503/308 locally, or pick an endpoint with `balance`, P2C over peak-EWMA) →
//! `metrics`.

pub mod balance;
pub mod bufio;
pub mod class;
pub mod compile;
pub mod h1;
pub mod h2down;
pub mod h2pool;
pub mod lean;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod proxy;
pub mod server;
pub mod table;
pub mod tls;
pub(crate) mod upstream;
pub mod watch;

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod tls_tests;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use class::{CONTROLLER_NAME, ClassSelector, DEFAULT_CLASS_NAME};
pub use compile::{Compiled, RoutingConfig, compile};
pub use h1::Limits;
pub use metrics::Metrics;
pub use model::{BackendRef, Key, Model, PortRef, Problem};
pub use server::{IngressServer, Listeners, SharedState};
pub use table::{Backend, Decision, Route, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot create IngressClass {0}: {1}")]
    Class(String, kube::Error),
}

/// What the ingress controller needs to know (the CLI flags map onto it).
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// `--ingress-class` and `--default-backend`.
    pub routing: RoutingConfig,
    /// Create this IngressClass (ours, marked default) at start if it does not exist
    /// (`skiff` per the contract); `None` creates none.
    pub create_class: Option<String>,
    /// Written to `status.loadBalancer.ingress` of our Ingresses; `None` writes no status.
    pub status_address: Option<String>,
    /// Changes within this window are folded into one rebuild.
    pub debounce: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            routing: RoutingConfig::default(),
            create_class: Some(DEFAULT_CLASS_NAME.to_owned()),
            status_address: None,
            debounce: Duration::from_millis(10),
        }
    }
}

/// A running controller: listeners serving, watches feeding them.
#[derive(Debug)]
pub struct RunningIngress {
    server: IngressServer,
    state: SharedState,
    synced: tokio::sync::watch::Receiver<bool>,
    watch: tokio::task::JoinHandle<()>,
}

impl RunningIngress {
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.server.http_addr
    }
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.server.https_addr
    }
    /// The proxy's counters (render with [`Metrics::render`]).
    pub fn metrics(&self) -> std::sync::Arc<Metrics> {
        self.state.metrics.clone()
    }
    /// Prometheus text: controller-wide and per (Ingress, service) series.
    pub fn render_metrics(&self) -> String {
        self.state.metrics.render_with(&self.state.routes.load())
    }
    /// Resolves once every watch has listed and the first table is served.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
    /// Stops watching and accepting.
    pub async fn shutdown(self) {
        self.watch.abort();
        self.server.shutdown().await;
    }
}

/// Starts the listeners (already bound by the caller, e.g. inside a network namespace) and
/// the watches on the current tokio runtime. Until the first sync every request gets 404.
pub async fn start(
    client: kube::Client,
    config: IngressConfig,
    listeners: Listeners,
) -> Result<RunningIngress, IngressError> {
    start_on(
        client,
        config,
        listeners,
        &tokio::runtime::Handle::current(),
    )
    .await
}

/// [`start`] with the data plane (accept loops, proxying, upstream connections) on
/// `data_plane` and the watches on the current runtime: e.g. upstream sockets in the node
/// network namespace of `skiff up`, API connections from the host's.
pub async fn start_on(
    client: kube::Client,
    config: IngressConfig,
    listeners: Listeners,
    data_plane: &tokio::runtime::Handle,
) -> Result<RunningIngress, IngressError> {
    if let Some(name) = &config.create_class {
        watch::ensure_class(&client, name)
            .await
            .map_err(|e| IngressError::Class(name.clone(), e))?;
    }
    let state = SharedState::new()?;
    let server = IngressServer::start_on(data_plane, listeners, &state)?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let cfg = watch::WatchConfig {
        routing: config.routing,
        status_address: config.status_address,
        debounce: config.debounce,
    };
    let watch = tokio::spawn(watch::watch(client, cfg, state.clone(), tx));
    Ok(RunningIngress {
        server,
        state,
        synced: rx,
        watch,
    })
}

/// [`start`], then serve until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    config: IngressConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngressError> {
    let running = start(client, config, listeners).await?;
    shutdown.await;
    running.shutdown().await;
    Ok(())
}
