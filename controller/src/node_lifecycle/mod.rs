//! The node lifecycle controller (`node-controller`): Lease heartbeats in `kube-node-lease` decide whether a node is alive; a silent node becomes Ready=Unknown with the `unreachable` taints, and its pods are evicted once their tolerations run out.
//!
//! Like upstream, a heartbeat is timed by this controller's own clock when it *sees* the Lease
//! (or the Ready condition's `lastHeartbeatTime`) change, never by the time written in it, so
//! clock skew between nodes cannot matter; after a restart every node gets a full grace period.

pub mod taints;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::events::{EventType, Recorder};

/// The namespace kubelets renew their Leases in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Timing of the node controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// A node whose heartbeat is older than this is unreachable (upstream's
    /// `--node-monitor-grace-period`, 40 s).
    pub grace_period: Duration,
    /// How often a node is looked at again without a change (`--node-monitor-period`, 5 s).
    pub monitor_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(5),
        }
    }
}

/// Errors of one node reconcile (retried).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating node {node}: {source}")]
    Node { node: String, source: kube::Error },
    #[error("evicting pod {pod}: {source}")]
    Evict { pod: String, source: kube::Error },
}

struct Ctx {
    client: kube::Client,
    config: Config,
    leases: Store<Lease>,
    pods: Store<Pod>,
    /// Per node: the last heartbeat seen and when this controller saw it change.
    heartbeats: Mutex<HashMap<String, (String, Instant)>>,
    recorder: Recorder,
}

/// Runs the node controller until the task is dropped. Never fails: errors are retried.
pub async fn run(client: kube::Client, config: Config) {
    let (leases, lease_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease_feed = watcher::watcher(lease_api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(lease_writer)
        .for_each(|_| futures::future::ready(()));
    let bound = watcher::Config::default().fields("spec.nodeName!=");
    let pod_feed = watcher::watcher(Api::<Pod>::all(client.clone()), bound)
        .default_backoff()
        .reflect(pod_writer)
        .for_each(|_| futures::future::ready(()));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config,
        leases: leases.clone(),
        pods: pods.clone(),
        heartbeats: Mutex::new(HashMap::new()),
        recorder: Recorder::new(client.clone(), "node-controller"),
    });
    let controller = async {
        // Evicting from a half-listed store could miss a pod; judging a node before its Lease
        // is listed would start its grace period late (harmless) but never early.
        let _ = leases.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
        tracing::info!("node lifecycle controller started");
        Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
            .watches(lease_api, watcher::Config::default(), |lease: Lease| {
                lease.metadata.name.map(|n| ObjectRef::<Node>::new(&n))
            })
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()))
            .await;
    };
    futures::future::join3(lease_feed, pod_feed, controller).await;
}

fn error_policy(_node: Arc<Node>, error: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(%error, "node lifecycle: retrying");
    Action::requeue(ctx.config.monitor_period.min(Duration::from_secs(1)))
}

/// Looks at one node: heartbeat age → Ready condition → taints → evictions. Idempotent.
async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(name) = node.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let lease = ctx
        .leases
        .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
    let heartbeat = format!(
        "{}|{:?}",
        lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone())
            .unwrap_or_default(),
        ready
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0)
    );
    let age = {
        let mut beats = ctx
            .heartbeats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let entry = beats
            .entry(name.clone())
            .or_insert_with(|| (heartbeat.clone(), now));
        if entry.0 != heartbeat {
            *entry = (heartbeat, now);
        }
        now.duration_since(entry.1)
    };
    let stale = age > ctx.config.grace_period;
    let api: Api<Node> = Api::all(ctx.client.clone());
    let node_error = |source| Error::Node {
        node: name.clone(),
        source,
    };
    if stale && ready.is_none_or(|c| c.status != "Unknown") {
        mark_unknown(&api, &node, &name).await.map_err(node_error)?;
        ctx.recorder
            .publish(
                &*node,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
    }
    let now = jiff::Timestamp::now();
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready_false = ready.is_some_and(|c| c.status == "False");
    let node_taints = match taints::desired_taints(&current, stale, ready_false, now) {
        Some(new) => {
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": new}
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(node_error)?;
            new
        }
        None => current,
    };
    let next_eviction = evict(&ctx, &name, &node_taints, now).await?;
    let mut requeue = ctx.config.monitor_period;
    if !stale {
        requeue =
            requeue.min(ctx.config.grace_period.saturating_sub(age) + Duration::from_millis(50));
    }
    if let Some(at) = next_eviction {
        let wait = at.duration_since(now).unsigned_abs();
        requeue = requeue.min(wait + Duration::from_millis(50));
    }
    Ok(Action::requeue(requeue))
}

/// Every condition to Unknown, as upstream's `tryUpdateNodeHealth` does for a silent kubelet.
async fn mark_unknown(api: &Api<Node>, node: &Node, name: &str) -> Result<(), kube::Error> {
    let now = jiff::Timestamp::now().to_string();
    let existing = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut conditions: Vec<serde_json::Value> = existing
        .iter()
        .filter(|c| c.status != "Unknown")
        .map(|c| {
            json!({
                "type": c.type_,
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastTransitionTime": now,
            })
        })
        .collect();
    if !existing.iter().any(|c| c.type_ == "Ready") {
        conditions.push(json!({
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusNeverUpdated",
            "message": "Kubelet never posted node status.",
            "lastTransitionTime": now,
        }));
    }
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(|_| ())
}

/// Deletes the pods on `node` whose tolerations ran out; returns when the next one is due.
async fn evict(
    ctx: &Ctx,
    node: &str,
    node_taints: &[k8s_openapi::api::core::v1::Taint],
    now: jiff::Timestamp,
) -> Result<Option<jiff::Timestamp>, Error> {
    if !node_taints.iter().any(|t| t.effect == "NoExecute") {
        return Ok(None);
    }
    let mut next: Option<jiff::Timestamp> = None;
    for pod in ctx.pods.state() {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.node_name.as_deref()) != Some(node)
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let tolerations = spec
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        let Some(at) = taints::eviction_time(node_taints, tolerations) else {
            continue;
        };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        ctx.recorder
            .publish(
                &*pod,
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node, "evicted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Evict {
                    pod: format!("{ns}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(next)
}
