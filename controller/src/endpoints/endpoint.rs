//! One pod as the endpoints of one Service: addresses per family, conditions, resolved ports (upstream `podToEndpoint`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use crate::podutil;

/// The node label a pod's zone comes from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// `discovery.k8s.io/v1` address type of an IP.
pub fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') { "IPv6" } else { "IPv4" }
}

/// The address types a Service gets slices for (upstream `getAddressTypesForService`):
/// its `ipFamilies`, else the family of its ClusterIP, else (headless, nothing allocated) both.
pub fn address_types(service: &Service) -> Vec<&'static str> {
    let spec = service.spec.clone().unwrap_or_default();
    let families: Vec<&'static str> = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some("IPv4"),
            "IPv6" => Some("IPv6"),
            _ => None,
        })
        .collect();
    if !families.is_empty() {
        return families;
    }
    match spec.cluster_ip.as_deref() {
        Some(ip) if !ip.is_empty() && ip != "None" => vec![address_type(ip)],
        _ => vec!["IPv4", "IPv6"],
    }
}

/// `spec.clusterIP` is `None`.
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod belongs in the endpoints at all (upstream `ShouldPodBeInEndpoints`): it has an IP
/// and has not finished; terminating pods only when `include_terminating`.
pub fn should_include(pod: &Pod, include_terminating: bool) -> bool {
    !podutil::is_terminal(pod)
        && !podutil::pod_ips(pod).is_empty()
        && (include_terminating || !podutil::is_terminating(pod))
}

/// The pod's hostname is published for the Service (upstream `ShouldSetHostname`).
pub fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace)
        .then(|| hostname.to_owned())
}

/// The pod as an object reference (`targetRef`).
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The Service's ports as this pod serves them, sorted; ports whose named `targetPort` the pod
/// does not declare are left out (as upstream does).
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(podutil::find_port(pod, sp)?),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    sort_ports(&mut ports);
    ports
}

/// Ports in a canonical order, so that equal sets compare equal.
pub fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by(|a, b| (&a.name, a.port, &a.protocol).cmp(&(&b.name, b.port, &b.protocol)));
}

/// A desired endpoint and the group (address type, ports) it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub address_type: &'static str,
    pub ports: Vec<EndpointPort>,
    pub endpoint: Endpoint,
}

/// The endpoints of `pod` for `service`, one per address type the Service has and the pod
/// has an IP of. `zones` maps node names to their zone label.
pub fn pod_endpoints(
    service: &Service,
    pod: &Pod,
    zones: &BTreeMap<String, String>,
) -> Vec<Desired> {
    if !should_include(pod, true) {
        return Vec::new();
    }
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = podutil::is_ready(pod);
    let terminating = podutil::is_terminating(pod);
    // Upstream: "ready" is never true for a terminating pod unless publishNotReadyAddresses.
    let ready = publish_not_ready || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node_name.as_ref().and_then(|n| zones.get(n)).cloned();
    let ports = endpoint_ports(service, pod);
    let ips = podutil::pod_ips(pod);
    address_types(service)
        .into_iter()
        .filter_map(|family| {
            let ip = ips.iter().find(|ip| address_type(ip) == family)?;
            Some(Desired {
                address_type: family,
                ports: ports.clone(),
                endpoint: Endpoint {
                    addresses: vec![ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(serving),
                        terminating: Some(terminating),
                    }),
                    hostname: hostname_for(pod, service),
                    node_name: node_name.clone(),
                    zone: zone.clone(),
                    target_ref: Some(target_ref(pod)),
                    ..Endpoint::default()
                },
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn service(extra: serde_json::Value) -> Service {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.5", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap_or_default()
    }

    pub fn pod(name: &str, ip: &str, ready: bool, port: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                     "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap_or_default()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    #[test]
    fn conditions_zone_and_ports() {
        let svc = service(json!({}));
        let zones = [("n1".to_owned(), "z1".to_owned())].into();
        let eps = pod_endpoints(&svc, &pod("a", "10.0.0.1", true, 8080), &zones);
        assert_eq!(eps.len(), 1);
        let ep = &eps[0].endpoint;
        assert_eq!(ep.zone.as_deref(), Some("z1"));
        assert_eq!(ep.node_name.as_deref(), Some("n1"));
        let c = ep.conditions.clone().unwrap_or_default();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(eps[0].ports[0].port, Some(8080));

        let mut terminating = pod("b", "10.0.0.2", true, 8080);
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let c = pod_endpoints(&svc, &terminating, &zones)[0]
            .endpoint
            .conditions
            .clone()
            .unwrap_or_default();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );

        let pnr = service(json!({"spec": {"publishNotReadyAddresses": true}}));
        let c = pod_endpoints(&pnr, &pod("c", "10.0.0.3", false, 1), &zones)[0]
            .endpoint
            .conditions
            .clone()
            .unwrap_or_default();
        assert_eq!((c.ready, c.serving), (Some(true), Some(false)));
    }

    #[test]
    fn families_and_hostname() {
        let dual = service(json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}}));
        let mut p = pod("a", "10.0.0.1", true, 80);
        if let Some(st) = p.status.as_mut() {
            st.pod_ips =
                serde_json::from_value(json!([{"ip": "10.0.0.1"}, {"ip": "fd00::1"}])).ok();
        }
        if let Some(spec) = p.spec.as_mut() {
            spec.hostname = Some("a".into());
            spec.subdomain = Some("web".into());
        }
        let eps = pod_endpoints(&dual, &p, &BTreeMap::new());
        assert_eq!(
            eps.iter().map(|d| d.address_type).collect::<Vec<_>>(),
            ["IPv4", "IPv6"]
        );
        assert_eq!(eps[1].endpoint.addresses, ["fd00::1"]);
        assert_eq!(eps[0].endpoint.hostname.as_deref(), Some("a"));
        let headless = service(json!({"spec": {"clusterIP": "None", "ipFamilies": null}}));
        assert_eq!(address_types(&headless), ["IPv4", "IPv6"]);
    }
}
