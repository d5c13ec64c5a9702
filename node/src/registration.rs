//! Node registration: creates/updates this node's Node object (labels, pod CIDRs, capacity,
//! addresses, conditions, nodeInfo, kubelet endpoint), renews its Lease in `kube-node-lease`
//! and refreshes its status, as upstream's kubelet node-status manager does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The namespace node Leases live in (the node lifecycle controller watches it).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `status.nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";
/// Pods a node accepts (upstream's `--max-pods` default).
pub const MAX_PODS: u32 = 110;
/// Lease duration written into the Lease (upstream's default, 40 s).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// What went wrong while registering or heartbeating.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(
        "cannot {action} (check that the API server is reachable and the credentials may write Nodes and Leases): {source}"
    )]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "node name {name:?} is not a valid DNS subdomain: use lowercase letters, digits, '-' and '.'"
    )]
    InvalidName { name: String },
}

fn api_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> RegistrationError {
    let action = action.into();
    move |source| RegistrationError::Api { action, source }
}

/// How this node presents itself; filled by the caller (`skiff up`, `skiff server`, agent).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name (also its `kubernetes.io/hostname` label).
    pub name: String,
    /// Extra labels, merged over the well-known ones.
    pub labels: BTreeMap<String, String>,
    /// `spec.podCIDRs` (first one also `spec.podCIDR`), e.g. `10.244.0.0/24`, `fd00:10:244::/64`.
    pub pod_cidrs: Vec<String>,
    /// `InternalIP` addresses the API server reaches the kubelet's streaming server on.
    pub internal_ips: Vec<IpAddr>,
    /// The `Hostname` address.
    pub hostname: String,
    /// `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub kubelet_port: u16,
    /// How often the Lease is renewed (upstream: 10 s).
    pub lease_interval: Duration,
    /// How often the status is rewritten when nothing changed (upstream: 60 s... 5 min).
    pub status_interval: Duration,
}

impl NodeConfig {
    /// A config with the default intervals (Lease 10 s, status 60 s) and no extra labels.
    pub fn new(name: impl Into<String>, kubelet_port: u16) -> Self {
        let name = name.into();
        Self {
            hostname: name.clone(),
            name,
            labels: BTreeMap::new(),
            pod_cidrs: Vec::new(),
            internal_ips: Vec::new(),
            kubelet_port,
            lease_interval: Duration::from_secs(10),
            status_interval: Duration::from_secs(60),
        }
    }
}

/// Facts about the machine that go into capacity and nodeInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    /// Kubernetes spelling (`amd64`, `arm64`).
    pub architecture: String,
}

impl HostFacts {
    /// Reads this host: available parallelism, /proc/meminfo, the kernel release, /etc/os-release.
    /// Anything unreadable degrades to a placeholder (logged), never fails registration.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo_total(&t))
            .unwrap_or_else(|| {
                tracing::warn!("cannot read MemTotal from /proc/meminfo: reporting 0 memory");
                0
            });
        let kernel_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let os_image = os_image(Path::new("/etc/os-release"));
        Self {
            cpus,
            memory_bytes,
            kernel_version,
            os_image,
            architecture: kube_arch(std::env::consts::ARCH).to_owned(),
        }
    }
}

/// `MemTotal` in bytes from /proc/meminfo text.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    let factor = match words.next() {
        Some("kB") | Some("KB") => 1024,
        None => 1,
        Some(_) => return None,
    };
    value.checked_mul(factor)
}

/// `PRETTY_NAME` of an os-release file, else `Linux`.
fn os_image(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| parse_pretty_name(&t))
        .unwrap_or_else(|| "Linux".to_owned())
}

/// `PRETTY_NAME` from os-release text (quotes removed).
pub fn parse_pretty_name(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_owned())
}

/// Rust's architecture names as Kubernetes (GOARCH) spells them.
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node's labels: the well-known ones, then the configured extras.
pub fn node_labels(config: &NodeConfig, facts: &HostFacts) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), config.name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), facts.architecture.clone()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "beta.kubernetes.io/arch".to_owned(),
            facts.architecture.clone(),
        ),
    ]);
    labels.extend(config.labels.clone());
    labels
}

