//! The namespace controller: empties a Terminating namespace (every namespaced kind, honouring finalizers), reports progress in its status conditions, then removes the `kubernetes` finalizer through `/finalize`.
//!
//! Mirrors upstream's `NamespacedResourcesDeleter`: contents are deleted with Background
//! propagation; the namespace is finalized only once a live list finds nothing left.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use skiff_api::{Kind, kinds::KINDS};

use crate::cache::CachedObject;
use crate::metrics::Metrics;
use crate::resources::api_resource;

/// The `spec.finalizers` entry this controller owns.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// Namespaces that are Terminating: this controller empties them, then finalizes them (or,
/// for one stored without the `kubernetes` finalizer, deletes it again as upstream does).
pub fn terminating(snapshot: &[CachedObject]) -> Vec<&CachedObject> {
    snapshot
        .iter()
        .filter(|o| o.object.kind == Kind::Namespace && o.deleting)
        .collect()
}

/// What a pass over a namespace found still there.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Remaining {
    /// Objects per group-resource (`configmaps`, `deployments.apps`).
    pub by_resource: BTreeMap<String, usize>,
    /// Objects per finalizer they still carry.
    pub by_finalizer: BTreeMap<String, usize>,
}

impl Remaining {
    pub fn is_empty(&self) -> bool {
        self.by_resource.is_empty()
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

/// Upstream's namespace deletion conditions for what is left (without timestamps).
pub fn conditions(remaining: &Remaining) -> Vec<Value> {
    let content = if remaining.by_resource.is_empty() {
        condition(
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = remaining
            .by_resource
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        condition(
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if remaining.by_finalizer.is_empty() {
        condition(
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = remaining
            .by_finalizer
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        condition(
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        condition(
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        content,
        finalizers,
    ]
}

/// One pass over every Terminating namespace in the snapshot.
pub async fn reconcile(client: &kube::Client, snapshot: &[CachedObject], metrics: &Metrics) {
    for ns in terminating(snapshot) {
        let name = &ns.object.name;
        if let Err(e) = reconcile_one(client, name, metrics).await {
            if matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                tracing::debug!(namespace = %name, error = %e, "namespace changed meanwhile");
            } else {
                metrics.namespace_errors.inc();
                tracing::warn!(namespace = %name, error = %e, "namespace deletion step failed");
            }
        }
    }
}

async fn reconcile_one(
    client: &kube::Client,
    name: &str,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let remaining = delete_contents(client, name, metrics).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let live = namespaces.get(name).await?;
    update_conditions(&namespaces, &live, &remaining).await?;
    if !remaining.is_empty() {
        tracing::debug!(namespace = name, remaining = ?remaining.by_resource, "waiting for content to go");
        return Ok(());
    }
    let has_finalizer = live
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER_KUBERNETES));
    if !has_finalizer {
        // Already finalized: the DELETE now goes through (metadata finalizers permitting).
        if live.metadata.finalizers.as_ref().is_none_or(Vec::is_empty) {
            namespaces.delete(name, &DeleteParams::default()).await?;
            tracing::info!(namespace = name, "finalized namespace deleted");
        }
        return Ok(());
    }
    let mut finalized = live;
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = spec.finalizers.take().map(|list| {
            list.into_iter()
                .filter(|f| f != FINALIZER_KUBERNETES)
                .collect()
        });
    }
    namespaces
        .replace_subresource("finalize", name, &PostParams::default(), &finalized)
        .await?;
    metrics.namespaces_finalized.inc();
    tracing::info!(
        namespace = name,
        "namespace is empty; removed the kubernetes finalizer"
    );
    Ok(())
}

/// Deletes every object in the namespace that is not already being deleted, and reports what
/// was there (what was deleted just now counts: the next pass lists again).
async fn delete_contents(
    client: &kube::Client,
    namespace: &str,
    metrics: &Metrics,
) -> Result<Remaining, kube::Error> {
    let mut remaining = Remaining::default();
    for info in KINDS.iter().filter(|k| k.namespaced) {
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &api_resource(info.kind));
        let list = api.list(&ListParams::default()).await?;
        for item in &list.items {
            let Some(name) = item.metadata.name.as_deref() else {
                continue;
            };
            *remaining
                .by_resource
                .entry(info.group_resource())
                .or_default() += 1;
            for f in item.metadata.finalizers.iter().flatten() {
                *remaining.by_finalizer.entry(f.clone()).or_default() += 1;
            }
            if item.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let params = DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                preconditions: Some(Preconditions {
                    uid: item.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {
                    metrics.namespace_objects_deleted.inc();
                    tracing::info!(
                        namespace,
                        kind = info.name,
                        name,
                        "deleted namespace content"
                    );
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(remaining)
}

/// Writes the deletion conditions through `/status` when they changed.
async fn update_conditions(
    namespaces: &Api<Namespace>,
    live: &Namespace,
    remaining: &Remaining,
) -> Result<(), kube::Error> {
    let wanted = conditions(remaining);
    let current: Vec<Value> = live
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .map(|c| {
                    json!({
                        "type": c.type_,
                        "status": c.status,
                        "reason": c.reason,
                        "message": c.message,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if current == wanted {
        return Ok(());
    }
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let stamped: Vec<Value> = wanted
        .into_iter()
        .map(|mut c| {
            c["lastTransitionTime"] = json!(now);
            c
        })
        .collect();
    let name = live.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({
        "metadata": {"resourceVersion": live.metadata.resource_version},
        "status": {"phase": "Terminating", "conditions": stamped},
    });
    namespaces
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_what_remains() {
        let mut r = Remaining::default();
        let done = conditions(&r);
        assert_eq!(done[2]["type"], "NamespaceContentRemaining");
        assert_eq!(done[2]["status"], "False");
        r.by_resource.insert("configmaps".into(), 2);
        r.by_finalizer.insert("example.com/hold".into(), 1);
        let c = conditions(&r);
        assert_eq!(c[2]["status"], "True");
        assert_eq!(
            c[2]["message"],
            "Some resources are remaining: configmaps has 2 resource instances"
        );
        assert_eq!(c[3]["reason"], "SomeFinalizersRemain");
        assert!(
            c[3]["message"]
                .as_str()
                .is_some_and(|m| m.contains("example.com/hold in 1 resource instances"))
        );
    }
}
