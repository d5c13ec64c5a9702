//! Services, EndpointSlices (and Pods for `--pods verified`) through kube-runtime watchers into
//! the cut-down [`Model`], and debounced whole rebuilds of the snapshot.
//!
//! The watch keeps cut-down objects rather than a kube `reflector::Store` of whole objects: a
//! change that leaves the cut-down object equal (a Pod's status churn, a Service annotation)
//! triggers no rebuild, and memory holds only what answers need. A burst of changes is folded
//! into one rebuild, at most `debounce` after the first change of the burst; the programming
//! latency metric measures from that first change to the swap.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::metrics::Metrics;
use crate::model::{Key, Model, PodInfo, ServiceInfo, SliceInfo};
use crate::snapshot::{PodRecords, Snapshot, ZoneSettings};

// Boxed: a Pod event is kilobytes, and these sit in the merged stream's buffers.
enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
    Pod(Box<Event<Pod>>),
}

/// One kind's part of the model, with a relist in progress.
struct Kind<T> {
    synced: bool,
    relist: Option<BTreeMap<Key, T>>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            synced: false,
            relist: None,
        }
    }
}

/// Applies a watcher event to `map`; whether the map changed.
fn apply<K, T: PartialEq>(
    kind: &mut Kind<T>,
    map: &mut BTreeMap<Key, T>,
    event: Event<K>,
    cut: impl Fn(&K) -> Option<T>,
    key: impl Fn(&K) -> Option<Key>,
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
    Some(Key {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    })
}

fn stream<K>(
    client: &kube::Client,
    wrap: fn(Box<Event<K>>) -> Change,
) -> impl Stream<Item = Change> + Send + 'static
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
    K::DynamicType: Default,
{
    watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(move |r| {
            std::future::ready(match r {
                Ok(ev) => Some(wrap(Box::new(ev))),
                Err(e) => {
                    // The backoff re-lists; the snapshot keeps serving what it has meanwhile.
                    tracing::warn!(error = %e, "DNS watch error");
                    None
                }
            })
        })
}

/// Watches until the streams end (never, in practice: the caller drops this future to stop).
pub(crate) async fn watch(
    client: kube::Client,
    settings: ZoneSettings,
    debounce: Duration,
    target: Arc<ArcSwapOption<Snapshot>>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let want_pods = settings.pods == PodRecords::Verified;
    let mut streams = vec![
        stream::<Service>(&client, Change::Service).boxed(),
        stream::<EndpointSlice>(&client, Change::Slice).boxed(),
    ];
    if want_pods {
        streams.push(stream::<Pod>(&client, Change::Pod).boxed());
    }
    let mut changes = futures::stream::select_all(streams);

    let mut model = Arc::new(Model::default());
    let (mut services, mut slices, mut pods) = (Kind::default(), Kind::default(), Kind::default());
    let mut dirty_since: Option<Instant> = None;
    let mut first_done = false;
    loop {
        let all_synced = services.synced && slices.synced && (pods.synced || !want_pods);
        let deadline = match (all_synced, dirty_since) {
            (true, Some(t)) if first_done => Some(t + debounce),
            (true, _) if !first_done => Some(Instant::now()),
            _ => None,
        };
        let change = match deadline {
            Some(at) => tokio::select! {
                c = changes.next() => c,
                () = tokio::time::sleep_until(at.into()) => {
                    let started = dirty_since.unwrap_or_else(Instant::now);
                    let built = {
                        let (settings, model) = (settings.clone(), model.clone());
                        tokio::task::spawn_blocking(move || Snapshot::build(&settings, &model)).await
                    };
                    match built {
                        Ok(snap) => {
                            metrics.snapshot_names.store(snap.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            target.store(Some(Arc::new(snap)));
                            metrics.snapshot_builds.inc();
                            if first_done {
                                metrics.programming_latency.observe(started.elapsed());
                            } else {
                                tracing::info!(services = model.services.len(), "cluster DNS synced");
                            }
                            first_done = true;
                            dirty_since = None;
                            synced.send_replace(true);
                        }
                        Err(e) => tracing::error!(error = %e, "DNS snapshot build failed"),
                    }
                    continue;
                }
            },
            None => changes.next().await,
        };
        let Some(change) = change else { return };
        let m = Arc::make_mut(&mut model);
        let changed = match change {
            Change::Service(ev) => apply(
                &mut services,
                &mut m.services,
                *ev,
                ServiceInfo::from_service,
                |s| meta_key(&s.metadata),
            ),
            Change::Slice(ev) => apply(
                &mut slices,
                &mut m.slices,
                *ev,
                SliceInfo::from_slice,
                |s| meta_key(&s.metadata),
            ),
            Change::Pod(ev) => apply(&mut pods, &mut m.pods, *ev, PodInfo::from_pod, |p| {
                meta_key(&p.metadata)
            }),
        };
        if changed && dirty_since.is_none() {
            dirty_since = Some(Instant::now());
        }
    }
}
