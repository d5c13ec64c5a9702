//! The pod worker: sandbox, init then regular containers, status writes, graceful termination.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::container::{Slot, run_container, sleep_or_stop};
use super::events;
use super::sources::{Caches, NamespaceSources};
use super::{PodEntry, PodRegistry};
use crate::config::KubeletConfig;
use crate::sandbox::{PodSandboxSpec, SandboxManager};
use crate::status::{ContainerRecord, PodRecord, pod_status};
use crate::volumes::{PodVolumes, VolumeOptions};

/// What every pod worker shares.
pub struct PodWorkerCtx {
    pub client: kube::Client,
    pub config: KubeletConfig,
    pub sandboxes: Arc<SandboxManager>,
    pub caches: Caches,
    pub registry: PodRegistry,
}

/// The pod manager's handle on one worker: feed it pod updates, tell it the pod is gone.
#[derive(Debug)]
pub struct WorkerHandle {
    pub pod: watch::Sender<Pod>,
    pub gone: watch::Sender<bool>,
    /// Set by the kubelet's shutdown: stop the containers but keep the pod and its sandbox.
    pub shutdown: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

/// How long to wait for the containers' tasks after SIGKILL before giving up on them.
const AFTER_KILL: Duration = Duration::from_secs(10);
/// How often a failed sandbox is tried again.
const SANDBOX_RETRY: Duration = Duration::from_secs(5);

/// Starts the worker of `pod` (registered in the registry until it has cleaned up).
pub fn spawn_worker(ctx: Arc<PodWorkerCtx>, pod: Pod) -> WorkerHandle {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let image = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
    let record = PodRecord {
        init_containers: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ContainerRecord::new(&c.name, &image(c)))
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| ContainerRecord::new(&c.name, &image(c)))
            .collect(),
        host_ips: ctx.config.host_ips.clone(),
        ..Default::default()
    };
    let (pod_tx, pod_rx) = watch::channel(pod);
    let (gone_tx, gone_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let entry = Arc::new(PodEntry {
        uid,
        namespace,
        name,
        pod: pod_rx,
        record: Mutex::new(record),
        changed: Notify::new(),
        sandbox: Mutex::new(None),
        log_dirs: Mutex::new(HashMap::new()),
        readiness: Mutex::new(HashMap::new()),
        volumes: Mutex::new(None),
    });
    ctx.registry.insert(entry.clone());
    let task = tokio::spawn(run_pod(ctx, entry, gone_rx, shutdown_rx));
    WorkerHandle {
        pod: pod_tx,
        gone: gone_tx,
        shutdown: shutdown_tx,
        task,
    }
}

async fn run_pod(
    ctx: Arc<PodWorkerCtx>,
    entry: Arc<PodEntry>,
    mut gone: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    info!(pod = %entry.name, namespace = %entry.namespace, uid = %entry.uid, "pod worker started");
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = tokio::spawn(status_writer(ctx.clone(), entry.clone()));
    let (ctx2, entry2) = (ctx.clone(), entry.clone());
    // A pod already being deleted when its worker starts (a kubelet restart) runs nothing.
    let deleting = entry.pod.borrow().metadata.deletion_timestamp.is_some();
    let mut main = tokio::spawn(async move {
        if !deleting {
            run_containers(ctx2, entry2, stop_rx).await;
        }
    });
    let mut pod_rx = entry.pod.clone();
    // Wait for the pod to be deleted (deletionTimestamp or gone) or the kubelet to stop; the
    // containers may have finished before (a completed pod stays until deleted).
    let mut main_done = false;
    let kubelet_stopping = loop {
        if *gone.borrow() || pod_rx.borrow().metadata.deletion_timestamp.is_some() {
            break false;
        }
        tokio::select! {
            r = &mut main, if !main_done => {
                main_done = true;
                if let Err(e) = r { warn!(pod = %entry.name, error = %e, "pod worker task"); }
            }
            r = gone.changed() => if r.is_err() { break false },
            r = pod_rx.changed() => if r.is_err() { break false },
            _ = shutdown.wait_for(|s| *s) => break true,
        }
    };
    let _ = stop_tx.send(true);
    terminate(&entry, kubelet_stopping).await;
    if !main_done && tokio::time::timeout(AFTER_KILL, &mut main).await.is_err() {
        warn!(pod = %entry.name, "containers did not finish after SIGKILL; abandoning them");
        main.abort();
    }
    // A container may have started while the pod was stopping: nothing of the pod survives.
    if let Some(sandbox) = entry.sandbox() {
        sandbox.kill_all();
    }
    writer.abort();
    if !kubelet_stopping {
        // The whole pod directory: its volumes, and the directory itself.
        if let Err(e) = crate::volumes::teardown_dir(&ctx.config.pod_dir(&entry.uid)) {
            warn!(pod = %entry.name, error = %e, "removing pod volumes");
        }
        match ctx.sandboxes.remove(&entry.uid).await {
            Ok(_) => {}
            Err(e) => warn!(pod = %entry.name, error = %e, "removing pod sandbox"),
        }
        delete_pod(&ctx, &entry).await;
    }
    ctx.registry.remove(&entry.uid);
    info!(pod = %entry.name, namespace = %entry.namespace, uid = %entry.uid, "pod worker done");
}

