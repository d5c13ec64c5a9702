//! The incremental service table compiler: remembers every Service and EndpointSlice it was
//! given and what each Service compiled to, and on [`Compiler::build`] recompiles only the
//! Services whose inputs changed, producing the next [`ServiceTable`] and the [`TableDiff`]
//! from the previous one directly (no walk over unchanged entries).
//!
//! The result is the table [`ServiceTable::build`] would compile from the same objects with the
//! previous table (`build` itself runs on this compiler, starting from nothing): the same
//! entries, ids, health checks and problems.
//!
//! What a Service's entries depend on, and so what makes it recompile:
//! - its own Service object (cut down to a `ServiceInfo`; an update that changes nothing the
//!   proxy reads, e.g. a status or annotation change, compiles nothing);
//! - its EndpointSlices (indexed by Service, so a slice change touches its Service only);
//! - who owns each frontend it asks for: a conflict goes to the older Service. Claims are
//!   indexed by address/port/protocol; when the owner of a claim changes, every claimant is
//!   recompiled (its frontends or its problem naming the owner change), otherwise nobody else;
//! - the same for `healthCheckNodePort`;
//! - the node ([`Compiler::set_node`] recompiles everything).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::diff::{TableDiff, change};
use crate::model::{Problem, ServiceInfo, ServiceKey, SliceInfo, key_of};
use crate::table::{
    Claim, CompiledService, HealthCheck, NodeInfo, PortKey, ServicePortEntry, ServicePortId,
    ServiceTable, compile_service, entry_backends, offers,
};

/// Who wins a conflict: the older Service (no timestamp counts as newest), then the smaller key.
/// The first element of a claim's set owns it.
type Priority = (bool, Option<Time>, ServiceKey);

fn priority(svc: &ServiceInfo) -> Priority {
    (svc.created.is_none(), svc.created.clone(), svc.key.clone())
}

/// `(uid, resourceVersion)`: the same pair means the same object contents, so a resync that
/// hands over an unchanged object skips even re-validating it.
type Identity = (String, String);

fn identity(meta: &ObjectMeta) -> Option<Identity> {
    Some((meta.uid.clone()?, meta.resource_version.clone()?))
}

/// One Service object as last given.
#[derive(Debug)]
struct ServiceInput {
    identity: Option<Identity>,
    /// `None`: nothing to program (ExternalName, headless, another proxy's, or invalid).
    info: Option<ServiceInfo>,
    /// Validation problems of the object.
    problems: Vec<Problem>,
}

/// One EndpointSlice object as last given.
#[derive(Debug)]
struct SliceInput {
    identity: Option<Identity>,
    info: Option<Arc<SliceInfo>>,
    problems: Vec<Problem>,
}

/// What one Service contributed to the current table and the claim indexes.
#[derive(Debug, Default)]
struct Compiled {
    /// Under which priority its claims are staked (`None`: it claims nothing).
    priority: Option<Priority>,
    /// Distinct frontend claims (address, port, protocol).
    claims: Vec<Claim>,
    health_check: Option<u16>,
    /// The health-check port it owns in the table.
    health_check_won: Option<u16>,
    /// Its entries in the table.
    keys: Vec<PortKey>,
    /// Its frontend / health-check conflict problems.
    problems: Vec<Problem>,
}

/// Ids: each new entry gets the lowest id not used by the previous table; ids freed by one
/// build become usable from the next one (a diff never removes and adds one id at once).
#[derive(Debug, Default)]
struct Ids {
    /// Unused ids below `next`.
    free: BTreeSet<u32>,
    /// Every id from here up is unused.
    next: u32,
    /// Freed by the build in progress.
    released: Vec<u32>,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            next: 1,
            ..Ids::default()
        }
    }

    fn of(table: &ServiceTable) -> Ids {
        let mut ids = Ids::new();
        for (id, _) in table.by_id.iter() {
            // In ascending order: everything skipped over is free.
            ids.free.extend(ids.next..id.0);
            ids.next = id.0 + 1;
        }
        ids
    }

    fn allocate(&mut self) -> ServicePortId {
        match self.free.pop_first() {
            Some(id) => ServicePortId(id),
            None => {
                let id = self.next;
                self.next += 1;
                ServicePortId(id)
            }
        }
    }

    fn release(&mut self, id: ServicePortId) {
        self.released.push(id.0);
    }

    fn commit(&mut self) {
        self.free.extend(self.released.drain(..));
    }
}

