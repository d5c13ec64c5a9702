//! Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets cut down to what routing
//! needs (as CoreDNS's `object` package does). Invalid parts of an Ingress are dropped here
//! with a [`Problem`] naming the field, so one bad path never hides the rest of the object.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

mod ingress;
pub use ingress::*;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The annotation marking an IngressClass as the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Secret type of a certificate and key.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Key {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Something wrong with an object, reported (as an Event, a log line) instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub object: Key,
    /// The field path, e.g. `spec.rules[0].http.paths[1].path`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// An IngressClass, for class selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo {
    pub name: String,
    pub controller: String,
    pub is_default: bool,
}

impl ClassInfo {
    pub fn from_class(c: &IngressClass) -> Option<ClassInfo> {
        Some(ClassInfo {
            name: c.metadata.name.clone()?,
            controller: c
                .spec
                .as_ref()
                .and_then(|s| s.controller.clone())
                .unwrap_or_default(),
            is_default: c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true"),
        })
    }
}

/// A TCP port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort {
    /// Empty for the single unnamed port.
    pub name: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: Key,
    /// TCP ports only: the ingress proxies HTTP.
    pub ports: Vec<ServicePort>,
    /// `type: ExternalName`: not routable through EndpointSlices.
    pub external_name: bool,
}

impl ServiceInfo {
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let key = key_of(&svc.metadata)?;
        let spec = svc.spec.as_ref();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        Some(ServiceInfo {
            key,
            ports,
            external_name: spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName"),
        })
    }

    /// The Service port an Ingress backend names.
    pub fn port(&self, r: &PortRef) -> Option<&ServicePort> {
        self.ports.iter().find(|p| match r {
            PortRef::Number(n) => p.port == *n,
            PortRef::Name(n) => &p.name == n,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub key: Key,
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    /// TCP ports: name (empty if unnamed) → target port.
    pub ports: Vec<ServicePort>,
    /// Addresses of ready endpoints (`conditions.ready` unset means ready).
    pub ready: Vec<IpAddr>,
}

impl SliceInfo {
    /// `None` for slices without a service label or with FQDN addresses.
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
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| e.addresses.iter().filter_map(|a| a.parse().ok()))
            .collect();
        Some(SliceInfo {
            key,
            service,
            ports,
            ready,
        })
    }
}

/// A `kubernetes.io/tls` Secret's certificate chain and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecret {
    pub key: Key,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsSecret {
    /// `None` for Secrets of other types; an error naming the missing field for a TLS Secret
    /// without `tls.crt` or `tls.key`.
    pub fn from_secret(s: &Secret) -> Option<Result<TlsSecret, Problem>> {
        let key = key_of(&s.metadata)?;
        if s.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            return None;
        }
        let get = |field: &str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(field))
                .map(|b| b.0.clone())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| Problem {
                    object: key.clone(),
                    field: format!("data[{field}]"),
                    message: format!("TLS Secret has no {field}"),
                })
        };
        Some((|| {
            Ok(TlsSecret {
                cert_pem: get("tls.crt")?,
                key_pem: get("tls.key")?,
                key: key.clone(),
            })
        })())
    }
}

pub(crate) fn key_of(meta: &ObjectMeta) -> Option<Key> {
    Some(Key {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    })
}

/// Everything a route table and certificate store are built from.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub classes: BTreeMap<String, ClassInfo>,
    pub ingresses: BTreeMap<Key, IngressInfo>,
    pub services: BTreeMap<Key, ServiceInfo>,
    pub slices: BTreeMap<Key, SliceInfo>,
    pub secrets: BTreeMap<Key, Result<TlsSecret, Problem>>,
}

impl Model {
    pub fn add_class(&mut self, c: &IngressClass) {
        if let Some(c) = ClassInfo::from_class(c) {
            self.classes.insert(c.name.clone(), c);
        }
    }
    pub fn add_ingress(&mut self, i: &Ingress) {
        if let Some(i) = IngressInfo::from_ingress(i) {
            self.ingresses.insert(i.key.clone(), i);
        }
    }
    pub fn add_service(&mut self, s: &Service) {
        if let Some(s) = ServiceInfo::from_service(s) {
            self.services.insert(s.key.clone(), s);
        }
    }
    pub fn add_slice(&mut self, s: &EndpointSlice) {
        if let Some(s) = SliceInfo::from_slice(s) {
            self.slices.insert(s.key.clone(), s);
        }
    }
    pub fn add_secret(&mut self, s: &Secret) {
        if let (Some(k), Some(t)) = (key_of(&s.metadata), TlsSecret::from_secret(s)) {
            self.secrets.insert(k, t);
        }
    }
}
