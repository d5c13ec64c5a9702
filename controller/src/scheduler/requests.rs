//! What a pod asks of a node: resource requests (as upstream's `resourcehelper` sums them), host ports and its controlling owner.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::quantity::{parse_milli, parse_units};

/// Upstream's `DefaultMilliCPURequest`: what scoring assumes for a container without a request.
const DEFAULT_MILLI_CPU: i128 = 100;
/// Upstream's `DefaultMemoryRequest` (200 MiB), likewise.
const DEFAULT_MEMORY: i128 = 200 << 20;

/// Resource amounts: CPU in millicores, everything else in whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i128,
    pub memory: i128,
    /// `ephemeral-storage` and extended resources, by name.
    pub other: BTreeMap<String, i128>,
}

impl Resources {
    fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Self {
        let mut out = Self::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => out.milli_cpu = parse_milli(&q.0).unwrap_or(0),
                "memory" => out.memory = parse_units(&q.0).unwrap_or(0),
                // Pods are counted, not requested.
                "pods" => {}
                _ => {
                    out.other
                        .insert(name.clone(), parse_units(&q.0).unwrap_or(0));
                }
            }
        }
        out
    }

    pub fn add(&mut self, other: &Self) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        for (k, v) in &other.other {
            *self.other.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Self) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        for (k, v) in &other.other {
            *self.other.entry(k.clone()).or_default() -= v;
        }
    }

    fn max(&mut self, other: &Self) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        for (k, v) in &other.other {
            let e = self.other.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A node's `status.allocatable` (falling back to `capacity`, as upstream does for old nodes).
pub fn allocatable(status_allocatable: Option<&BTreeMap<String, Quantity>>) -> (Resources, i128) {
    let pods = status_allocatable
        .and_then(|a| a.get("pods"))
        .and_then(|q| parse_units(&q.0))
        .unwrap_or(0);
    (Resources::from_list(status_allocatable), pods)
}

/// One host port a pod binds on its node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Empty means every address (`0.0.0.0`).
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's `HostPortInfo` conflict rule: same port and protocol, and either address is a
    /// wildcard or they are equal.
    pub fn conflicts(&self, other: &Self) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip.is_empty() || other.ip.is_empty() || self.ip == other.ip)
    }
}

/// Everything the scheduler counts for one pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDemand {
    /// What filtering compares with allocatable.
    pub requests: Resources,
    /// What scoring uses: unset CPU/memory requests count as upstream's defaults.
    pub scoring: Resources,
    pub host_ports: Vec<HostPort>,
    /// The uid of the controlling owner (spreading counts pods per owner).
    pub owner: Option<String>,
}

impl PodDemand {
    pub fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let sum = |nonzero: bool| {
            let mut total = Resources::default();
            let mut sidecars = Resources::default();
            let mut init_peak = Resources::default();
            for c in &spec.containers {
                total.add(&container(c, nonzero));
            }
            // Restartable init containers (sidecars) run alongside the others; each plain init
            // container runs alone after the sidecars before it.
            for c in spec.init_containers.iter().flatten() {
                let r = container(c, nonzero);
                if c.restart_policy.as_deref() == Some("Always") {
                    sidecars.add(&r);
                } else {
                    let mut with_sidecars = r;
                    with_sidecars.add(&sidecars);
                    init_peak.max(&with_sidecars);
                }
            }
            total.add(&sidecars);
            total.max(&init_peak);
            total.add(&Resources::from_list(spec.overhead.as_ref()));
            total
        };
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| ip != "0.0.0.0" && ip != "::")
                    .unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port: p.host_port.unwrap_or(0),
            })
            .collect();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        Self {
            requests: sum(false),
            scoring: sum(true),
            host_ports,
            owner,
        }
    }
}

fn container(c: &Container, nonzero: bool) -> Resources {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut r = Resources::from_list(requests);
    if nonzero {
        let has = |name: &str| requests.is_some_and(|m| m.contains_key(name));
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn containers_add_up_and_init_containers_take_the_peak() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "nvidia.com/gpu": "1"}}}
            ],
            "initContainers": [
                {"name": "i", "resources": {"requests": {"cpu": "1", "memory": "16Mi"}}}
            ]
        }));
        let d = PodDemand::of(&p);
        assert_eq!(d.requests.milli_cpu, 1000);
        assert_eq!(d.requests.memory, 64 << 20);
        assert_eq!(d.requests.other.get("nvidia.com/gpu"), Some(&1));
        // Scoring counts the missing memory request of `b` as 200Mi.
        assert_eq!(d.scoring.memory, (64 << 20) + (200 << 20));
    }

    #[test]
    fn host_ports_and_controller() {
        let mut p = pod(json!({"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "hostPort": 8080},
            {"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "127.0.0.1"},
            {"containerPort": 90}
        ]}]}));
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1",
                "controller": true
            }))
            .unwrap(),
        ]);
        let d = PodDemand::of(&p);
        assert_eq!(d.host_ports.len(), 2);
        assert_eq!(d.owner.as_deref(), Some("u1"));
        let any = HostPort {
            ip: String::new(),
            protocol: "UDP".into(),
            port: 53,
        };
        assert!(d.host_ports[1].conflicts(&any));
        assert!(!d.host_ports[0].conflicts(&any));
    }
}
