//! The reflector: one list-then-watch task per served kind keeps an in-memory store of object metadata that the reconcilers read.
//!
//! Like kube-runtime's `watcher` → `reflector`, cut down (as coredns does) to the fields the
//! namespace controller and the garbage collector need. One writer per kind, many readers
//! taking snapshots; every change wakes the reconcilers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use skiff_api::Kind;
use tokio::sync::Notify;

use crate::resources;

/// How long one watch request lasts before it is renewed (the server ends it then).
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Pause after a failed list or watch before trying again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Which object: kind, namespace (None for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// The metadata of one stored object that the reconcilers act on.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedObject {
    pub object: ObjectRef,
    pub uid: String,
    pub resource_version: String,
    pub owner_references: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// A Namespace's `spec.finalizers`; empty for other kinds.
    pub spec_finalizers: Vec<String>,
}

impl CachedObject {
    /// Cuts a watched object down to what the reconcilers need. `None` without a name.
    pub fn from_dynamic(kind: Kind, object: &DynamicObject) -> Option<Self> {
        let meta: &ObjectMeta = &object.metadata;
        let name = meta.name.clone()?;
        let spec_finalizers = if kind == Kind::Namespace {
            object.data["spec"]["finalizers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Some(Self {
            object: ObjectRef {
                kind,
                namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
                name,
            },
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            owner_references: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            spec_finalizers,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    objects: HashMap<ObjectRef, CachedObject>,
    synced: BTreeSet<Kind>,
}

/// The shared store: written by the informers, read through [`Cache::snapshot`].
#[derive(Debug, Default)]
pub struct Cache {
    inner: RwLock<Inner>,
    changed: Notify,
}

impl Cache {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every cached object, or `None` until every kind has been listed once (acting on a
    /// partial view would take present owners for missing ones).
    pub fn snapshot(&self) -> Option<Vec<CachedObject>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.synced.len() < Kind::all().count() {
            return None;
        }
        Some(inner.objects.values().cloned().collect())
    }

    /// Resolves after the next change (any kind).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn write(&self, f: impl FnOnce(&mut Inner)) {
        {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            f(&mut inner);
        }
        // One reconcile loop waits: a permit stored while it works is not lost.
        self.changed.notify_one();
    }

    /// Replaces everything of `kind` with a fresh list.
    fn replace(&self, kind: Kind, objects: Vec<CachedObject>) {
        self.write(|inner| {
            inner.objects.retain(|k, _| k.kind != kind);
            for o in objects {
                inner.objects.insert(o.object.clone(), o);
            }
            inner.synced.insert(kind);
        });
    }

    fn apply(&self, kind: Kind, event: &WatchEvent<DynamicObject>) {
        match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                if let Some(c) = CachedObject::from_dynamic(kind, o) {
                    self.write(|inner| {
                        inner.objects.insert(c.object.clone(), c);
                    });
                }
            }
            WatchEvent::Deleted(o) => {
                if let Some(c) = CachedObject::from_dynamic(kind, o) {
                    self.write(|inner| {
                        inner.objects.remove(&c.object);
                    });
                }
            }
            WatchEvent::Bookmark(_) | WatchEvent::Error(_) => {}
        }
    }
}

/// Keeps `kind`'s part of the cache current until the task is dropped: list, then watch from
/// the list's resourceVersion; relist after any error (an expired resourceVersion included).
pub async fn run_informer(client: kube::Client, kind: Kind, cache: Arc<Cache>) {
    let api: Api<DynamicObject> = resources::all_api(client, kind);
    loop {
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(%kind, error = %e, "listing failed; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let mut version = list.metadata.resource_version.clone().unwrap_or_default();
        let objects = list
            .items
            .iter()
            .filter_map(|o| CachedObject::from_dynamic(kind, o))
            .collect();
        cache.replace(kind, objects);
        loop {
            let params = WatchParams::default().timeout(WATCH_TIMEOUT_SECS);
            let stream = match api.watch(&params, &version).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%kind, error = %e, "watch failed; relisting");
                    break;
                }
            };
            let mut stream = stream.boxed();
            let mut relist = false;
            loop {
                match stream.try_next().await {
                    Ok(Some(WatchEvent::Error(status))) => {
                        tracing::debug!(%kind, code = status.code, message = %status.message, "watch error; relisting");
                        relist = true;
                        break;
                    }
                    Ok(Some(event)) => {
                        if let Some(rv) = event_version(&event) {
                            version = rv;
                        }
                        cache.apply(kind, &event);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%kind, error = %e, "watch stream broke; relisting");
                        relist = true;
                        break;
                    }
                }
            }
            if relist {
                break;
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

fn event_version(event: &WatchEvent<DynamicObject>) -> Option<String> {
    match event {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            o.metadata.resource_version.clone()
        }
        WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
        WatchEvent::Error(_) => None,
    }
}
