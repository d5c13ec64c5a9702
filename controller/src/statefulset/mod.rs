//! The StatefulSet controller: ordinal pods, OrderedReady/Parallel scaling, RollingUpdate with a partition, status.
//!
//! kube-runtime style: a pod watcher feeds a reflector store (read by the reconciler) and
//! triggers the owning set; `reconcile` plans from the store ([`plan`]) and makes the writes,
//! recording upstream's Events (`SuccessfulCreate`, `SuccessfulDelete`, ...).

pub mod identity;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::events::{EventType, Recorder};
use plan::Step;

/// Upstream's component name for Events.
pub const COMPONENT: &str = "statefulset-controller";

/// A reconcile that failed is retried after this long.
const RETRY: Duration = Duration::from_secs(1);
/// Sets are reconciled at least this often even without a change.
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} pod {pod}: {source}")]
    Pod {
        action: &'static str,
        pod: String,
        source: kube::Error,
    },
    #[error("update status of StatefulSet {set}: {source}")]
    Status { set: String, source: kube::Error },
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    recorder: Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(client: kube::Client) {
    let (pods, writer) = reflector::store();
    let pod_events = reflector::reflector(
        writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client: client.clone(),
        pods,
    });
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "statefulset reconcile");
            }
        })
        .await;
}

fn error_policy(set: Arc<StatefulSet>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(%error, set = set.metadata.name.as_deref().unwrap_or(""), "statefulset");
    Action::requeue(RETRY)
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.pods.wait_until_ready().await.ok();
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let owned: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && identity::controlled_by(p, &uid)
        })
        .collect();
    let refs: Vec<&Pod> = owned.iter().map(AsRef::as_ref).collect();
    let plan = plan::plan(&set, &refs);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let update_revision = plan.status.update_revision.clone().unwrap_or_default();
    for step in &plan.steps {
        match step {
            Step::Create(i) => create(&ctx, &pods, &set, *i, &update_revision).await?,
            Step::Delete(name) => delete(&ctx, &pods, &set, &owned, name).await?,
            Step::Recreate(name) => {
                ctx.recorder
                    .publish(
                        set.as_ref(),
                        EventType::Warning,
                        "RecreatingFailedPod",
                        &format!(
                            "StatefulSet {namespace}/{set_name} is recreating failed Pod {name}"
                        ),
                    )
                    .await;
                delete(&ctx, &pods, &set, &owned, name).await?;
            }
        }
    }
    if set.status.as_ref() != Some(&plan.status) {
        let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
        sets.patch_status(
            &set_name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": plan.status })),
        )
        .await
        .or_else(ignore_not_found)
        .map_err(|source| Error::Status {
            set: set_name.clone(),
            source,
        })?;
    }
    Ok(Action::requeue(RESYNC))
}

async fn create(
    ctx: &Ctx,
    pods: &Api<Pod>,
    set: &StatefulSet,
    i: u32,
    revision: &str,
) -> Result<(), Error> {
    let pod = identity::new_pod(set, i, revision);
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => {
            ctx.recorder
                .publish(
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                )
                .await;
            Ok(())
        }
        // The store had not seen our earlier create yet.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => {
            ctx.recorder
                .publish(
                    set,
                    EventType::Warning,
                    "FailedCreate",
                    &format!(
                        "create Pod {pod_name} in StatefulSet {set_name} failed error: {source}"
                    ),
                )
                .await;
            Err(Error::Pod {
                action: "create",
                pod: pod_name,
                source,
            })
        }
    }
}

async fn delete(
    ctx: &Ctx,
    pods: &Api<Pod>,
    set: &StatefulSet,
    owned: &[Arc<Pod>],
    name: &str,
) -> Result<(), Error> {
    let uid = owned
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .and_then(|p| p.metadata.uid.clone());
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    match pods.delete(name, &params).await {
        Ok(_) => {
            ctx.recorder
                .publish(
                    set,
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("delete Pod {name} in StatefulSet {set_name} successful"),
                )
                .await;
            Ok(())
        }
        // Already gone, or replaced by a pod with another uid: the store will catch up.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => {
            ctx.recorder
                .publish(
                    set,
                    EventType::Warning,
                    "FailedDelete",
                    &format!("delete Pod {name} in StatefulSet {set_name} failed error: {source}"),
                )
                .await;
            Err(Error::Pod {
                action: "delete",
                pod: name.to_owned(),
                source,
            })
        }
    }
}

fn ignore_not_found<T: Default>(error: kube::Error) -> Result<T, kube::Error> {
    match error {
        kube::Error::Api(s) if s.code == 404 => Ok(T::default()),
        e => Err(e),
    }
}
