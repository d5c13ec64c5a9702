//! The Kubernetes REST API over HTTPS (HTTP/1.1 and HTTP/2), with bearer-token authentication.
//!
//! [`ApiServer::start`] prepares the data dir (CA, serving certificate, tokens, admin
//! kubeconfig), creates the initial namespaces, binds and serves until the shutdown future
//! resolves. Request handling lives in `handlers` (CRUD) and `watch`; `routes` parses paths,
//! `status` renders every error as a Kubernetes `Status`, and `filter` is where list/watch
//! selectors apply.

mod apply;
pub mod auth;
mod binding;
pub mod deletion;
mod dry_run;
mod events;
pub mod filter;
pub mod handlers;
pub mod kubeconfig;
pub mod limits;
mod list_body;
pub mod node_proxy;
pub mod routes;
mod services;
pub mod status;
pub mod tls;
pub mod watch;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use skiff_api::{Strictness, ValidationConfig, kinds};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch as signal;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use auth::{AuthError, create_token};
pub use kubeconfig::kubeconfig_path;
pub use status::ApiError;
pub use tls::TlsError;

use crate::allocation::{AllocationConfig, ConfigError, ServiceAllocator};
use crate::storage::Store;

/// How often the service allocation repair pass runs after the one at start-up (upstream: 3 min).
const REPAIR_INTERVAL: Duration = Duration::from_secs(180);

/// Runs the allocation repair pass now and then every [`REPAIR_INTERVAL`] until shutdown.
async fn repair_loop(ctx: Arc<Ctx>, mut stop: signal::Receiver<bool>) {
    loop {
        let net = ctx.services.network();
        if let Err(error) = crate::allocation::repair::repair(
            ctx.store.as_ref(),
            net,
            crate::allocation::repair::GRACE,
        )
        .await
        {
            tracing::warn!(%error, "service allocation repair failed; retrying later");
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(REPAIR_INTERVAL) => {}
        }
    }
}

/// Namespaces that exist from the start.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How the API server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds `ca.crt`, `ca.key`, `server.crt`, `server.key`, `tokens` and `kubeconfig`.
    pub data_dir: PathBuf,
    /// `--api-port`; 0 picks a free port ([`ApiServer::local_addr`] tells which).
    pub api_port: u16,
    /// Address to listen on (default 127.0.0.1).
    pub bind_address: IpAddr,
    /// Extra subject alternative names for the serving certificate (host names or IPs).
    pub extra_sans: Vec<String>,
    /// Validation settings (node port range).
    pub validation: ValidationConfig,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The longest a non-long-running request may take (`?timeout=` may only shorten it).
    pub request_timeout: Duration,
    /// Concurrent watches one user may hold; more are refused with 429.
    pub max_watches_per_user: usize,
    /// The service network ClusterIPs come from (node ports: `validation.node_port_range`).
    pub allocation: AllocationConfig,
}

impl ServerConfig {
    /// Defaults: port 6443 on 127.0.0.1, bookmarks every minute.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            api_port: 6443,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_sans: Vec::new(),
            validation: ValidationConfig::default(),
            bookmark_interval: Duration::from_secs(60),
            request_timeout: limits::DEFAULT_REQUEST_TIMEOUT,
            max_watches_per_user: limits::DEFAULT_MAX_WATCHES_PER_USER,
            allocation: AllocationConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    ServiceNetwork(#[from] ConfigError),
    #[error("creating namespace {name}: {error}")]
    InitialNamespace { name: String, error: ApiError },
}

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub store: Arc<dyn Store>,
    pub auth: auth::Authenticator,
    pub validation: ValidationConfig,
    pub bookmark_interval: Duration,
    pub request_timeout: Duration,
    pub watches: limits::WatchLimiter,
    /// The HTTPS client for pod subresources the kubelet serves.
    pub kubelet: node_proxy::KubeletClient,
    /// ClusterIP and node-port allocation for Services.
    pub services: ServiceAllocator,
    /// Where repeats of a created Event are aggregated.
    pub events: events::EventIndex,
    /// Flips to `true` when the server shuts down: watches end, connections drain.
    pub shutdown: signal::Receiver<bool>,
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    local_addr: SocketAddr,
    kubeconfig: PathBuf,
    admin_token: String,
    ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Prepares the data dir, creates the initial namespaces, binds, writes the admin
    /// kubeconfig and starts serving in the background until `shutdown` resolves. When this
    /// returns, the server accepts connections and the kubeconfig is in place.
    pub async fn start(
        config: ServerConfig,
        store: Arc<dyn Store>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, ServerError> {
        let pki = tls::ensure_pki(&config.data_dir, &config.extra_sans)?;
        let admin_token = auth::ensure_admin_token(&config.data_dir)?;
        let authenticator = auth::Authenticator::load(&config.data_dir)?;
        let tls_config = tls::server_config(&pki)?;
        let network = config
            .allocation
            .network(config.validation.node_port_range.clone())?;

        let (stop_tx, stop_rx) = signal::channel(false);
        let ctx = Arc::new(Ctx {
            store,
            auth: authenticator,
            validation: config.validation.clone(),
            bookmark_interval: config.bookmark_interval,
            request_timeout: config.request_timeout,
            watches: limits::WatchLimiter::new(config.max_watches_per_user),
            kubelet: node_proxy::KubeletClient::new(&config.data_dir, &pki.ca_cert_pem)?,
            services: ServiceAllocator::new(network),
            events: events::EventIndex::default(),
            shutdown: stop_rx.clone(),
        });
        create_initial_namespaces(&ctx).await?;
        tokio::spawn(repair_loop(ctx.clone(), stop_rx.clone()));

        let addr = SocketAddr::new(config.bind_address, config.api_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let kubeconfig =
            kubeconfig::write_admin(&config.data_dir, local_addr, &pki.ca_cert_pem, &admin_token)?;
        tracing::info!(%local_addr, kubeconfig = %kubeconfig.display(), "API server listening");

        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let acceptor = TlsAcceptor::from(Arc::new(tls_config));
        let task = tokio::spawn(accept_loop(listener, acceptor, ctx, stop_rx));
        Ok(Self {
            local_addr,
            kubeconfig,
            admin_token,
            ca_pem: pki.ca_cert_pem,
            task,
        })
    }

    /// The address actually bound (the port when `api_port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin kubeconfig (`DIR/kubeconfig`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Waits until the server has shut down and its connections have drained.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "API server task failed");
        }
    }
}

/// Starts the server and serves until `shutdown` resolves (see [`ApiServer::start`]).
pub async fn serve(
    config: ServerConfig,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    ApiServer::start(config, store, shutdown)
        .await?
        .wait()
        .await;
    Ok(())
}

async fn create_initial_namespaces(ctx: &Ctx) -> Result<(), ServerError> {
    let Some(info) = kinds::by_resource("", "namespaces") else {
        return Ok(());
    };
    for name in INITIAL_NAMESPACES {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match handlers::create_object(ctx, info, None, body, Strictness::Strict, false).await {
            Ok(_) => tracing::info!(namespace = name, "created namespace"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(error) => {
                return Err(ServerError::InitialNamespace {
                    name: (*name).to_owned(),
                    error,
                });
            }
        }
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
    mut stop: signal::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        ctx.clone(),
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
    tracing::info!("API server stopped");
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
    mut stop: signal::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req| handlers::handle(ctx.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    // With upgrades: exec, attach and port-forward switch protocols (node_proxy).
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
