//! One scheduling decision over a snapshot: upstream's filter plugins (first failure per node), then scores, then the `0/N nodes are available: ...` message when nothing fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

use super::node_match::{self, NodeFacts as MatchFacts};
use super::requests::{PodDemand, Resources};
use super::snapshot::{NodeFacts, Readiness, Snapshot, Usage};

/// Why one node was filtered out: upstream's reason strings, and whether preemption could help
/// (`Unschedulable`) or not (`UnschedulableAndUnresolvable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reasons: Vec<String>,
    pub resolvable: bool,
}

impl Rejection {
    fn unresolvable(reason: impl Into<String>) -> Self {
        Self {
            reasons: vec![reason.into()],
            resolvable: false,
        }
    }
}

/// No node fits: upstream's `FitError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub rejections: Vec<Rejection>,
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        let mut preemption: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &self.rejections {
            for reason in &r.reasons {
                *reasons.entry(reason).or_default() += 1;
            }
            // This scheduler never preempts; the tail says what upstream's would find with
            // every pod at the same priority.
            let why = if r.resolvable {
                "No preemption victims found for incoming pod"
            } else {
                "Preemption is not helpful for scheduling"
            };
            *preemption.entry(why).or_default() += 1;
        }
        write!(
            f,
            "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {}.",
            histogram(&reasons),
            histogram(&preemption),
            n = self.nodes
        )
    }
}

/// `"<count> <reason>"` sorted as strings, as upstream's `sortReasonsHistogram`.
fn histogram(counts: &BTreeMap<&str, usize>) -> String {
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

/// A pod's constraints, read once per decision.
#[derive(Debug)]
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub demand: &'a PodDemand,
    tolerations: &'a [Toleration],
}

impl<'a> PodView<'a> {
    pub fn new(pod: &'a Pod, demand: &'a PodDemand) -> Self {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        Self {
            pod,
            demand,
            tolerations,
        }
    }
}

/// Picks the best node for `pod`, or says why none fits.
pub fn decide(snapshot: &Snapshot, pod: &PodView<'_>) -> Result<String, FitError> {
    let empty = Usage::default();
    let mut feasible: Vec<(&NodeFacts, &Usage)> = Vec::new();
    let mut rejections = Vec::new();
    for node in snapshot.nodes.values() {
        let usage = snapshot.usage(&node.name).unwrap_or(&empty);
        match filter(node, usage, pod) {
            Ok(()) => feasible.push((node, usage)),
            Err(r) => rejections.push(r),
        }
    }
    if feasible.is_empty() {
        return Err(FitError {
            nodes: snapshot.nodes.len(),
            rejections,
        });
    }
    let spread_max = pod
        .demand
        .owner
        .as_ref()
        .map(|o| {
            feasible
                .iter()
                .map(|(_, u)| u.owners.get(o).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let affinity: Vec<i64> = feasible
        .iter()
        .map(|(n, _)| preferred_affinity(n, pod))
        .collect();
    let affinity_max = affinity.iter().copied().max().unwrap_or(0);
    let mut best: Option<(i64, &str)> = None;
    for ((node, usage), aff) in feasible.iter().zip(affinity) {
        let spread = match &pod.demand.owner {
            Some(o) if spread_max > 0 => {
                let count = usage.owners.get(o).copied().unwrap_or(0);
                100 * i64::from(spread_max - count) / i64::from(spread_max)
            }
            _ => 100,
        };
        let aff = if affinity_max > 0 {
            100 * aff / affinity_max
        } else {
            0
        };
        // Upstream's default weights: NodeResourcesFit 1, PodTopologySpread 2, NodeAffinity 2.
        let score = least_allocated(node, usage, pod.demand) + 2 * spread + 2 * aff;
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, &node.name));
        }
    }
    best.map(|(_, n)| n.to_owned()).ok_or(FitError {
        nodes: snapshot.nodes.len(),
        rejections: Vec::new(),
    })
}

