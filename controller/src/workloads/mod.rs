//! The workload controllers: Deployment → ReplicaSet → Pod, in the kube-runtime style (watcher → reflector store → idempotent reconcilers).
//!
//! One reflector per kind (Deployments, ReplicaSets, Pods) fills a [`Store`]; every change wakes
//! one loop that runs [`replicaset::reconcile`] over every ReplicaSet and
//! [`deployment::reconcile`] over every Deployment, each reading only the stores and writing
//! only through the API. All state lives in API objects (revisions, hashes, scale annotations,
//! conditions), so a restarted controller picks a rollout up where it was left.

pub mod deployment;
pub mod expectations;
pub mod hash;
pub mod pods;
pub mod replicaset;
pub mod rollout;
pub mod selector;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;

use crate::events::Recorder;
use expectations::Expectations;

/// A full pass runs at least this often, even without a change.
const RESYNC: Duration = Duration::from_secs(10);
/// After a change, wait this long for the rest of a burst before reconciling.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// Shortest wait between two passes asked for by a reconciler.
const MIN_REQUEUE: Duration = Duration::from_millis(100);

/// Why a reconcile did not finish; it is retried on the next pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What a reconciler wants next (kube-runtime's `Action`): another look after a delay, or
/// nothing until something changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Action(Option<Duration>);

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Self(Some(after))
    }

    pub fn await_change() -> Self {
        Self(None)
    }

    pub fn requeue_after(self) -> Option<Duration> {
        self.0
    }
}

/// What every reconcile reads and writes through.
pub struct Ctx {
    pub client: kube::Client,
    pub deployments: Store<Deployment>,
    pub replica_sets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
    pub expectations: Arc<Expectations>,
    pub deployment_events: Recorder,
    pub replica_set_events: Recorder,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

fn reflect<K>(
    api: Api<K>,
    wake: Arc<Notify>,
    observe: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .map(move |event| {
            match &event {
                Ok(event) => observe(event),
                Err(error) => tracing::debug!(%error, "workload watch failed; retrying"),
            }
            wake.notify_one();
        });
    (reader, stream)
}

/// Runs the ReplicaSet and Deployment controllers until the future is dropped.
pub async fn run(client: kube::Client) {
    let wake = Arc::new(Notify::new());
    let expectations = Arc::new(Expectations::default());
    let (deployments, d_stream) =
        reflect(Api::<Deployment>::all(client.clone()), wake.clone(), |_| {});
    let (replica_sets, rs_stream) =
        reflect(Api::<ReplicaSet>::all(client.clone()), wake.clone(), |_| {});
    let seen = expectations.clone();
    let (pods, pod_stream) = reflect(Api::<Pod>::all(client.clone()), wake.clone(), move |e| {
        if let watcher::Event::Delete(pod) = e
            && let (Some(owner), Some(name)) = (
                pods::controller_of(&pod.metadata),
                pod.metadata.name.as_deref(),
            )
        {
            seen.observed_deletion(&owner.uid, name);
        }
    });
    let watchers = futures::future::join3(
        d_stream.for_each(|()| async {}),
        rs_stream.for_each(|()| async {}),
        pod_stream.for_each(|()| async {}),
    );
    let ctx = Arc::new(Ctx {
        deployment_events: Recorder::new(client.clone(), "deployment-controller"),
        replica_set_events: Recorder::new(client.clone(), "replicaset-controller"),
        client,
        deployments,
        replica_sets,
        pods,
        expectations,
    });
    let loop_ = reconcile_loop(ctx, wake);
    tokio::select! {
        _ = watchers => {}
        () = loop_ => {}
    }
}

async fn reconcile_loop(ctx: Arc<Ctx>, wake: Arc<Notify>) {
    let ready = futures::future::join3(
        ctx.deployments.wait_until_ready(),
        ctx.replica_sets.wait_until_ready(),
        ctx.pods.wait_until_ready(),
    )
    .await;
    if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
        return;
    }
    tracing::info!("deployment and replicaset controllers started");
    let mut next = RESYNC;
    loop {
        tokio::select! {
            () = wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(next) => {}
        }
        next = RESYNC;
        for rs in ctx.replica_sets.state() {
            let action = replicaset::reconcile(rs.clone(), ctx.clone()).await;
            next = next.min(after(action, rs.as_ref()));
        }
        for d in ctx.deployments.state() {
            let action = deployment::reconcile(d.clone(), ctx.clone()).await;
            next = next.min(after(action, d.as_ref()));
        }
        next = next.max(MIN_REQUEUE);
    }
}

fn after<K: kube::Resource>(result: Result<Action, Error>, object: &K) -> Duration {
    match result {
        Ok(action) => action.requeue_after().unwrap_or(RESYNC),
        Err(error) => {
            tracing::debug!(
                name = object.meta().name.as_deref().unwrap_or(""),
                %error,
                "reconcile failed; retrying"
            );
            Duration::from_secs(1)
        }
    }
}
