//! `PodSandboxSpec` from a k8s-openapi `Pod`: DNS fields, hostname, and the pod-level limits.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::error::SandboxError;
use super::quantity;
use super::spec::{DnsOption, DnsPolicy, HostAlias, PodDnsConfig, PodResources, PodSandboxSpec};

impl PodSandboxSpec {
    /// The sandbox fields of `pod`. Limits are the sum over containers (if every container
    /// sets that limit; one unlimited container makes the pod unlimited), and at least the
    /// largest init container's, as upstream's effective pod resources.
    pub fn from_pod(pod: &Pod) -> Result<Self, SandboxError> {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let pod_name = format!("{namespace}/{name}");
        let spec = pod.spec.clone().unwrap_or_default();
        let invalid =
            |field: &'static str, value: &str, reason: String| SandboxError::InvalidSpec {
                pod: pod_name.clone(),
                field,
                value: value.to_string(),
                reason,
            };
        let dns_policy = spec
            .dns_policy
            .as_deref()
            .unwrap_or("")
            .parse::<DnsPolicy>()
            .map_err(|e| {
                invalid(
                    "spec.dnsPolicy",
                    spec.dns_policy.as_deref().unwrap_or(""),
                    e,
                )
            })?;
        let dns_config = spec.dns_config.as_ref().map(|c| PodDnsConfig {
            nameservers: c.nameservers.clone().unwrap_or_default(),
            searches: c.searches.clone().unwrap_or_default(),
            options: c
                .options
                .iter()
                .flatten()
                .map(|o| DnsOption {
                    name: o.name.clone().unwrap_or_default(),
                    value: o.value.clone(),
                })
                .collect(),
        });
        let hostname = match spec.hostname.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h.to_string(),
            None => truncate_hostname(&name),
        };
        let host_aliases = spec
            .host_aliases
            .iter()
            .flatten()
            .map(|a| HostAlias {
                ip: a.ip.clone(),
                hostnames: a.hostnames.clone().unwrap_or_default(),
            })
            .collect();
        let sum = |containers: &[Container],
                   key: &str,
                   limits: bool|
         -> Result<Option<u64>, SandboxError> {
            let mut total: u64 = 0;
            for c in containers {
                let res = c.resources.as_ref();
                let map = if limits {
                    res.and_then(|r| r.limits.as_ref())
                } else {
                    res.and_then(|r| r.requests.as_ref())
                };
                let Some(q) = map.and_then(|m| m.get(key)) else {
                    return Ok(None);
                };
                let v = if key == "cpu" {
                    quantity::cpu_millis(&q.0)
                } else {
                    quantity::bytes(&q.0)
                }
                .map_err(|e| {
                    invalid(
                        "resources",
                        &q.0,
                        format!("container {}: {key}: {e}", c.name),
                    )
                })?;
                total = total.saturating_add(v);
            }
            Ok((!containers.is_empty()).then_some(total))
        };
        let init_max = |key: &str, limits: bool| -> Result<Option<u64>, SandboxError> {
            let mut max = None;
            for c in spec.init_containers.iter().flatten() {
                max = max.max(sum(std::slice::from_ref(c), key, limits)?);
            }
            Ok(max)
        };
        let effective = |key: &str, limits: bool| -> Result<Option<u64>, SandboxError> {
            let regular = sum(&spec.containers, key, limits)?;
            Ok(match (regular, init_max(key, limits)?) {
                (Some(r), Some(i)) => Some(r.max(i)),
                (r, _) => r,
            })
        };
        Ok(PodSandboxSpec {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace,
            name,
            host_network: spec.host_network.unwrap_or(false),
            dns_policy,
            dns_config,
            hostname,
            subdomain: spec.subdomain.clone().filter(|s| !s.is_empty()),
            host_aliases,
            resources: PodResources {
                cpu_limit_millis: effective("cpu", true)?,
                cpu_request_millis: effective("cpu", false)?,
                memory_limit_bytes: effective("memory", true)?,
            },
        })
    }
}

/// The pod name as a hostname: at most 63 characters, no trailing `-` or `.` (upstream).
fn truncate_hostname(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn limits_are_summed_and_dns_fields_copied() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "abc-1"},
            "spec": {
                "hostname": "h", "subdomain": "web", "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["1.1.1.1"], "options": [{"name": "ndots", "value": "2"}]},
                "hostAliases": [{"ip": "10.0.0.9", "hostnames": ["a", "b"]}],
                "initContainers": [{"name": "init", "resources": {"limits": {"cpu": "3", "memory": "1Mi"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}
                ]
            }
        }));
        let s = PodSandboxSpec::from_pod(&p).unwrap();
        assert_eq!(s.uid, "abc-1");
        assert_eq!(s.hostname, "h");
        assert_eq!(s.subdomain.as_deref(), Some("web"));
        assert_eq!(s.dns_policy, DnsPolicy::None);
        assert_eq!(
            s.dns_config.unwrap().options[0],
            DnsOption {
                name: "ndots".into(),
                value: Some("2".into())
            }
        );
        assert_eq!(s.host_aliases[0].hostnames, ["a", "b"]);
        // cpu: max(500m + 250m, init 3) = 3000; memory: 96Mi; requests: b has none → None.
        assert_eq!(s.resources.cpu_limit_millis, Some(3000));
        assert_eq!(s.resources.memory_limit_bytes, Some(96 << 20));
        assert_eq!(s.resources.cpu_request_millis, None);
    }

    #[test]
    fn unlimited_container_means_unlimited_pod_and_hostname_from_name() {
        let long = format!("{}-x", "a".repeat(62));
        let p = pod(serde_json::json!({
            "metadata": {"name": long, "uid": "u"},
            "spec": {"containers": [
                {"name": "a", "resources": {"limits": {"memory": "1Gi"}}},
                {"name": "b"}
            ]}
        }));
        let s = PodSandboxSpec::from_pod(&p).unwrap();
        assert_eq!(s.namespace, "default");
        assert_eq!(s.hostname, "a".repeat(62));
        assert_eq!(s.resources.memory_limit_bytes, None);
        assert_eq!(s.dns_policy, DnsPolicy::ClusterFirst);
    }

    #[test]
    fn bad_quantity_names_container() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "lots"}}}]}
        }));
        let err = PodSandboxSpec::from_pod(&p).unwrap_err().to_string();
        assert!(err.contains("app") && err.contains("lots"), "{err}");
    }
}
