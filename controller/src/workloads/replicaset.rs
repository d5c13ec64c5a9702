//! The ReplicaSet controller: keeps `spec.replicas` pods from the template (adopting and releasing pods by selector, deleting not-ready and newest first) and reports status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::pods::{self, controller_of, controller_ref};
use super::{Action, Ctx, Error, selector};
use crate::events::EventType;

/// Most pods created or deleted in one pass (upstream `burstReplicas`).
const BURST: usize = 500;

/// One idempotent pass over `rs`.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    if rs.metadata.deletion_timestamp.is_some() {
        // Its pods are the garbage collector's now.
        ctx.expectations.forget(&uid);
        return Ok(Action::await_change());
    }
    let spec = rs.spec.clone().unwrap_or_default();
    let in_ns: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .collect();
    let owned = claim(&rs, &ctx, &in_ns).await?;
    let active: Vec<&Pod> = owned
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| pods::is_active(p))
        .collect();

    let present = |n: &str| in_ns.iter().any(|p| p.metadata.name.as_deref() == Some(n));
    let mut failure = None;
    if ctx.expectations.satisfied(&uid, &present) {
        let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
        if active.len() < want {
            failure = create_pods(&rs, &ctx, want - active.len()).await;
        } else if active.len() > want {
            delete_pods(&rs, &ctx, active.clone(), active.len() - want).await;
        }
    }
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let status = status_for(&rs, &active, min_ready, now, failure);
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status_patch(&status) })),
        )
        .await?;
    }
    // A ready pod becomes available once minReadySeconds pass: look again then.
    let wait = active
        .iter()
        .filter(|p| !pods::is_available(p, min_ready, now))
        .filter_map(|p| pods::until_available(p, min_ready, now))
        .min();
    Ok(match wait {
        Some(d) => Action::requeue(d + Duration::from_millis(50)),
        None => Action::await_change(),
    })
}

/// Upstream `ClaimPods`: pods this ReplicaSet controls, after adopting orphans its selector
/// matches and releasing controlled pods it no longer matches.
async fn claim(rs: &ReplicaSet, ctx: &Ctx, in_ns: &[Arc<Pod>]) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
    let sel = rs
        .spec
        .as_ref()
        .map(|s| s.selector.clone())
        .unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut owned = Vec::new();
    for pod in in_ns {
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let matches = selector::matches(&sel, pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || pod.metadata.deletion_timestamp.is_some() {
                    owned.push(pod.clone());
                } else {
                    let remaining: Vec<_> = pod
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|r| r.uid != uid)
                        .collect();
                    let patch = json!({"metadata": {
                        "ownerReferences": remaining,
                        "uid": pod.metadata.uid,
                    }});
                    release_or_adopt(&api, pod_name, patch).await?;
                }
            }
            Some(_) => {}
            None if matches && pod.metadata.deletion_timestamp.is_none() => {
                let mut refs: Vec<_> = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(rs));
                let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
                if release_or_adopt(&api, pod_name, patch).await? {
                    let mut adopted = (**pod).clone();
                    adopted.metadata.owner_references = Some(refs);
                    owned.push(Arc::new(adopted));
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// Writes ownerReferences (the uid in the patch makes it fail if the pod was replaced). A pod
/// gone meanwhile is no error.
async fn release_or_adopt(
    api: &Api<Pod>,
    name: &str,
    patch: serde_json::Value,
) -> Result<bool, Error> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates `count` pods in slow-start batches (1, 2, 4, ...) like upstream; a failure stops
/// the rest and is returned as the `ReplicaFailure` message.
async fn create_pods(rs: &ReplicaSet, ctx: &Ctx, count: usize) -> Option<String> {
    let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut left = count.min(BURST);
    let mut batch = 1;
    while left > 0 {
        let size = batch.min(left);
        let creates = (0..size).map(|_| {
            let pod = pods::from_template(&template, controller_ref(rs), ns);
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        });
        let results = futures::future::join_all(creates).await;
        let mut error = None;
        let mut names = Vec::new();
        for r in results {
            match r {
                Ok(p) => names.push(p.metadata.name.unwrap_or_default()),
                Err(e) => error = Some(e),
            }
        }
        ctx.expectations.expect(uid, names.clone(), true);
        for n in &names {
            ctx.replica_set_events
                .publish(
                    rs,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("Created pod: {n}"),
                )
                .await;
        }
        if let Some(e) = error {
            let message = match &e {
                kube::Error::Api(s) => s.message.clone(),
                other => other.to_string(),
            };
            ctx.replica_set_events
                .publish(
                    rs,
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating: {message}"),
                )
                .await;
            return Some(message);
        }
        left -= size;
        batch *= 2;
    }
    None
}

async fn delete_pods(rs: &ReplicaSet, ctx: &Ctx, mut active: Vec<&Pod>, count: usize) {
    let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    pods::sort_for_deletion(&mut active);
    let victims: Vec<&Pod> = active.into_iter().take(count.min(BURST)).collect();
    let names: Vec<String> = victims
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ctx.expectations.expect(uid, names, false);
    for pod in victims {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                ctx.replica_set_events
                    .publish(
                        rs,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    )
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                ctx.replica_set_events
                    .publish(
                        rs,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Error deleting: {e}"),
                    )
                    .await;
            }
        }
    }
}

/// Upstream `calculateStatus`.
pub fn status_for(
    rs: &ReplicaSet,
    active: &[&Pod],
    min_ready_seconds: i32,
    now: jiff::Timestamp,
    failure: Option<String>,
) -> ReplicaSetStatus {
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    let previous = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<_> = previous
        .conditions
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "ReplicaFailure")
        .collect();
    if let Some(message) = failure {
        conditions.push(k8s_openapi::api::apps::v1::ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some(message),
            last_transition_time: Some(pods::now_time()),
        });
    }
    ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready_seconds, now))),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        ..ReplicaSetStatus::default()
    }
}

/// The status as a merge patch: fields now absent are removed (`null`).
pub fn status_patch<T: serde::Serialize>(status: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(map) = v.as_object_mut()
        && !map.contains_key("conditions")
    {
        map.insert("conditions".into(), serde_json::Value::Null);
    }
    v
}
