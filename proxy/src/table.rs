//! The service table: every Service port's frontends mapped to its backends, built whole from
//! Services + EndpointSlices, immutable once built (data planes read it as an `Arc` snapshot).
//!
//! Semantics follow kube-proxy (`pkg/proxy/topology.go` `CategorizeEndpoints`): only ready
//! endpoints, serving+terminating ones only when none is ready; `internalTrafficPolicy: Local`
//! limits ClusterIP frontends to this node's endpoints and `externalTrafficPolicy: Local` does
//! the same for NodePort / LoadBalancer / externalIP frontends (client IP preserved).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::compiler::Compiler;
use crate::model::{EndpointInfo, IpFamily, Problem, Protocol, ServiceInfo, ServiceKey, SliceInfo};
use crate::pmap::PMap;

/// Label with a node's zone (also read from EndpointSlice `zone`).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// The node this proxy programs: plain data the caller passes (from its Node object or flags).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// `metadata.name`, compared with endpoints' `nodeName` to find local endpoints.
    pub name: String,
    /// `topology.kubernetes.io/zone`, for `trafficDistribution: PreferClose`.
    pub zone: Option<String>,
    /// Addresses NodePorts and health checks are served on (either family).
    pub addresses: Vec<IpAddr>,
}

impl NodeInfo {
    /// Name, zone label and the InternalIP/ExternalIP addresses of a Node object.
    pub fn from_node(node: &Node) -> NodeInfo {
        let mut addresses: Vec<IpAddr> = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        addresses.sort();
        addresses.dedup();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_ZONE))
                .cloned(),
            addresses,
        }
    }
}

/// A service port's numeric id: stable across rebuilds for as long as the port exists, so data
/// planes can key their maps by it. Ids start at 1; an id freed by a rebuild is not handed out
/// again by that same rebuild (a diff never removes and adds one id at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortId(pub u32);

impl fmt::Display for ServicePortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What identifies a service port (kube-proxy's `ServicePortName`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub service: ServiceKey,
    pub port_name: String,
    pub protocol: Protocol,
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port_name, self.protocol)
    }
}

/// Where a frontend address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    /// `spec.clusterIPs`: east-west, backends from [`ServicePortEntry::internal`].
    ClusterIp,
    /// `nodePort` on one of the node's addresses.
    NodePort,
    /// `status.loadBalancer.ingress[].ip`.
    LoadBalancer,
    /// `spec.externalIPs`.
    ExternalIp,
}

impl FrontendKind {
    /// External frontends use [`ServicePortEntry::external`] (externalTrafficPolicy).
    pub fn is_external(self) -> bool {
        self != FrontendKind::ClusterIp
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::LoadBalancer => "LoadBalancer",
            FrontendKind::ExternalIp => "ExternalIP",
        }
    }
}

/// One address:port a service port is reached at (the protocol is the entry's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub kind: FrontendKind,
    pub ip: IpAddr,
    pub port: u16,
}

impl Frontend {
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.ip)
    }
}

/// One pod address:port behind a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub ip: IpAddr,
    pub port: u16,
    /// On this node (`nodeName`).
    pub local: bool,
    /// `false` for a serving+terminating endpoint, used only because none is ready.
    pub ready: bool,
}

/// Backends split by family: a frontend only ever uses its own family's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backends {
    pub v4: Vec<Backend>,
    pub v6: Vec<Backend>,
}

impl Backends {
    pub fn family(&self, family: IpFamily) -> &[Backend] {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.v4.iter().chain(self.v6.iter())
    }

