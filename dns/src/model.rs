//! Services, EndpointSlices and Pods cut down to what DNS answers need (as CoreDNS's
//! `object` package does): the watch keeps only these, so memory grows with records, not with
//! whole API objects (managedFields, annotations, specs DNS never reads).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The legacy annotation that made a Service publish not-ready endpoints before
/// `spec.publishNotReadyAddresses` existed; the DNS specification still names it.
pub const TOLERATE_UNREADY_ANNOTATION: &str =
    "service.alpha.kubernetes.io/tolerate-unready-endpoints";
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

/// What a Service is, for DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP, NodePort, LoadBalancer: the cluster IPs (one per family).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: answered from its endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME.
    ExternalName(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The `_<proto>` label of SRV names.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
            Protocol::Sctp => "_sctp",
        }
    }
}

/// A named port (unnamed ports have no SRV record, so they are not kept).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: Key,
    pub kind: ServiceKind,
    pub ports: Vec<NamedPort>,
    /// `publishNotReadyAddresses` or the legacy annotation.
    pub publish_not_ready: bool,
}

impl ServiceInfo {
    /// `None` for a Service without namespace or name (never from a real API server).
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let key = key_of(&svc.metadata)?;
        let spec = svc.spec.as_ref();
        let annotation = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let publish_not_ready = annotation
            || spec
                .and_then(|s| s.publish_not_ready_addresses)
                .unwrap_or(false);
        let kind = match spec {
            Some(s) if s.type_.as_deref() == Some("ExternalName") => {
                ServiceKind::ExternalName(s.external_name.clone().unwrap_or_default())
            }
            Some(s) => {
                let mut ips: Vec<String> = s.cluster_ips.clone().unwrap_or_default();
                if ips.is_empty() {
                    ips.extend(s.cluster_ip.clone());
                }
                if ips.iter().any(|ip| ip == "None") {
                    ServiceKind::Headless
                } else {
                    let parsed: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
                    if parsed.is_empty() {
                        // Not allocated yet: no A record, but the name and namespace exist.
                        ServiceKind::ClusterIp(Vec::new())
                    } else {
                        ServiceKind::ClusterIp(parsed)
                    }
                }
            }
            None => ServiceKind::ClusterIp(Vec::new()),
        };
        let mut ports: Vec<NamedPort> = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        Some(ServiceInfo {
            key,
            kind,
            ports,
            publish_not_ready,
        })
    }
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `conditions.ready`, where unset means ready (the API's documented default).
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub key: Key,
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    pub ports: Vec<NamedPort>,
    pub endpoints: Vec<EndpointInfo>,
}

impl SliceInfo {
    /// `None` for slices DNS ignores: no service label, or an FQDN address type.
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceInfo> {
        let key = key_of(&slice.metadata)?;
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return None;
        }
        let mut ports: Vec<NamedPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|e| EndpointInfo {
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                hostname: e.hostname.clone().filter(|h| !h.is_empty()),
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            })
            .filter(|e| !e.addresses.is_empty())
            .collect();
        Some(SliceInfo {
            key,
            service,
            ports,
            endpoints,
        })
    }
}

/// A pod's addresses (pod records in `verified` mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub key: Key,
    pub ips: Vec<IpAddr>,
}

impl PodInfo {
    /// `None` for pods with no address yet: they have no record.
    pub fn from_pod(pod: &Pod) -> Option<PodInfo> {
        let key = key_of(&pod.metadata)?;
        let status = pod.status.as_ref()?;
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                status
                    .pod_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        (!ips.is_empty()).then_some(PodInfo { key, ips })
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some(Key {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    })
}

/// Everything a snapshot is built from, keyed by object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model {
    pub services: std::collections::BTreeMap<Key, ServiceInfo>,
    pub slices: std::collections::BTreeMap<Key, SliceInfo>,
    pub pods: std::collections::BTreeMap<Key, PodInfo>,
}

impl Model {
    /// A model from whole API objects (tests, benchmarks, one-shot builds).
    pub fn from_objects<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Model {
        let mut m = Model::default();
        for s in services.into_iter().filter_map(ServiceInfo::from_service) {
            m.services.insert(s.key.clone(), s);
        }
        for s in slices.into_iter().filter_map(SliceInfo::from_slice) {
            m.slices.insert(s.key.clone(), s);
        }
        for p in pods.into_iter().filter_map(PodInfo::from_pod) {
            m.pods.insert(p.key.clone(), p);
        }
        m
    }
}
