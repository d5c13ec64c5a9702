//! `kubelet::run`: sandboxes, env caches, the streaming server and the pod manager of one node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};

use crate::config::KubeletConfig;
use crate::pods::sources::Caches;
use crate::pods::worker::WorkerHandle;
use crate::pods::{KubeletStreams, PodRegistry, PodWorkerCtx, spawn_worker};
use crate::sandbox::{SandboxError, SandboxManager};
use crate::streaming::{StreamError, StreamingServer};

/// Why the kubelet could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("kubelet: pod sandboxes: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("kubelet: streaming server: {0}")]
    Streaming(#[from] StreamError),
    #[error(
        "kubelet: cache of {what} never became ready: {message} (is the API server reachable?)"
    )]
    Cache { what: &'static str, message: String },
}

/// Starts a reflector for `api` in the background and returns its store; `changed` (if any)
/// is marked changed after each object the watch applies or deletes.
fn cache<K>(api: Api<K>, changed: Option<tokio::sync::watch::Sender<()>>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Err(e) => warn!(error = %e, "kubelet cache watch"),
                Ok(_) => {
                    if let Some(tx) = &changed {
                        tx.send_replace(());
                    }
                }
            }
        }
    });
    store
}

/// Runs the kubelet of `config.node_name` until `shutdown` resolves. On shutdown the pods'
/// processes are killed but their sandboxes and API objects stay (a restarted kubelet adopts
/// the sandboxes and starts the containers again).
pub async fn run(
    client: kube::Client,
    config: KubeletConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KubeletError> {
    let sandboxes = Arc::new(SandboxManager::new(config.sandbox.clone()).await?);
    let (sources_tx, volume_sources) = tokio::sync::watch::channel(());
    let caches = Caches {
        config_maps: cache(
            Api::<ConfigMap>::all(client.clone()),
            Some(sources_tx.clone()),
        ),
        secrets: cache(Api::<Secret>::all(client.clone()), Some(sources_tx)),
        services: cache(Api::<Service>::all(client.clone()), None),
        allocatable: config.node_allocatable.clone(),
        volume_sources,
    };
    for (what, ready) in [
        ("ConfigMaps", caches.config_maps.wait_until_ready().await),
        ("Secrets", caches.secrets.wait_until_ready().await),
        ("Services", caches.services.wait_until_ready().await),
    ] {
        ready.map_err(|e| KubeletError::Cache {
            what,
            message: e.to_string(),
        })?;
    }
    let registry = PodRegistry::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _server = match config.streaming.clone() {
        Some(sc) => {
            let streams = Arc::new(KubeletStreams {
                registry: registry.clone(),
                log_root: config.log_root(),
                caches: Some(caches.clone()),
            });
            let mut rx = stop_rx.clone();
            let server = StreamingServer::start(sc, streams, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await?;
            info!(addr = %server.local_addr(), "kubelet streaming server listening");
            let _ = config.streaming_addr.set(server.local_addr());
            Some(server)
        }
        None => None,
    };
    let node = config.node_name.clone();
    let ctx = Arc::new(PodWorkerCtx {
        client: client.clone(),
        config,
        sandboxes: sandboxes.clone(),
        caches,
        registry,
    });
    let pods: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(
        pods,
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    let shutdown = shutdown;
    futures::pin_mut!(shutdown);
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list = true;
    info!(node = %node, "kubelet started");
    loop {
        let ev = tokio::select! {
            _ = &mut shutdown => break,
            ev = stream.next() => ev,
        };
        workers.retain(|_, w| !w.task.is_finished());
        match ev {
            None => break,
            Some(Err(e)) => warn!(error = %e, "kubelet pod watch"),
            Some(Ok(Event::Init)) => listed.clear(),
            Some(Ok(Event::InitApply(pod))) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                apply(&ctx, &mut workers, pod);
            }
            Some(Ok(Event::InitDone)) => {
                for (uid, w) in &workers {
                    if !listed.contains(uid) {
                        w.gone.send_replace(true);
                    }
                }
                if first_list {
                    first_list = false;
                    match sandboxes.retain(&listed).await {
                        Ok(removed) if !removed.is_empty() => {
                            info!(?removed, "removed sandboxes of pods no longer on this node")
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "removing leftover sandboxes"),
                    }
                }
            }
            Some(Ok(Event::Apply(pod))) => apply(&ctx, &mut workers, pod),
            Some(Ok(Event::Delete(pod))) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(w) = workers.get(&uid) {
                    w.pod.send_replace(pod);
                    w.gone.send_replace(true);
                }
            }
        }
    }
    info!(node = %node, "kubelet stopping");
    for w in workers.values() {
        w.shutdown.send_replace(true);
    }
    for (_, w) in workers.drain() {
        let _ = w.task.await;
    }
    let _ = stop_tx.send(true);
    Ok(())
}

/// A pod added or changed: feed its worker, or start one unless it already finished.
fn apply(ctx: &Arc<PodWorkerCtx>, workers: &mut HashMap<String, WorkerHandle>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if let Some(w) = workers.get(&uid) {
        w.pod.send_replace(pod);
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none() {
        return;
    }
    tracing::debug!(
        pod = pod.metadata.name.as_deref().unwrap_or_default(),
        "pod seen: starting its worker"
    );
    workers.insert(uid, spawn_worker(ctx.clone(), pod));
}
