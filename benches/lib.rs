//! Benchmarks: criterion micro-benchmarks (`cargo bench -p skiff-benches`) and end-to-end scripts.
//!
//! [`BenchServer`] is the API server the end-to-end benchmarks drive: real HTTPS, bearer token
//! and SQLite with fsync in a temporary directory, and a kube client for it.

use std::error::Error;
use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use skiff_apiserver::server::{ApiServer, ServerConfig};
use skiff_apiserver::storage::{Codec, SqliteStore, Store};
use tokio::sync::oneshot;

/// An API server on a free loopback port over a fresh SQLite store.
pub struct BenchServer {
    pub server: ApiServer,
    pub store: Arc<dyn Store>,
    /// An admin client, from the kubeconfig the server wrote.
    pub client: kube::Client,
    stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for BenchServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchServer")
            .field("addr", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl BenchServer {
    pub async fn start() -> Result<Self, Box<dyn Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(
            &dir.path().join("state.db"),
            Codec::new(None),
        )?);
        let mut config = ServerConfig::new(dir.path());
        config.api_port = 0;
        let (stop, rx) = oneshot::channel::<()>();
        let server = ApiServer::start(config, store.clone(), async move {
            let _ = rx.await;
        })
        .await?;
        let kubeconfig = Kubeconfig::read_from(server.kubeconfig_path())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = kube::Client::try_from(config)?;
        Ok(Self {
            server,
            store,
            client,
            stop,
            _dir: dir,
        })
    }

    /// Stops the server and waits for it to go away.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.wait().await;
    }
}
