//! The incremental record index: the cut-down objects, and the served name map split into
//! copy-on-write shards that double as the index's bookkeeping. A Service, EndpointSlice or Pod
//! change recomputes only the records of the sources it touches (the Service it belongs to, or
//! the Pod), and only names whose records or existence changed are rewritten, in their shards;
//! so a snapshot swap costs work proportional to the change, not to the zone.
//!
//! Why counts: records from different sources can coincide (two headless Services selecting one
//! pod share its PTR name; two hostNetwork pods share an address), and a name exists while any
//! record or existing child keeps it. Each node keeps how many sources contribute each of its
//! records and how many reasons it has to exist (its own records and marks, plus its existing
//! children); taking a source's records back decrements, and what reaches zero disappears. A
//! full build is the same index filled from nothing, so incremental and full builds give the
//! same answers by construction (and a test checks it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Key, Model, PodInfo, ServiceInfo, SliceInfo};
use crate::names::{self, suffix_offset};
use crate::records::{self, Records};
use crate::snapshot::{Node, PodRecords, Shard, Snapshot, ZoneSettings, shard_of};
use crate::wire::TYPE_SOA;

/// Shards of the served name map: a change clones the few it touches (each about names/1024
/// entries), a snapshot clones 1024 `Arc`s.
pub(crate) const SHARDS: usize = 1024;

/// Sources whose changes are applied together in a big update.
const BATCH: usize = 256;

/// Who contributes records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// A Service together with the EndpointSlices labelled with its name.
    Service(Key),
    Pod(Key),
}

/// An update's changes by name. Hashed with FNV-1a rather than SipHash: the names come from
/// cluster objects, not from queries, and this map is the hot part of a full build.
type Deltas = HashMap<Vec<u8>, Delta, BuildHasherDefault<Fnv>>;

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What an update does to one name: reasons to exist gained or lost, records added or taken.
#[derive(Debug, Default)]
struct Delta {
    refs: i64,
    records: Vec<(u16, Vec<u8>, i64)>,
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
    shards: Vec<Arc<Shard>>,
    /// Names in the shards.
    len: usize,
    /// Sources changed since the last snapshot, with the records they had in it.
    stale: HashMap<Source, Records>,
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
            shards: (0..SHARDS).map(|_| Arc::new(Shard::default())).collect(),
            len: 0,
            stale: HashMap::new(),
        };
        let mut deltas = Deltas::default();
        add(&mut deltas, &zone, 1);
        index.apply(deltas);
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
        let mut deltas = Deltas::default();
        for (i, (source, old)) in stale.into_iter().enumerate() {
            let new = self.records_of(&source);
            if new != old {
                add(&mut deltas, &old, -1);
                add(&mut deltas, &new, 1);
                changed = true;
            }
            // A big update (the first sync, a relist) goes in batches, so the deltas in memory
            // at once stay small next to the zone.
            if i % BATCH == BATCH - 1 {
                self.apply(std::mem::take(&mut deltas));
            }
        }
        let serial = now_serial();
        if changed && serial != self.serial {
            // The serial says when the zone last changed (what CoreDNS's kubernetes plugin does).
            let new = records::zone(&self.settings, serial);
            add(&mut deltas, &records::zone(&self.settings, self.serial), -1);
            add(&mut deltas, &new, 1);
            self.serial = serial;
            self.soa = soa_of(&new);
        }
        self.apply(deltas);
        Snapshot {
            settings: self.settings.clone(),
            shards: self.shards.clone(),
            soa: self.soa.clone(),
            pod_zone: self.pod_zone.clone(),
            len: self.len,
        }
    }

    /// Rewrites the nodes of the changed names, deepest first: a name that starts or stops
    /// existing changes its parent's reasons to exist before the parent is rewritten.
    fn apply(&mut self, mut deltas: Deltas) {
        let mut by_depth: Vec<Vec<Vec<u8>>> = Vec::new();
        for name in deltas.keys() {
            let depth = names::labels(name).count();
            if by_depth.len() <= depth {
                by_depth.resize_with(depth + 1, Vec::new);
            }
            by_depth[depth].push(name.clone());
        }
        while let Some(level) = by_depth.pop() {
            for name in level {
                let Some(delta) = deltas.remove(&name) else {
                    continue;
                };
                let at = shard_of(&name);
                let old = self.shards[at].get(name.as_slice());
                let old_refs = old.map_or(0, Node::refs);
                // A delta that cancels out copies no shard.
                let Some(node) = merge(old, delta) else {
                    continue;
                };
                let new_refs = node.as_ref().map_or(0, Node::refs);
                let shard = Arc::make_mut(&mut self.shards[at]);
                match node {
                    Some(node) => {
                        shard.insert(name.clone().into_boxed_slice(), node);
                    }
                    None => {
                        shard.remove(name.as_slice());
                    }
                }
                let change = match (old_refs > 0, new_refs > 0) {
                    (false, true) => 1,
                    (true, false) => -1,
                    _ => continue,
                };
                self.len = self.len.saturating_add_signed(change);
                if let Some(parent) = self.parent_in_zone(&name) {
                    // The parent is one level up, so still to come in this loop; queued unless
                    // it already is.
                    let queued = deltas.contains_key(&parent);
                    delta_of(&mut deltas, &parent).refs += change as i64;
                    if !queued {
                        let depth = names::labels(&parent).count();
                        if by_depth.len() <= depth {
                            by_depth.resize_with(depth + 1, Vec::new);
                        }
                        by_depth[depth].push(parent);
                    }
                }
            }
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

    /// The parent of a name strictly below the zone apex.
    fn parent_in_zone(&self, name: &[u8]) -> Option<Vec<u8>> {
        if suffix_offset(name, &self.settings.zone).is_some_and(|o| o > 0) {
            names::parent(name).map(<[u8]>::to_vec)
        } else {
            None
        }
    }
}

/// Adds `sign` × the records of a source to the deltas.
fn add(deltas: &mut Deltas, r: &Records, sign: i64) {
    for (name, rtype, rdata) in &r.records {
        let d = delta_of(deltas, name);
        d.refs += sign;
        d.records.push((*rtype, rdata.clone(), sign));
    }
    for name in &r.exist {
        delta_of(deltas, name).refs += sign;
    }
}

fn delta_of<'d>(deltas: &'d mut Deltas, name: &[u8]) -> &'d mut Delta {
    // Looked up first: most names are touched several times, and `entry` would copy the key.
    if !deltas.contains_key(name) {
        deltas.insert(name.to_vec(), Delta::default());
    }
    deltas.get_mut(name).expect("inserted above")
}