/// The Node's `status` (as JSON), with the conditions' transition times kept from `previous`
/// when a condition's status did not change.
pub fn node_status(
    config: &NodeConfig,
    facts: &HostFacts,
    now: jiff::Timestamp,
    previous: Option<&Value>,
) -> Value {
    let now_s = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_bytes / 1024),
        "pods": MAX_PODS.to_string(),
        "ephemeral-storage": "0",
    });
    let mut addresses: Vec<Value> = config
        .internal_ips
        .iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip.to_string()}))
        .collect();
    addresses.push(json!({"type": "Hostname", "address": config.hostname}));
    let conditions: Vec<Value> = [
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| {
        let transition = previous
            .and_then(|p| p["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
            .filter(|c| c["status"] == status)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map_or_else(|| now_s.clone(), str::to_owned);
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now_s, "lastTransitionTime": transition})
    })
    .collect();
    json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": addresses,
        "conditions": conditions,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image,
            "containerRuntimeVersion": format!("skiff://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": facts.architecture,
        },
    })
}

/// True when every condition this kubelet owns has the status it reports (something else,
/// e.g. the node lifecycle controller marking the node Unknown, makes it rewrite at once).
fn conditions_as_desired(status: Option<&Value>) -> bool {
    let Some(conditions) = status.and_then(|s| s["conditions"].as_array()) else {
        return false;
    };
    [
        ("Ready", "True"),
        ("MemoryPressure", "False"),
        ("DiskPressure", "False"),
        ("PIDPressure", "False"),
    ]
    .iter()
    .all(|(kind, want)| {
        conditions
            .iter()
            .any(|c| c["type"] == *kind && c["status"] == *want)
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// Creates the Node (or updates labels and an unset podCIDR of an existing one), then writes
/// its status. Returns the Node as stored.
pub async fn register(
    client: &kube::Client,
    config: &NodeConfig,
    facts: &HostFacts,
) -> Result<Node, RegistrationError> {
    if !valid_name(&config.name) {
        return Err(RegistrationError::InvalidName {
            name: config.name.clone(),
        });
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = node_labels(config, facts);
    let mut spec = json!({});
    if let Some(first) = config.pod_cidrs.first() {
        spec = json!({"podCIDR": first, "podCIDRs": config.pod_cidrs});
    }
    let existing = nodes
        .get_opt(&config.name)
        .await
        .map_err(api_err(format!("read Node {}", config.name)))?;
    let previous_status = match existing {
        None => {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": config.name, "labels": labels},
                "spec": spec,
            }))
            .map_err(|e| RegistrationError::Api {
                action: format!("build Node {}", config.name),
                source: kube::Error::SerdeError(e),
            })?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map_err(api_err(format!("create Node {}", config.name)))?;
            tracing::info!(node = %config.name, "registered the node");
            None
        }
        Some(node) => {
            // podCIDR is immutable once set: only fill it in when missing.
            let has_cidr = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .is_some();
            let mut patch = json!({"metadata": {"labels": labels}});
            if !has_cidr && !config.pod_cidrs.is_empty() {
                patch["spec"] = spec;
            }
            nodes
                .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(api_err(format!("update Node {}", config.name)))?;
            tracing::info!(node = %config.name, "the node was already registered: updated it");
            node.status.and_then(|s| serde_json::to_value(s).ok())
        }
    };
    write_status(client, config, facts, previous_status.as_ref()).await
}

async fn write_status(
    client: &kube::Client,
    config: &NodeConfig,
    facts: &HostFacts,
    previous: Option<&Value>,
) -> Result<Node, RegistrationError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = node_status(config, facts, jiff::Timestamp::now(), previous);
    nodes
        .patch_status(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .map_err(api_err(format!("write the status of Node {}", config.name)))
}

/// Creates or renews the node's Lease (holder = node, owned by the Node so it goes with it).
pub async fn renew_lease(
    client: &kube::Client,
    config: &NodeConfig,
    node_uid: Option<&str>,
) -> Result<Lease, RegistrationError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let mut metadata = json!({"name": config.name});
    if let Some(uid) = node_uid {
        metadata["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node",
            "name": config.name, "uid": uid}]);
    }
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": metadata,
        "spec": {"holderIdentity": config.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                 "renewTime": now},
    });
    let patched = leases
        .patch(
            &config.name,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"holderIdentity": config.name, "renewTime": now,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS}}),
            ),
        )
        .await;
    match patched {
        Ok(lease) => Ok(lease),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease =
                serde_json::from_value(body).map_err(|e| RegistrationError::Api {
                    action: format!("build Lease {}", config.name),
                    source: kube::Error::SerdeError(e),
                })?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(api_err(format!(
                    "create Lease {LEASE_NAMESPACE}/{}",
                    config.name
                )))
        }
        Err(e) => Err(api_err(format!(
            "renew Lease {LEASE_NAMESPACE}/{}",
            config.name
        ))(e)),
    }
}

