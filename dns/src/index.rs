//! The incremental record index: the cut-down objects, how many sources contribute each record
//! and each name, and the served name map split into copy-on-write shards. A Service,
//! EndpointSlice or Pod change recomputes only the records of the sources it touches (the
//! Service it belongs to, or the Pod) and clones only the shards holding names whose records
//! changed, so a snapshot swap costs work proportional to the change, not to the zone.
//!
//! Why counts: records from different sources can coincide (two headless Services selecting one
//! pod share its PTR name; two hostNetwork pods share an address), and a name exists while any
//! record or existing child keeps it. Taking a source's records back decrements; whatever
//! reaches zero disappears. A full build is the same index filled from nothing, so incremental
//! and full builds give the same answers by construction (and a test checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Key, Model, PodInfo, ServiceInfo, SliceInfo};
use crate::names::{self, suffix_offset};
use crate::records::{self, Records};
use crate::snapshot::{Node, PodRecords, RrSet, Shard, Snapshot, ZoneSettings, shard_of};
use crate::wire::TYPE_SOA;

/// Shards of the served name map: a change clones the few it touches (each about names/1024
/// entries), a snapshot clones 1024 `Arc`s.
pub(crate) const SHARDS: usize = 1024;

/// Who contributes records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// A Service together with the EndpointSlices labelled with its name.
    Service(Key),
    Pod(Key),
}

#[derive(Debug, Default)]
struct NameState {
    /// Direct contributions (records and "exists" marks) plus existing children: the name
    /// exists while this is above zero.
    refs: u32,
    /// (type, RDATA, sources contributing it), sorted by type then RDATA: the order RRsets and
    /// their records are served in.
    records: Vec<(u16, Arc<[u8]>, u32)>,
}

/// Everything needed to turn object changes into snapshots. Owned by one task (the watch).
#[derive(Debug)]
pub struct Index {
    settings: ZoneSettings,
    serial: u32,
    soa: Arc<[u8]>,
    pod_zone: Box<[u8]>,
    services: HashMap<Key, ServiceInfo>,
    slices: HashMap<Key, SliceInfo>,
    /// Service key (namespace, `kubernetes.io/service-name`) → its slices' keys.
    slices_of: HashMap<Key, BTreeSet<Key>>,
    pods: HashMap<Key, PodInfo>,
    names: HashMap<Arc<[u8]>, NameState>,
    shards: Vec<Arc<Shard>>,
    /// Sources changed since the last snapshot, with the records they had in it.
    stale: HashMap<Source, Records>,
    /// Names whose node must be rebuilt (or removed) in the shards.
    dirty: HashSet<Arc<[u8]>>,
}