    fn from_endpoints(eps: &[&Candidate<'_>]) -> Backends {
        let mut out = Backends::default();
        for c in eps {
            let b = Backend {
                ip: c.ip,
                port: c.port,
                local: c.local,
                ready: c.ep.ready,
            };
            match IpFamily::of(&c.ip) {
                IpFamily::V4 => out.v4.push(b),
                IpFamily::V6 => out.v6.push(b),
            }
        }
        out.v4.sort();
        out.v6.sort();
        out
    }
}

/// One Service port, compiled: what a data plane programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortEntry {
    pub id: ServicePortId,
    pub key: PortKey,
    /// `spec.ports[].port` (every frontend but NodePorts listens on it).
    pub port: u16,
    pub node_port: Option<u16>,
    /// Sorted by kind, then address. Empty for a Service with no usable address.
    pub frontends: Vec<Frontend>,
    /// Backends for ClusterIP frontends (after internalTrafficPolicy and topology). Empty:
    /// the data plane rejects (kube-proxy answers ICMP unreachable / TCP reset).
    pub internal: Backends,
    /// Backends for external frontends (after externalTrafficPolicy and topology). A data
    /// plane may send traffic from this node's own pods to an external frontend through
    /// `internal`, as kube-proxy short-circuits it.
    pub external: Backends,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`: keep the client's address (no SNAT) on external frontends.
    pub external_local: bool,
}

impl ServicePortEntry {
    /// The backends traffic to `frontend` goes to (its family, its policy).
    pub fn backends_for(&self, frontend: &Frontend) -> &[Backend] {
        let set = if frontend.kind.is_external() {
            &self.external
        } else {
            &self.internal
        };
        set.family(frontend.family())
    }

    /// Preserve the client's source address for traffic to `frontend`.
    pub fn preserves_client_ip(&self, frontend: &Frontend) -> bool {
        frontend.kind.is_external() && self.external_local
    }
}

/// What the health-check server answers on one `healthCheckNodePort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: ServiceKey,
    /// Distinct ready endpoints of the Service on this node: 200 when > 0, else 503.
    pub local_endpoints: usize,
}

/// The whole compiled state. Built once, never mutated: share it as `Arc<ServiceTable>`.
///
/// The collections are persistent (chunks behind `Arc`s, see `pmap`): cloning a table is a few
/// pointer copies, and the next table after one change shares everything but the chunks that
/// change touched, so [`crate::compiler::Compiler`] produces it in time proportional to the
/// change, not to the number of Services.
#[derive(Debug, Clone, Default)]
pub struct ServiceTable {
    pub(crate) node: NodeInfo,
    pub(crate) ports: PMap<Arc<PortKey>, Arc<ServicePortEntry>>,
    pub(crate) by_id: PMap<ServicePortId, Arc<ServicePortEntry>>,
    pub(crate) health_checks: Arc<BTreeMap<u16, HealthCheck>>,
    /// Sorted, no duplicates.
    pub(crate) problems: Arc<Vec<Problem>>,
    /// Distinct Services with at least one entry (kept up to date by the compiler, so that
    /// publishing a table does not walk it).
    pub(crate) services: usize,
    /// Sum of [`entry_backends`] over the entries.
    pub(crate) backends: usize,
}

/// An endpoint with the port a service port resolves to, before policy filtering.
struct Candidate<'a> {
    ip: IpAddr,
    port: u16,
    local: bool,
    ep: &'a EndpointInfo,
}

impl ServiceTable {
    /// An empty table (what a data plane starts from).
    pub fn empty(node: NodeInfo) -> ServiceTable {
        ServiceTable {
            node,
            ..ServiceTable::default()
        }
    }

