//! IngressClasses, Ingresses, Services, EndpointSlices and Secrets through kube-runtime
//! watchers into the cut-down [`Model`]; debounced whole rebuilds of the route table and the
//! certificate snapshot, swapped into the running proxy; status of our Ingresses.
//!
//! As in skiff-dns, the watch keeps cut-down objects: a change that leaves the cut-down object
//! equal (a Secret of another type, a Pod-driven slice field we ignore) triggers no rebuild.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::compile::{RoutingConfig, compile, our_ingresses};
use crate::model::{
    ClassInfo, DEFAULT_CLASS_ANNOTATION, IngressInfo, Key, Model, ServiceInfo, SliceInfo, TlsSecret,
};
use crate::server::SharedState;
use crate::tls::CertSnapshot;

enum Change {
    Class(Box<Event<IngressClass>>),
    Ingress(Box<Event<Ingress>>),
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Secret(Box<Event<Secret>>),
}

/// One kind's part of the model, with a relist in progress.
struct Kind<K, T> {
    synced: bool,
    relist: Option<BTreeMap<K, T>>,
}

impl<K, T> Default for Kind<K, T> {
    fn default() -> Self {
        Kind {
            synced: false,
            relist: None,
        }
    }
}

/// Applies a watcher event to `map`; whether the map changed.
fn apply<O, K: Ord, T: PartialEq>(
    kind: &mut Kind<K, T>,
    map: &mut BTreeMap<K, T>,
    event: Event<O>,
    cut: impl Fn(&O) -> Option<T>,
    key: impl Fn(&O) -> Option<K>,
) -> bool {
    match event {
        Event::Init => {
            kind.relist = Some(BTreeMap::new());
            false
        }
        Event::InitApply(obj) => {
            if let (Some(relist), Some(k), Some(v)) = (kind.relist.as_mut(), key(&obj), cut(&obj)) {
                relist.insert(k, v);
            }
            false
        }
        Event::InitDone => {
            kind.synced = true;
            match kind.relist.take() {
                Some(fresh) if fresh != *map => {
                    *map = fresh;
                    true
                }
                _ => false,
            }
        }
        Event::Apply(obj) => {
            let Some(k) = key(&obj) else { return false };
            match cut(&obj) {
                Some(v) if map.get(&k) == Some(&v) => false,
                Some(v) => {
                    map.insert(k, v);
                    true
                }
                None => map.remove(&k).is_some(),
            }
        }
        Event::Delete(obj) => key(&obj).is_some_and(|k| map.remove(&k).is_some()),
    }
}

fn meta_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some(Key::new(meta.namespace.clone()?, meta.name.clone()?))
}

fn stream<K>(
    api: Api<K>,
    wrap: fn(Box<Event<K>>) -> Change,
) -> impl Stream<Item = Change> + Send + 'static
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |r| {
            std::future::ready(match r {
                Ok(ev) => Some(wrap(Box::new(ev))),
                Err(e) => {
                    // The backoff re-lists; the proxy keeps serving what it has meanwhile.
                    tracing::warn!(error = %e, "ingress watch error");
                    None
                }
            })
        })
}

/// Creates the IngressClass `name` for our controller, marked default, unless it exists (an
/// existing class is left as the user made it).
pub async fn ensure_class(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let api = Api::<IngressClass>::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let class: IngressClass = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "spec": {"controller": crate::class::CONTROLLER_NAME},
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        // Created meanwhile by another instance: fine.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the watch loop needs besides the client.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub routing: RoutingConfig,
    /// Written to `status.loadBalancer.ingress` of our Ingresses (an IP or a hostname); `None`
    /// writes no status.
    pub status_address: Option<String>,
    /// Changes within this window are folded into one rebuild.
    pub debounce: Duration,
}

/// Watches until the streams end (never, in practice: the caller drops this future to stop).
pub async fn watch(
    client: kube::Client,
    cfg: WatchConfig,
    state: SharedState,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let mut changes = futures::stream::select_all([
        stream(Api::<IngressClass>::all(client.clone()), Change::Class).boxed(),
        stream(Api::<Ingress>::all(client.clone()), Change::Ingress).boxed(),
        stream(Api::<Service>::all(client.clone()), Change::Service).boxed(),
        stream(Api::<EndpointSlice>::all(client.clone()), Change::Slice).boxed(),
        stream(Api::<Secret>::all(client.clone()), Change::Secret).boxed(),
    ]);
    let mut model = Model::default();
    let mut kinds = (
        Kind::default(),
        Kind::default(),
        Kind::default(),
        Kind::default(),
        Kind::default(),
    );
    let mut dirty_since: Option<Instant> = None;
    let mut first_done = false;
    // Problems already logged, so a rebuild does not repeat them.
    let mut reported: HashMap<Key, Vec<String>> = HashMap::new();
    loop {
        let all_synced =
            kinds.0.synced && kinds.1.synced && kinds.2.synced && kinds.3.synced && kinds.4.synced;
        let deadline = match (all_synced, dirty_since) {
            (true, Some(t)) if first_done => Some(t + cfg.debounce),
            (true, _) if !first_done => Some(Instant::now()),
            _ => None,
        };
        let change = match deadline {
            Some(at) => tokio::select! {
                c = changes.next() => c,
                () = tokio::time::sleep_until(at.into()) => {
                    let fresh = rebuild(&model, &cfg, &state, &mut reported);
                    post_events(&client, &model, fresh).await;
                    if !first_done {
                        tracing::info!(ingresses = model.ingresses.len(), "ingress synced");
                    }
                    first_done = true;
                    dirty_since = None;
                    synced.send_replace(true);
                    write_status(&client, &model, &cfg).await;
                    continue;
                }
            },
            None => changes.next().await,
        };
        let Some(change) = change else { return };
        let m = &mut model;
        let changed = match change {
            Change::Class(ev) => apply(
                &mut kinds.0,
                &mut m.classes,
                *ev,
                ClassInfo::from_class,
                |c| c.metadata.name.clone(),
            ),
            Change::Ingress(ev) => apply(
                &mut kinds.1,
                &mut m.ingresses,
                *ev,
                IngressInfo::from_ingress,
                |i| meta_key(&i.metadata),
            ),
            Change::Service(ev) => apply(
                &mut kinds.2,
                &mut m.services,
                *ev,
                ServiceInfo::from_service,
                |s| meta_key(&s.metadata),
            ),
            Change::Slice(ev) => apply(
                &mut kinds.3,
                &mut m.slices,
                *ev,
                SliceInfo::from_slice,
                |s| meta_key(&s.metadata),
            ),
            Change::Secret(ev) => apply(
                &mut kinds.4,
                &mut m.secrets,
                *ev,
                TlsSecret::from_secret,
                |s| meta_key(&s.metadata),
            ),
        };
        if changed && dirty_since.is_none() {
            dirty_since = Some(Instant::now());
        }
    }
}

