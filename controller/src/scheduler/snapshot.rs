//! The scheduler's in-memory picture of the cluster: node facts plus, per node, what bound (and assumed) pods already take. Kept up to date incrementally from watch events, so a decision never walks every pod.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use super::requests::{HostPort, PodDemand, Resources, allocatable};

/// A node's `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    /// Unknown, or no Ready condition at all (a node no kubelet has reported for).
    Unknown,
}

/// What filters and scores read about one node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: Readiness,
    pub allocatable: Resources,
    pub allowed_pods: i128,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Option<Self> {
        let name = node.metadata.name.clone()?;
        let spec = node.spec.as_ref();
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map_or(Readiness::Unknown, |c| match c.status.as_str() {
                "True" => Readiness::True,
                "False" => Readiness::False,
                _ => Readiness::Unknown,
            });
        let list = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let (allocatable, allowed_pods) = allocatable(list);
        Some(Self {
            name,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
            allocatable,
            allowed_pods,
        })
    }
}

/// What the pods bound to one node take.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub requested: Resources,
    pub scoring: Resources,
    pub pods: i128,
    pub host_ports: Vec<HostPort>,
    /// Pods per controlling owner uid.
    pub owners: HashMap<String, u32>,
}

impl Usage {
    fn add(&mut self, d: &PodDemand) {
        self.requested.add(&d.requests);
        self.scoring.add(&d.scoring);
        self.pods += 1;
        self.host_ports.extend(d.host_ports.iter().cloned());
        if let Some(o) = &d.owner {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, d: &PodDemand) {
        self.requested.sub(&d.requests);
        self.scoring.sub(&d.scoring);
        self.pods -= 1;
        for hp in &d.host_ports {
            if let Some(i) = self.host_ports.iter().position(|h| h == hp) {
                self.host_ports.swap_remove(i);
            }
        }
        if let Some(o) = &d.owner
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
    }
}

/// Nodes and the pods placed on them, keyed by pod uid.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeFacts>,
    usage: HashMap<String, Usage>,
    pods: HashMap<String, (String, PodDemand)>,
    /// Pods this scheduler placed whose binding the watch has not shown yet.
    assumed: HashSet<String>,
    /// Uids seen since a watch restarted (to drop the ones that vanished meanwhile).
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
}

/// Whether a pod occupies its node: bound and not finished.
fn placement(pod: &Pod) -> Option<(&str, &str)> {
    let uid = pod.metadata.uid.as_deref()?;
    let node = pod
        .spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    Some((uid, node))
}

impl Snapshot {
    pub fn usage(&self, node: &str) -> Option<&Usage> {
        self.usage.get(node)
    }

    /// The node a pod uid is placed on (bound or assumed).
    pub fn placed_on(&self, uid: &str) -> Option<&str> {
        self.pods.get(uid).map(|(n, _)| n.as_str())
    }

    fn place(&mut self, uid: &str, node: &str, demand: PodDemand) {
        if let Some((old, _)) = self.pods.get(uid)
            && old == node
        {
            return;
        }
        self.unplace(uid);
        self.usage.entry(node.to_owned()).or_default().add(&demand);
        self.pods.insert(uid.to_owned(), (node.to_owned(), demand));
    }

    fn unplace(&mut self, uid: &str) {
        if let Some((node, demand)) = self.pods.remove(uid)
            && let Some(u) = self.usage.get_mut(&node)
        {
            u.remove(&demand);
        }
    }

    /// Accounts a pod this scheduler decided to bind before the watch shows it.
    pub fn assume(&mut self, uid: &str, node: &str, demand: PodDemand) {
        self.place(uid, node, demand);
        self.assumed.insert(uid.to_owned());
    }

    /// Undoes [`Self::assume`] after a failed binding.
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid) {
            self.unplace(uid);
        }
    }

    /// A pod as the watch reports it (added, modified or listed).
    pub fn apply_pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        if let Some(seen) = self.relist_pods.as_mut() {
            seen.insert(uid.to_owned());
        }
        match placement(pod) {
            Some((uid, node)) => {
                self.assumed.remove(uid);
                self.place(uid, node, PodDemand::of(pod));
            }
            // Still pending in the watch while our binding is in flight: keep the assumption.
            None if self.assumed.contains(uid) && !finished(pod) => {}
            None => {
                self.assumed.remove(uid);
                self.unplace(uid);
            }
        }
    }

    pub fn delete_pod(&mut self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.assumed.remove(uid);
            self.unplace(uid);
        }
    }

    pub fn pods_relist_started(&mut self) {
        self.relist_pods = Some(HashSet::new());
    }

    pub fn pods_relist_done(&mut self) {
        let Some(seen) = self.relist_pods.take() else {
            return;
        };
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|uid| !seen.contains(*uid) && !self.assumed.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.unplace(&uid);
        }
    }

    pub fn apply_node(&mut self, node: &Node) {
        if let Some(facts) = NodeFacts::of(node) {
            if let Some(seen) = self.relist_nodes.as_mut() {
                seen.insert(facts.name.clone());
            }
            self.nodes.insert(facts.name.clone(), facts);
        }
    }

    pub fn delete_node(&mut self, node: &Node) {
        if let Some(name) = node.metadata.name.as_deref() {
            self.nodes.remove(name);
        }
    }

    pub fn nodes_relist_started(&mut self) {
        self.relist_nodes = Some(HashSet::new());
    }

    pub fn nodes_relist_done(&mut self) {
        if let Some(seen) = self.relist_nodes.take() {
            self.nodes.retain(|name, _| seen.contains(name));
        }
    }
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, node: Option<&str>, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"nodeName": node, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn usage_follows_binds_assumptions_and_deletes() {
        let mut s = Snapshot::default();
        s.apply_pod(&pod("a", Some("n1"), "100m"));
        s.apply_pod(&pod("a", Some("n1"), "100m"));
        assert_eq!(s.usage("n1").map(|u| u.requested.milli_cpu), Some(100));
        s.assume("b", "n1", PodDemand::of(&pod("b", None, "200m")));
        // The watch still shows b pending: the assumption stays.
        s.apply_pod(&pod("b", None, "200m"));
        assert_eq!(s.usage("n1").map(|u| u.requested.milli_cpu), Some(300));
        s.apply_pod(&pod("b", Some("n1"), "200m"));
        s.delete_pod(&pod("a", Some("n1"), "100m"));
        assert_eq!(
            s.usage("n1").map(|u| (u.requested.milli_cpu, u.pods)),
            Some((200, 1))
        );
        s.assume("c", "n2", PodDemand::of(&pod("c", None, "1")));
        s.forget("c");
        assert_eq!(s.usage("n2").map(|u| u.pods), Some(0));
        // A relist that no longer has b drops it.
        s.pods_relist_started();
        s.pods_relist_done();
        assert_eq!(s.usage("n1").map(|u| u.pods), Some(0));
    }
}