impl Index {
    /// An index with only the zone's own records.
    pub fn new(settings: &ZoneSettings) -> Index {
        let serial = now_serial();
        let zone = records::zone(settings, serial);
        let mut index = Index {
            settings: settings.clone(),
            serial,
            soa: soa_of(&zone),
            pod_zone: names::prepend("pod", &settings.zone)
                .unwrap_or_default()
                .into(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            pods: HashMap::new(),
            names: HashMap::new(),
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            stale: HashMap::new(),
            dirty: HashSet::new(),
        };
        index.contribute(&zone);
        index
    }

    /// An index of a whole model (a full build).
    pub fn from_model(settings: &ZoneSettings, model: &Model) -> Index {
        let mut index = Index::new(settings);
        for s in model.services.values() {
            index.set_service(s.key.clone(), Some(s.clone()));
        }
        for s in model.slices.values() {
            index.set_slice(s.key.clone(), Some(s.clone()));
        }
        for p in model.pods.values() {
            index.set_pod(p.key.clone(), Some(p.clone()));
        }
        index
    }

    /// Sets (or with `None` removes) a Service; whether anything changed.
    pub fn set_service(&mut self, key: Key, info: Option<ServiceInfo>) -> bool {
        if self.services.get(&key) == info.as_ref() {
            return false;
        }
        self.stash(Source::Service(key.clone()));
        match info {
            Some(i) => self.services.insert(key, i),
            None => self.services.remove(&key),
        };
        true
    }

    /// Sets (or removes) an EndpointSlice; whether anything changed.
    pub fn set_slice(&mut self, key: Key, info: Option<SliceInfo>) -> bool {
        let old = self.slices.get(&key);
        if old == info.as_ref() {
            return false;
        }
        let owner = |s: &SliceInfo| Key {
            namespace: key.namespace.clone(),
            name: s.service.clone(),
        };
        let old_owner = old.map(owner);
        let new_owner = info.as_ref().map(owner);
        for o in old_owner.iter().chain(&new_owner) {
            self.stash(Source::Service(o.clone()));
        }
        if let Some(o) = old_owner
            && let Some(set) = self.slices_of.get_mut(&o)
        {
            set.remove(&key);
            if set.is_empty() {
                self.slices_of.remove(&o);
            }
        }
        match info {
            Some(i) => {
                if let Some(o) = new_owner {
                    self.slices_of.entry(o).or_default().insert(key.clone());
                }
                self.slices.insert(key, i);
            }
            None => {
                self.slices.remove(&key);
            }
        }
        true
    }

    /// Sets (or removes) a Pod; whether anything changed.
    pub fn set_pod(&mut self, key: Key, info: Option<PodInfo>) -> bool {
        if self.pods.get(&key) == info.as_ref() {
            return false;
        }
        self.stash(Source::Pod(key.clone()));
        match info {
            Some(i) => self.pods.insert(key, i),
            None => self.pods.remove(&key),
        };
        true
    }

    /// Replaces every Service with `fresh` (a relist); whether anything changed.
    pub fn replace_services(&mut self, fresh: BTreeMap<Key, ServiceInfo>) -> bool {
        let gone: Vec<Key> = keys_missing(self.services.keys(), &fresh);
        let mut changed = false;
        for k in gone {
            changed |= self.set_service(k, None);
        }
        for (k, v) in fresh {
            changed |= self.set_service(k, Some(v));
        }
        changed
    }

    /// Replaces every EndpointSlice with `fresh`; whether anything changed.
    pub fn replace_slices(&mut self, fresh: BTreeMap<Key, SliceInfo>) -> bool {
        let gone: Vec<Key> = keys_missing(self.slices.keys(), &fresh);
        let mut changed = false;
        for k in gone {
            changed |= self.set_slice(k, None);
        }
        for (k, v) in fresh {
            changed |= self.set_slice(k, Some(v));
        }
        changed
    }

    /// Replaces every Pod with `fresh`; whether anything changed.
    pub fn replace_pods(&mut self, fresh: BTreeMap<Key, PodInfo>) -> bool {
        let gone: Vec<Key> = keys_missing(self.pods.keys(), &fresh);
        let mut changed = false;
        for k in gone {
            changed |= self.set_pod(k, None);
        }
        for (k, v) in fresh {
            changed |= self.set_pod(k, Some(v));
        }
        changed
    }

    /// How many sources changed since the last snapshot.
    pub fn pending(&self) -> usize {
        self.stale.len()
    }

    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// Brings the records of every changed source up to date and returns the snapshot to serve.
    /// Unchanged shards are shared with the previous snapshot.
    pub fn snapshot(&mut self) -> Snapshot {
        let stale = std::mem::take(&mut self.stale);
        let mut changed = false;
        for (source, old) in stale {
            let new = self.records_of(&source);
            if new != old {
                self.retract(&old);
                self.contribute(&new);
                changed = true;
            }
        }
        let serial = now_serial();
        if changed && serial != self.serial {
            // The serial says when the zone last changed (what CoreDNS's kubernetes plugin does).
            let old = records::zone(&self.settings, self.serial);
            let new = records::zone(&self.settings, serial);
            self.retract(&old);
            self.contribute(&new);
            self.serial = serial;
            self.soa = soa_of(&new);
        }
        for name in std::mem::take(&mut self.dirty) {
            let shard = Arc::make_mut(&mut self.shards[shard_of(&name)]);
            match self.names.get(&name) {
                Some(state) => {
                    shard.insert(name, node_of(state));
                }
                None => {
                    shard.remove(&name);
                }
            }
        }
        Snapshot {
            settings: self.settings.clone(),
            shards: self.shards.clone(),
            soa: self.soa.clone(),
            pod_zone: self.pod_zone.clone(),
            len: self.names.len(),
        }
    }

    /// Remembers what `source` contributes now, before its first change since the last
    /// snapshot (later changes keep the first memory: that is what the snapshot has).
    fn stash(&mut self, source: Source) {
        if !self.stale.contains_key(&source) {
            let now = self.records_of(&source);
            self.stale.insert(source, now);
        }
    }

    fn records_of(&self, source: &Source) -> Records {
        match source {
            Source::Service(key) => {
                let Some(svc) = self.services.get(key) else {
                    return Records::default();
                };
                let slices: Vec<&SliceInfo> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.slices.get(k))
                    .collect();
                records::service(&self.settings, svc, &slices)
            }
            Source::Pod(key) => match self.pods.get(key) {
                Some(pod) if self.settings.pods == PodRecords::Verified => {
                    records::pod(&self.settings, pod)
                }
                _ => Records::default(),
            },
        }
    }

