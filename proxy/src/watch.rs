//! The proxy's one loop: reflector stores of Services and EndpointSlices → debounced recompile
//! → diff → `Dataplane::apply` → publish.
//!
//! Bursts are coalesced (a change waits [`Config::debounce`] for quiet, at most
//! [`Config::max_delay`]), nothing is programmed before both watches have listed once (so a
//! start never programs Services without their endpoints), and a failed apply is retried with a
//! full resync after a growing pause.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::time::Instant;

use crate::compiler::Compiler;
use crate::dataplane::Dataplane;
use crate::diff::TableDiff;
use crate::model::{LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, Problem};
use crate::state::Proxy;
use crate::table::{NodeInfo, ServiceTable};

/// Timing of the loop.
#[derive(Debug, Clone)]
pub struct Config {
    /// Quiet time after a change before recompiling (coalesces bursts).
    pub debounce: Duration,
    /// Longest a change waits under a continuous stream of changes.
    pub max_delay: Duration,
    /// First pause after a failed apply (doubles up to `max_retry`).
    pub retry: Duration,
    pub max_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(250),
            retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(30),
        }
    }
}

/// Runs the proxy for `node` until `shutdown` resolves, then calls `dataplane.shutdown()`.
/// Never fails: API and data plane errors are logged, counted and retried.
pub async fn run(
    client: kube::Client,
    node: NodeInfo,
    dataplane: Arc<dyn Dataplane>,
    shutdown: impl Future<Output = ()>,
) {
    run_with(
        client,
        Proxy::new(node),
        dataplane,
        Config::default(),
        shutdown,
    )
    .await;
}

/// What a watch stream told the loop.
enum Signal {
    /// One object was applied or deleted (the store already has its new state).
    Changed(Object),
    /// The first list of this watch is in the store.
    Listed(Which),
    /// A relist replaced the store (after the watch was lost): compare it all.
    Relisted(Which),
    /// Nothing to act on (relist in progress).
    Nothing,
    Error(watcher::Error),
}

#[derive(Clone, Copy)]
enum Which {
    Services,
    Slices,
}

/// An object that changed, to look up in its store at the next sync.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Object {
    Service(ObjectRef<Service>),
    Slice(ObjectRef<EndpointSlice>),
}

fn signals<K>(
    client: &kube::Client,
    labels: &str,
    which: Which,
    object: fn(ObjectRef<K>) -> Object,
) -> (Store<K>, impl Stream<Item = Signal> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(labels);
    let mut listed = false;
    let stream = reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), config))
        .default_backoff()
        .map(move |event| match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => {
                Signal::Changed(object(ObjectRef::from_obj(&obj)))
            }
            Ok(watcher::Event::InitDone) if !listed => {
                listed = true;
                Signal::Listed(which)
            }
            Ok(watcher::Event::InitDone) => Signal::Relisted(which),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => Signal::Nothing,
            Err(e) => Signal::Error(e),
        });
    (store, stream)
}

