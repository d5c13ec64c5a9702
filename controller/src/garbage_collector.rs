//! The garbage collector's I/O: carries out the [`owners::plan`] for one cache snapshot through the API, confirming every absent owner with a live GET first.

use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use serde_json::json;

use crate::cache::CachedObject;
use crate::metrics::Metrics;
use crate::owners::{self, AbsentOwner, GcAction, Propagation};
use crate::resources::api_for;

/// One garbage-collection round over `snapshot`. Failures are logged and retried next round:
/// every action is idempotent and guarded by a uid or resourceVersion precondition.
pub async fn reconcile(client: &kube::Client, snapshot: &[CachedObject], metrics: &Metrics) {
    for action in owners::plan(snapshot) {
        let object = action.object().clone();
        match execute(client, &action, metrics).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(%object, "owner still present; nothing done"),
            Err(e) if is_benign(&e) => {
                tracing::debug!(%object, error = %e, "garbage collection raced another writer")
            }
            Err(e) => {
                metrics.gc_errors.inc();
                tracing::warn!(%object, error = %e, "garbage collection step failed");
            }
        }
    }
}

/// 404 (already gone) and 409 (changed since the snapshot) just mean "look again next round".
fn is_benign(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404 || s.code == 409)
}

/// Whether every owner the snapshot believes gone is really gone (404, or the name now
/// belongs to an object with another uid).
async fn confirmed_absent(
    client: &kube::Client,
    owners: &[AbsentOwner],
) -> Result<bool, kube::Error> {
    for absent in owners {
        let api = api_for(client.clone(), &absent.owner);
        if let Some(found) = api.get_opt(&absent.owner.name).await?
            && found.metadata.uid.as_deref() == Some(absent.uid.as_str())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn policy(p: Propagation) -> PropagationPolicy {
    match p {
        Propagation::Background => PropagationPolicy::Background,
        Propagation::Foreground => PropagationPolicy::Foreground,
        Propagation::Orphan => PropagationPolicy::Orphan,
    }
}

/// Carries out one action; `Ok(false)` when a live check showed it was not needed.
async fn execute(
    client: &kube::Client,
    action: &GcAction,
    metrics: &Metrics,
) -> Result<bool, kube::Error> {
    match action {
        GcAction::RemoveOwnerReferences {
            object,
            resource_version,
            remove,
            remaining,
            verify_absent,
        } => {
            if !confirmed_absent(client, verify_absent).await? {
                return Ok(false);
            }
            let refs = if remaining.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::to_value(remaining).map_err(kube::Error::SerdeError)?
            };
            let patch = json!({"metadata": {
                "ownerReferences": refs,
                "resourceVersion": resource_version,
            }});
            api_for(client.clone(), object)
                .patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            metrics.gc_owner_references_removed.inc();
            tracing::info!(%object, owners = ?remove, "removed owner references");
            Ok(true)
        }
        GcAction::Delete {
            object,
            uid,
            policy: p,
            verify_absent,
        } => {
            if !confirmed_absent(client, verify_absent).await? {
                return Ok(false);
            }
            let params = DeleteParams {
                propagation_policy: Some(policy(*p)),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api_for(client.clone(), object)
                .delete(&object.name, &params)
                .await?;
            metrics.gc_objects_deleted.inc();
            tracing::info!(%object, policy = p.as_str(), "deleted a dependent whose owners are gone");
            Ok(true)
        }
        GcAction::RemoveFinalizer {
            object,
            resource_version,
            finalizer,
            remaining,
        } => {
            let list = if remaining.is_empty() {
                serde_json::Value::Null
            } else {
                json!(remaining)
            };
            let patch = json!({"metadata": {
                "finalizers": list,
                "resourceVersion": resource_version,
            }});
            api_for(client.clone(), object)
                .patch(&object.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            metrics.gc_finalizers_removed.inc();
            tracing::info!(%object, finalizer, "dependents handled; removed finalizer");
            Ok(true)
        }
    }
}
