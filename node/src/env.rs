//! A container's environment as the kubelet builds it: Service links, `envFrom`, `env` with
//! `fieldRef`, `resourceFieldRef`, ConfigMap and Secret keys, and `$(VAR)` expansion.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use skiff_api::quantity;

/// Why a container cannot be started with its environment (the pod shows
/// `CreateContainerConfigError` with this message, as upstream).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapMissing(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("secret {0:?} not found")]
    SecretMissing(String),
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("env {var}: unsupported fieldRef fieldPath {path:?}")]
    FieldPath { var: String, path: String },
    #[error("env {var}: unsupported resourceFieldRef resource {resource:?}")]
    Resource { var: String, resource: String },
    #[error("env {var}: invalid divisor {divisor:?}")]
    Divisor { var: String, divisor: String },
}

/// What environment resolution reads besides the pod: ConfigMaps and Secrets of the pod's
/// namespace (decoded Secret values), the namespace's Services, and the node's allocatable.
pub trait EnvSources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>>;
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// Services of the pod's namespace (for Service links), plus `default/kubernetes`.
    fn services(&self) -> Vec<Service>;
    /// The node's allocatable `cpu` and `memory`, for resourceFieldRef without a limit.
    fn allocatable(&self, resource: &str) -> Option<String>;
}