/// The incremental compiler (see the module documentation). Feed it objects as they change,
/// then [`Compiler::build`].
#[derive(Debug)]
pub struct Compiler {
    node: NodeInfo,
    services: HashMap<ServiceKey, ServiceInput>,
    /// By the slice's own namespace/name.
    slices: HashMap<ServiceKey, SliceInput>,
    /// Service → its slices sorted by name (the order backends are merged in); a `Vec`, as a
    /// Service has one slice per 100 endpoints.
    slices_of: HashMap<ServiceKey, Vec<Arc<SliceInfo>>>,
    compiled: HashMap<ServiceKey, Compiled>,
    /// Frontend claims: address/port/protocol → claimants, sorted, owner first (a sorted
    /// `Vec`: almost every claim has one claimant, and a `BTreeSet` node per claim would be
    /// a large allocation each).
    claims: HashMap<Claim, Vec<Priority>>,
    /// healthCheckNodePort → claimants, sorted, owner first.
    health_check_claims: HashMap<u16, Vec<Priority>>,
    /// Every current problem with how many sources report it (the table lists each once).
    problems: BTreeMap<Problem, usize>,
    problems_changed: bool,
    /// Services whose inputs changed since the last build.
    dirty: HashSet<ServiceKey>,
    ids: Ids,
    /// The last table built.
    table: ServiceTable,
}

impl Compiler {
    /// A compiler with nothing in it (its first build gives an empty table and an empty diff).
    pub fn new(node: NodeInfo) -> Compiler {
        Compiler {
            table: ServiceTable::empty(node.clone()),
            node,
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            compiled: HashMap::new(),
            claims: HashMap::new(),
            health_check_claims: HashMap::new(),
            problems: BTreeMap::new(),
            problems_changed: false,
            dirty: HashSet::new(),
            ids: Ids::new(),
        }
    }

    /// A compiler whose next build is relative to `previous` (ids kept, unchanged entries
    /// shared) although it has seen none of the objects behind it: every entry of `previous`
    /// is dropped unless the objects given before the build produce it again.
    pub(crate) fn starting_from(node: NodeInfo, previous: Option<&ServiceTable>) -> Compiler {
        let mut c = Compiler::new(node);
        let Some(previous) = previous else {
            return c;
        };
        c.table = previous.clone();
        c.table.node = c.node.clone();
        // Recomputed from the Services given; rebuilt at the end of the build.
        c.table.health_checks = Arc::default();
        c.problems_changed = true;
        c.ids = Ids::of(previous);
        for e in previous.ports() {
            let key = &e.key.service;
            c.compiled
                .entry(key.clone())
                .or_default()
                .keys
                .push(e.key.clone());
            c.dirty.insert(key.clone());
        }
        c
    }

    /// The last table built.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Changes the node (its addresses carry NodePorts, its name and zone pick local and close
    /// endpoints): everything is recompiled on the next build.
    pub fn set_node(&mut self, node: NodeInfo) {
        if node == self.node {
            return;
        }
        self.node = node;
        self.table.node = self.node.clone();
        self.dirty.extend(self.services.keys().cloned());
        self.dirty.extend(self.compiled.keys().cloned());
    }

    /// A Service was added or changed.
    pub fn upsert_service(&mut self, svc: &Service) {
        let key = key_of(&svc.metadata);
        let identity = identity(&svc.metadata);
        if identity.is_some()
            && self
                .services
                .get(&key)
                .is_some_and(|old| old.identity == identity)
        {
            return;
        }
        let mut problems = Vec::new();
        let info = ServiceInfo::from_service(svc, &mut problems);
        self.set_service(key, identity, info, problems);
    }

