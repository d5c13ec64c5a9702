//! The controller manager and scheduler: reconcilers that turn desired state in API objects into actual state.
//!
//! All are API clients like any other (kube-rs). The namespace controller and the garbage
//! collector share one metadata [`cache::Cache`] (an informer per served kind) and run over
//! snapshots of it; the others (workloads, StatefulSets, endpoints, load balancer, scheduler,
//! node lifecycle) are kube-runtime style controllers with their own watches and stores.

pub mod cache;
pub mod config;
pub mod endpoints;
pub mod events;
pub mod garbage_collector;
pub mod leader;
pub mod metrics;
pub mod namespace;
pub mod node_lifecycle;
pub mod owners;
pub mod podutil;
pub mod resources;
pub mod scheduler;
pub mod service_lb;
pub mod standalone;
pub mod statefulset;
pub mod workloads;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use skiff_api::Kind;
use tokio::task::JoinSet;

pub use config::Config;
pub use metrics::Metrics;

/// A full pass runs at least this often, even without a change (work that failed is retried).
const RESYNC: Duration = Duration::from_secs(5);
/// After a change, wait this long for the rest of a burst before reconciling.
const DEBOUNCE: Duration = Duration::from_millis(30);

/// Runs the controllers and the scheduler against `client` until `shutdown` resolves. Never
/// fails: API errors are logged and retried.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()>) {
    run_with_metrics(client, Arc::new(Metrics::default()), shutdown).await;
}

/// [`run`], counting into `metrics` (for a caller that serves them).
pub async fn run_with_metrics(
    client: kube::Client,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    run_with_config(client, Config::default(), metrics, shutdown).await;
}

/// [`run_with_metrics`] with the settings of `config` (the CLI flags).
pub async fn run_with_config(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let cache = cache::Cache::new();
    let mut informers = JoinSet::new();
    for kind in Kind::all() {
        informers.spawn(cache::run_informer(client.clone(), kind, cache.clone()));
    }
    // The other controllers own their watches and stores; each runs as its own task, so one
    // busy reconciler neither starves the others nor holds them to one core.
    match service_lb::LbPool::parse(&config.lb_pool) {
        Ok(pool) => {
            informers.spawn(service_lb::run(client.clone(), pool));
        }
        Err(error) => tracing::error!(%error, "the load-balancer controller cannot run"),
    }
    informers.spawn(workloads::run(client.clone()));
    informers.spawn(statefulset::run(client.clone()));
    informers.spawn(endpoints::run(client.clone()));
    informers.spawn(scheduler::run_with_metrics(client.clone(), metrics.clone()));
    informers.spawn(node_lifecycle::run(client.clone(), config.node_lifecycle));
    tracing::info!("controllers started");
    let reconciler = async {
        loop {
            tokio::select! {
                () = cache.changed() => tokio::time::sleep(DEBOUNCE).await,
                () = tokio::time::sleep(RESYNC) => {}
            }
            let Some(snapshot) = cache.snapshot() else {
                continue;
            };
            metrics.reconcile_rounds.inc();
            namespace::reconcile(&client, &snapshot, &metrics).await;
            garbage_collector::reconcile(&client, &snapshot, &metrics).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = reconciler => {}
    }
    informers.abort_all();
    while informers.join_next().await.is_some() {}
    tracing::info!("controllers stopped");
}
