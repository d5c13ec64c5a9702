//! Core-group printers: pods, services, endpoints, namespaces, nodes, configmaps, secrets,
//! events.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Column, Row, age, age_col, arr, at, boolean, col, format_labels, int, len_obj,
    load_balancer_ingress, name, name_col, s, since, timestamp, wide,
};

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

pub const POD_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    age_col(),
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

fn has_condition(pod: &Value, type_: &str) -> bool {
    arr(pod, "status.conditions")
        .iter()
        .any(|c| s(c, "type") == type_ && s(c, "status") == "True")
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(c), Some(n)) if n > c => Some(n),
        (None, Some(n)) => Some(n),
        (c, _) => c,
    }
}

/// `Init:`-less reason for a terminated state without a reason: `Signal:N` or `ExitCode:N`.
fn terminated_code(terminated: &Value) -> String {
    let signal = int(terminated, "signal");
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int(terminated, "exitCode"))
    }
}

/// The pod row, computed like upstream `printPod`.
pub fn pod_row(pod: &Value, now: Timestamp) -> Row {
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let mut total = arr(pod, "spec.containers").len();
    let mut ready = 0usize;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = s(pod, "status.phase");
    let mut reason = phase.to_string();
    let status_reason = s(pod, "status.reason");
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    for c in arr(pod, "status.conditions") {
        if s(c, "type") == "PodScheduled" && s(c, "reason") == "SchedulingGated" {
            reason = "SchedulingGated".to_string();
        }
    }

    let init_specs = arr(pod, "spec.initContainers");
    let restartable: HashMap<&str, bool> = init_specs
        .iter()
        .map(|c| (s(c, "name"), s(c, "restartPolicy") == "Always"))
        .collect();
    total += restartable.values().filter(|r| **r).count();

    let mut initializing = false;
    for (i, cs) in arr(pod, "status.initContainerStatuses").iter().enumerate() {
        let count = int(cs, "restartCount");
        restarts += count;
        let finished = timestamp(cs, "lastState.terminated.finishedAt");
        if at(cs, "lastState.terminated").is_some() {
            last_restart = later(last_restart, finished);
        }
        let is_restartable = restartable.get(s(cs, "name")).copied().unwrap_or(false);
        if is_restartable {
            restartable_init_restarts += count;
            if at(cs, "lastState.terminated").is_some() {
                last_restartable_init_restart = later(last_restartable_init_restart, finished);
            }
        }
        let terminated = at(cs, "state.terminated").filter(|t| t.is_object());
        let waiting_reason = s(cs, "state.waiting.reason");
        if terminated.is_some_and(|t| int(t, "exitCode") == 0) {
            continue;
        }
        if is_restartable && boolean(cs, "started") {
            if boolean(cs, "ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = s(t, "reason");
            reason = if r.is_empty() {
                format!("Init:{}", terminated_code(t))
            } else {
                format!("Init:{r}")
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || has_condition(pod, "Initialized") {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        for cs in arr(pod, "status.containerStatuses").iter().rev() {
            restarts += int(cs, "restartCount");
            if at(cs, "lastState.terminated").is_some() {
                last_restart = later(
                    last_restart,
                    timestamp(cs, "lastState.terminated.finishedAt"),
                );
            }
            let waiting_reason = s(cs, "state.waiting.reason");
            let terminated = at(cs, "state.terminated").filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = s(t, "reason");
                reason = if r.is_empty() {
                    terminated_code(t)
                } else {
                    r.to_string()
                };
            } else if boolean(cs, "ready") && at(cs, "state.running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_condition(pod, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = at(pod, "metadata.deletionTimestamp").is_some_and(|d| !d.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Failed" && phase != "Succeeded" {
        reason = "Terminating".to_string();
    }

    let restarts_str = match last_restart {
        Some(ts) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(ts), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = arr(pod, "status.podIPs")
        .first()
        .map(|ip| s(ip, "ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(pod, "status.podIP"));
    let or_none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let gates = arr(pod, "spec.readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr(pod, "status.conditions");
        let true_count = gates
            .iter()
            .filter(|g| {
                let t = s(g, "conditionType");
                conditions
                    .iter()
                    .find(|c| s(c, "type") == t)
                    .is_some_and(|c| s(c, "status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };

    let mut row = Row::new(vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_str),
        age(pod, now),
        json!(or_none(pod_ip)),
        json!(or_none(s(pod, "spec.nodeName"))),
        json!(or_none(s(pod, "status.nominatedNodeName"))),
        json!(readiness_gates),
    ]);
    match phase {
        "Succeeded" => row.conditions.push(json!({
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."
        })),
        "Failed" => row.conditions.push(json!({
            "type": "Completed", "status": "True", "reason": "Failed",
            "message": "The pod failed."
        })),
        _ => {}
    }
    row
}

// ---------------------------------------------------------------------------------------------
// Services
// ---------------------------------------------------------------------------------------------

pub const SERVICE_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Type",
        "string",
        "type determines how the Service is exposed. Defaults to ClusterIP.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    age_col(),
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

fn strings_at<'a>(v: &'a Value, path: &str) -> Vec<&'a str> {
    arr(v, path).iter().filter_map(Value::as_str).collect()
}

/// Upstream `getServiceExternalIP` (wide).
fn service_external_ip(svc: &Value) -> String {
    let external_ips = strings_at(svc, "spec.externalIPs");
    match s(svc, "spec.type") {
        "ClusterIP" | "NodePort" | "" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(at(svc, "status.loadBalancer"));
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external_ips);
                return results.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => s(svc, "spec.externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// Upstream `makePortString`: `80/TCP,443:30443/TCP`.
fn service_ports(svc: &Value) -> String {
    arr(svc, "spec.ports")
        .iter()
        .map(|p| {
            let port = int(p, "port");
            let proto = match s(p, "protocol") {
                "" => "TCP",
                other => other,
            };
            let node_port = int(p, "nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{proto}")
            } else {
                format!("{port}/{proto}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn service_row(svc: &Value, now: Timestamp) -> Row {
    let cluster_ip = strings_at(svc, "spec.clusterIPs")
        .first()
        .copied()
        .or_else(|| Some(s(svc, "spec.clusterIP")).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let mut ports = service_ports(svc);
    if ports.is_empty() {
        ports = "<none>".to_string();
    }
    Row::new(vec![
        name(svc),
        json!(s(svc, "spec.type")),
        json!(cluster_ip),
        json!(service_external_ip(svc)),
        json!(ports),
        age(svc, now),
        json!(format_labels(at(svc, "spec.selector"))),
    ])
}

// ---------------------------------------------------------------------------------------------
// Endpoints
// ---------------------------------------------------------------------------------------------

pub const ENDPOINTS_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    age_col(),
];

/// `net.JoinHostPort`: brackets around IPv6 addresses.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `formatEndpoints` (all ports): `1.2.3.4:80,5.6.7.8:80 + 2 more...`.
pub fn format_endpoints(endpoints: &Value) -> String {
    let subsets = arr(endpoints, "subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr(ss, "addresses");
        let ports = arr(ss, "ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(s(a, "ip"), int(p, "port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

pub fn endpoints_row(ep: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(ep), json!(format_endpoints(ep)), age(ep, now)])
}

// ---------------------------------------------------------------------------------------------
// Namespaces, configmaps, secrets
// ---------------------------------------------------------------------------------------------

pub const NAMESPACE_COLUMNS: &[Column] = &[
    name_col(),
    col("Status", "string", "The status of the namespace"),
    age_col(),
];

pub fn namespace_row(ns: &Value, now: Timestamp) -> Row {
    Row::new(vec![name(ns), json!(s(ns, "status.phase")), age(ns, now)])
}

pub const CONFIGMAP_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Data",
        "string",
        "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    age_col(),
];

pub fn configmap_row(cm: &Value, now: Timestamp) -> Row {
    let count = len_obj(cm, "data") + len_obj(cm, "binaryData");
    Row::new(vec![name(cm), json!(count), age(cm, now)])
}

pub const SECRET_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col(
        "Data",
        "string",
        "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
    ),
    age_col(),
];

pub fn secret_row(secret: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(secret),
        json!(s(secret, "type")),
        json!(len_obj(secret, "data")),
        age(secret, now),
    ])
}

// ---------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------

pub const NODE_COLUMNS: &[Column] = &[
    name_col(),
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    age_col(),
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

/// Upstream `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, "metadata.labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v.to_string());
            }
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    arr(node, "status.addresses")
        .iter()
        .find(|a| s(a, "type") == type_)
        .map_or_else(|| "<none>".to_string(), |a| s(a, "address").to_string())
}

pub fn node_row(node: &Value, now: Timestamp) -> Row {
    let mut status: Vec<&str> = Vec::new();
    // Upstream keeps the last condition of each type.
    if let Some(ready) = arr(node, "status.conditions")
        .iter()
        .rev()
        .find(|c| s(c, "type") == "Ready")
    {
        status.push(if s(ready, "status") == "True" {
            "Ready"
        } else {
            "NotReady"
        });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if boolean(node, "spec.unschedulable") {
        status.push("SchedulingDisabled");
    }
    let unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    Row::new(vec![
        name(node),
        json!(status.join(",")),
        json!(node_roles(node)),
        age(node, now),
        json!(s(node, "status.nodeInfo.kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(unknown(s(node, "status.nodeInfo.osImage"))),
        json!(unknown(s(node, "status.nodeInfo.kernelVersion"))),
        json!(unknown(s(node, "status.nodeInfo.containerRuntimeVersion"))),
    ])
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

pub const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: super::NAME_DESC,
        priority: 1,
    },
];

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

pub fn event_row(ev: &Value, now: Timestamp) -> Row {
    let first_ts = timestamp(ev, "firstTimestamp");
    let first_seen = match first_ts {
        Some(ts) => since(Some(ts), now),
        None => since(timestamp(ev, "eventTime"), now),
    };
    let mut last_seen = match timestamp(ev, "lastTimestamp") {
        Some(ts) => since(Some(ts), now),
        None => first_seen.clone(),
    };
    let mut count = int(ev, "count");
    if at(ev, "series").is_some_and(Value::is_object) {
        last_seen = since(timestamp(ev, "series.lastObservedTime"), now);
        count = int(ev, "series.count");
    } else if count == 0 {
        count = 1;
    }
    let kind = s(ev, "involvedObject.kind").to_lowercase();
    let obj_name = s(ev, "involvedObject.name");
    let target = if obj_name.is_empty() {
        kind
    } else {
        format!("{kind}/{obj_name}")
    };
    let component = first_non_empty(s(ev, "source.component"), s(ev, "reportingComponent"));
    let host = first_non_empty(s(ev, "source.host"), s(ev, "reportingInstance"));
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    Row::new(vec![
        json!(last_seen),
        json!(s(ev, "type")),
        json!(s(ev, "reason")),
        json!(target),
        json!(s(ev, "involvedObject.fieldPath")),
        json!(source),
        json!(s(ev, "message").trim()),
        json!(first_seen),
        json!(count),
        name(ev),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{ago, names, now};
    use super::*;
    use skiff_api::Kind;

    fn cells(r: Row) -> Vec<Value> {
        r.cells
    }

    #[test]
    fn pod_columns() {
        assert_eq!(
            names(Kind::Pod),
            vec![
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ]
        );
    }

    fn running_pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": ago(312)},
            "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "podIPs": [{"ip": "10.0.0.7"}], "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        })
    }

    #[test]
    fn pod_running_cells() {
        let c = cells(pod_row(&running_pod(), now()));
        assert_eq!(
            c,
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("Running"),
                json!("0"),
                json!("5m12s"),
                json!("10.0.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_pending_without_status() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]},
                         "status": {"phase": "Pending"}});
        let c = cells(pod_row(&pod, now()));
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Pending");
        assert_eq!(c[3], "0");
        assert_eq!(c[4], "<unknown>");
        assert_eq!(c[5], "<none>");
        assert_eq!(c[6], "<none>");
    }

    #[test]
    fn pod_waiting_reason_and_restarts_with_age() {
        let mut pod = running_pod();
        pod["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": false, "restartCount": 5,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(300)}}},
        ]);
        let c = cells(pod_row(&pod, now()));
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "5 (5m ago)");
        assert_eq!(c[1], "0/2");
    }

    #[test]
    fn pod_terminated_reasons() {
        let mut pod = running_pod();
        pod["status"]["containerStatuses"] = json!([
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ]);
        assert_eq!(cells(pod_row(&pod, now()))[2], "Completed");
        pod["status"]["containerStatuses"] = json!([
            {"name": "a", "state": {"terminated": {"exitCode": 137}}},
        ]);
        assert_eq!(cells(pod_row(&pod, now()))[2], "ExitCode:137");
        pod["status"]["containerStatuses"] = json!([
            {"name": "a", "state": {"terminated": {"exitCode": 0, "signal": 9}}},
        ]);
        assert_eq!(cells(pod_row(&pod, now()))[2], "Signal:9");
        // A completed sidecar while another container still runs: NotReady / Running.
        pod["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": true, "state": {"running": {}}},
            {"name": "b", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ]);
        assert_eq!(cells(pod_row(&pod, now()))[2], "NotReady");
        pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(cells(pod_row(&pod, now()))[2], "Running");
    }

    #[test]
    fn pod_init_containers() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
                {"name": "i2", "state": {"running": {}}}
            ], "containerStatuses": [
                {"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}
            ]}
        });
        assert_eq!(cells(pod_row(&pod, now()))[2], "Init:1/2");
        let mut failing = pod.clone();
        failing["status"]["initContainerStatuses"][1] = json!(
            {"name": "i2", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        );
        let c = cells(pod_row(&failing, now()));
        assert_eq!(c[2], "Init:CrashLoopBackOff");
        assert_eq!(c[3], "3");
        failing["status"]["initContainerStatuses"][1] = json!(
            {"name": "i2", "state": {"terminated": {"exitCode": 2}}}
        );
        assert_eq!(cells(pod_row(&failing, now()))[2], "Init:ExitCode:2");
        failing["status"]["initContainerStatuses"][1] = json!(
            {"name": "i2", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}
        );
        assert_eq!(cells(pod_row(&failing, now()))[2], "Init:Error");
    }

    #[test]
    fn pod_sidecar_counts_in_ready() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}],
                     "containers": [{"name": "a"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "side", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}
                ],
                "containerStatuses": [
                    {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}}
                ]}
        });
        let c = cells(pod_row(&pod, now()));
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "3");
    }

    #[test]
    fn pod_terminating_and_conditions() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cells(pod_row(&pod, now()))[2], "Terminating");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells(pod_row(&pod, now()))[2], "Unknown");
        let done = json!({"metadata": {"name": "d", "deletionTimestamp": ago(1)},
                          "status": {"phase": "Succeeded"}});
        let r = pod_row(&done, now());
        assert_eq!(r.cells[2], "Succeeded");
        assert_eq!(r.conditions[0]["reason"], "Succeeded");
        let gated = json!({"metadata": {"name": "g"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}});
        assert_eq!(cells(pod_row(&gated, now()))[2], "SchedulingGated");
        let evicted =
            json!({"metadata": {"name": "e"}, "status": {"phase": "Failed", "reason": "Evicted"}});
        assert_eq!(cells(pod_row(&evicted, now()))[2], "Evicted");
    }

    #[test]
    fn pod_readiness_gates() {
        let mut pod = running_pod();
        pod["spec"]["readinessGates"] = json!([{"conditionType": "x"}, {"conditionType": "y"}]);
        pod["status"]["conditions"] = json!([{"type": "x", "status": "True"}]);
        assert_eq!(cells(pod_row(&pod, now()))[8], "1/2");
    }

    #[test]
    fn service_cells() {
        assert_eq!(
            names(Kind::Service),
            vec![
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1)
            ]
        );
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(3 * 3600)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"},
                               {"port": 53, "protocol": "UDP"}],
                     "selector": {"app": "web", "tier": "fe"}}
        });
        assert_eq!(
            cells(service_row(&svc, now())),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP,53/UDP"),
                json!("3h"),
                json!("app=web,tier=fe")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        let c = cells(service_row(&lb, now()));
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
        let lb2 = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalIPs": ["9.9.9.9"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}, {"hostname": "a.example.com"}, {"ip": "1.1.1.1"}]}}});
        assert_eq!(
            cells(service_row(&lb2, now()))[3],
            "1.1.1.1,5.5.5.5,a.example.com,9.9.9.9"
        );
        let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cells(service_row(&ext, now()))[3], "db.example.com");
        let cip = json!({"metadata": {"name": "x"}, "spec": {"type": "ClusterIP", "clusterIP": "None", "externalIPs": ["1.2.3.4", "5.6.7.8"]}});
        let c = cells(service_row(&cip, now()));
        assert_eq!(c[2], "None");
        assert_eq!(c[3], "1.2.3.4,5.6.7.8");
    }

    #[test]
    fn endpoints_cells() {
        assert_eq!(
            names(Kind::Endpoints),
            vec![("Name", 0), ("Endpoints", 0), ("Age", 0)]
        );
        let none = json!({"metadata": {"name": "e"}});
        assert_eq!(cells(endpoints_row(&none, now()))[1], "<none>");
        let two = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}
        ]});
        assert_eq!(
            cells(endpoints_row(&two, now()))[1],
            "10.0.0.1:80,10.0.0.2:80"
        );
        let many = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
             "ports": [{"port": 80}, {"port": 443}]}
        ]});
        assert_eq!(
            cells(endpoints_row(&many, now()))[1],
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more..."
        );
        let headless = json!({"metadata": {"name": "e"}, "subsets": [
            {"addresses": [{"ip": "1.1.1.1"}, {"ip": "2.2.2.2"}, {"ip": "3.3.3.3"}, {"ip": "4.4.4.4"}]}
        ]});
        assert_eq!(
            cells(endpoints_row(&headless, now()))[1],
            "1.1.1.1,2.2.2.2,3.3.3.3 + 1 more..."
        );
    }

    #[test]
    fn namespace_configmap_secret_cells() {
        assert_eq!(
            names(Kind::Namespace),
            vec![("Name", 0), ("Status", 0), ("Age", 0)]
        );
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(2 * 86400 + 5 * 3600)},
                        "status": {"phase": "Active"}});
        assert_eq!(
            cells(namespace_row(&ns, now())),
            vec![json!("default"), json!("Active"), json!("2d5h")]
        );
        assert_eq!(
            names(Kind::ConfigMap),
            vec![("Name", 0), ("Data", 0), ("Age", 0)]
        );
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": ago(45)},
                        "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            cells(configmap_row(&cm, now())),
            vec![json!("c"), json!(2), json!("45s")]
        );
        assert_eq!(
            names(Kind::Secret),
            vec![("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)]
        );
        let secret = json!({"metadata": {"name": "s", "creationTimestamp": ago(60)},
                            "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            cells(secret_row(&secret, now())),
            vec![
                json!("s"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("60s")
            ]
        );
    }

    #[test]
    fn node_cells() {
        assert_eq!(
            names(Kind::Node),
            vec![
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1)
            ]
        );
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(10 * 86400),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker",
                                    "node-role.kubernetes.io/": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian", "kernelVersion": "6.1.0",
                                    "containerRuntimeVersion": "skiff://0.1"}}
        });
        assert_eq!(
            cells(node_row(&node, now())),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("10d"),
                json!("v1.32.0"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian"),
                json!("6.1.0"),
                json!("skiff://0.1")
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = cells(node_row(&bare, now()));
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[7], "<unknown>");
        assert_eq!(cells(node_row(&json!({}), now()))[1], "Unknown");
    }

    #[test]
    fn event_cells() {
        assert_eq!(
            names(Kind::Event),
            vec![
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ]
        );
        let ev = json!({
            "metadata": {"name": "web-1.17a", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image \n",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 3
        });
        assert_eq!(
            cells(event_row(&ev, now())),
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web-1"),
                json!("spec.containers{web}"),
                json!("kubelet, node-a"),
                json!("Successfully pulled image"),
                json!("10m"),
                json!(3),
                json!("web-1.17a")
            ]
        );
        // New-style event: eventTime, reportingComponent, no count.
        let ev2 = json!({
            "metadata": {"name": "e2"}, "involvedObject": {"kind": "Node"},
            "eventTime": ago(90), "reportingComponent": "skiff-controller", "reportingInstance": "c-1"
        });
        let c = cells(event_row(&ev2, now()));
        assert_eq!(c[0], "90s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "skiff-controller, c-1");
        assert_eq!(c[7], "90s");
        assert_eq!(c[8], 1);
        let series = json!({"metadata": {"name": "e3"}, "firstTimestamp": ago(7200),
            "series": {"count": 9, "lastObservedTime": ago(5)}});
        let c = cells(event_row(&series, now()));
        assert_eq!(c[0], "5s");
        assert_eq!(c[8], 9);
        assert_eq!(cells(event_row(&json!({}), now()))[0], "<unknown>");
    }
}
