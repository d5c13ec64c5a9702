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
    inner: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    /// Records pods just created (`add`) or deleted (`add == false`).
    pub fn expect(&self, owner: &str, names: impl IntoIterator<Item = String>, add: bool) {
        self.with(|m| {
            let p = m.entry(owner.to_owned()).or_insert_with(|| Pending {
                adds: BTreeSet::new(),
                deletes: BTreeSet::new(),
                since: Instant::now(),
            });
            p.since = Instant::now();
            let set = if add { &mut p.adds } else { &mut p.deletes };
            set.extend(names);
        });
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
        self.with(|m| {
            m.remove(owner);
        });
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
}