    /// Compiles Services and EndpointSlices as the API serves them. `previous` (the table
    /// currently programmed) keeps ids stable and lets unchanged entries share their `Arc`.
    ///
    /// This compiles everything; the watch loop keeps a [`Compiler`] instead, which recompiles
    /// only what changed and gives the same table.
    pub fn build<'a>(
        node: &NodeInfo,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        previous: Option<&ServiceTable>,
    ) -> ServiceTable {
        let mut compiler = Compiler::starting_from(node.clone(), previous);
        for s in services {
            compiler.upsert_service(s);
        }
        for s in slices {
            compiler.upsert_slice(s);
        }
        compiler.build().0
    }

    /// [`ServiceTable::build`] from objects already cut down (and their problems so far).
    pub fn build_from(
        node: &NodeInfo,
        services: Vec<ServiceInfo>,
        slices: &[SliceInfo],
        problems: Vec<Problem>,
        previous: Option<&ServiceTable>,
    ) -> ServiceTable {
        let mut compiler = Compiler::starting_from(node.clone(), previous);
        compiler.add_problems(problems);
        for s in services {
            compiler.set_service_info(s);
        }
        for s in slices {
            compiler.set_slice_info(s.clone());
        }
        compiler.build().0
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Every service port, in key order (namespace, name, port name, protocol).
    pub fn ports(&self) -> impl ExactSizeIterator<Item = &Arc<ServicePortEntry>> {
        self.ports.values()
    }

    pub fn get(&self, key: &PortKey) -> Option<&Arc<ServicePortEntry>> {
        self.ports.get(key)
    }

    pub fn get_by_id(&self, id: ServicePortId) -> Option<&Arc<ServicePortEntry>> {
        self.by_id.get(&id)
    }

    /// `healthCheckNodePort` → what to answer there.
    pub fn health_checks(&self) -> &BTreeMap<u16, HealthCheck> {
        &self.health_checks
    }

    /// What was skipped or dropped while building, sorted.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Number of distinct Services with at least one port in the table.
    pub fn service_count(&self) -> usize {
        self.services
    }

    /// Total backends over every port and both policies' sets (distinct per port).
    pub fn backend_count(&self) -> usize {
        self.backends
    }

    /// Stable text rendering (what `skiff proxy dump` prints and the golden tests compare).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let zone = self.node.zone.as_deref().unwrap_or("-");
        let _ = writeln!(out, "node {} zone {zone}", self.node.name);
        for e in self.ports.values() {
            let _ = write!(out, "port {} id {} port {}", e.key, e.id, e.port);
            if let Some(np) = e.node_port {
                let _ = write!(out, " nodePort {np}");
            }
            if let Some(t) = e.affinity_timeout {
                let _ = write!(out, " affinity ClientIP {t}s");
            }
            if e.internal_local {
                let _ = write!(out, " internalTrafficPolicy Local");
            }
            if e.external_local {
                let _ = write!(out, " externalTrafficPolicy Local");
            }
            out.push('\n');
            for f in &e.frontends {
                let _ = writeln!(
                    out,
                    "  frontend {} {}",
                    f.kind.as_str(),
                    SockAddr(f.ip, f.port)
                );
            }
            // The external set matters only with external frontends.
            let same =
                e.internal == e.external || !e.frontends.iter().any(|f| f.kind.is_external());
            let sets: &[(&str, &Backends)] = if same {
                &[("backend", &e.internal)]
            } else {
                &[
                    ("backend internal", &e.internal),
                    ("backend external", &e.external),
                ]
            };
            for (label, set) in sets {
                if set.is_empty() {
                    let _ = writeln!(out, "  {label} none (reject)");
                }
                for b in set.iter() {
                    let _ = write!(out, "  {label} {}", SockAddr(b.ip, b.port));
                    if b.local {
                        out.push_str(" local");
                    }
                    if !b.ready {
                        out.push_str(" terminating");
                    }
                    out.push('\n');
                }
            }
        }
        for (port, hc) in self.health_checks.iter() {
            let _ = writeln!(
                out,
                "healthcheck {port} {} localEndpoints {}",
                hc.service, hc.local_endpoints
            );
        }
        for p in self.problems.iter() {
            let _ = writeln!(out, "problem {p}");
        }
        out
    }
}

/// A frontend address a Service port asks for, before conflicts with other Services are
/// resolved (the compiler indexes these to know whose frontends a change can affect).
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    /// Index into `ServiceInfo::ports`.
    pub(crate) port: usize,
    pub(crate) frontend: Frontend,
    pub(crate) protocol: Protocol,
    /// The field it comes from, for the conflict problem.
    pub(crate) field: &'static str,
}