/// Compiles routes and certificates and swaps both into the running proxy. Returns the
/// problems not reported by the previous rebuild.
pub fn rebuild(
    model: &Model,
    cfg: &WatchConfig,
    state: &SharedState,
    reported: &mut HashMap<Key, Vec<String>>,
) -> Vec<(Key, String)> {
    let prev = state.routes.load_full();
    let compiled = compile(model, &cfg.routing, Some(&prev));
    let ours = our_ingresses(model, &cfg.routing);
    let default = state.certs.load().default_cert().clone();
    let (certs, cert_problems) = CertSnapshot::build(model, &ours, default);
    state
        .metrics
        .rules
        .store(compiled.table.rule_count() as u64, Ordering::Relaxed);
    state.metrics.rebuilds.fetch_add(1, Ordering::Relaxed);
    state.routes.store(Arc::new(compiled.table));
    state.certs.store(Arc::new(certs));

    let mut now: HashMap<Key, Vec<String>> = HashMap::new();
    for p in compiled.problems.iter().chain(&cert_problems) {
        now.entry(p.object.clone())
            .or_default()
            .push(format!("{}: {}", p.field, p.message));
    }
    let mut fresh = Vec::new();
    for (k, msgs) in &now {
        let before = reported.get(k);
        for m in msgs {
            if !before.is_some_and(|b| b.contains(m)) {
                tracing::warn!(ingress = %k, problem = %m, "ingress problem");
                fresh.push((k.clone(), m.clone()));
            }
        }
    }
    *reported = now;
    fresh
}

/// A Warning Event on each Ingress with a new problem (`kubectl describe ingress` shows it).
/// Posting never fails the loop: an Event is information.
async fn post_events(client: &kube::Client, model: &Model, problems: Vec<(Key, String)>) {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    for (key, message) in problems {
        let Some(ing) = model.ingresses.get(&key) else {
            continue;
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        let event: Result<CoreEvent, _> = serde_json::from_value(json!({
            // Named as client-go's recorder names them: object name and a nanosecond stamp.
            "metadata": {"name": format!("{}.{:x}", key.name, now.as_nanosecond()), "namespace": key.namespace},
            "involvedObject": {
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "namespace": key.namespace, "name": key.name, "uid": ing.uid,
            },
            "reason": "InvalidIngress",
            "message": message,
            "type": "Warning",
            "source": {"component": "skiff-ingress"},
            "reportingComponent": crate::class::CONTROLLER_NAME,
            "firstTimestamp": now.to_string(),
            "lastTimestamp": now.to_string(),
            "count": 1,
        }));
        let posted = match event {
            Ok(ev) => Api::<CoreEvent>::namespaced(client.clone(), &key.namespace)
                .create(&PostParams::default(), &ev)
                .await
                .map(|_| ()),
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        if let Err(e) = posted {
            tracing::warn!(ingress = %key, error = %e, "cannot post ingress event");
        }
    }
}

/// Sets `status.loadBalancer.ingress` on our Ingresses whose status differs, and clears it on
/// Ingresses that are no longer ours but still show exactly our address. A failed write is
/// retried after the next rebuild.
async fn write_status(client: &kube::Client, model: &Model, cfg: &WatchConfig) {
    let Some(addr) = cfg.status_address.as_deref() else {
        return;
    };
    let entry = if addr.parse::<std::net::IpAddr>().is_ok() {
        json!({"ip": addr})
    } else {
        json!({"hostname": addr})
    };
    let ours: std::collections::HashSet<&Key> = our_ingresses(model, &cfg.routing)
        .into_iter()
        .map(|i| &i.key)
        .collect();
    for ing in model.ingresses.values() {
        let has_ours = ing.status.len() == 1 && ing.status[0] == addr;
        let patch = match (ours.contains(&ing.key), has_ours) {
            (true, false) => json!({"status": {"loadBalancer": {"ingress": [entry]}}}),
            // No longer ours (its class changed): take back the address we wrote.
            (false, true) => json!({"status": {"loadBalancer": {"ingress": null}}}),
            _ => continue,
        };
        let api = Api::<Ingress>::namespaced(client.clone(), &ing.key.namespace);
        if let Err(e) = api
            .patch_status(
                &ing.key.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(ingress = %ing.key, error = %e, "cannot write ingress status");
        }
    }
}