    /// A Service was deleted.
    pub fn remove_service(&mut self, namespace: &str, name: &str) {
        let key = ServiceKey::new(namespace, name);
        if let Some(old) = self.services.remove(&key) {
            self.forget_problems(&old.problems);
            self.dirty.insert(key);
        }
    }

    /// Makes the Services exactly `services` (a relist): unchanged ones cost a lookup.
    pub fn replace_services<'a>(&mut self, services: impl IntoIterator<Item = &'a Service>) {
        let mut seen = HashSet::new();
        for s in services {
            seen.insert(key_of(&s.metadata));
            self.upsert_service(s);
        }
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.remove_service(&k.namespace, &k.name);
        }
    }

    /// An EndpointSlice was added or changed.
    pub fn upsert_slice(&mut self, slice: &EndpointSlice) {
        let key = key_of(&slice.metadata);
        let identity = identity(&slice.metadata);
        if identity.is_some()
            && self
                .slices
                .get(&key)
                .is_some_and(|old| old.identity == identity)
        {
            return;
        }
        let mut problems = Vec::new();
        let info = SliceInfo::from_slice(slice, &mut problems);
        self.set_slice(key, identity, info, problems);
    }

    /// An EndpointSlice was deleted.
    pub fn remove_slice(&mut self, namespace: &str, name: &str) {
        let key = ServiceKey::new(namespace, name);
        if let Some(old) = self.slices.remove(&key) {
            self.forget_problems(&old.problems);
            self.unlink_slice(&key, old.info.as_deref());
        }
    }

    /// Makes the EndpointSlices exactly `slices` (a relist).
    pub fn replace_slices<'a>(&mut self, slices: impl IntoIterator<Item = &'a EndpointSlice>) {
        let mut seen = HashSet::new();
        for s in slices {
            seen.insert(key_of(&s.metadata));
            self.upsert_slice(s);
        }
        let gone: Vec<ServiceKey> = self
            .slices
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            self.remove_slice(&k.namespace, &k.name);
        }
    }

    /// A Service already cut down (keyed by its `key`).
    pub(crate) fn set_service_info(&mut self, info: ServiceInfo) {
        self.set_service(info.key.clone(), None, Some(info), Vec::new());
    }

    /// A slice already cut down (keyed by its Service's namespace and its own name).
    pub(crate) fn set_slice_info(&mut self, info: SliceInfo) {
        let key = ServiceKey::new(info.service.namespace.clone(), info.name.clone());
        self.set_slice(key, None, Some(info), Vec::new());
    }

    /// Problems from elsewhere, listed in the table for as long as this compiler lives.
    pub(crate) fn add_problems(&mut self, problems: Vec<Problem>) {
        self.note_problems(&problems);
    }

    fn set_service(
        &mut self,
        key: ServiceKey,
        identity: Option<Identity>,
        info: Option<ServiceInfo>,
        problems: Vec<Problem>,
    ) {
        if let Some(old) = self.services.get_mut(&key)
            && old.info == info
            && old.problems == problems
        {
            old.identity = identity;
            return;
        }
        self.note_problems(&problems);
        let new = ServiceInput {
            identity,
            info,
            problems,
        };
        if let Some(old) = self.services.insert(key.clone(), new) {
            self.forget_problems(&old.problems);
        }
        self.dirty.insert(key);
    }

    fn set_slice(
        &mut self,
        key: ServiceKey,
        identity: Option<Identity>,
        info: Option<SliceInfo>,
        problems: Vec<Problem>,
    ) {
        if let Some(old) = self.slices.get_mut(&key)
            && old.info.as_deref() == info.as_ref()
            && old.problems == problems
        {
            old.identity = identity;
            return;
        }
        self.note_problems(&problems);
        let info = info.map(Arc::new);
        if let Some(info) = &info {
            let list = self.slices_of.entry(info.service.clone()).or_default();
            match list.binary_search_by(|s| s.name.cmp(&info.name)) {
                Ok(i) => list[i] = Arc::clone(info),
                Err(i) => list.insert(i, Arc::clone(info)),
            }
            self.dirty.insert(info.service.clone());
        }
        let new = SliceInput {
            identity,
            info: info.clone(),
            problems,
        };
        if let Some(old) = self.slices.insert(key.clone(), new) {
            self.forget_problems(&old.problems);
            // Moved to another Service (its label changed): take it off the old one's list.
            if let Some(old_info) = old.info.as_deref()
                && info.as_ref().is_none_or(|i| i.service != old_info.service)
            {
                self.unlink_slice(&key, Some(old_info));
            }
        }
    }

    fn unlink_slice(&mut self, key: &ServiceKey, info: Option<&SliceInfo>) {
        let Some(info) = info else { return };
        if let Some(list) = self.slices_of.get_mut(&info.service) {
            list.retain(|s| s.name != key.name);
            if list.is_empty() {
                self.slices_of.remove(&info.service);
            }
        }
        self.dirty.insert(info.service.clone());
    }

    fn note_problems(&mut self, problems: &[Problem]) {
        for p in problems {
            *self.problems.entry(p.clone()).or_default() += 1;
            self.problems_changed = true;
        }
    }

    fn forget_problems(&mut self, problems: &[Problem]) {
        for p in problems {
            if let Some(n) = self.problems.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.problems.remove(p);
                }
            }
            self.problems_changed = true;
        }
    }

    /// Recompiles what changed since the last build; returns the new table and what changed
    /// from the previous one (`removed`, `added` and `changed` in key order, as
    /// [`TableDiff::between`] gives them).
    pub fn build(&mut self) -> (ServiceTable, TableDiff) {
        let changed = std::mem::take(&mut self.dirty);

        // 1. Claims of the Services whose inputs changed; whoever's ownership of a claim
        //    changes is recompiled too.
        let mut affected: Vec<ServiceKey> = Vec::new();
        for key in &changed {
            let info = self.services.get(key).and_then(|s| s.info.as_ref());
            let new_priority = info.map(priority);
            let mut new_claims: Vec<Claim> = info
                .map(|svc| offers(&self.node, svc).iter().map(|o| o.claim()).collect())
                .unwrap_or_default();
            new_claims.sort();
            new_claims.dedup();
            let new_hc = info.and_then(|svc| svc.health_check_node_port);
            let entry = self.compiled.entry(key.clone()).or_default();
            if entry.priority == new_priority
                && entry.claims == new_claims
                && entry.health_check == new_hc
            {
                continue;
            }
            let old_priority = std::mem::replace(&mut entry.priority, new_priority.clone());
            let old_claims = std::mem::replace(&mut entry.claims, new_claims.clone());
            let old_hc = std::mem::replace(&mut entry.health_check, new_hc);
            if let Some(p) = &old_priority {
                for c in &old_claims {
                    withdraw(&mut self.claims, c, p, &mut affected);
                }
                if let Some(hc) = old_hc {
                    withdraw(&mut self.health_check_claims, &hc, p, &mut affected);
                }
            }
            if let Some(p) = &new_priority {
                for c in new_claims {
                    stake(&mut self.claims, c, p, &mut affected);
                }
                if let Some(hc) = new_hc {
                    stake(&mut self.health_check_claims, hc, p, &mut affected);
                }
            }
        }

        let mut recompile = changed;
        recompile.extend(affected);

        // 2. Recompile, and patch the table entry by entry.
        let mut diff = TableDiff::default();
        let mut health_checks: BTreeMap<u16, Option<HealthCheck>> = BTreeMap::new();
        for key in &recompile {
            if let Some(hc) = self
                .compiled
                .get_mut(key)
                .and_then(|c| c.health_check_won.take())
            {
                health_checks.insert(hc, None);
            }
        }
        let mut added: Vec<ServicePortEntry> = Vec::new();
        for key in &recompile {
            self.recompile(key, &mut diff, &mut health_checks, &mut added);
        }
        added.sort_by(|a, b| a.key.cmp(&b.key));
        for mut entry in added {
            entry.id = self.ids.allocate();
            let entry = Arc::new(entry);
            self.insert_entry(&entry);
            diff.added.push(entry);
        }
        self.ids.commit();

        for (port, hc) in health_checks {
            if self.table.health_checks.get(&port) != hc.as_ref() {
                let map = Arc::make_mut(&mut self.table.health_checks);
                match hc {
                    Some(hc) => map.insert(port, hc),
                    None => map.remove(&port),
                };
                diff.health_checks_changed = true;
            }
        }
        if std::mem::take(&mut self.problems_changed) {
            let problems: Vec<Problem> = self.problems.keys().cloned().collect();
            if *self.table.problems != problems {
                self.table.problems = Arc::new(problems);
            }
        }
        diff.removed.sort_by(|a, b| a.key.cmp(&b.key));
        diff.changed.sort_by(|a, b| a.new.key.cmp(&b.new.key));
        (self.table.clone(), diff)
    }

    /// Compiles one Service and replaces its entries, problems and health check.
    fn recompile(
        &mut self,
        key: &ServiceKey,
        diff: &mut TableDiff,
        health_checks: &mut BTreeMap<u16, Option<HealthCheck>>,
        added: &mut Vec<ServicePortEntry>,
    ) {
        let info = self.services.get(key).and_then(|s| s.info.as_ref());
        let mut result = CompiledService {
            entries: Vec::new(),
            problems: Vec::new(),
            local_ready: 0,
        };
        let mut won = None;
        if let Some(svc) = info {
            let slices: Vec<&SliceInfo> = self
                .slices_of
                .get(key)
                .into_iter()
                .flat_map(|list| list.iter().map(AsRef::as_ref))
                .collect();
            let claims = &self.claims;
            result = compile_service(&self.node, svc, &slices, &offers(&self.node, svc), |c| {
                claims.get(c).and_then(|s| s.first()).map(|p| &p.2)
            });
            if let Some(hc) = svc.health_check_node_port {
                let owner = self
                    .health_check_claims
                    .get(&hc)
                    .and_then(|s| s.first())
                    .map(|p| &p.2);
                match owner {
                    Some(owner) if owner != key => result.problems.push(Problem {
                        object: format!("Service {key}"),
                        field: "spec.healthCheckNodePort".into(),
                        message: format!("{hc} is already used by Service {owner}: dropped"),
                    }),
                    _ => {
                        won = Some(hc);
                        health_checks.insert(
                            hc,
                            Some(HealthCheck {
                                service: key.clone(),
                                local_endpoints: result.local_ready,
                            }),
                        );
                    }
                }
            }
        }
        let exists = info.is_some();

        let mut compiled = self.compiled.remove(key).unwrap_or_default();
        compiled.health_check_won = won;
        if compiled.problems != result.problems {
            self.forget_problems(&compiled.problems);
            self.note_problems(&result.problems);
            compiled.problems = result.problems;
        }
        let old_keys = std::mem::take(&mut compiled.keys);
        let mut new_keys = Vec::with_capacity(result.entries.len());
        for mut entry in result.entries {
            new_keys.push(entry.key.clone());
            let Some(old) = self.table.ports.get(&entry.key).cloned() else {
                added.push(entry);
                continue;
            };
            entry.id = old.id;
            if *old != entry {
                let entry = Arc::new(entry);
                self.insert_entry(&entry);
                self.table.backends -= entry_backends(&old);
                diff.changed.push(change(&old, &entry));
            }
        }
        for k in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            if let Some(old) = self.table.ports.remove(k) {
                self.table.by_id.remove(&old.id);
                self.table.backends -= entry_backends(&old);
                self.ids.release(old.id);
                diff.removed.push(old);
            }
        }
        match (old_keys.is_empty(), new_keys.is_empty()) {
            (true, false) => self.table.services += 1,
            (false, true) => self.table.services -= 1,
            _ => {}
        }
        compiled.keys = new_keys;
        // A Service gone for good leaves nothing behind (its claims went in step 1).
        if exists || compiled.priority.is_some() || !compiled.keys.is_empty() {
            self.compiled.insert(key.clone(), compiled);
        }
    }

    /// Puts an entry (new, or replacing the one with its key and id) into the table.
    fn insert_entry(&mut self, entry: &Arc<ServicePortEntry>) {
        self.table.backends += entry_backends(entry);
        self.table
            .ports
            .insert(Arc::new(entry.key.clone()), Arc::clone(entry));
        self.table.by_id.insert(entry.id, Arc::clone(entry));
    }
}

