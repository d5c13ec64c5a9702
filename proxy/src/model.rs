//! Services and EndpointSlices cut down to what the proxy needs, validated object by object.
//!
//! The watcher caches whole Kubernetes objects; the compiler reads only these small forms
//! (as CoreDNS's `object/service.go` does). Conversion never fails as a whole: an invalid part
//! (a port out of range, a garbage address) is dropped, and an object that cannot be used
//! safely at all (10,000 ports, an unknown address type) is skipped. Each is reported as a
//! [`Problem`] naming the object and the field, so the table is never half-programmed and
//! never panics on what a user wrote.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// At most this many ports per Service. Upstream sets no limit, but each port becomes
/// frontends × backends entries in every data plane; past this a Service is a mistake or an
/// attack, and it is skipped whole rather than programmed in part.
pub const MAX_SERVICE_PORTS: usize = 100;
/// At most this many ports per EndpointSlice (the EndpointSlice controller writes ≤ 100).
pub const MAX_SLICE_PORTS: usize = 100;
/// At most this many endpoints per EndpointSlice (upstream validation's limit).
pub const MAX_SLICE_ENDPOINTS: usize = 1000;
/// sessionAffinityConfig.clientIP.timeoutSeconds when unset (upstream's default, 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;
/// The largest timeout upstream validation accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

/// Label naming the Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Services (and their slices) with this label belong to another proxy; kube-proxy skips them.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Slices of headless Services carry this label; they never have frontends.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// A namespaced object name, `namespace/name` when printed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// L4 protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    /// Accepted (it is valid Kubernetes) and kept in the table; a data plane may not support it
    /// and then says so in its log instead of failing the whole table.
    Sctp,
}

impl Protocol {
    /// Parses the API's spelling; an absent protocol is TCP (the API default).
    pub fn parse(value: Option<&str>) -> Option<Protocol> {
        match value {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// Something wrong with one object, reported instead of failing: the object is skipped or
/// the named field dropped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    /// `Service ns/name` or `EndpointSlice ns/name`.
    pub object: String,
    /// The field path, e.g. `spec.ports[3].port`.
    pub field: String,
    /// What is wrong and what was done about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.object, self.field, self.message)
    }
}

/// How a Service is exposed, as far as the proxy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// `spec.ports[].name`, `""` for an unnamed single port: matched against slice port names.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// A Service as the proxy sees it. ExternalName and headless Services never get here
/// ([`ServiceInfo::from_service`] returns `None` for them: they have no frontends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: ServiceKey,
    /// For conflicts between Services: the older one wins (then the smaller key).
    pub created: Option<Time>,
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (or `spec.clusterIP`), primary family first.
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortInfo>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (LoadBalancer Services only; `ipMode: Proxy` skipped).
    pub lb_ips: Vec<IpAddr>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (only meaningful with external frontends).
    pub external_local: bool,
    pub health_check_node_port: Option<u16>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `trafficDistribution: PreferClose` (or the newer PreferSameZone / PreferSameNode).
    pub prefer_close: bool,
}

fn port_u16(value: i32) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// An IP address as the API writes it, refusing what can never be a service or pod address.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let ip: IpAddr = text.trim().parse().ok()?;
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    Some(ip)
}

/// An endpoint address: additionally neither loopback nor link-local (upstream validation's
/// `ValidateEndpointIP`), since traffic to those would never reach a pod.
fn parse_endpoint_ip(text: &str) -> Option<IpAddr> {
    let ip = parse_ip(text)?;
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    (!bad).then_some(ip)
}

pub(crate) fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ServiceKey {
    ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

struct Reporter<'a> {
    object: String,
    problems: &'a mut Vec<Problem>,
}

impl Reporter<'_> {
    fn report(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let problem = Problem {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        };
        self.problems.push(problem);
    }
}

