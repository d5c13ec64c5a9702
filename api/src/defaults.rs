//! Defaulting as the real API server does it (pkg/apis/*/v1/defaults.go and generated defaults).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStrategy, ReplicaSet, RollingUpdateDeployment,
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, ContainerResizePolicy, EmptyDirVolumeSource, Endpoints,
    HTTPGetAction, LifecycleHandler, Namespace, NamespaceStatus, Node, PersistentVolumeClaim,
    PersistentVolumeClaimStatus, Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Secret,
    Service, SessionAffinityConfig, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::Object;

/// Default `terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS: i32 = 10800;
/// Default mode of secret, configMap, downwardAPI and projected volumes (0644).
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;
/// The label the API server puts on every namespace.
pub const LABEL_METADATA_NAME: &str = "kubernetes.io/metadata.name";

/// Fill in every default the API server would, in place. Idempotent.
pub fn apply_defaults(obj: &mut Object) {
    match obj {
        Object::Namespace(o) => namespace(o),
        Object::Pod(o) => pod(o),
        Object::Service(o) => service(o),
        Object::Endpoints(o) => endpoints(o),
        Object::EndpointSlice(o) => endpoint_slice(o),
        Object::Secret(o) => secret(o),
        Object::Node(o) => node(o),
        Object::Deployment(o) => deployment(o),
        Object::ReplicaSet(o) => replica_set(o),
        Object::StatefulSet(o) => stateful_set(o),
        // No v1 defaulting upstream for these kinds (Ingress pathType is required, not defaulted).
        Object::ConfigMap(_)
        | Object::Event(_)
        | Object::Ingress(_)
        | Object::IngressClass(_)
        | Object::Lease(_) => {}
    }
}

fn set<T>(field: &mut Option<T>, value: T) {
    if field.is_none() {
        *field = Some(value);
    }
}

fn set_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

fn namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(LABEL_METADATA_NAME.to_string(), name);
    }
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    set_str(&mut status.phase, "Active");
}

fn node(node: &mut Node) {
    if let Some(status) = node.status.as_mut()
        && status.allocatable.is_none()
    {
        status.allocatable = status.capacity.clone();
    }
}

fn secret(s: &mut Secret) {
    set_str(&mut s.type_, "Opaque");
    // Upstream merges stringData into data on conversion (write-only field).
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in string_data {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

fn endpoints(ep: &mut Endpoints) {
    for subset in ep.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            set_str(&mut port.protocol, "TCP");
        }
    }
}

fn endpoint_slice(es: &mut EndpointSlice) {
    for port in es.ports.iter_mut().flatten() {
        set(&mut port.name, String::new());
        set_str(&mut port.protocol, "TCP");
    }
}