/// The node after `delta`: `None` (outer) when nothing changes, `Some(None)` when the name stops
/// existing. Records are merged in order; counts that reach zero drop the record.
#[allow(clippy::option_option)]
fn merge(old: Option<&Node>, mut delta: Delta) -> Option<Option<Node>> {
    delta
        .records
        .sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // Equal records from the old and the new version of a source cancel out.
    let mut changes: Vec<(u16, Vec<u8>, i64)> = Vec::with_capacity(delta.records.len());
    for (t, r, n) in delta.records {
        match changes.last_mut() {
            Some(last) if last.0 == t && last.1 == r => last.2 += n,
            _ => changes.push((t, r, n)),
        }
    }
    changes.retain(|c| c.2 != 0);
    if delta.refs == 0 && changes.is_empty() {
        return None;
    }
    let old_refs = old.map_or(0, Node::refs);
    let refs = (i64::from(old_refs) + delta.refs).clamp(0, i64::from(u32::MAX)) as u32;
    if refs == 0 {
        return Some(None);
    }
    let mut out = Vec::with_capacity(old.map_or(4, |n| n.0.len()) + changes.len() * 16);
    out.extend_from_slice(&refs.to_be_bytes());
    let push = |out: &mut Vec<u8>, t: u16, count: i64, rdata: &[u8]| {
        if count > 0 {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(count.min(i64::from(u32::MAX)) as u32).to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
    };
    let mut olds = old.into_iter().flat_map(Node::entries).peekable();
    let mut news = changes.into_iter().peekable();
    loop {
        match (olds.peek(), news.peek()) {
            (Some(&(ot, oc, or)), Some((nt, nr, _))) => match (ot, or).cmp(&(*nt, nr.as_slice())) {
                std::cmp::Ordering::Less => {
                    push(&mut out, ot, i64::from(oc), or);
                    olds.next();
                }
                std::cmp::Ordering::Greater => {
                    if let Some((t, r, n)) = news.next() {
                        push(&mut out, t, n, &r);
                    }
                }
                std::cmp::Ordering::Equal => {
                    if let Some((t, r, n)) = news.next() {
                        push(&mut out, t, i64::from(oc) + n, &r);
                    }
                    olds.next();
                }
            },
            (Some(&(ot, oc, or)), None) => {
                push(&mut out, ot, i64::from(oc), or);
                olds.next();
            }
            (None, Some(_)) => {
                if let Some((t, r, n)) = news.next() {
                    push(&mut out, t, n, &r);
                }
            }
            (None, None) => break,
        }
    }
    Some(Some(Node(out.into_boxed_slice())))
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