/// Makes the sandbox, runs the init containers in order, then all containers.
async fn run_containers(
    ctx: Arc<PodWorkerCtx>,
    entry: Arc<PodEntry>,
    mut stop: watch::Receiver<bool>,
) {
    let pod = entry.pod.borrow().clone();
    let sandbox = loop {
        let made = match PodSandboxSpec::from_pod(&pod) {
            Ok(spec) => ctx.sandboxes.create(&spec).await,
            Err(e) => Err(e),
        };
        match made {
            Ok(s) => break s,
            Err(e) => {
                warn!(pod = %entry.name, error = %e, "pod sandbox");
                entry.update(|r| r.sandbox_error = Some(e.to_string()));
                if sleep_or_stop(&mut stop, SANDBOX_RETRY).await {
                    return;
                }
            }
        }
    };
    if let Ok(mut s) = entry.sandbox.lock() {
        *s = Some(sandbox.clone());
    }
    let pod_dir = ctx.config.pod_dir(&entry.uid);
    let mut reported = false;
    let volumes = loop {
        let sources = NamespaceSources {
            caches: &ctx.caches,
            namespace: &entry.namespace,
        };
        match PodVolumes::setup(&pod, &pod_dir, &sources, VolumeOptions::default()) {
            Ok(v) => break Arc::new(v),
            Err(e) => {
                // Upstream keeps the pod ContainerCreating with a FailedMount event, retrying.
                warn!(pod = %entry.name, error = %e, "pod volumes");
                let message = format!("MountVolume.SetUp failed: {e}");
                entry.update(|r| r.sandbox_error = Some(message.clone()));
                if !std::mem::replace(&mut reported, true) {
                    events::post(
                        &ctx.client,
                        &ctx.config.node_name,
                        &entry,
                        None,
                        "Warning",
                        "FailedMount",
                        &message,
                    )
                    .await;
                }
                if sleep_or_stop(&mut stop, SANDBOX_RETRY).await {
                    return;
                }
            }
        }
    };
    if let Ok(mut v) = entry.volumes.lock() {
        *v = Some(volumes.clone());
    }
    // Kept in step while the containers run; aborted when they are all done.
    let refresher = AbortOnDrop(tokio::spawn(refresh_volumes(
        ctx.clone(),
        entry.clone(),
        volumes,
        stop.clone(),
    )));
    let host_ips = ctx.config.host_ips.clone();
    entry.update(|r| {
        r.sandbox_error = None;
        r.pod_ips = if sandbox.host_network {
            host_ips.clone()
        } else {
            sandbox.ips.clone()
        };
        r.host_ips = host_ips;
        r.start_time = Some(Timestamp::now());
    });
    let spec = pod.spec.clone().unwrap_or_default();
    for (index, c) in spec.init_containers.iter().flatten().enumerate() {
        let slot = Slot { init: true, index };
        let ok = run_container(
            ctx.clone(),
            entry.clone(),
            sandbox.clone(),
            c.clone(),
            slot,
            stop.clone(),
        )
        .await;
        if !ok {
            return;
        }
    }
    let tasks: Vec<_> = spec
        .containers
        .iter()
        .enumerate()
        .map(|(index, c)| {
            tokio::spawn(run_container(
                ctx.clone(),
                entry.clone(),
                sandbox.clone(),
                c.clone(),
                Slot { init: false, index },
                stop.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    drop(refresher);
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a burst of ConfigMap/Secret/pod changes may last before volumes are refreshed once.
const VOLUME_REFRESH_DEBOUNCE: Duration = Duration::from_millis(100);

/// Rewrites the pod's configMap, secret, downwardAPI and projected volumes after a watched
/// ConfigMap or Secret changed, or the pod itself did (labels and annotations reach
/// downwardAPI files). Unchanged volumes are left alone by the atomic writer.
async fn refresh_volumes(
    ctx: Arc<PodWorkerCtx>,
    entry: Arc<PodEntry>,
    volumes: Arc<PodVolumes>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sources = ctx.caches.volume_sources.clone();
    let mut pod_rx = entry.pod.clone();
    loop {
        tokio::select! {
            r = sources.changed() => if r.is_err() { return },
            r = pod_rx.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        if sleep_or_stop(&mut stop, VOLUME_REFRESH_DEBOUNCE).await {
            return;
        }
        sources.mark_unchanged();
        let pod = pod_rx.borrow_and_update().clone();
        let namespace = NamespaceSources {
            caches: &ctx.caches,
            namespace: &entry.namespace,
        };
        // Each volume that fails keeps its old files and is logged by `update`.
        let _ = volumes.update(&pod, &namespace);
    }
}

/// Graceful termination: preStop exec hooks, SIGTERM, the grace period, SIGKILL.
async fn terminate(entry: &PodEntry, kubelet_stopping: bool) {
    let Some(sandbox) = entry.sandbox() else {
        return;
    };
    let pod = entry.pod.borrow().clone();
    let spec = pod.spec.clone().unwrap_or_default();
    let grace = if kubelet_stopping {
        0
    } else {
        pod.metadata
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64
    };
    let deadline = Instant::now() + Duration::from_secs(grace);
    info!(pod = %entry.name, grace_seconds = grace, "stopping pod");
    if grace > 0 {
        for c in &spec.containers {
            let Some(cmd) = c
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.exec.as_ref())
                .and_then(|e| e.command.clone())
            else {
                continue;
            };
            let Some((program, args)) = cmd.split_first() else {
                continue;
            };
            match sandbox.command(program) {
                Ok(mut command) => {
                    command
                        .args(args)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true);
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, command.status()).await {
                        Ok(Ok(s)) => {
                            info!(pod = %entry.name, container = %c.name, status = %s, "preStop hook ran")
                        }
                        Ok(Err(e)) => {
                            warn!(pod = %entry.name, container = %c.name, error = %e, "preStop hook did not start")
                        }
                        Err(_) => {
                            warn!(pod = %entry.name, container = %c.name, "preStop hook ran out of the grace period")
                        }
                    }
                }
                Err(e) => warn!(pod = %entry.name, container = %c.name, error = %e, "preStop hook"),
            }
        }
        for pid in sandbox.pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        while !sandbox.pids().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    sandbox.kill_all();
    let until = Instant::now() + AFTER_KILL;
    while !sandbox.pids().is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the pod for good (grace 0, this uid only), as upstream's kubelet does last.
async fn delete_pod(ctx: &PodWorkerCtx, entry: &PodEntry) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &entry.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(entry.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods.delete(&entry.name, &params).await {
        Ok(_) => info!(pod = %entry.name, "pod deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(pod = %entry.name, error = %e, "final pod delete"),
    }
}

/// Writes `/status` whenever the record changed and the computed status differs.
async fn status_writer(ctx: Arc<PodWorkerCtx>, entry: Arc<PodEntry>) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &entry.namespace);
    let mut last = None;
    loop {
        entry.changed.notified().await;
        loop {
            let pod = entry.pod.borrow().clone();
            let record = match entry.record.lock() {
                Ok(r) => r.clone(),
                Err(p) => p.into_inner().clone(),
            };
            let status = pod_status(&pod, &record, Timestamp::now());
            // Compared as sent: timestamps go out in whole seconds, so two statuses made
            // within one second of each other with nothing else changed are the same write.
            let status = match serde_json::to_value(&status) {
                Ok(v) => v,
                Err(e) => {
                    warn!(pod = %entry.name, error = %e, "pod status does not serialize");
                    break;
                }
            };
            if last.as_ref() == Some(&status) {
                break;
            }
            let patch = serde_json::json!({ "status": status });
            match pods
                .patch_status(&entry.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    last = Some(status);
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    warn!(pod = %entry.name, error = %e, "writing pod status; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

impl std::fmt::Debug for PodWorkerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodWorkerCtx")
            .field("node", &self.config.node_name)
            .finish_non_exhaustive()
    }
}
