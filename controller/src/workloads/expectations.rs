//! Upstream's `ControllerExpectations`: pods a ReplicaSet created or deleted that its pod store has not shown yet, so a lagging store never causes a second create or delete.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expectations older than this are dropped (a missed watch event must not stall a ReplicaSet).
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Pending {
    adds: BTreeSet<String>,
    deletes: BTreeSet<String>,
    since: Instant,
}

/// Per ReplicaSet uid: pod names still to be seen created / gone.
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    /// Pods the watch saw deleted lately, per owner: a pod created and deleted before its
    /// creation was recorded (or before the next reconcile) was observed all the same
    /// (upstream clears the expectation on the add event; a reconcile that only looks at the
    /// store would wait for a pod that is gone for good).
    deleted: HashMap<String, Vec<(String, Instant)>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner.pending)
    }

    /// The watch saw pod `name` of `owner` deleted: an expected creation of it is met.
    pub fn observed_deletion(&self, owner: &str, name: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = inner.pending.get_mut(owner) {
            p.adds.remove(name);
        }
        let now = Instant::now();
        inner.deleted.retain(|_, names| {
            names.retain(|(_, at)| now.duration_since(*at) < TTL);
            !names.is_empty()
        });
        inner
            .deleted
            .entry(owner.to_owned())
            .or_default()
            .push((name.to_owned(), now));
    }

    /// Records pods just created (`add`) or deleted (`add == false`).
    pub fn expect(&self, owner: &str, names: impl IntoIterator<Item = String>, add: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { pending, deleted } = &mut *inner;
        let gone = deleted.get(owner);
        // A creation whose pod was already seen deleted is met before it is recorded.
        let names = names
            .into_iter()
            .filter(|n| !(add && gone.is_some_and(|g| g.iter().any(|(d, _)| d == n))));
        let p = pending.entry(owner.to_owned()).or_insert_with(|| Pending {
            adds: BTreeSet::new(),
            deletes: BTreeSet::new(),
            since: Instant::now(),
        });
        p.since = Instant::now();
        let set = if add { &mut p.adds } else { &mut p.deletes };
        set.extend(names);
    }

    /// Whether the store has caught up with every write for `owner`, given the names of the
    /// pods it now shows (`present`).
    pub fn satisfied(&self, owner: &str, present: &dyn Fn(&str) -> bool) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(owner) else {
                return true;
            };
            p.adds.retain(|n| !present(n));
            p.deletes.retain(|n| present(n));
            let done = (p.adds.is_empty() && p.deletes.is_empty()) || p.since.elapsed() > TTL;
            if done {
                m.remove(owner);
            }
            done
        })
    }

    /// Forgets `owner` (deleted).
    pub fn forget(&self, owner: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.pending.remove(owner);
        inner.deleted.remove(owner);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_creates_and_deletes_to_show() {
        let e = Expectations::default();
        e.expect("rs", ["a".to_owned()], true);
        e.expect("rs", ["b".to_owned()], false);
        assert!(!e.satisfied("rs", &|n| n == "b"));
        assert!(!e.satisfied("rs", &|n| n == "a" || n == "b"));
        assert!(e.satisfied("rs", &|n| n == "a"));
        assert!(e.satisfied("other", &|_| false));
    }

    #[test]
    fn a_created_pod_deleted_before_the_store_showed_it_counts_as_seen() {
        let e = Expectations::default();
        // Recorded, then deleted before any reconcile saw it in the store.
        e.expect("rs", ["a".to_owned(), "b".to_owned()], true);
        e.observed_deletion("rs", "a");
        assert!(e.satisfied("rs", &|n| n == "b"));
        // Deleted (and the deletion seen) before the creation was even recorded.
        e.observed_deletion("rs", "c");
        e.expect("rs", ["c".to_owned()], true);
        assert!(e.satisfied("rs", &|_| false));
        // Another owner's deletions are not this one's.
        e.observed_deletion("other", "d");
        e.expect("rs", ["d".to_owned()], true);
        assert!(!e.satisfied("rs", &|_| false));
    }
}
