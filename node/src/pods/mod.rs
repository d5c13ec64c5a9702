//! Pod workers: one task per pod uid runs its sandbox and containers and reports its status.

mod backoff;
mod container;
mod events;
pub mod sources;
mod streams;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, watch};

use crate::status::PodRecord;

pub use streams::KubeletStreams;
pub use worker::{PodWorkerCtx, spawn_worker};

/// One pod the kubelet runs: the latest object, what it knows of its containers, its sandbox.
#[derive(Debug)]
pub struct PodEntry {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The pod as last seen by the watch.
    pub pod: watch::Receiver<Pod>,
    /// What the status is computed from.
    pub record: Mutex<PodRecord>,
    /// Woken when `record` changed: the status writer writes `/status` if it differs.
    pub changed: Notify,
    /// The sandbox once made.
    pub sandbox: Mutex<Option<crate::sandbox::Sandbox>>,
    /// Container log folders by container name.
    pub log_dirs: Mutex<HashMap<String, PathBuf>>,
    /// The pod's volumes once made (their mounts go to every container process).
    pub volumes: Mutex<Option<Arc<crate::volumes::PodVolumes>>>,
    /// Readiness per container: the hook for readiness probes (task F); true without a probe.
    pub readiness: Mutex<HashMap<String, watch::Sender<bool>>>,
}

impl PodEntry {
    /// Changes the record and wakes the status writer.
    pub fn update(&self, f: impl FnOnce(&mut PodRecord)) {
        if let Ok(mut r) = self.record.lock() {
            f(&mut r);
        }
        self.changed.notify_one();
    }

    /// The readiness of `container` as probes report it (true when nobody set it).
    pub fn readiness(&self, container: &str) -> watch::Receiver<bool> {
        let mut map = match self.readiness.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(container.to_owned())
            .or_insert_with(|| watch::channel(true).0)
            .subscribe()
    }

    /// Sets the readiness of `container` (what a readiness probe calls).
    pub fn set_ready(&self, container: &str, ready: bool) {
        {
            let mut map = match self.readiness.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.entry(container.to_owned())
                .or_insert_with(|| watch::channel(true).0)
                .send_replace(ready);
        }
        self.update(|r| {
            for c in r.containers.iter_mut().filter(|c| c.name == container) {
                c.ready = ready;
            }
        });
    }

    pub fn sandbox(&self) -> Option<crate::sandbox::Sandbox> {
        self.sandbox.lock().ok().and_then(|s| s.clone())
    }
}

/// The pods of this node by uid, shared by the workers and the streaming server.
#[derive(Debug, Default, Clone)]
pub struct PodRegistry {
    inner: Arc<RwLock<HashMap<String, Arc<PodEntry>>>>,
}

impl PodRegistry {
    pub fn get(&self, uid: &str) -> Option<Arc<PodEntry>> {
        self.inner.read().ok()?.get(uid).cloned()
    }

    /// The entry of pod `namespace/name` (the newest if several uids share it).
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodEntry>> {
        self.inner
            .read()
            .ok()?
            .values()
            .find(|e| e.namespace == namespace && e.name == name)
            .cloned()
    }

    pub fn insert(&self, entry: Arc<PodEntry>) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(entry.uid.clone(), entry);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut m) = self.inner.write() {
            m.remove(uid);
        }
    }

    pub fn uids(&self) -> Vec<String> {
        self.inner
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}