impl Offer {
    pub(crate) fn claim(&self) -> Claim {
        (self.frontend.ip, self.frontend.port, self.protocol)
    }
}

/// What two Services cannot share: address, port and protocol.
pub(crate) type Claim = (IpAddr, u16, Protocol);

/// Every frontend `svc` asks for, port by port, in the order conflicts are reported.
pub(crate) fn offers(node: &NodeInfo, svc: &ServiceInfo) -> Vec<Offer> {
    let mut out = Vec::new();
    for (i, p) in svc.ports.iter().enumerate() {
        let mut offer = |kind: FrontendKind, ip: IpAddr, port: u16, field: &'static str| {
            if !svc.has_family(IpFamily::of(&ip)) {
                return; // another family's proxier would not see this Service
            }
            out.push(Offer {
                port: i,
                frontend: Frontend { kind, ip, port },
                protocol: p.protocol,
                field,
            });
        };
        for ip in &svc.cluster_ips {
            offer(FrontendKind::ClusterIp, *ip, p.port, "spec.clusterIPs");
        }
        if let Some(np) = p.node_port {
            for ip in &node.addresses {
                offer(FrontendKind::NodePort, *ip, np, "spec.ports.nodePort");
            }
        }
        for ip in &svc.lb_ips {
            offer(
                FrontendKind::LoadBalancer,
                *ip,
                p.port,
                "status.loadBalancer.ingress",
            );
        }
        for ip in &svc.external_ips {
            offer(FrontendKind::ExternalIp, *ip, p.port, "spec.externalIPs");
        }
    }
    out
}

/// One Service compiled on its own, given who owns each contested frontend.
#[derive(Debug)]
pub(crate) struct CompiledService {
    /// One per port, in port order, with id 0 (the compiler assigns ids).
    pub(crate) entries: Vec<ServicePortEntry>,
    /// Frontends dropped because another Service owns them.
    pub(crate) problems: Vec<Problem>,
    /// Distinct ready endpoint addresses on this node (for the health check).
    pub(crate) local_ready: usize,
}

/// Compiles one Service's ports: frontends from `offers` that `owner` gives to this Service
/// (a conflict goes to the older Service: `owner` is the highest-priority claimant), backends
/// from its `slices` (sorted by name) after policies and topology.
pub(crate) fn compile_service<'k>(
    node: &NodeInfo,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
    offers: &[Offer],
    owner: impl Fn(&Claim) -> Option<&'k ServiceKey>,
) -> CompiledService {
    let mut problems = Vec::new();
    let mut frontends: Vec<Vec<Frontend>> = vec![Vec::new(); svc.ports.len()];
    for o in offers {
        match owner(&o.claim()) {
            Some(owner) if owner != &svc.key => problems.push(Problem {
                object: format!("Service {}", svc.key),
                field: o.field.to_owned(),
                message: format!(
                    "{} {} is already used by Service {owner}: dropped",
                    SockAddr(o.frontend.ip, o.frontend.port),
                    o.protocol,
                ),
            }),
            _ => {
                if let Some(list) = frontends.get_mut(o.port) {
                    list.push(o.frontend);
                }
            }
        }
    }
    let mut local_ready: HashSet<IpAddr> = HashSet::new();
    let mut entries = Vec::with_capacity(svc.ports.len());
    for (p, mut frontends) in svc.ports.iter().zip(frontends) {
        frontends.sort();
        frontends.dedup();
        let candidates = candidates(node, slices, &p.name, p.protocol);
        let cluster = cluster_endpoints(&candidates, svc, node);
        let local = local_endpoints(&candidates);
        for c in &candidates {
            if c.local && c.ep.ready {
                local_ready.insert(c.ip);
            }
        }
        let pick =
            |use_local: bool| Backends::from_endpoints(if use_local { &local } else { &cluster });
        entries.push(ServicePortEntry {
            id: ServicePortId(0),
            key: PortKey {
                service: svc.key.clone(),
                port_name: p.name.clone(),
                protocol: p.protocol,
            },
            port: p.port,
            node_port: p.node_port,
            frontends,
            internal: pick(svc.internal_local),
            external: pick(svc.external_local),
            affinity_timeout: svc.affinity_timeout,
            internal_local: svc.internal_local,
            external_local: svc.external_local,
        });
    }
    CompiledService {
        entries,
        problems,
        local_ready: local_ready.len(),
    }
}

