//! The REST API server over real TLS, driven by the kube client, raw HTTPS and the real kubectl.

mod binding;
mod crud;
mod deletion;
mod events;
mod imperative;
mod kubectl_versions;
mod limits;
mod node_proxy;
mod openapi;
mod patch;
mod server_side_apply;
mod subresources;
mod transport;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use skiff_apiserver::server::{ApiServer, ServerConfig};
use skiff_apiserver::storage::{Codec, EncryptionKey, SqliteStore, Store};
use tokio::sync::oneshot;

/// A server on 127.0.0.1:<free port> over a SQLite store in a temp dir.
pub struct TestServer {
    pub server: ApiServer,
    pub store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    /// The namespace controller and garbage collector, when started.
    controllers: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl TestServer {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, |_| {}).await
    }

    /// Starts with `adjust` applied to the test configuration.
    pub async fn start_with(
        dir: &Path,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> anyhow::Result<Self> {
        let mut last = None;
        // A restart may find the previous store's lock not yet released: retry briefly.
        let mut store: Option<Arc<dyn Store>> = None;
        for _ in 0..50 {
            // A fixed key, so tests can store Secrets (always sealed at rest).
            let codec = Codec::new(Some(EncryptionKey::from_bytes(&[7; 32])?));
            match SqliteStore::open(&dir.join("state.db"), codec) {
                Ok(s) => {
                    store = Some(Arc::new(s));
                    break;
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let store = match store {
            Some(s) => s,
            None => anyhow::bail!("opening the store: {last:?}"),
        };
        let mut config = ServerConfig::new(dir);
        config.api_port = 0;
        config.bookmark_interval = Duration::from_millis(300);
        adjust(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let server = ApiServer::start(config, store.clone(), async move {
            let _ = rx.await;
        })
        .await?;
        Ok(Self {
            server,
            store,
            stop: Some(tx),
            controllers: None,
        })
    }

    /// A server with skiff-controller's namespace controller and garbage collector running
    /// against it (through the admin kubeconfig, like `skiff server`).
    pub async fn start_with_controllers(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with_controller_config(dir, skiff_controller::Config::default()).await
    }

    /// [`Self::start_with_controllers`] with an explicit controller configuration.
    pub async fn start_with_controller_config(
        dir: &Path,
        config: skiff_controller::Config,
    ) -> anyhow::Result<Self> {
        let mut ts = Self::start(dir).await?;
        let client = ts.client().await?;
        let (tx, rx) = oneshot::channel::<()>();
        let metrics = Arc::new(skiff_controller::Metrics::default());
        let task = tokio::spawn(skiff_controller::run_with_config(
            client,
            config,
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        ts.controllers = Some((tx, task));
        Ok(ts)
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(self.server.kubeconfig_path())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A client that does not retry 429/503/504 answers (kube's default does, with backoff):
    /// for tests that want to see them.
    pub async fn client_without_retries(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = Kubeconfig::read_from(self.server.kubeconfig_path())?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.default_retry = false;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stops the server and waits for it (and its store handle) to go away.
    pub async fn stop(mut self) {
        if let Some((tx, task)) = self.controllers.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.server.wait().await;
    }
}

/// The HTTP status and JSON body of a request sent through the kube client.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(kube::client::Body::from(body))?;
    let resp = client.send(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "body of {method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    Ok((code, value))
}

/// The HTTP code of a kube API error.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// kubectl's outcome: success, stdout, stderr.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the real kubectl (the machine's `/usr/bin/kubectl` dispatcher, which picks the kubectl
/// matching the server's minor) against `kubeconfig`.
pub async fn kubectl_run(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Run> {
    Kubectl::default_binary(kubeconfig).run(args).await
}

/// Runs kubectl and returns its stdout, or fails with its stderr.
pub async fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    Kubectl::default_binary(kubeconfig).ok(args).await
}

/// One kubectl binary pointed at one server, with optional extra environment.
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Kubectl {
    /// The machine's `/usr/bin/kubectl` dispatcher.
    pub fn default_binary(kubeconfig: &Path) -> Self {
        Self {
            binary: PathBuf::from("/usr/bin/kubectl"),
            kubeconfig: kubeconfig.to_owned(),
            env: Vec::new(),
        }
    }

    /// A specific client minor, e.g. `29` for kubectl 1.29, as shipped with the Cloud SDK.
    pub fn version(minor: u32, kubeconfig: &Path) -> Self {
        Self {
            binary: PathBuf::from(format!("/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}")),
            kubeconfig: kubeconfig.to_owned(),
            env: Vec::new(),
        }
    }

    pub fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Command> {
        anyhow::ensure!(
            self.binary.exists(),
            "the API tests drive the real kubectl, and {} is missing: install kubectl",
            self.binary.display()
        );
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        Ok(cmd)
    }

    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let mut cmd = self.command(args)?;
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        Ok(Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs kubectl and returns its stdout, or fails with its stderr.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let run = self.run(args).await?;
        anyhow::ensure!(
            run.ok,
            "{} {args:?} failed: {}",
            self.binary.display(),
            run.stderr
        );
        Ok(run.stdout)
    }
}

/// A TLS connection to the server trusting only the cluster CA, offering `alpn`.
pub async fn tls_connect(
    ts: &TestServer,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ts.server.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(ts.server.local_addr()).await?;
    Ok(connector
        .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
        .await?)
}
