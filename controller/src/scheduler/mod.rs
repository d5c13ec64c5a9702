//! The scheduler (`default-scheduler`): binds pending pods to nodes, as a kube-runtime controller over pods without `spec.nodeName`.
//!
//! Two watches feed an in-memory [`snapshot::Snapshot`] (nodes, and what the pods bound to each
//! take); a `Controller` over pending pods runs [`reconcile`] per pod: decide under the snapshot
//! lock, account the pod on its node at once ("assume", so the next decision sees it), then
//! bind through `pods/binding` outside the lock, up to [`BINDS_IN_FLIGHT`] bindings at once. A
//! failed binding undoes the assumption and requeues the pod. Events go through a background
//! [`event_queue::EventQueue`], never on the binding path. A pod that fits nowhere gets a
//! `FailedScheduling` event and the `PodScheduled=False` condition, and is retried whenever a
//! node or a bound pod changes.

pub mod decide;
pub mod event_queue;
pub mod node_match;
pub use skiff_api::quantity;
pub mod requests;
pub mod snapshot;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::sync::oneshot;

use crate::Metrics;
use crate::events::{EventType, Recorder};
use decide::{FitError, PodView};
use event_queue::EventQueue;
use requests::PodDemand;
use snapshot::Snapshot;

/// The name pods ask for in `spec.schedulerName` (empty means this one too).
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// An unschedulable pod is tried again at least this often, even with no cluster change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(30);
/// After an API error, the pod is tried again after this long.
const ERROR_RETRY: Duration = Duration::from_secs(1);
/// Pods being bound at once. Decisions are serial (under the snapshot lock, each one seeing
/// the pods assumed before it); the binding writes run concurrently so they share the
/// store's group commit (one fsync for many) instead of waiting one fsync each.
pub const BINDS_IN_FLIGHT: u16 = 64;

/// Errors of one scheduling attempt (the pod is retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {pod} to node {node}: {source}")]
    Bind {
        pod: String,
        node: String,
        source: kube::Error,
    },
}

/// What every reconcile shares.
struct Ctx {
    client: kube::Client,
    snapshot: Mutex<Snapshot>,
    /// Pods that fit nowhere last time: a cluster change retries them.
    unschedulable: Mutex<HashSet<ObjectRef<Pod>>>,
    retry: mpsc::Sender<()>,
    /// `Scheduled` / `FailedScheduling` Events, posted in the background.
    events: EventQueue,
    metrics: Arc<Metrics>,
    /// The server answered 404 for `pods/binding` on a live pod: patch `spec.nodeName` directly.
    no_binding: AtomicBool,
}

impl Ctx {
    fn snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unschedulable(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectRef<Pod>>> {
        self.unschedulable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Something that can make an unschedulable pod fit happened.
    fn cluster_changed(&self) {
        if !self.unschedulable().is_empty() {
            // A full channel already holds a pending retry: nothing is lost.
            let _ = self.retry.clone().try_send(());
        }
    }
}

/// Runs the scheduler until the task is dropped. Never fails: API errors are logged and retried.
pub async fn run(client: kube::Client) {
    run_with_metrics(client, Arc::new(Metrics::default())).await;
}

/// [`run`], counting bindings and failures into `metrics`.
pub async fn run_with_metrics(client: kube::Client, metrics: Arc<Metrics>) {
    let (retry, retries) = mpsc::channel(1);
    let (events, post_events) = EventQueue::new(Recorder::new(client.clone(), SCHEDULER_NAME));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        snapshot: Mutex::new(Snapshot::default()),
        unschedulable: Mutex::new(HashSet::new()),
        retry,
        events,
        metrics,
        no_binding: AtomicBool::new(false),
    });
    let (nodes_ready, nodes_listed) = oneshot::channel();
    let (pods_ready, pods_listed) = oneshot::channel();
    let feeds = futures::future::join(
        feed_nodes(Api::all(client.clone()), ctx.clone(), nodes_ready),
        feed_bound_pods(Api::all(client.clone()), ctx.clone(), pods_ready),
    );
    let controller = async {
        // Deciding before both lists are in would overbook nodes.
        let _ = nodes_listed.await;
        let _ = pods_listed.await;
        tracing::info!("scheduler started");
        let pending = watcher::Config::default().fields("spec.nodeName=");
        Controller::new(Api::<Pod>::all(client.clone()), pending)
            .with_config(kube::runtime::controller::Config::default().concurrency(BINDS_IN_FLIGHT))
            .reconcile_all_on(retries)
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()))
            .await;
    };
    futures::future::join3(feeds, controller, post_events).await;
}

async fn feed_nodes(api: Api<Node>, ctx: Arc<Ctx>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "scheduler: node watch failed, retrying");
                continue;
            }
        };
        {
            let mut s = ctx.snapshot();
            match &event {
                Event::Apply(n) | Event::InitApply(n) => s.apply_node(n),
                Event::Delete(n) => s.delete_node(n),
                Event::Init => s.nodes_relist_started(),
                Event::InitDone => s.nodes_relist_done(),
            }
        }
        if matches!(event, Event::InitDone)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(());
        }
        ctx.cluster_changed();
    }
}

