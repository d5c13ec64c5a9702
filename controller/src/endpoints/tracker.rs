//! Remembers slices this controller created or deleted until its store has seen that, so a stale store never causes duplicates.
//!
//! Slices are created with `generateName`, so a create the store has not yet seen would be
//! made again by a reconcile reading the store (upstream's `endpointSliceTracker` guards the
//! same race). Updates need no tracking: they carry a `resourceVersion` and fail on conflict.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Namespace and name of a Service.
pub type ServiceKey = (String, String);

#[derive(Debug, Default)]
struct Pending {
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
}

/// Writes per Service not yet seen by the slice store.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: Mutex<HashMap<ServiceKey, Pending>>,
}

impl Tracker {
    pub fn created(&self, service: &ServiceKey, slice: String) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(service.clone()).or_default().created.insert(slice);
        }
    }

    pub fn deleted(&self, service: &ServiceKey, slice: String) {
        if let Ok(mut p) = self.pending.lock() {
            p.entry(service.clone()).or_default().deleted.insert(slice);
        }
    }

    /// Whether the store, which holds the slices named `in_store`, reflects every write made
    /// for `service`. Writes it has seen are forgotten.
    pub fn in_sync<'a>(
        &self,
        service: &ServiceKey,
        in_store: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return true;
        };
        let Some(p) = pending.get_mut(service) else {
            return true;
        };
        let names: BTreeSet<&str> = in_store.into_iter().collect();
        p.created.retain(|n| !names.contains(n.as_str()));
        p.deleted.retain(|n| names.contains(n.as_str()));
        let synced = p.created.is_empty() && p.deleted.is_empty();
        if synced {
            pending.remove(service);
        }
        synced
    }

    /// Forgets a Service (deleted, or its slices are no longer ours).
    pub fn forget(&self, service: &ServiceKey) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(service);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_store_to_see_writes() {
        let t = Tracker::default();
        let svc = ("ns".to_owned(), "web".to_owned());
        assert!(t.in_sync(&svc, []));
        t.created(&svc, "web-abc".into());
        t.deleted(&svc, "web-old".into());
        assert!(!t.in_sync(&svc, ["web-old"]));
        assert!(!t.in_sync(&svc, ["web-old", "web-abc"]));
        assert!(t.in_sync(&svc, ["web-abc"]));
        assert!(t.in_sync(&svc, []), "forgotten once seen");
    }
}