/// `who` no longer claims `claim`; if it owned it, every remaining claimant is affected.
fn withdraw<C: Hash + Eq>(
    claims: &mut HashMap<C, Vec<Priority>>,
    claim: &C,
    who: &Priority,
    affected: &mut Vec<ServiceKey>,
) {
    let Some(set) = claims.get_mut(claim) else {
        return;
    };
    let owned = set.first() == Some(who);
    if let Ok(i) = set.binary_search(who) {
        set.remove(i);
    }
    if set.is_empty() {
        claims.remove(claim);
    } else if owned {
        affected.extend(set.iter().map(|p| p.2.clone()));
    }
}

/// `who` claims `claim`; if that makes it the owner, every claimant is affected.
fn stake<C: Hash + Eq>(
    claims: &mut HashMap<C, Vec<Priority>>,
    claim: C,
    who: &Priority,
    affected: &mut Vec<ServiceKey>,
) {
    let set = claims.entry(claim).or_default();
    if let Err(i) = set.binary_search(who) {
        set.insert(i, who.clone());
    }
    if set.first() == Some(who) && set.len() > 1 {
        affected.extend(set.iter().map(|p| p.2.clone()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // fixed test inputs
mod tests {
    use super::*;
    use crate::model::ServiceKey;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A small deterministic generator (no test dependency needed).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn node() -> NodeInfo {
        NodeInfo {
            name: "node-a".into(),
            zone: Some("z1".into()),
            addresses: vec!["192.168.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        }
    }

    /// A Service drawn from small pools, so that addresses, node ports and health-check ports
    /// collide often, with a creation time from a small pool (ties broken by name).
    fn service(r: &mut Lcg, name: &str, version: u64) -> Service {
        let ty = *r.pick(&["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]);
        let mut ports = vec![json!({"name": "http", "port": *r.pick(&[80, 81]),
                                    "nodePort": *r.pick(&[30000, 30001, 30002])})];
        if r.chance(40) {
            ports.push(json!({"name": "dns", "port": 53, "protocol": "UDP",
                              "nodePort": *r.pick(&[30000, 30003])}));
        }
        let mut cluster_ips = vec![format!("10.96.0.{}", r.below(6) + 1)];
        if r.chance(30) {
            cluster_ips.push(format!("fd00:96::{}", r.below(3) + 1));
        }
        if r.chance(10) {
            cluster_ips = vec!["None".into()];
        }
        let mut spec = json!({
            "type": ty,
            "clusterIP": cluster_ips[0],
            "clusterIPs": cluster_ips,
            "ports": ports,
        });
        if r.chance(40) {
            spec["externalIPs"] = json!([*r.pick(&["1.1.1.1", "1.1.1.2", "fd00:1::1"])]);
        }
        if r.chance(40) {
            spec["externalTrafficPolicy"] = json!("Local");
            spec["healthCheckNodePort"] = json!(*r.pick(&[32000, 32001]));
        }
        if r.chance(20) {
            spec["internalTrafficPolicy"] = json!("Local");
        }
        if r.chance(20) {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        if r.chance(20) {
            spec["trafficDistribution"] = json!("PreferClose");
        }
        let mut metadata = json!({"name": name, "namespace": "ns",
                                  "uid": format!("uid-{name}"),
                                  "resourceVersion": version.to_string()});
        if let Some(t) = r.pick(&[
            None,
            Some("2024-01-01T00:00:00Z"),
            Some("2024-01-02T00:00:00Z"),
        ]) {
            metadata["creationTimestamp"] = json!(t);
        }
        let lb = json!({"ingress": [{"ip": *r.pick(&["2.2.2.2", "2.2.2.3"])}]});
        serde_json::from_value(json!({
            "metadata": metadata, "spec": spec,
            "status": {"loadBalancer": lb},
        }))
        .unwrap()
    }

    fn slice(r: &mut Lcg, name: &str, services: &[String], version: u64) -> EndpointSlice {
        let family = r.chance(80);
        let endpoints: Vec<_> = (0..r.below(4))
            .map(|_| {
                let ip = if family {
                    format!("10.244.0.{}", r.below(6) + 1)
                } else {
                    format!("fd00:244::{}", r.below(6) + 1)
                };
                json!({"addresses": [ip],
                       "conditions": {"ready": r.chance(70), "serving": r.chance(80),
                                      "terminating": r.chance(30)},
                       "nodeName": *r.pick(&["node-a", "node-b"]),
                       "zone": *r.pick(&["z1", "z2"])})
            })
            .collect();
        let mut ports = vec![json!({"name": "http", "port": 8080, "protocol": "TCP"})];
        if r.chance(50) {
            ports.push(json!({"name": "dns", "port": 5353, "protocol": "UDP"}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns",
                         "uid": format!("uid-{name}"), "resourceVersion": version.to_string(),
                         "labels": {"kubernetes.io/service-name": r.pick(services)}},
            "addressType": if family { "IPv4" } else { "IPv6" },
            "ports": ports,
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    fn reference(
        services: &BTreeMap<String, Service>,
        slices: &BTreeMap<String, EndpointSlice>,
        previous: &ServiceTable,
    ) -> ServiceTable {
        let mut problems = Vec::new();
        let services = services
            .values()
            .filter_map(|s| ServiceInfo::from_service(s, &mut problems))
            .collect();
        let slices: Vec<SliceInfo> = slices
            .values()
            .filter_map(|s| SliceInfo::from_slice(s, &mut problems))
            .collect();
        ServiceTable::reference_build_from(&node(), services, &slices, problems, Some(previous))
    }

    type Keys = Vec<PortKey>;

    fn keys(diff: &TableDiff) -> (Keys, Keys, Keys) {
        (
            diff.removed.iter().map(|e| e.key.clone()).collect(),
            diff.added.iter().map(|e| e.key.clone()).collect(),
            diff.changed.iter().map(|c| c.new.key.clone()).collect(),
        )
    }

    /// Random changes, a few objects at a time, with many conflicts: after every build the
    /// incremental table equals the whole-table reference compile from the same objects and
    /// the same previous table (dump: entries, ids, frontends, backends, health checks,
    /// problems), its counters are right, and its diff equals `TableDiff::between`.
    #[test]
    fn incremental_builds_equal_the_whole_compile() {
        let mut r = Lcg(7);
        let names: Vec<String> = (0..12).map(|i| format!("s{i:02}")).collect();
        let slice_names: Vec<String> = (0..16).map(|i| format!("e{i:02}")).collect();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut compiler = Compiler::new(node());
        let mut version = 0;
        let (mut frontend_conflicts, mut hc_conflicts, mut health_checks) = (0, 0, 0);
        for step in 0..1500 {
            if step % 100 == 99 {
                // A relist with nothing changed compiles nothing.
                compiler.replace_services(services.values());
                compiler.replace_slices(slices.values());
                assert!(compiler.dirty.is_empty());
            }
            for _ in 0..=r.below(3) {
                version += 1;
                if r.chance(50) {
                    let name = r.pick(&names).clone();
                    if r.chance(20) {
                        services.remove(&name);
                        compiler.remove_service("ns", &name);
                    } else {
                        let svc = service(&mut r, &name, version);
                        compiler.upsert_service(&svc);
                        services.insert(name, svc);
                    }
                } else {
                    let name = r.pick(&slice_names).clone();
                    if r.chance(20) {
                        slices.remove(&name);
                        compiler.remove_slice("ns", &name);
                    } else {
                        let s = slice(&mut r, &name, &names, version);
                        compiler.upsert_slice(&s);
                        slices.insert(name, s);
                    }
                }
            }
            let previous = compiler.table().clone();
            let (table, diff) = compiler.build();
            let expected = reference(&services, &slices, &previous);
            assert_eq!(table.dump(), expected.dump(), "step {step}");
            let mut owners: Vec<&ServiceKey> = expected.ports().map(|e| &e.key.service).collect();
            owners.dedup();
            assert_eq!(table.service_count(), owners.len(), "step {step}");
            let backends: usize = expected.ports().map(|e| entry_backends(e)).sum();
            assert_eq!(table.backend_count(), backends, "step {step}");
            for e in table.ports() {
                assert_eq!(table.get_by_id(e.id).map(|x| &x.key), Some(&e.key));
            }
            assert_eq!(table.by_id.iter().len(), table.ports().len());
            let problems = table.problems();
            frontend_conflicts += problems.iter().any(|p| {
                p.message.contains("already used") && p.field != "spec.healthCheckNodePort"
            }) as usize;
            hc_conflicts += problems
                .iter()
                .any(|p| p.field == "spec.healthCheckNodePort")
                as usize;
            health_checks += !table.health_checks().is_empty() as usize;
            let between = TableDiff::between(&previous, &table);
            assert_eq!(keys(&diff), keys(&between), "step {step}");
            assert_eq!(diff.health_checks_changed, between.health_checks_changed);
            // Entries the diff does not name are shared with the previous table.
            for e in table.ports() {
                if let Some(old) = previous.get(&e.key)
                    && !diff.changed.iter().any(|c| c.new.key == e.key)
                {
                    assert!(Arc::ptr_eq(old, e), "step {step}: {} copied", e.key);
                }
            }
        }
        // The sequence exercised what it is meant to.
        assert!(frontend_conflicts > 100 && hc_conflicts > 100 && health_checks > 100);
    }

    /// One endpoint change among many Services recompiles one Service: one changed entry,
    /// and everything else shared.
    #[test]
    fn one_slice_change_recompiles_one_service() {
        let mut compiler = Compiler::new(node());
        let mut r = Lcg(1);
        let names: Vec<String> = (0..300).map(|i| format!("svc-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1),
                         "ports": [{"name": "http", "port": 80}]},
            }))
            .unwrap();
            compiler.upsert_service(&svc);
            compiler.upsert_slice(&slice(
                &mut r,
                &format!("{name}-1"),
                std::slice::from_ref(name),
                1,
            ));
        }
        let (before, _) = compiler.build();
        let mut s = slice(&mut r, "svc-7-1", &["svc-7".to_owned()], 2);
        s.endpoints = vec![
            serde_json::from_value(
                json!({"addresses": ["10.1.2.3"], "conditions": {"ready": true}}),
            )
            .unwrap(),
        ];
        compiler.upsert_slice(&s);
        assert_eq!(compiler.dirty.len(), 1);
        let (after, diff) = compiler.build();
        assert_eq!(diff.changed.len(), 1);
        assert!(diff.added.is_empty() && diff.removed.is_empty());
        assert_eq!(diff.changed[0].new.key.service.name, "svc-7");
        let shared = after
            .ports()
            .filter(|e| before.get(&e.key).is_some_and(|o| Arc::ptr_eq(o, e)))
            .count();
        assert_eq!(shared, 299);
        // Nothing changed: an empty diff, the same table.
        let (again, diff) = compiler.build();
        assert!(diff.is_empty());
        assert_eq!(again.dump(), after.dump());
    }
}
