//! Events the kubelet posts about a pod (probe failures, probe-driven restarts, volume
//! failures), as upstream's kubelet does, so `kubectl describe pod` shows them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::warn;

use super::PodEntry;

/// Posts one Event about `entry`; `container` sets the upstream fieldPath. Failures are
/// logged: an Event is never worth failing a pod over. Repeats are aggregated by the API
/// server (skiff) or stored separately (other API servers), as with a plain recorder.
pub async fn post(
    client: &kube::Client,
    node: &str,
    entry: &PodEntry,
    container: Option<&str>,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                entry.name,
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(entry.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(entry.name.clone()),
            namespace: Some(entry.namespace.clone()),
            uid: Some(entry.uid.clone()),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            ..Default::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(kind.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.into()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &entry.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        warn!(pod = %entry.name, reason, error = %e, "posting an event");
    }
}

/// [`post`] without waiting for it: the container's start is not held up by the API server.
pub fn post_in_background(
    ctx: &super::PodWorkerCtx,
    entry: &std::sync::Arc<PodEntry>,
    container: &str,
    kind: &'static str,
    reason: &'static str,
    message: String,
) {
    let client = ctx.client.clone();
    let node = ctx.config.node_name.clone();
    let entry = entry.clone();
    let container = container.to_owned();
    tokio::spawn(async move {
        post(
            &client,
            &node,
            &entry,
            Some(&container),
            kind,
            reason,
            &message,
        )
        .await;
    });
}
