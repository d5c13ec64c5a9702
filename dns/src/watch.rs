//! Services, EndpointSlices (and Pods for `--pods verified`) through kube-runtime watchers into
//! the incremental [`Index`], and debounced snapshot swaps.
//!
//! The watch keeps cut-down objects rather than a kube `reflector::Store` of whole objects: a
//! change that leaves the cut-down object equal (a Pod's status churn, a Service annotation)
//! triggers nothing, and memory holds only what answers need. A burst of changes is folded into
//! one update, at most `debounce` after the first change of the burst; the update recomputes
//! only the records of the Services and Pods that changed. The programming latency metric
//! measures from that first change to the swap.

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

use crate::index::Index;
use crate::metrics::Metrics;
use crate::model::{Key, PodInfo, ServiceInfo, SliceInfo};
use crate::snapshot::{PodRecords, Snapshot, ZoneSettings};

/// Updates touching more sources than this run on a blocking thread (a relist), smaller ones
/// inline (a thread hand-off would cost more than the update).
const INLINE_UPDATE: usize = 64;

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

/// Applies a watcher event through `set` (one object) or `replace` (a finished relist);
/// whether the index changed.
fn apply<K, T>(
    kind: &mut Kind<T>,
    event: Event<K>,
    cut: impl Fn(&K) -> Option<T>,
    key: impl Fn(&K) -> Option<Key>,
    index: &mut Index,
    set: fn(&mut Index, Key, Option<T>) -> bool,
    replace: fn(&mut Index, BTreeMap<Key, T>) -> bool,
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
            kind.relist
                .take()
                .is_some_and(|fresh| replace(index, fresh))
        }
        Event::Apply(obj) => match key(&obj) {
            Some(k) => set(index, k, cut(&obj)),
            None => false,
        },
        Event::Delete(obj) => key(&obj).is_some_and(|k| set(index, k, None)),
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

    let mut index = Some(Index::new(&settings));
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
                    let Some(mut idx) = index.take() else { return };
                    let built = if idx.pending() <= INLINE_UPDATE {
                        let snap = idx.snapshot();
                        Ok((idx, snap))
                    } else {
                        tokio::task::spawn_blocking(move || {
                            let snap = idx.snapshot();
                            (idx, snap)
                        })
                        .await
                    };
                    match built {
                        Ok((idx, snap)) => {
                            metrics.snapshot_names.store(snap.len() as u64, std::sync::atomic::Ordering::Relaxed);
                            target.store(Some(Arc::new(snap)));
                            metrics.snapshot_builds.inc();
                            if first_done {
                                metrics.programming_latency.observe(started.elapsed());
                            } else {
                                tracing::info!(services = idx.services(), "cluster DNS synced");
                            }
                            index = Some(idx);
                            first_done = true;
                            dirty_since = None;
                            synced.send_replace(true);
                        }
                        Err(e) => {
                            // The index went with the panicked task: nothing sound to update.
                            tracing::error!(error = %e, "DNS snapshot update failed");
                            return;
                        }
                    }
                    continue;
                }
            },
            None => changes.next().await,
        };
        let Some(change) = change else { return };
        let Some(idx) = index.as_mut() else { return };
        let changed = match change {
            Change::Service(ev) => apply(
                &mut services,
                *ev,
                ServiceInfo::from_service,
                |s| meta_key(&s.metadata),
                idx,
                Index::set_service,
                Index::replace_services,
            ),
            Change::Slice(ev) => apply(
                &mut slices,
                *ev,
                SliceInfo::from_slice,
                |s| meta_key(&s.metadata),
                idx,
                Index::set_slice,
                Index::replace_slices,
            ),
            Change::Pod(ev) => apply(
                &mut pods,
                *ev,
                PodInfo::from_pod,
                |p| meta_key(&p.metadata),
                idx,
                Index::set_pod,
                Index::replace_pods,
            ),
        };
        if changed && dirty_since.is_none() {
            dirty_since = Some(Instant::now());
        }
    }
}