/// Upstream's filter plugins in their order; the first failure decides a node's reason.
fn filter(node: &NodeFacts, usage: &Usage, pod: &PodView<'_>) -> Result<(), Rejection> {
    let spec = pod.pod.spec.as_ref();
    // NodeUnschedulable
    if node.unschedulable {
        let taint = implicit_taint("node.kubernetes.io/unschedulable", "NoSchedule");
        if !pod
            .tolerations
            .iter()
            .any(|t| node_match::tolerates(t, &taint))
        {
            return Err(Rejection::unresolvable("node(s) were unschedulable"));
        }
    }
    // TaintToleration, with the Ready condition read as the taint the node controller puts on
    // a node in that state (so a node no controller has tainted yet is treated the same).
    let mut taints = node.taints.clone();
    match node.ready {
        Readiness::True => {}
        Readiness::False => {
            taints.push(implicit_taint("node.kubernetes.io/not-ready", "NoSchedule"))
        }
        Readiness::Unknown => {
            taints.push(implicit_taint(
                "node.kubernetes.io/unreachable",
                "NoSchedule",
            ));
        }
    }
    if let Some(t) = node_match::untolerated(&taints, pod.tolerations, &["NoSchedule", "NoExecute"])
    {
        return Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )));
    }
    // NodeAffinity: nodeSelector and required terms.
    let facts = MatchFacts {
        name: &node.name,
        labels: &node.labels,
    };
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| node_match::selector_matches(sel, facts));
    let required_ok = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|r| node_match::terms_match(&r.node_selector_terms, facts));
    if !selector_ok || !required_ok {
        return Err(Rejection::unresolvable(
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    // NodePorts
    if pod
        .demand
        .host_ports
        .iter()
        .any(|want| usage.host_ports.iter().any(|used| used.conflicts(want)))
    {
        return Err(Rejection {
            reasons: vec!["node(s) didn't have free ports for the requested pod ports".into()],
            resolvable: true,
        });
    }
    // NodeResourcesFit: every shortfall is reported.
    let reasons = insufficient(node, usage, &pod.demand.requests);
    if !reasons.is_empty() {
        return Err(Rejection {
            reasons,
            resolvable: true,
        });
    }
    Ok(())
}

fn insufficient(node: &NodeFacts, usage: &Usage, want: &Resources) -> Vec<String> {
    let mut reasons = Vec::new();
    if usage.pods + 1 > node.allowed_pods {
        reasons.push("Too many pods".to_owned());
    }
    let alloc = &node.allocatable;
    let used = &usage.requested;
    if want.milli_cpu > 0 && used.milli_cpu + want.milli_cpu > alloc.milli_cpu {
        reasons.push("Insufficient cpu".to_owned());
    }
    if want.memory > 0 && used.memory + want.memory > alloc.memory {
        reasons.push("Insufficient memory".to_owned());
    }
    for (name, amount) in &want.other {
        let have = alloc.other.get(name).copied().unwrap_or(0);
        let taken = used.other.get(name).copied().unwrap_or(0);
        if *amount > 0 && taken + amount > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

fn implicit_taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_owned(),
        effect: effect.to_owned(),
        ..Taint::default()
    }
}

/// `LeastAllocated` over CPU and memory (equal weights), 0–100.
fn least_allocated(node: &NodeFacts, usage: &Usage, demand: &PodDemand) -> i64 {
    let part = |capacity: i128, requested: i128| -> i128 {
        if capacity <= 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * 100 / capacity
        }
    };
    let cpu = part(
        node.allocatable.milli_cpu,
        usage.scoring.milli_cpu + demand.scoring.milli_cpu,
    );
    let memory = part(
        node.allocatable.memory,
        usage.scoring.memory + demand.scoring.memory,
    );
    i64::try_from((cpu + memory) / 2).unwrap_or(0)
}

/// The summed weights of the preferred node-affinity terms the node matches.
fn preferred_affinity(node: &NodeFacts, pod: &PodView<'_>) -> i64 {
    let facts = MatchFacts {
        name: &node.name,
        labels: &node.labels,
    };
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| node_match::term_matches(&t.preference, facts))
        .map(|t| i64::from(t.weight))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    fn node(name: &str, cpu: &str, extra: Value) -> Node {
        let mut v = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn pod(spec: Value) -> Pod {
        let mut v = json!({"metadata": {"name": "p", "uid": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}});
        merge(&mut v, json!({ "spec": spec }));
        serde_json::from_value(v).unwrap()
    }

    fn snapshot(nodes: &[Node]) -> Snapshot {
        let mut s = Snapshot::default();
        for n in nodes {
            s.apply_node(n);
        }
        s
    }

    fn run(s: &Snapshot, p: &Pod) -> Result<String, String> {
        let d = PodDemand::of(p);
        decide(s, &PodView::new(p, &d)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_message_counts_reasons_per_node_like_upstream() {
        let s = snapshot(&[
            node("a", "100m", json!({})),
            node(
                "b",
                "4",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
            ),
            node(
                "c",
                "4",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
            ),
        ]);
        assert_eq!(
            run(&s, &pod(json!({}))),
            Err(
                "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
                 {k: v}. preemption: 0/3 nodes are available: 1 No preemption victims found for \
                 incoming pod, 2 Preemption is not helpful for scheduling."
                    .to_owned()
            )
        );
        let tolerating = pod(json!({"tolerations": [{"key": "k", "operator": "Exists"}]}));
        assert_eq!(run(&s, &tolerating), Ok("b".to_owned()));
        assert_eq!(
            run(&Snapshot::default(), &tolerating),
            Err("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn each_filter_names_its_reason() {
        let s = snapshot(&[
            node("unsched", "4", json!({"spec": {"unschedulable": true}})),
            node(
                "notready",
                "4",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            node(
                "small",
                "4",
                json!({"status": {"allocatable": {"memory": "1Mi", "pods": "0"}}}),
            ),
        ]);
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"memory": "1Gi"}}}]}),
        );
        assert_eq!(
            run(&s, &p),
            Err(
                "0/3 nodes are available: 1 Insufficient memory, 1 Too many pods, 1 node(s) had \
                 untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were \
                 unschedulable. preemption: 0/3 nodes are available: 1 No preemption victims \
                 found for incoming pod, 2 Preemption is not helpful for scheduling."
                    .to_owned()
            )
        );
    }

    #[test]
    fn selectors_affinity_and_ports() {
        let mut s = snapshot(&[
            node("a", "4", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            node("b", "4", json!({"metadata": {"labels": {"disk": "hdd"}}})),
        ]);
        assert_eq!(
            run(&s, &pod(json!({"nodeSelector": {"disk": "hdd"}}))),
            Ok("b".into())
        );
        let required = pod(json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]}}}}));
        assert_eq!(run(&s, &required), Ok("a".into()));
        let preferred = pod(json!({"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference":
                {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}}]}}}));
        assert_eq!(run(&s, &preferred), Ok("b".into()));
        let ported = pod(
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
        );
        let d = PodDemand::of(&ported);
        s.assume("x", "a", d.clone());
        s.assume("y", "b", d);
        assert!(run(&s, &ported).is_err_and(|m| m.contains("2 node(s) didn't have free ports")));
    }

    #[test]
    fn least_allocated_and_owner_spreading() {
        let mut s = snapshot(&[node("a", "4", json!({})), node("b", "4", json!({}))]);
        let busy =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}));
        s.assume("busy", "a", PodDemand::of(&busy));
        assert_eq!(run(&s, &pod(json!({}))), Ok("b".into()));

        let mut s = snapshot(&[node("a", "4", json!({})), node("b", "4", json!({}))]);
        let mut owned = pod(json!({}));
        owned.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs1", "controller": true
        })).unwrap()]);
        // Another owner's pod makes b busier; the replica still goes where its siblings are not.
        s.assume("other", "b", PodDemand::of(&pod(json!({}))));
        s.assume("sib", "a", PodDemand::of(&owned));
        assert_eq!(run(&s, &owned), Ok("b".into()));
    }
}