impl ServiceInfo {
    /// Cuts a Service down, validating it. `None` when the proxy has nothing to program for it:
    /// ExternalName, headless, owned by another proxy, or too broken to use (with a problem).
    pub fn from_service(svc: &Service, problems: &mut Vec<Problem>) -> Option<ServiceInfo> {
        let key = key_of(&svc.metadata);
        let labels = svc.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME)) {
            return None;
        }
        let mut r = Reporter {
            object: format!("Service {key}"),
            problems,
        };
        let spec = svc.spec.as_ref()?;
        let service_type = match spec.type_.as_deref() {
            None | Some("ClusterIP") => ServiceType::ClusterIp,
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => return None,
            Some(other) => {
                r.report(
                    "spec.type",
                    format!("unknown type {other:?}: Service skipped"),
                );
                return None;
            }
        };
        if spec.cluster_ip.as_deref() == Some("None") {
            return None;
        }
        let raw_ports = spec.ports.as_deref().unwrap_or_default();
        if raw_ports.len() > MAX_SERVICE_PORTS {
            r.report(
                "spec.ports",
                format!(
                    "{} ports, at most {MAX_SERVICE_PORTS}: Service skipped",
                    raw_ports.len()
                ),
            );
            return None;
        }

        let mut cluster_ips = Vec::new();
        let listed: Vec<(String, &String)> = match spec.cluster_ips.as_deref() {
            Some(ips) if !ips.is_empty() => ips
                .iter()
                .enumerate()
                .map(|(i, ip)| (format!("spec.clusterIPs[{i}]"), ip))
                .collect(),
            _ => spec
                .cluster_ip
                .iter()
                .filter(|ip| !ip.is_empty())
                .map(|ip| ("spec.clusterIP".to_owned(), ip))
                .collect(),
        };
        for (field, text) in listed {
            match parse_ip(text) {
                Some(ip)
                    if cluster_ips
                        .iter()
                        .any(|c| IpFamily::of(c) == IpFamily::of(&ip)) =>
                {
                    r.report(field, format!("second address {ip} of one family: dropped"))
                }
                Some(ip) => cluster_ips.push(ip),
                None => r.report(field, format!("invalid address {text:?}: dropped")),
            }
        }

        let mut ports: Vec<PortInfo> = Vec::with_capacity(raw_ports.len());
        for (i, p) in raw_ports.iter().enumerate() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                r.report(
                    format!("spec.ports[{i}].protocol"),
                    format!("unknown protocol {:?}: port dropped", p.protocol),
                );
                continue;
            };
            let Some(port) = port_u16(p.port) else {
                r.report(
                    format!("spec.ports[{i}].port"),
                    format!("{} is not a port (1-65535): port dropped", p.port),
                );
                continue;
            };
            let node_port = match p.node_port {
                None | Some(0) => None,
                Some(n) => match port_u16(n) {
                    Some(n) => Some(n),
                    None => {
                        r.report(
                            format!("spec.ports[{i}].nodePort"),
                            format!("{n} is not a port (1-65535): nodePort dropped"),
                        );
                        None
                    }
                },
            };
            let name = p.name.clone().unwrap_or_default();
            if ports
                .iter()
                .any(|q| q.protocol == protocol && (q.name == name || q.port == port))
            {
                r.report(
                    format!("spec.ports[{i}]"),
                    format!("duplicate port {name:?} {port}/{protocol}: dropped"),
                );
                continue;
            }
            ports.push(PortInfo {
                name,
                protocol,
                port,
                node_port: node_port.filter(|_| service_type != ServiceType::ClusterIp),
            });
        }

        let mut external_ips = Vec::new();
        for (i, text) in spec.external_ips.iter().flatten().enumerate() {
            match parse_ip(text) {
                Some(ip) if !external_ips.contains(&ip) => external_ips.push(ip),
                Some(_) => {}
                None => r.report(
                    format!("spec.externalIPs[{i}]"),
                    format!("invalid address {text:?}: dropped"),
                ),
            }
        }

        let mut lb_ips = Vec::new();
        if service_type == ServiceType::LoadBalancer {
            let ingress = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            for (i, ing) in ingress.into_iter().flatten().enumerate() {
                // ipMode Proxy: the load balancer proxies to the nodes; the address must not be
                // captured on the node (KEP-1860).
                if ing.ip_mode.as_deref() == Some("Proxy") {
                    continue;
                }
                let Some(text) = ing.ip.as_deref() else {
                    continue; // hostname-only ingress: nothing to capture
                };
                match parse_ip(text) {
                    Some(ip) if !lb_ips.contains(&ip) => lb_ips.push(ip),
                    Some(_) => {}
                    None => r.report(
                        format!("status.loadBalancer.ingress[{i}].ip"),
                        format!("invalid address {text:?}: dropped"),
                    ),
                }
            }
        }

        let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
            && service_type != ServiceType::ClusterIp;
        let health_check_node_port = match spec.health_check_node_port {
            Some(n) if external_local && service_type == ServiceType::LoadBalancer => {
                match port_u16(n) {
                    Some(n) => Some(n),
                    None => {
                        r.report(
                            "spec.healthCheckNodePort",
                            format!("{n} is not a port (1-65535): no health check"),
                        );
                        None
                    }
                }
            }
            _ => None,
        };

        let affinity_timeout = if spec.session_affinity.as_deref() == Some("ClientIP") {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            Some(match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
                Some(t) => match u32::try_from(t) {
                    Ok(t) if (1..=MAX_AFFINITY_TIMEOUT_SECONDS).contains(&t) => t,
                    _ => {
                        r.report(
                            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                            format!(
                                "{t} is outside 1-{MAX_AFFINITY_TIMEOUT_SECONDS}: default {DEFAULT_AFFINITY_TIMEOUT_SECONDS} used"
                            ),
                        );
                        DEFAULT_AFFINITY_TIMEOUT_SECONDS
                    }
                },
            })
        } else {
            None
        };

        Some(ServiceInfo {
            key,
            created: svc.metadata.creation_timestamp.clone(),
            service_type,
            cluster_ips,
            ports,
            external_ips,
            lb_ips,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local,
            health_check_node_port,
            affinity_timeout,
            prefer_close: matches!(
                spec.traffic_distribution.as_deref(),
                Some("PreferClose" | "PreferSameZone" | "PreferSameNode")
            ),
        })
    }

    /// The address families this Service is served in (those of its ClusterIPs): kube-proxy
    /// runs one proxier per family, and each sees only Services with an address of its own.
    pub fn families(&self) -> impl Iterator<Item = IpFamily> + '_ {
        self.cluster_ips.iter().map(IpFamily::of)
    }

    pub fn has_family(&self, family: IpFamily) -> bool {
        self.families().any(|f| f == family)
    }
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of an EndpointSlice (only `addresses[0]` is used, as kube-proxy does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`.
    pub node_hints: Vec<String>,
}

/// An EndpointSlice as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// The slice's own name (for a stable order).
    pub name: String,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: ServiceKey,
    pub family: IpFamily,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<EndpointInfo>,
}

impl SliceInfo {
    /// Cuts an EndpointSlice down, validating it. `None` when it is not for this proxy (FQDN,
    /// another proxy's, no Service) or unusable (with a problem).
    pub fn from_slice(slice: &EndpointSlice, problems: &mut Vec<Problem>) -> Option<SliceInfo> {
        let own = key_of(&slice.metadata);
        let mut r = Reporter {
            object: format!("EndpointSlice {own}"),
            problems,
        };
        let labels = slice.metadata.labels.as_ref();
        if labels.is_some_and(|l| l.contains_key(LABEL_SERVICE_PROXY_NAME)) {
            return None;
        }
        let family = match slice.address_type.as_str() {
            "IPv4" => IpFamily::V4,
            "IPv6" => IpFamily::V6,
            "FQDN" => return None, // valid, but nothing a proxy can program
            other => {
                r.report(
                    "addressType",
                    format!("unknown address type {other:?}: slice skipped"),
                );
                return None;
            }
        };
        let Some(service) = labels.and_then(|l| l.get(LABEL_SERVICE_NAME)) else {
            r.report(
                format!("metadata.labels[{LABEL_SERVICE_NAME}]"),
                "missing: slice belongs to no Service, skipped",
            );
            return None;
        };
        let raw_ports = slice.ports.as_deref().unwrap_or_default();
        if raw_ports.len() > MAX_SLICE_PORTS {
            r.report(
                "ports",
                format!(
                    "{} ports, at most {MAX_SLICE_PORTS}: slice skipped",
                    raw_ports.len()
                ),
            );
            return None;
        }
        if slice.endpoints.len() > MAX_SLICE_ENDPOINTS {
            r.report(
                "endpoints",
                format!(
                    "{} endpoints, at most {MAX_SLICE_ENDPOINTS}: slice skipped",
                    slice.endpoints.len()
                ),
            );
            return None;
        }
        let mut ports = Vec::with_capacity(raw_ports.len());
        for (i, p) in raw_ports.iter().enumerate() {
            // A port without a number means "all ports" in the API; kube-proxy ignores it.
            let Some(number) = p.port else { continue };
            let Some(port) = port_u16(number) else {
                r.report(
                    format!("ports[{i}].port"),
                    format!("{number} is not a port (1-65535): dropped"),
                );
                continue;
            };
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                r.report(
                    format!("ports[{i}].protocol"),
                    format!("unknown protocol {:?}: dropped", p.protocol),
                );
                continue;
            };
            ports.push(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
            });
        }
        let mut endpoints = Vec::with_capacity(slice.endpoints.len());
        for (i, ep) in slice.endpoints.iter().enumerate() {
            let Some(text) = ep.addresses.first() else {
                r.report(format!("endpoints[{i}].addresses"), "empty: dropped");
                continue;
            };
            let ip = match parse_endpoint_ip(text) {
                Some(ip) if IpFamily::of(&ip) == family => ip,
                Some(ip) => {
                    r.report(
                        format!("endpoints[{i}].addresses[0]"),
                        format!(
                            "{ip} does not match addressType {}: dropped",
                            slice.address_type
                        ),
                    );
                    continue;
                }
                None => {
                    r.report(
                        format!("endpoints[{i}].addresses[0]"),
                        format!("invalid address {text:?}: dropped"),
                    );
                    continue;
                }
            };
            let conditions = ep.conditions.as_ref();
            // Upstream: unset ready means ready, unset serving means "as ready", unset
            // terminating means not terminating.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let hints = ep.hints.as_ref();
            endpoints.push(EndpointInfo {
                ip,
                ready,
                serving,
                terminating,
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                zone_hints: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_default(),
                node_hints: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|n| n.iter().map(|n| n.name.clone()).collect())
                    .unwrap_or_default(),
            });
        }
        Some(SliceInfo {
            name: own.name,
            service: ServiceKey::new(own.namespace, service.clone()),
            family,
            ports,
            endpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};

    fn service(spec: k8s_openapi::api::core::v1::ServiceSpec) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some("web".into());
        s.spec = Some(spec);
        s
    }

    fn port(port: i32) -> k8s_openapi::api::core::v1::ServicePort {
        k8s_openapi::api::core::v1::ServicePort {
            port,
            name: Some(format!("p{port}")),
            ..Default::default()
        }
    }

    #[test]
    fn absurd_port_counts_skip_the_service() {
        let mut problems = Vec::new();
        let svc = service(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("10.96.0.1".into()),
            ports: Some((1..=10_000).map(port).collect()),
            ..Default::default()
        });
        assert!(ServiceInfo::from_service(&svc, &mut problems).is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.ports");
        assert_eq!(problems[0].object, "Service ns/web");
    }

    #[test]
    fn bad_ports_and_addresses_are_dropped() {
        let mut problems = Vec::new();
        let svc = service(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ips: Some(vec!["10.96.0.1".into(), "garbage".into()]),
            ports: Some(vec![port(0), port(80), port(70_000), port(80)]),
            external_ips: Some(vec!["1.2.3.4".into(), "::zz".into()]),
            ..Default::default()
        });
        let info = ServiceInfo::from_service(&svc, &mut problems).expect("kept");
        assert_eq!(info.ports.len(), 1);
        assert_eq!(info.cluster_ips.len(), 1);
        assert_eq!(info.external_ips.len(), 1);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.clusterIPs[1]",
                "spec.ports[0].port",
                "spec.ports[2].port",
                "spec.ports[3]",
                "spec.externalIPs[1]"
            ]
        );
    }

    #[test]
    fn headless_and_external_name_have_nothing_to_program() {
        let mut problems = Vec::new();
        let headless = service(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        });
        let external = service(k8s_openapi::api::core::v1::ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("example.com".into()),
            ..Default::default()
        });
        assert!(ServiceInfo::from_service(&headless, &mut problems).is_none());
        assert!(ServiceInfo::from_service(&external, &mut problems).is_none());
        assert!(problems.is_empty());
    }

    #[test]
    fn garbage_endpoints_are_dropped_per_endpoint() {
        let mut problems = Vec::new();
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: ["10.244.0.5", "not-an-ip", "fd00::1", "127.0.0.1", "0.0.0.0"]
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![(*a).into()],
                    ..Default::default()
                })
                .collect(),
            ports: Some(vec![EndpointPort {
                port: Some(99_999),
                ..Default::default()
            }]),
            ..Default::default()
        };
        slice.metadata.namespace = Some("ns".into());
        slice.metadata.name = Some("web-abc".into());
        slice.metadata.labels = Some([(LABEL_SERVICE_NAME.into(), "web".into())].into());
        let info = SliceInfo::from_slice(&slice, &mut problems).expect("kept");
        assert_eq!(info.endpoints.len(), 1);
        assert!(info.ports.is_empty());
        assert_eq!(problems.len(), 5);
        slice.address_type = "IPv5".into();
        assert!(SliceInfo::from_slice(&slice, &mut problems).is_none());
        assert_eq!(
            problems.last().map(|p| p.field.as_str()),
            Some("addressType")
        );
    }
}
