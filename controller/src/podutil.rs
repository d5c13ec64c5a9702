//! Pod facts several controllers ask: readiness, terminal phases, named ports, label selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ServicePort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The pod's `Ready` condition is `True` (upstream `podutil.IsPodReady`).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `status.phase`, empty when unset.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Running and Ready: what OrderedReady waits for before the next ordinal.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// Failed or Succeeded: the pod's containers will never run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

/// `metadata.deletionTimestamp` is set.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's IPs in `status.podIPs` order (falling back to `status.podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .iter()
        .filter(|ip| !ip.is_empty())
        .cloned()
        .collect()
}

/// The container port a service port reaches on this pod (upstream `podutil.FindPort`):
/// a number as is (the service port when unset), a name looked up in the pod's containers.
/// `None` when the name is not declared by this pod.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.iter().flatten().find_map(|p| {
                    (p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                        .then_some(p.container_port)
                })
            })
        }
    }
}

/// A Service's `spec.selector` (equality only) matches these labels.
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A `LabelSelector` matches these labels (an empty selector matches everything, as in
/// `metav1.LabelSelectorAsSelector`). An unknown operator matches nothing.
pub fn label_selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let by_map = selector
        .match_labels
        .as_ref()
        .is_none_or(|m| map_selector_matches(m, Some(labels)));
    by_map
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, labels))
}

fn requirement_matches(r: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    fn pod_with_port(name: &str, number: i32) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(name.into()),
                        container_port: number,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn named_target_port_resolves_per_pod() {
        let port = ServicePort {
            port: 80,
            target_port: Some(IntOrString::String("http".into())),
            ..ServicePort::default()
        };
        assert_eq!(find_port(&pod_with_port("http", 8080), &port), Some(8080));
        assert_eq!(find_port(&pod_with_port("http", 9090), &port), Some(9090));
        assert_eq!(find_port(&pod_with_port("grpc", 9090), &port), None);
        let unset = ServicePort {
            port: 80,
            ..ServicePort::default()
        };
        assert_eq!(find_port(&Pod::default(), &unset), Some(80));
    }

    #[test]
    fn label_selectors() {
        let labels: BTreeMap<String, String> = [("app".to_owned(), "web".to_owned())].into();
        let sel = LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(label_selector_matches(&sel, Some(&labels)));
        let mut other = labels.clone();
        other.insert("tier".into(), "x".into());
        assert!(!label_selector_matches(&sel, Some(&other)));
        assert!(!label_selector_matches(&sel, None));
    }
}
