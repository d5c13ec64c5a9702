//! Controllers and the scheduler against an in-process API server (real SQLite storage, real HTTPS): kubelets are simulated by writing Node, Lease and pod status through the API.

mod endpoints;
mod nodes;
mod scheduler;
mod services;
mod standalone;
mod stateful;
mod workloads;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Asynchronous results get this long; nothing here asserts how fast they come.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `check` until it yields a value, failing with `what` (and the last error `check`
/// returned, if any) after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = tokio::time::Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        anyhow::ensure!(
            start.elapsed() < DEADLINE,
            "gave up after {DEADLINE:?} waiting until {what} (last error: {last_error:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a Node as a kubelet would: labels, taints and `spec` from `spec`, then status
/// (allocatable, Ready) through `/status`.
pub async fn register_node(
    client: &kube::Client,
    name: &str,
    labels: Value,
    spec: Value,
    allocatable: Value,
    ready: &str,
) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = labels;
    if let Some(m) = labels.as_object_mut() {
        m.insert("kubernetes.io/hostname".into(), json!(name));
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec
    }))?;
    nodes.create(&PostParams::default(), &node).await?;
    set_node_status(client, name, allocatable, ready).await
}

/// Writes a node's allocatable/capacity and Ready condition, as the kubelet's status sync does.
pub async fn set_node_status(
    client: &kube::Client,
    name: &str,
    allocatable: Value,
    ready: &str,
) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "allocatable": allocatable, "capacity": allocatable,
        "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
            "lastTransitionTime": now}]
    }});
    Ok(nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?)
}

/// A pod with one container and `spec` merged over it.
pub fn pod(name: &str, spec: Value) -> anyhow::Result<Pod> {
    let mut base = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "skiff.dev/pause"}]}
    });
    merge(&mut base, json!({ "spec": spec }));
    Ok(serde_json::from_value(base)?)
}

/// JSON merge (objects merged key by key, everything else replaced).
pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The node a pod is bound to, once it is.
pub async fn bound_node(pods: &Api<Pod>, name: &str) -> anyhow::Result<String> {
    eventually(&format!("pod {name} is bound"), || async {
        Ok(pods
            .get(name)
            .await?
            .spec
            .and_then(|s| s.node_name)
            .filter(|n| !n.is_empty()))
    })
    .await
}

/// The events about one object with `reason`.
pub async fn events_for(
    client: &kube::Client,
    namespace: &str,
    object: &str,
    reason: &str,
) -> anyhow::Result<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(object) && e.reason.as_deref() == Some(reason)
        })
        .collect())
}

/// What a kubelet reports for a started pod: Running, with an IP, Ready or not.
pub async fn set_pod_status(
    pods: &Api<Pod>,
    name: &str,
    ip: &str,
    ready: bool,
) -> anyhow::Result<()> {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}