/// [`run`] with a caller-held [`Proxy`] (for dump, metrics and health checks) and timing.
pub async fn run_with(
    client: kube::Client,
    proxy: Arc<Proxy>,
    dataplane: Arc<dyn Dataplane>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) {
    // The same objects kube-proxy's informers exclude: another proxy's, and headless slices.
    let (services, service_events) = signals::<Service>(
        &client,
        &format!("!{LABEL_SERVICE_PROXY_NAME}"),
        Which::Services,
        Object::Service,
    );
    let (slices, slice_events) = signals::<EndpointSlice>(
        &client,
        &format!("!{LABEL_SERVICE_PROXY_NAME},!{LABEL_HEADLESS}"),
        Which::Slices,
        Object::Slice,
    );
    let mut events = pin!(futures::stream::select(service_events, slice_events));
    let mut shutdown = pin!(shutdown);
    let mut sync = Syncer {
        proxy: Arc::clone(&proxy),
        dataplane: Arc::clone(&dataplane),
        compiler: Compiler::new(proxy.node().clone()),
        changed: HashSet::new(),
        relist: (true, true),
        needs_full: true,
        retry: config.retry,
        logged: HashSet::new(),
    };
    let (mut services_listed, mut slices_listed) = (false, false);
    // First change not yet programmed, and the latest change.
    let mut pending: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut retry_at: Option<Instant> = None;
    tracing::info!(dataplane = dataplane.name(), node = %proxy.node().name, "service proxy starting");
    loop {
        let deadline = match (retry_at, pending) {
            (Some(at), _) => Some(at),
            (None, Some(first)) if services_listed && slices_listed => {
                Some((last_change + config.debounce).min(first + config.max_delay))
            }
            _ => None,
        };
        tokio::select! {
            () = &mut shutdown => break,
            signal = events.next() => {
                let Some(signal) = signal else { break };
                match signal {
                    Signal::Changed(object) => {
                        sync.changed.insert(object);
                    }
                    Signal::Listed(which) | Signal::Relisted(which) => {
                        match which {
                            Which::Services => {
                                services_listed = true;
                                sync.relist.0 = true;
                            }
                            Which::Slices => {
                                slices_listed = true;
                                sync.relist.1 = true;
                            }
                        }
                    }
                    Signal::Nothing => continue,
                    Signal::Error(error) => {
                        proxy.metrics().watch_errors.inc();
                        tracing::warn!(%error, "service proxy watch");
                        continue;
                    }
                }
                last_change = Instant::now();
                pending.get_or_insert(last_change);
            }
            () = sleep_until(deadline) => {
                let observed = pending.unwrap_or_else(Instant::now);
                match sync.run(&services, &slices).await {
                    Ok(()) => {
                        proxy.metrics().programming_latency.observe(observed.elapsed());
                        pending = None;
                        retry_at = None;
                        sync.retry = config.retry;
                    }
                    Err(()) => {
                        retry_at = Some(Instant::now() + sync.retry);
                        sync.retry = (sync.retry * 2).min(config.max_retry);
                    }
                }
            }
        }
    }
    tracing::info!(dataplane = dataplane.name(), "service proxy stopping");
    if let Err(error) = dataplane.shutdown().await {
        tracing::warn!(%error, dataplane = dataplane.name(), "data plane shutdown");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The compile → diff → apply step and what it remembers between runs.
struct Syncer {
    proxy: Arc<Proxy>,
    dataplane: Arc<dyn Dataplane>,
    /// Every object seen so far and what it compiled to; its table is the last one built
    /// (programmed, unless `needs_full`).
    compiler: Compiler,
    /// Objects applied or deleted since the last sync.
    changed: HashSet<Object>,
    /// The Service / EndpointSlice store was (re)listed since the last sync: hand the compiler
    /// all of it (unchanged objects cost a lookup), since a relist reports no deletions.
    relist: (bool, bool),
    /// Next apply must be a full resync (first one, or after a failure).
    needs_full: bool,
    retry: Duration,
    /// Problems already logged, so a bad object is logged once, not on every recompile.
    logged: HashSet<Problem>,
}

impl Syncer {
    /// Feeds the compiler what changed in the stores since the last sync. The stores are read
    /// now, not when the events came: several events for one object coalesce into its latest
    /// state (or its absence).
    fn feed(&mut self, services: &Store<Service>, slices: &Store<EndpointSlice>) {
        if std::mem::take(&mut self.relist.0) {
            let all = services.state();
            self.compiler
                .replace_services(all.iter().map(AsRef::as_ref));
        }
        if std::mem::take(&mut self.relist.1) {
            let all = slices.state();
            self.compiler.replace_slices(all.iter().map(AsRef::as_ref));
        }
        for object in std::mem::take(&mut self.changed) {
            match object {
                Object::Service(r) => match services.get(&r) {
                    Some(svc) => self.compiler.upsert_service(&svc),
                    None => self
                        .compiler
                        .remove_service(r.namespace.as_deref().unwrap_or_default(), &r.name),
                },
                Object::Slice(r) => match slices.get(&r) {
                    Some(slice) => self.compiler.upsert_slice(&slice),
                    None => self
                        .compiler
                        .remove_slice(r.namespace.as_deref().unwrap_or_default(), &r.name),
                },
            }
        }
    }

    async fn run(
        &mut self,
        services: &Store<Service>,
        slices: &Store<EndpointSlice>,
    ) -> Result<(), ()> {
        self.feed(services, slices);
        // Work proportional to what changed: the compiler recompiles only the Services whose
        // inputs changed and records the diff as it patches the table.
        let (table, diff) = self.compiler.build();
        let table = Arc::new(table);
        self.log_problems(&table);
        let diff = if self.needs_full {
            TableDiff::full(&table)
        } else {
            diff
        };
        if !diff.is_empty() {
            if let Err(error) = self.dataplane.apply(&table, &diff).await {
                self.proxy.metrics().sync_errors.inc();
                // The compiler has moved on to `table`; what the data plane holds is unknown
                // now, so the next apply (of whatever the compiler builds next) is a full one.
                self.needs_full = true;
                tracing::warn!(%error, dataplane = self.dataplane.name(), "programming the service table failed; retrying with a full resync");
                return Err(());
            }
            self.proxy.metrics().syncs.inc();
            tracing::debug!(
                added = diff.added.len(),
                removed = diff.removed.len(),
                changed = diff.changed.len(),
                full = diff.full,
                "service table programmed"
            );
        }
        self.needs_full = false;
        self.proxy.publish(table);
        Ok(())
    }

    fn log_problems(&mut self, table: &ServiceTable) {
        let now = table.problems();
        // Unchanged (the usual case): nothing to compare.
        if now.len() == self.logged.len() && now.iter().all(|p| self.logged.contains(p)) {
            return;
        }
        let now: HashSet<Problem> = now.iter().cloned().collect();
        for p in now.difference(&self.logged) {
            tracing::warn!(problem = %p, "service proxy skipped invalid input");
        }
        self.logged = now;
    }
}