async fn feed_bound_pods(api: Api<Pod>, ctx: Arc<Ctx>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(%error, "scheduler: pod watch failed, retrying");
                continue;
            }
        };
        let freed = {
            let mut s = ctx.snapshot();
            match &event {
                Event::Apply(p) | Event::InitApply(p) => {
                    s.apply_pod(p);
                    // A pod that finished frees its node.
                    p.status.as_ref().is_some_and(|st| {
                        matches!(st.phase.as_deref(), Some("Succeeded" | "Failed"))
                    })
                }
                Event::Delete(p) => {
                    s.delete_pod(p);
                    true
                }
                Event::Init => {
                    s.pods_relist_started();
                    false
                }
                Event::InitDone => {
                    s.pods_relist_done();
                    true
                }
            }
        };
        if matches!(event, Event::InitDone)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(());
        }
        if freed {
            ctx.cluster_changed();
        }
    }
}

fn error_policy(_pod: Arc<Pod>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "scheduling failed, retrying");
    Action::requeue(ERROR_RETRY)
}

/// Schedules one pending pod: idempotent (a pod bound or assumed is left alone).
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let spec = pod.spec.as_ref();
    let ours = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME);
    let bound = spec
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let (Some(uid), Some(name), Some(namespace)) = (
        pod.metadata.uid.as_deref(),
        pod.metadata.name.as_deref(),
        pod.metadata.namespace.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    let reference = ObjectRef::from_obj(&*pod);
    if !ours || bound || pod.metadata.deletion_timestamp.is_some() {
        ctx.unschedulable().remove(&reference);
        return Ok(Action::await_change());
    }
    let demand = PodDemand::of(&pod);
    let decision = {
        let mut snapshot = ctx.snapshot();
        if snapshot.placed_on(uid).is_some() {
            // Bound (or being bound) already; the pending watch has not caught up.
            return Ok(Action::await_change());
        }
        let decision = decide::decide(&snapshot, &PodView::new(&pod, &demand));
        if let Ok(node) = &decision {
            snapshot.assume(uid, node, demand.clone());
        }
        decision
    };
    match decision {
        Ok(node) => {
            ctx.unschedulable().remove(&reference);
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
            if let Err(source) = bind(&ctx, &api, &pod, name, &node).await {
                // Undo the assumption: the node's room is free again for the next decision.
                ctx.snapshot().forget(uid);
                ctx.metrics.scheduler_bind_errors.inc();
                if matches!(&source, kube::Error::Api(s) if s.code == 409 || s.code == 404) {
                    // Bound by someone else, or deleted: the watch brings the news.
                    return Ok(Action::await_change());
                }
                return Err(Error::Bind {
                    pod: format!("{namespace}/{name}"),
                    node,
                    source,
                });
            }
            ctx.metrics.scheduler_bindings.inc();
            let message = format!("Successfully assigned {namespace}/{name} to {node}");
            // The event is information: binding the next pod need not wait for it.
            ctx.events
                .publish(pod.clone(), EventType::Normal, "Scheduled", message);
            Ok(Action::await_change())
        }
        Err(fit) => {
            ctx.unschedulable().insert(reference);
            ctx.metrics.scheduler_unschedulable.inc();
            report_unschedulable(&ctx, &pod, namespace, name, &fit).await;
            Ok(Action::requeue(UNSCHEDULABLE_RETRY))
        }
    }
}

/// POST `pods/binding`; where the server does not serve it (404 for the subresource on a live
/// pod), set `spec.nodeName` by a patch instead.
async fn bind(
    ctx: &Ctx,
    api: &Api<Pod>,
    pod: &Pod,
    name: &str,
    node: &str,
) -> Result<(), kube::Error> {
    let binding = Binding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let patch_node_name = || async {
        let patch = json!({
            "metadata": {"uid": pod.metadata.uid},
            "spec": {"nodeName": node}
        });
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    };
    if ctx.no_binding.load(Ordering::Relaxed) {
        return patch_node_name().await;
    }
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = name, node, "pod bound");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {
            let patched = patch_node_name().await;
            if patched.is_ok() {
                // The pod exists, so the 404 was the subresource: remember that.
                tracing::info!("the API server does not serve pods/binding: setting spec.nodeName");
                ctx.no_binding.store(true, Ordering::Relaxed);
            }
            patched
        }
        Err(e) => Err(e),
    }
}

/// The `FailedScheduling` event and the `PodScheduled=False` condition (written only when it
/// changes, so retries cost one event fold and nothing else).
async fn report_unschedulable(
    ctx: &Ctx,
    pod: &Arc<Pod>,
    namespace: &str,
    name: &str,
    fit: &FitError,
) {
    let message = fit.to_string();
    ctx.events.publish(
        pod.clone(),
        EventType::Warning,
        "FailedScheduling",
        message.clone(),
    );
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    let same = current.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message.as_str())
    });
    if same {
        return;
    }
    let transition = match current {
        Some(c) if c.status == "False" => c.last_transition_time.clone(),
        _ => None,
    }
    .map_or_else(|| json!(jiff::Timestamp::now().to_string()), |t| json!(t));
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}});
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    if let Err(error) = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        tracing::warn!(%error, pod = name, "could not set PodScheduled=False");
    }
}