    fn contribute(&mut self, r: &Records) {
        for (name, rtype, rdata) in &r.records {
            let key = self.hold(name);
            let Some(state) = self.names.get_mut(&key) else {
                continue;
            };
            match find(&state.records, *rtype, rdata) {
                Ok(i) => state.records[i].2 += 1,
                Err(i) => {
                    state
                        .records
                        .insert(i, (*rtype, Arc::from(rdata.as_slice()), 1));
                    self.dirty.insert(key);
                }
            }
        }
        for name in &r.exist {
            self.hold(name);
        }
    }

    fn retract(&mut self, r: &Records) {
        for (name, rtype, rdata) in &r.records {
            if let Some(state) = self.names.get_mut(name.as_slice())
                && let Ok(i) = find(&state.records, *rtype, rdata)
            {
                state.records[i].2 -= 1;
                if state.records[i].2 == 0 {
                    state.records.remove(i);
                    if let Some((key, _)) = self.names.get_key_value(name.as_slice()) {
                        self.dirty.insert(key.clone());
                    }
                }
            }
            self.release(name);
        }
        for name in &r.exist {
            self.release(name);
        }
    }

    /// One more reason for `name` to exist; a name that starts existing holds its parent
    /// (inside the zone, up to the apex), so ancestors of every name exist. Returns the key.
    fn hold(&mut self, name: &[u8]) -> Arc<[u8]> {
        let existing = self.names.get_key_value(name).map(|(k, _)| k.clone());
        let (key, created) = match existing {
            Some(k) => {
                if let Some(state) = self.names.get_mut(name) {
                    state.refs += 1;
                }
                (k, false)
            }
            None => {
                let k: Arc<[u8]> = Arc::from(name);
                self.names.insert(
                    k.clone(),
                    NameState {
                        refs: 1,
                        records: Vec::new(),
                    },
                );
                (k, true)
            }
        };
        if created {
            self.dirty.insert(key.clone());
            if let Some(parent) = self.parent_in_zone(name) {
                self.hold(&parent);
            }
        }
        key
    }

    /// The reverse of [`Index::hold`].
    fn release(&mut self, name: &[u8]) {
        let Some(state) = self.names.get_mut(name) else {
            return;
        };
        state.refs -= 1;
        if state.refs > 0 {
            return;
        }
        if let Some((key, _)) = self.names.remove_entry(name) {
            self.dirty.insert(key);
        }
        if let Some(parent) = self.parent_in_zone(name) {
            self.release(&parent);
        }
    }

    /// The parent of a name strictly below the zone apex.
    fn parent_in_zone(&self, name: &[u8]) -> Option<Vec<u8>> {
        if suffix_offset(name, &self.settings.zone).is_some_and(|o| o > 0) {
            names::parent(name).map(<[u8]>::to_vec)
        } else {
            None
        }
    }
}

fn find(records: &[(u16, Arc<[u8]>, u32)], rtype: u16, rdata: &[u8]) -> Result<usize, usize> {
    records.binary_search_by(|(t, d, _)| (*t, &**d).cmp(&(rtype, rdata)))
}

fn node_of(state: &NameState) -> Node {
    let mut rrsets: Vec<RrSet> = Vec::new();
    for (rtype, rdata, _) in &state.records {
        match rrsets.last_mut() {
            Some(set) if set.rtype == *rtype => set.rdatas.push(rdata.clone()),
            _ => rrsets.push(RrSet {
                rtype: *rtype,
                rdatas: vec![rdata.clone()],
            }),
        }
    }
    Node { rrsets }
}

fn soa_of(zone: &Records) -> Arc<[u8]> {
    zone.records
        .iter()
        .find(|(_, t, _)| *t == TYPE_SOA)
        .map(|(_, _, d)| Arc::from(d.as_slice()))
        .unwrap_or_else(|| Arc::from(&[][..]))
}

fn keys_missing<'a, T>(have: impl Iterator<Item = &'a Key>, fresh: &BTreeMap<Key, T>) -> Vec<Key> {
    have.filter(|k| !fresh.contains_key(*k)).cloned().collect()
}

fn now_serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
