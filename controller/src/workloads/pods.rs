//! What the workload controllers ask of a pod: active, ready, available (minReadySeconds), the order to delete in, and the pod a template makes.

use std::cmp::Reverse;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;

/// Not being deleted and not finished (upstream `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Since when the pod has been ready.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` at `now` (upstream `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(since) => since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now,
        None => false,
    }
}

/// How long until a ready pod becomes available, if it is not yet.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    let at = since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    let left = now.duration_until(at);
    (left.is_positive()).then(|| left.unsigned_abs())
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Upstream `ActivePods` order for scale-down: the pod to delete first comes first. Unscheduled
/// before scheduled, Pending before Unknown before Running, not ready before ready, ready for a
/// shorter time first, more restarts first, newer first.
pub fn sort_for_deletion(pods: &mut [&Pod]) {
    pods.sort_by_key(|p| {
        let scheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            Some("Running") => 2,
            _ => 3,
        };
        (
            scheduled,
            phase,
            is_ready(p),
            Reverse(ready_since(p)),
            Reverse(restarts(p)),
            Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    });
}

/// The controller reference `owner` puts on what it creates (controller, blockOwnerDeletion).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The pod a ReplicaSet creates from its template (upstream `GetPodFromTemplate`).
pub fn from_template(template: &PodTemplateSpec, owner: OwnerReference, namespace: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A timestamp for a status or condition.
pub fn now_time() -> Time {
    Time(jiff::Timestamp::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, created: &str, phase: &str, ready: Option<&str>) -> Pod {
        let mut status = json!({"phase": phase});
        if let Some(since) = ready {
            status["conditions"] =
                json!([{"type": "Ready", "status": "True", "lastTransitionTime": since}]);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": []},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn deletion_order_not_ready_then_newest() {
        let a = pod(
            "old-ready",
            "2024-01-01T00:00:00Z",
            "Running",
            Some("2024-01-01T00:00:10Z"),
        );
        let b = pod(
            "new-ready",
            "2024-01-02T00:00:00Z",
            "Running",
            Some("2024-01-02T00:00:10Z"),
        );
        let c = pod("old-pending", "2024-01-01T00:00:00Z", "Pending", None);
        let d = pod("new-pending", "2024-01-03T00:00:00Z", "Pending", None);
        let mut pods = vec![&a, &b, &c, &d];
        sort_for_deletion(&mut pods);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            ["new-pending", "old-pending", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn availability_waits_min_ready_seconds() {
        let p = pod(
            "p",
            "2024-01-01T00:00:00Z",
            "Running",
            Some("2024-01-01T00:00:10Z"),
        );
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        assert!(is_available(&p, 0, at("2024-01-01T00:00:10Z")));
        assert!(!is_available(&p, 30, at("2024-01-01T00:00:20Z")));
        assert!(is_available(&p, 30, at("2024-01-01T00:00:40Z")));
        assert_eq!(
            until_available(&p, 30, at("2024-01-01T00:00:20Z")),
            Some(std::time::Duration::from_secs(20))
        );
    }
}
