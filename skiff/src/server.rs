//! `skiff server`: the control plane on this host. Today that is the API server over the
//! chosen datastore and the controllers (namespace, garbage collector, scheduler, node
//! lifecycle) as its clients; the other components say plainly that they are not there yet.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use skiff_apiserver::server::{ApiServer, ServerConfig};
use skiff_apiserver::storage::{Codec, Datastore, EncryptionKey, compactor};

use crate::cli::{ClusterArgs, DEFAULT_SERVER_DATA_DIR, ServerArgs};

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = args
        .cluster
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVER_DATA_DIR));
    let plane = ControlPlane::start(&args.cluster, &data_dir, args.bind_address).await?;
    tracing::warn!(
        "this build runs the API server, the namespace, garbage-collector, deployment, \
         replicaset, statefulset, endpointslice, load-balancer and node-lifecycle controllers and \
         the scheduler: the kubelet, service proxy, DNS and ingress are not implemented yet"
    );
    tracing::info!(
        "skiff API is serving on https://{}: kubeconfig={}",
        plane.server.local_addr(),
        plane.server.kubeconfig_path().display()
    );
    plane.wait().await;
    tracing::info!("skiff server stopped");
    Ok(())
}

/// The API server and the controllers, running until SIGINT/SIGTERM.
pub struct ControlPlane {
    pub server: ApiServer,
    /// An admin client (its connections live on the runtime that built it: the root netns).
    pub client: kube::Client,
    /// Turns true on SIGINT/SIGTERM.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    controllers: tokio::task::JoinHandle<()>,
    compaction: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    /// Resolves once SIGINT/SIGTERM arrived: the shutdown future every component is given.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    }

    /// Opens the datastore in `data_dir` and starts the API server and the controllers.
    pub async fn start(
        cluster: &ClusterArgs,
        data_dir: &Path,
        bind_address: std::net::IpAddr,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let datastore = match &cluster.datastore {
            Some(url) => Datastore::parse(url)?,
            None => Datastore::default_in(data_dir),
        };
        let key = load_key(data_dir, cluster.encryption_key_file.as_deref())?;
        tracing::info!(datastore = %datastore, key = key.id(), "opening storage");
        let store = datastore
            .open(Codec::new(Some(key)))
            .await
            .with_context(|| format!("cannot open the datastore {datastore}"))?;
        let compaction = compactor::spawn_compactor(store.clone(), compactor::DEFAULT_INTERVAL);

        let mut config = ServerConfig::new(data_dir);
        config.api_port = cluster.api_port;
        config.bind_address = bind_address;
        config.validation.node_port_range = cluster.service_node_port_range.clone();
        config.allocation = skiff_apiserver::allocation::AllocationConfig {
            service_cidrs: cluster.service_cidr.clone(),
            cluster_dns: Some(cluster.cluster_dns.clone()),
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = ApiServer::start(config, store, async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await
        .context("cannot start the API server")?;
        let client = admin_client(server.kubeconfig_path()).await?;
        skiff_controller::service_lb::LbPool::parse(&cluster.lb_pool)?;
        let controller_config = skiff_controller::Config {
            lb_pool: cluster.lb_pool.clone(),
            ..skiff_controller::Config::default()
        };
        let metrics = std::sync::Arc::new(skiff_controller::Metrics::default());
        let mut controller_stop = stop_rx.clone();
        let controllers = tokio::spawn(skiff_controller::run_with_config(
            client.clone(),
            controller_config,
            metrics,
            async move {
                let _ = controller_stop.wait_for(|stop| *stop).await;
            },
        ));
        Ok(Self {
            server,
            client,
            stopping: stop_rx,
            controllers,
            compaction,
        })
    }

    /// Waits until the API server stopped (after a signal), then for the controllers.
    pub async fn wait(self) {
        self.server.wait().await;
        if let Err(e) = self.controllers.await {
            tracing::warn!(error = %e, "the controllers ended abnormally");
        }
        self.compaction.abort();
    }
}

/// A kube client with the admin kubeconfig: the controllers use the API like any client.
async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("the admin kubeconfig is unusable")?;
    kube::Client::try_from(config).context("cannot build the controllers' API client")
}

/// The Secret encryption key: the one given, or the data dir's (generated on first start).
fn load_key(data_dir: &Path, given: Option<&Path>) -> anyhow::Result<EncryptionKey> {
    Ok(match given {
        Some(file) => EncryptionKey::load(file)?,
        None => EncryptionKey::load_or_create(&data_dir.join("encryption.key"))?,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}