/// The environment of `container` in `pod`, in the order a process should get it.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &dyn EnvSources,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = Env::default();
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.enable_service_links).unwrap_or(true) {
        for (k, v) in service_links(&sources.services()) {
            env.set(k, v);
        }
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        if is_env_name(&format!("{prefix}{k}")) {
                            env.set(format!("{prefix}{k}"), v);
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapMissing(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name) {
                Some(data) => {
                    for (k, v) in data {
                        if is_env_name(&format!("{prefix}{k}")) {
                            env.set(format!("{prefix}{k}"), lossy(v));
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(EnvError::SecretMissing(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or(""), &env),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &var.name, &f.field_path)?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(name) if !name.is_empty() => spec
                            .into_iter()
                            .flat_map(|s| s.containers.iter())
                            .find(|c| c.name == name)
                            .unwrap_or(container),
                        _ => container,
                    };
                    resource_value(
                        target,
                        &var.name,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                        sources,
                    )?
                } else if let Some(r) = &from.config_map_key_ref {
                    match sources.config_map(&r.name) {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(EnvError::ConfigMapKeyMissing {
                                    namespace,
                                    name: r.name.clone(),
                                    key: r.key.clone(),
                                });
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(EnvError::ConfigMapMissing(r.name.clone())),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match sources.secret(&r.name) {
                        Some(data) => match data.get(&r.key) {
                            Some(v) => lossy(v.clone()),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(EnvError::SecretKeyMissing {
                                    namespace,
                                    name: r.name.clone(),
                                    key: r.key.clone(),
                                });
                            }
                        },
                        None if r.optional == Some(true) => continue,
                        None => return Err(EnvError::SecretMissing(r.name.clone())),
                    }
                } else {
                    String::new()
                }
            }
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

/// Variables in insertion order; a later set of the same name replaces the value in place.
#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
    index: BTreeMap<String, usize>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// Upstream's `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
/// undefined references are left as written.
fn expand(input: &str, env: &Env) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `$(VAR)` expansion of a container's command and args against its environment.
pub fn expand_args(args: &[String], env: &[(String, String)]) -> Vec<String> {
    let mut vars = Env::default();
    for (k, v) in env {
        vars.set(k.clone(), v.clone());
    }
    args.iter().map(|a| expand(a, &vars)).collect()
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The downward API value of `path` (also used by downwardAPI volumes).
pub fn field_value(pod: &Pod, var: &str, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(|key| map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v);
    }
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => status.map(|s| {
            s.host_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => status.map(|s| {
            s.pod_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        _ => {
            return Err(EnvError::FieldPath {
                var: var.to_owned(),
                path: path.to_owned(),
            });
        }
    };
    Ok(value.unwrap_or_default())
}

/// `key="value"` lines, sorted, as the downward API writes label and annotation maps.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A resourceFieldRef value: the container's limit (or the node's allocatable when unset)
/// or request, divided by `divisor` and rounded up, as upstream.
pub fn resource_value(
    container: &Container,
    var: &str,
    resource: &str,
    divisor: Option<&str>,
    sources: &dyn EnvSources,
) -> Result<String, EnvError> {
    let resources = container.resources.as_ref();
    let (section, name) = resource.split_once('.').ok_or_else(|| EnvError::Resource {
        var: var.to_owned(),
        resource: resource.to_owned(),
    })?;
    let map = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => {
            return Err(EnvError::Resource {
                var: var.to_owned(),
                resource: resource.to_owned(),
            });
        }
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") {
        return Err(EnvError::Resource {
            var: var.to_owned(),
            resource: resource.to_owned(),
        });
    }
    let raw = map
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
        .or_else(|| {
            // Requests default to limits; a missing limit is the node's allocatable.
            let limit = resources
                .and_then(|r| r.limits.as_ref())
                .and_then(|m| m.get(name));
            match section {
                "requests" => limit.map(|q| q.0.clone()).or(Some("0".into())),
                _ => sources.allocatable(name),
            }
        })
        .unwrap_or_else(|| "0".into());
    let value = quantity::parse_nanos(&raw).unwrap_or(0);
    let divisor_text = divisor.filter(|d| !d.is_empty()).unwrap_or("1");
    let div = quantity::parse_nanos(divisor_text)
        .filter(|d| *d > 0)
        .ok_or_else(|| EnvError::Divisor {
            var: var.to_owned(),
            divisor: divisor_text.to_owned(),
        })?;
    Ok(((value + div - 1) / div).to_string())
}

/// Upstream's Service environment variables (`FromServices` in the kubelet): for every
/// Service with a ClusterIP, `<NAME>_SERVICE_HOST`, `_SERVICE_PORT`, `_SERVICE_PORT_<PORT>`
/// and the Docker-link style `<NAME>_PORT...` variables.
pub fn service_links(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Vec::new();
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref() else {
            continue;
        };
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let Some(name) = svc.metadata.name.as_deref() else {
            continue;
        };
        let prefix = name.to_uppercase().replace('-', "_");
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!("{}://{host}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in ports {
            let protocol = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, protocol.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{host}:{}", protocol.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), protocol.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_owned()));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Sources;
    impl EnvSources for Sources {
        fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
            (name == "cm").then(|| {
                BTreeMap::from([
                    ("A".into(), "a".into()),
                    ("1bad".into(), "x".into()),
                    ("mode".into(), "fast".into()),
                ])
            })
        }
        fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
            (name == "s").then(|| BTreeMap::from([("token".into(), b"hunter2".to_vec())]))
        }
        fn services(&self) -> Vec<Service> {
            vec![
                serde_json::from_value(json!({"metadata": {"name": "redis-primary"}, "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]}})).unwrap(),
                serde_json::from_value(json!({"metadata": {"name": "headless"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})).unwrap(),
            ]
        }
        fn allocatable(&self, resource: &str) -> Option<String> {
            Some(if resource == "cpu" { "2" } else { "8Gi" }.into())
        }
    }

    fn pod(container: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "default", "containers": [container]},
            "status": {"podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00:10:244::5"}], "hostIP": "10.0.0.1"},
        }))
        .unwrap()
    }

    fn env_of(container: serde_json::Value) -> Result<BTreeMap<String, String>, EnvError> {
        let p = pod(container);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        container_env(&p, &c, &Sources).map(|v| v.into_iter().collect())
    }

    #[test]
    fn values_field_refs_and_expansion() {
        let env = env_of(json!({"name": "c", "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "GREETING", "value": "hi $(NAME) in $(NS), $$(NAME) $(NOPE)"},
        ]}))
        .unwrap();
        assert_eq!(env["NAME"], "web-0");
        assert_eq!(env["APP"], "web");
        assert_eq!(env["IPS"], "10.244.0.5,fd00:10:244::5");
        assert_eq!(env["NODE"], "n1");
        assert_eq!(env["GREETING"], "hi web-0 in shop, $(NAME) $(NOPE)");
    }

    #[test]
    fn config_maps_secrets_and_env_from() {
        let env = env_of(json!({"name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "s"}}],
            "env": [
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
                {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            ]}))
        .unwrap();
        assert_eq!(env["CM_A"], "a");
        assert_eq!(env["CM_mode"], "fast");
        // A prefix can make a key a valid name; without one, invalid names are skipped.
        assert_eq!(env["CM_1bad"], "x");
        let bare =
            env_of(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cm"}}]})).unwrap();
        assert!(!bare.contains_key("1bad"));
        assert_eq!(env["token"], "hunter2");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["TOKEN"], "hunter2");
        assert!(!env.contains_key("OPT"));

        let err = env_of(json!({"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "nope"}}}]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "couldn't find key nope in ConfigMap shop/cm"
        );
        let err = env_of(json!({"name": "c", "envFrom": [{"secretRef": {"name": "missing"}}]}))
            .unwrap_err();
        assert_eq!(err.to_string(), "secret \"missing\" not found");
    }

    #[test]
    fn service_links_follow_upstream_names() {
        let env = env_of(json!({"name": "c"})).unwrap();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "10.96.0.11");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT"], "6379");
        assert_eq!(env["REDIS_PRIMARY_SERVICE_PORT_REDIS"], "6379");
        assert_eq!(env["REDIS_PRIMARY_PORT"], "tcp://10.96.0.11:6379");
        assert_eq!(env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"], "10.96.0.11");
        assert!(!env.keys().any(|k| k.starts_with("HEADLESS")));

        let mut p = pod(json!({"name": "c"}));
        p.spec.as_mut().unwrap().enable_service_links = Some(false);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        assert!(container_env(&p, &c, &Sources).unwrap().is_empty());
    }

    #[test]
    fn container_env_overrides_service_links() {
        let env = env_of(
            json!({"name": "c", "env": [{"name": "REDIS_PRIMARY_SERVICE_HOST", "value": "mine"}]}),
        )
        .unwrap();
        assert_eq!(env["REDIS_PRIMARY_SERVICE_HOST"], "mine");
    }

    #[test]
    fn resource_field_refs() {
        let env = env_of(json!({"name": "c",
            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "250m"}},
            "env": [
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "CPU_LIM", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "CPU_UP", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            ]}))
        .unwrap();
        assert_eq!(env["MEM"], "128");
        assert_eq!(env["CPU_REQ"], "250");
        assert_eq!(env["CPU_LIM"], "2");
        assert_eq!(env["CPU_UP"], "1");
    }

    #[test]
    fn args_expand_against_the_environment() {
        let env = vec![("PORT".to_owned(), "8080".to_owned())];
        assert_eq!(
            expand_args(&["--port=$(PORT)".into(), "$$(PORT)".into()], &env),
            vec!["--port=8080", "$(PORT)"]
        );
    }
}