/// `ip:port`, with brackets for IPv6.
pub(crate) struct SockAddr(IpAddr, u16);

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.1),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.1),
        }
    }
}

/// Endpoints of a Service's slices with the port matching `name`/`protocol`, one per
/// address:port (a ready copy wins over a not-ready one, as kube-proxy's slice cache merges).
fn candidates<'a>(
    node: &NodeInfo,
    slices: &[&'a SliceInfo],
    name: &str,
    protocol: Protocol,
) -> Vec<Candidate<'a>> {
    let mut out: Vec<Candidate<'a>> = Vec::new();
    let mut seen: HashMap<(IpAddr, u16), usize> = HashMap::new();
    for s in slices {
        let Some(port) = s
            .ports
            .iter()
            .find(|sp| sp.name == name && sp.protocol == protocol)
        else {
            continue;
        };
        for ep in &s.endpoints {
            let c = Candidate {
                ip: ep.ip,
                port: port.port,
                local: !node.name.is_empty() && ep.node_name.as_deref() == Some(&node.name),
                ep,
            };
            match seen.get(&(ep.ip, port.port)) {
                Some(&i) => {
                    if ep.ready && !out[i].ep.ready {
                        out[i] = c;
                    }
                }
                None => {
                    seen.insert((ep.ip, port.port), out.len());
                    out.push(c);
                }
            }
        }
    }
    out
}

fn in_zone(ep: &EndpointInfo, zone: &str) -> bool {
    if ep.zone_hints.is_empty() {
        ep.zone.as_deref() == Some(zone)
    } else {
        ep.zone_hints.iter().any(|z| z == zone)
    }
}

/// The endpoints for `Cluster` traffic policy: ready ones (narrowed by topology), else the
/// serving+terminating ones.
fn cluster_endpoints<'c, 'a>(
    cands: &'c [Candidate<'a>],
    svc: &ServiceInfo,
    node: &NodeInfo,
) -> Vec<&'c Candidate<'a>> {
    let ready: Vec<&Candidate<'a>> = cands.iter().filter(|c| c.ep.ready).collect();
    if ready.is_empty() {
        return cands
            .iter()
            .filter(|c| c.ep.serving && c.ep.terminating)
            .collect();
    }
    let zone = node.zone.as_deref();
    if svc.prefer_close {
        let same_node: Vec<_> = ready
            .iter()
            .copied()
            .filter(|c| c.local || c.ep.node_hints.contains(&node.name))
            .collect();
        if !same_node.is_empty() {
            return same_node;
        }
        if let Some(zone) = zone {
            let same_zone: Vec<_> = ready
                .iter()
                .copied()
                .filter(|c| in_zone(c.ep, zone))
                .collect();
            if !same_zone.is_empty() {
                return same_zone;
            }
        }
        return ready;
    }
    // Topology hints without PreferClose (`service.kubernetes.io/topology-mode: Auto`): used
    // only when every ready endpoint has zone hints and one of them is for our zone
    // (kube-proxy's `canUseTopology`).
    if let Some(zone) = zone
        && ready.iter().all(|c| !c.ep.zone_hints.is_empty())
        && ready
            .iter()
            .any(|c| c.ep.zone_hints.iter().any(|z| z == zone))
    {
        return ready
            .into_iter()
            .filter(|c| c.ep.zone_hints.iter().any(|z| z == zone))
            .collect();
    }
    ready
}