fn service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.session_affinity, "None");
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let has_timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .is_some();
            if !has_timeout {
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(DEFAULT_CLIENT_IP_TIMEOUT_SECONDS),
                    }),
                });
            }
        }
        _ => {}
    }
    set_str(&mut spec.type_, "ClusterIP");
    for port in spec.ports.iter_mut().flatten() {
        set_str(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let ty = spec.type_.clone().unwrap_or_default();
    let externally_accessible = ty == "NodePort"
        || ty == "LoadBalancer"
        || (ty == "ClusterIP"
            && spec
                .external_ips
                .as_ref()
                .is_some_and(|ips| !ips.is_empty()));
    if externally_accessible {
        set_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set(&mut spec.internal_traffic_policy, "Cluster".to_string());
    }
    if ty == "LoadBalancer" {
        set(&mut spec.allocate_load_balancer_node_ports, true);
        if let Some(status) = svc.status.as_mut() {
            let ingresses = status
                .load_balancer
                .as_mut()
                .and_then(|lb| lb.ingress.as_mut());
            for ing in ingresses.into_iter().flatten() {
                if ing.ip.as_deref().is_some_and(|ip| !ip.is_empty()) {
                    set(&mut ing.ip_mode, "VIP".to_string());
                }
            }
        }
    }
}

/// `SetDefaults_Pod`: only for Pod objects, not pod templates.
fn pod(p: &mut Pod) {
    let spec = p.spec.get_or_insert_with(Default::default);
    pod_spec(spec);
    for c in spec.containers.iter_mut() {
        requests_from_limits(c);
        // InPlacePodVerticalScaling is on by default in 1.33: regular containers only.
        resize_policy(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        requests_from_limits(c);
    }
    set(&mut spec.enable_service_links, true);
    if spec.host_network == Some(true) {
        let all = spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten());
        for c in all {
            for port in c.ports.iter_mut().flatten() {
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
}

fn requests_from_limits(c: &mut Container) {
    let Some(res) = c.resources.as_mut() else {
        return;
    };
    let Some(limits) = res.limits.as_ref() else {
        return;
    };
    let requests = res.requests.get_or_insert_with(BTreeMap::new);
    for (k, v) in limits {
        requests.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

fn resize_policy(c: &mut Container) {
    let Some(requests) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) else {
        return;
    };
    let wanted: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        .filter(|r| requests.contains_key(*r))
        .collect();
    let policies = c.resize_policy.get_or_insert_with(Vec::new);
    for r in wanted {
        if !policies.iter().any(|p| p.resource_name == r) {
            policies.push(ContainerResizePolicy {
                resource_name: r.to_string(),
                restart_policy: "NotRequired".to_string(),
            });
        }
    }
    if policies.is_empty() {
        c.resize_policy = None;
    }
}

/// `SetDefaults_PodSpec` and the generated defaults of everything inside a pod spec.
pub fn pod_spec(spec: &mut PodSpec) {
    set_str(&mut spec.dns_policy, "ClusterFirst");
    set_str(&mut spec.restart_policy, "Always");
    set(&mut spec.security_context, PodSecurityContext::default());
    set(
        &mut spec.termination_grace_period_seconds,
        DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
    );
    set_str(&mut spec.scheduler_name, "default-scheduler");
    for c in spec.containers.iter_mut() {
        container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        container(c);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume(v);
    }
}

fn pod_template(t: &mut PodTemplateSpec) {
    pod_spec(t.spec.get_or_insert_with(Default::default));
}

/// `SetDefaults_Container` plus ports, probes, lifecycle handlers and env field refs.
pub fn container(c: &mut Container) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy = if image_tag(c.image.as_deref().unwrap_or("")).as_deref() == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.image_pull_policy = Some(policy.to_string());
    }
    set_str(&mut c.termination_message_path, "/dev/termination-log");
    set_str(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        set_str(&mut port.protocol, "TCP");
    }
    for probe in [
        c.liveness_probe.as_mut(),
        c.readiness_probe.as_mut(),
        c.startup_probe.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        self::probe(probe);
    }
    if let Some(lc) = c.lifecycle.as_mut() {
        for h in [lc.post_start.as_mut(), lc.pre_stop.as_mut()]
            .into_iter()
            .flatten()
        {
            handler(h);
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(fr) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            set_str(&mut fr.api_version, "v1");
        }
    }
}

fn handler(h: &mut LifecycleHandler) {
    if let Some(g) = h.http_get.as_mut() {
        http_get(g);
    }
}

/// `SetDefaults_Probe` and its `httpGet`.
pub fn probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(g) = p.http_get.as_mut() {
        http_get(g);
    }
}

fn http_get(g: &mut HTTPGetAction) {
    set_str(&mut g.path, "/");
    set_str(&mut g.scheme, "HTTP");
}

fn volume(v: &mut Volume) {
    // A volume with no source at all becomes an emptyDir.
    let only_name = serde_json::to_value(&*v)
        .ok()
        .and_then(|j| j.as_object().map(|o| o.keys().all(|k| k == "name")))
        .unwrap_or(false);
    if only_name {
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    if let Some(s) = v.secret.as_mut() {
        set(&mut s.default_mode, DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.config_map.as_mut() {
        set(&mut s.default_mode, DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        set(&mut s.default_mode, DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.projected.as_mut() {
        set(&mut s.default_mode, DEFAULT_VOLUME_MODE);
        for src in s.sources.iter_mut().flatten() {
            if let Some(t) = src.service_account_token.as_mut() {
                set(&mut t.expiration_seconds, 3600);
            }
        }
    }
    if let Some(h) = v.host_path.as_mut() {
        set(&mut h.type_, String::new());
    }
}

/// The tag of an image reference as Docker parses it: `None` with a digest and no tag,
/// `latest` when there is neither.
pub fn image_tag(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // The tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some(tag.to_string()),
        None if digest.is_some() => None,
        None => Some("latest".to_string()),
    }
}

fn deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    set(&mut spec.replicas, 1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    set_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let ru = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        set(&mut ru.max_unavailable, IntOrString::String("25%".into()));
        set(&mut ru.max_surge, IntOrString::String("25%".into()));
    }
    set(&mut spec.revision_history_limit, 10);
    set(&mut spec.progress_deadline_seconds, 600);
    pod_template(&mut spec.template);
}

fn replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    set(&mut spec.replicas, 1);
    if let Some(t) = spec.template.as_mut() {
        pod_template(t);
    }
}

fn stateful_set(s: &mut StatefulSet) {
    let spec = s.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.pod_management_policy, "OrderedReady");
    let us = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    set_str(&mut us.type_, "RollingUpdate");
    if us.type_.as_deref() == Some("RollingUpdate") {
        let ru = us
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
        set(&mut ru.partition, 0);
    }
    let policy = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    set_str(&mut policy.when_deleted, "Retain");
    set_str(&mut policy.when_scaled, "Retain");
    set(&mut spec.replicas, 1);
    set(&mut spec.revision_history_limit, 10);
    pod_template(&mut spec.template);
    for pvc in spec.volume_claim_templates.iter_mut().flatten() {
        claim_template(pvc);
    }
}

fn claim_template(pvc: &mut PersistentVolumeClaim) {
    let status = pvc
        .status
        .get_or_insert_with(PersistentVolumeClaimStatus::default);
    set_str(&mut status.phase, "Pending");
    let spec = pvc.spec.get_or_insert_with(Default::default);
    set_str(&mut spec.volume_mode, "Filesystem");
}

#[cfg(test)]
mod tests;
