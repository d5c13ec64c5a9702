//! The legacy `core/v1` Endpoints of a Service with a selector (upstream's endpoints controller).
//!
//! Ready pods go to `addresses`, the others to `notReadyAddresses`; pods are grouped into
//! subsets by the ports they serve (upstream `RepackSubsets`). At most [`MAX_ADDRESSES`]
//! addresses are kept (ready ones first), marked with the `over-capacity: truncated` annotation.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::endpoint::{
    address_type, address_types, hostname_for, is_headless, should_include, target_ref,
};
use super::slices::HEADLESS_LABEL;
use crate::podutil;

/// Upstream's `maxCapacity`.
pub const MAX_ADDRESSES: usize = 1000;
/// Annotation upstream sets when it truncated the addresses.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The Endpoints object `service` should have given the pods its selector matches.
pub fn desired(service: &Service, pods: &[&Pod]) -> Endpoints {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let family = address_types(service).first().copied().unwrap_or("IPv4");
    let service_ports = spec.ports.clone().unwrap_or_default();
    // ports (as a key) → (ports, ready, not ready)
    type Group = (
        Vec<EndpointPort>,
        Vec<EndpointAddress>,
        Vec<EndpointAddress>,
    );
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods {
        if !should_include(pod, publish_not_ready) {
            continue;
        }
        let Some(ip) = podutil::pod_ips(pod)
            .into_iter()
            .find(|ip| address_type(ip) == family)
        else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            hostname: hostname_for(pod, service),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(target_ref(pod)),
        };
        let mut ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port: podutil::find_port(pod, sp)?,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        // A pod serving none of the ports is not an endpoint, except for a port-less headless
        // Service, where the addresses are the point.
        if ports.is_empty() && !(service_ports.is_empty() && is_headless(service)) {
            continue;
        }
        ports.sort_by(|a, b| (&a.name, a.port).cmp(&(&b.name, b.port)));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let group = groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish_not_ready || podutil::is_ready(pod) {
            group.1.push(address);
        } else {
            group.2.push(address);
        }
    }
    let mut ready_left = MAX_ADDRESSES;
    let total: usize = groups.values().map(|g| g.1.len() + g.2.len()).sum();
    let mut subsets: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(ports, mut ready, not_ready)| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            ready.truncate(ready_left);
            ready_left -= ready.len();
            (ports, ready, not_ready)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(ports, ready, mut not_ready)| {
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    // Not-ready addresses get what capacity the ready ones left.
    let mut left = ready_left;
    for subset in &mut subsets {
        if let Some(nr) = subset.not_ready_addresses.as_mut() {
            nr.truncate(left);
            left -= nr.len();
            if nr.is_empty() {
                subset.not_ready_addresses = None;
            }
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    subsets.sort_by(|a, b| first_ip(a).cmp(first_ip(b)));

    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    let annotations = (total > MAX_ADDRESSES)
        .then(|| BTreeMap::from([(OVER_CAPACITY_ANNOTATION.to_owned(), "truncated".to_owned())]));
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            annotations,
            // Beyond upstream (which deletes Endpoints itself): the garbage collector removes
            // them with their Service.
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name: service.metadata.name.clone().unwrap_or_default(),
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: None,
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

fn first_ip(s: &EndpointSubset) -> &str {
    s.addresses
        .iter()
        .chain(s.not_ready_addresses.iter())
        .flatten()
        .map(|a| a.ip.as_str())
        .next()
        .unwrap_or("")
}

/// `stored` already says what `desired` says (so it is not rewritten).
pub fn up_to_date(stored: &Endpoints, desired: &Endpoints) -> bool {
    let subsets = |e: &Endpoints| e.subsets.clone().filter(|s| !s.is_empty());
    let labels = |e: &Endpoints| e.metadata.labels.clone().filter(|l| !l.is_empty());
    let annotation = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION).cloned())
    };
    subsets(stored) == subsets(desired)
        && labels(stored) == labels(desired)
        && annotation(stored) == annotation(desired)
        && stored.metadata.owner_references == desired.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::tests::{pod, service};
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_and_not_ready_grouped_by_ports() {
        let svc = service(json!({}));
        let pods = [
            pod("a", "10.0.0.2", true, 8080),
            pod("b", "10.0.0.1", false, 8080),
            pod("c", "10.0.0.3", true, 9090),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let ep = desired(&svc, &refs);
        let subsets = ep.subsets.clone().unwrap_or_default();
        assert_eq!(subsets.len(), 2);
        let s0 = &subsets[0];
        assert_eq!(
            s0.not_ready_addresses.clone().unwrap_or_default()[0].ip,
            "10.0.0.1"
        );
        assert_eq!(s0.addresses.clone().unwrap_or_default()[0].ip, "10.0.0.2");
        assert_eq!(s0.ports.clone().unwrap_or_default()[0].port, 8080);
        assert_eq!(subsets[1].ports.clone().unwrap_or_default()[0].port, 9090);
        assert!(up_to_date(&ep, &desired(&svc, &refs)));
    }

    #[test]
    fn truncated_over_1000() {
        let svc = service(json!({}));
        let pods: Vec<Pod> = (0..1100)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    i % 2 == 0,
                    80,
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let ep = desired(&svc, &refs);
        let subsets = ep.subsets.clone().unwrap_or_default();
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!((ready, not_ready), (550, 450));
        assert_eq!(
            ep.metadata.annotations.unwrap_or_default()[OVER_CAPACITY_ANNOTATION],
            "truncated"
        );
    }
}