/// Registers the node, then renews its Lease every `lease_interval` and rewrites its status
/// every `status_interval` or when the host facts change, until `shutdown` resolves.
/// Failures after registration are logged and retried on the next tick.
pub async fn run(
    client: kube::Client,
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RegistrationError> {
    let mut facts = HostFacts::detect();
    let node = register(&client, &config, &facts).await?;
    let mut uid = node.metadata.uid.clone();
    let mut last_status = node.status.and_then(|s| serde_json::to_value(s).ok());
    if let Err(e) = renew_lease(&client, &config, uid.as_deref()).await {
        tracing::warn!(error = %e, "cannot write the node Lease: retrying");
    }
    let mut last_status_write = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(config.lease_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Err(e) = renew_lease(&client, &config, uid.as_deref()).await {
            tracing::warn!(error = %e, "cannot renew the node Lease: retrying");
        }
        let new_facts = HostFacts::detect();
        let stale = last_status_write.elapsed() >= config.status_interval;
        let changed = new_facts != facts || !conditions_as_desired(last_status.as_ref());
        if !(stale || changed) {
            continue;
        }
        facts = new_facts;
        // If the Node was deleted, register it again (as upstream's kubelet does).
        let result = match Api::<Node>::all(client.clone()).get_opt(&config.name).await {
            Ok(None) => register(&client, &config, &facts).await,
            Ok(Some(_)) | Err(_) => {
                write_status(&client, &config, &facts, last_status.as_ref()).await
            }
        };
        match result {
            Ok(node) => {
                uid = node.metadata.uid.clone().or(uid);
                last_status = node.status.and_then(|s| serde_json::to_value(s).ok());
                last_status_write = tokio::time::Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the node status: retrying"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 2048 * 1024,
            kernel_version: "6.18.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
        }
    }

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemTotal:       24554720 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_554_720 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn pretty_name_unquoted() {
        let text = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            parse_pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_pretty_name("NAME=x\n"), None);
    }

    #[test]
    fn arch_names_follow_kubernetes() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        assert_eq!(kube_arch("riscv64"), "riscv64");
    }

    #[test]
    fn status_has_everything_and_keeps_transition_times() {
        let mut config = NodeConfig::new("n1", 4321);
        config.internal_ips = vec!["127.0.0.1".parse().unwrap()];
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let first = node_status(&config, &facts(), t0, None);
        assert_eq!(first["capacity"]["cpu"], "2");
        assert_eq!(first["capacity"]["memory"], "2048Ki");
        assert_eq!(first["allocatable"]["pods"], "110");
        assert_eq!(first["daemonEndpoints"]["kubeletEndpoint"]["Port"], 4321);
        assert_eq!(first["addresses"][0]["type"], "InternalIP");
        assert_eq!(first["addresses"][0]["address"], "127.0.0.1");
        assert_eq!(first["addresses"][1]["type"], "Hostname");
        assert_eq!(first["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert!(
            first["nodeInfo"]["containerRuntimeVersion"]
                .as_str()
                .unwrap()
                .starts_with("skiff://")
        );
        let ready = &first["conditions"][0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        let second = node_status(&config, &facts(), t1, Some(&first));
        assert_eq!(
            second["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            second["conditions"][0]["lastHeartbeatTime"],
            "2026-01-01T00:01:00Z"
        );
        assert!(conditions_as_desired(Some(&second)));
        // A condition that was different before gets a new transition time.
        let mut unknown = first.clone();
        unknown["conditions"][0]["status"] = json!("Unknown");
        assert!(!conditions_as_desired(Some(&unknown)));
        let third = node_status(&config, &facts(), t1, Some(&unknown));
        assert_eq!(
            third["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:01:00Z"
        );
    }

    #[test]
    fn labels_well_known_then_extras() {
        let mut config = NodeConfig::new("n1", 1);
        config.labels.insert("role".into(), "edge".into());
        let labels = node_labels(&config, &facts());
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert_eq!(labels["role"], "edge");
    }

    #[test]
    fn node_names_checked() {
        assert!(valid_name("skiff-1.local"));
        assert!(!valid_name("Skiff"));
        assert!(!valid_name("-a"));
        assert!(!valid_name(""));
    }
}