/// The endpoints for `Local` traffic policy: this node's ready ones, else this node's
/// serving+terminating ones.
fn local_endpoints<'c, 'a>(cands: &'c [Candidate<'a>]) -> Vec<&'c Candidate<'a>> {
    let ready: Vec<_> = cands.iter().filter(|c| c.local && c.ep.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    cands
        .iter()
        .filter(|c| c.local && c.ep.serving && c.ep.terminating)
        .collect()
}

/// Distinct backends (address:port) of one entry over both policies' sets.
pub(crate) fn entry_backends(e: &ServicePortEntry) -> usize {
    if e.internal == e.external {
        e.internal.len()
    } else {
        let mut all: HashSet<(IpAddr, u16)> = HashSet::new();
        all.extend(e.internal.iter().map(|b| (b.ip, b.port)));
        all.extend(e.external.iter().map(|b| (b.ip, b.port)));
        all.len()
    }
}

/// The whole-table compile as it was before the incremental compiler, kept as the reference
/// the compiler's tests compare against.
#[cfg(test)]
pub(crate) mod reference {
    use super::*;

    impl ServiceTable {
        pub(crate) fn reference_build_from(
            node: &NodeInfo,
            mut services: Vec<ServiceInfo>,
            slices: &[SliceInfo],
            mut problems: Vec<Problem>,
            previous: Option<&ServiceTable>,
        ) -> ServiceTable {
            let mut slices_of: HashMap<&ServiceKey, Vec<&SliceInfo>> = HashMap::new();
            for s in slices {
                slices_of.entry(&s.service).or_default().push(s);
            }
            for list in slices_of.values_mut() {
                list.sort_by(|a, b| a.name.cmp(&b.name));
            }
            // Conflicts go to the older Service (then the smaller name), as the brief for
            // externalIPs says; a Service without a timestamp counts as the newest.
            services.sort_by(|a, b| {
                (a.created.is_none(), &a.created, &a.key).cmp(&(
                    b.created.is_none(),
                    &b.created,
                    &b.key,
                ))
            });

            let mut claimed: HashMap<(IpAddr, u16, Protocol), ServiceKey> = HashMap::new();
            let mut claimed_hc: HashMap<u16, ServiceKey> = HashMap::new();
            let mut ports: BTreeMap<PortKey, ServicePortEntry> = BTreeMap::new();
            let mut health_checks = BTreeMap::new();
            let no_slices = Vec::new();

            for svc in &services {
                let object = format!("Service {}", svc.key);
                let svc_slices = slices_of.get(&svc.key).unwrap_or(&no_slices);
                let mut local_ready: HashSet<IpAddr> = HashSet::new();
                for p in &svc.ports {
                    let mut frontends = Vec::new();
                    let mut offer = |kind: FrontendKind, ip: IpAddr, port: u16, field: &str| {
                        if !svc.has_family(IpFamily::of(&ip)) {
                            return; // another family's proxier would not see this Service
                        }
                        match claimed.get(&(ip, port, p.protocol)) {
                            Some(owner) if owner != &svc.key => {
                                let problem = Problem {
                                    object: object.clone(),
                                    field: field.to_owned(),
                                    message: format!(
                                        "{} {} is already used by Service {owner}: dropped",
                                        SockAddr(ip, port),
                                        p.protocol,
                                    ),
                                };
                                problems.push(problem);
                            }
                            _ => {
                                claimed.insert((ip, port, p.protocol), svc.key.clone());
                                frontends.push(Frontend { kind, ip, port });
                            }
                        }
                    };
                    for ip in &svc.cluster_ips {
                        offer(FrontendKind::ClusterIp, *ip, p.port, "spec.clusterIPs");
                    }
                    if let Some(np) = p.node_port {
                        for ip in &node.addresses {
                            offer(FrontendKind::NodePort, *ip, np, "spec.ports.nodePort");
                        }
                    }
                    for ip in &svc.lb_ips {
                        offer(
                            FrontendKind::LoadBalancer,
                            *ip,
                            p.port,
                            "status.loadBalancer.ingress",
                        );
                    }
                    for ip in &svc.external_ips {
                        offer(FrontendKind::ExternalIp, *ip, p.port, "spec.externalIPs");
                    }
                    frontends.sort();
                    frontends.dedup();

                    let candidates = candidates(node, svc_slices, &p.name, p.protocol);
                    let cluster = cluster_endpoints(&candidates, svc, node);
                    let local = local_endpoints(&candidates);
                    for c in &candidates {
                        if c.local && c.ep.ready {
                            local_ready.insert(c.ip);
                        }
                    }
                    let pick = |use_local: bool| {
                        Backends::from_endpoints(if use_local { &local } else { &cluster })
                    };
                    let key = PortKey {
                        service: svc.key.clone(),
                        port_name: p.name.clone(),
                        protocol: p.protocol,
                    };
                    ports.insert(
                        key.clone(),
                        ServicePortEntry {
                            id: ServicePortId(0),
                            key,
                            port: p.port,
                            node_port: p.node_port,
                            frontends,
                            internal: pick(svc.internal_local),
                            external: pick(svc.external_local),
                            affinity_timeout: svc.affinity_timeout,
                            internal_local: svc.internal_local,
                            external_local: svc.external_local,
                        },
                    );
                }
                if let Some(hc) = svc.health_check_node_port {
                    match claimed_hc.get(&hc) {
                        Some(owner) => problems.push(Problem {
                            object,
                            field: "spec.healthCheckNodePort".into(),
                            message: format!("{hc} is already used by Service {owner}: dropped"),
                        }),
                        None => {
                            claimed_hc.insert(hc, svc.key.clone());
                            health_checks.insert(
                                hc,
                                HealthCheck {
                                    service: svc.key.clone(),
                                    local_endpoints: local_ready.len(),
                                },
                            );
                        }
                    }
                }
            }

            let (ports, by_id) = assign_ids(ports, previous);
            problems.sort();
            problems.dedup();
            let mut table = ServiceTable {
                node: node.clone(),
                health_checks: Arc::new(health_checks),
                problems: Arc::new(problems),
                ..ServiceTable::default()
            };
            for (key, e) in ports {
                table.ports.insert(Arc::new(key), e);
            }
            for (id, key) in by_id {
                if let Some(e) = table.ports.get(&key).cloned() {
                    table.by_id.insert(id, e);
                }
            }
            table
        }
    }

    type Assigned = (
        BTreeMap<PortKey, Arc<ServicePortEntry>>,
        HashMap<ServicePortId, PortKey>,
    );

    /// Gives every entry its id (the previous table's for a known key, else the lowest free one
    /// not used by `previous`), and reuses the previous `Arc` of every unchanged entry so that a
    /// diff can skip it by pointer.
    fn assign_ids(
        ports: BTreeMap<PortKey, ServicePortEntry>,
        previous: Option<&ServiceTable>,
    ) -> Assigned {
        let prev_ids: HashSet<ServicePortId> = previous
            .map(|p| p.by_id.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default();
        let mut next = 1u32;
        let mut out = BTreeMap::new();
        let mut by_id = HashMap::with_capacity(ports.len());
        for (key, mut entry) in ports {
            let old = previous.and_then(|p| p.ports.get(&key));
            entry.id = match old {
                Some(old) => old.id,
                None => {
                    while prev_ids.contains(&ServicePortId(next)) {
                        next += 1;
                    }
                    let id = ServicePortId(next);
                    next += 1;
                    id
                }
            };
            let arc = match old {
                Some(old) if **old == entry => Arc::clone(old),
                _ => Arc::new(entry),
            };
            by_id.insert(arc.id, key.clone());
            out.insert(key, arc);
        }
        (out, by_id)
    }
}
