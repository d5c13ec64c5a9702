//! Validation of core/v1 kinds: Pod (and pod specs), Service, Endpoints, ConfigMap, Secret,
//! Node, Event, Namespace.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Endpoints, Event, Namespace, Node, Pod, PodSpec, Probe, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names;
use super::{FieldErrors, FieldPath, ValidationConfig};

pub(crate) const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
/// Upstream `MaxSecretSize` / ConfigMap limit: 1 MiB of data.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

pub(crate) fn namespace(ns: &Namespace, errs: &mut FieldErrors) {
    let p = FieldPath::new("spec").child("finalizers");
    for (i, f) in ns
        .spec
        .iter()
        .flat_map(|s| s.finalizers.iter().flatten())
        .enumerate()
    {
        errs.invalid_msgs(&p.index(i), f.as_str(), names::qualified_name(f));
    }
    if let Some(phase) = ns.status.as_ref().and_then(|s| s.phase.as_deref()) {
        errs.one_of(
            &FieldPath::new("status").child("phase"),
            phase,
            &["Active", "Terminating"],
        );
    }
}

pub(crate) fn pod(p: &Pod, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    match &p.spec {
        Some(spec) => pod_spec(spec, &path, errs),
        None => errs.required(&path, ""),
    }
}

/// Int port 1-65535 or an IANA service name (probes' and `targetPort`'s).
pub(crate) fn port_num_or_name(port: &IntOrString, path: &FieldPath, errs: &mut FieldErrors) {
    match port {
        IntOrString::Int(n) => errs.invalid_msgs(path, *n, names::port_number(*n)),
        IntOrString::String(s) => errs.invalid_msgs(path, s.as_str(), names::port_name(s)),
    }
}

/// Validate a pod spec at `path` (`spec` or `spec.template.spec`).
pub(crate) fn pod_spec(spec: &PodSpec, path: &FieldPath, errs: &mut FieldErrors) {
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vp = path.child("volumes").index(i).child("name");
        if v.name.is_empty() {
            errs.required(&vp, "");
        } else {
            errs.invalid_msgs(&vp, v.name.as_str(), names::dns1123_label(&v.name));
            if !volumes.insert(v.name.as_str()) {
                errs.duplicate(&vp, v.name.as_str());
            }
        }
    }
    if spec.containers.is_empty() {
        errs.required(&path.child("containers"), "");
    }
    let mut container_names = HashSet::new();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| (path.child("initContainers").index(i), c));
    let regular = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (path.child("containers").index(i), c));
    for (cp, c) in init.chain(regular) {
        container(c, &cp, &volumes, errs);
        if !c.name.is_empty() && !container_names.insert(c.name.as_str()) {
            errs.duplicate(&cp.child("name"), c.name.as_str());
        }
    }
    if let Some(rp) = spec.restart_policy.as_deref() {
        errs.one_of(
            &path.child("restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        );
    }
    if let Some(dp) = spec.dns_policy.as_deref() {
        errs.one_of(
            &path.child("dnsPolicy"),
            dp,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        );
        if dp == "None"
            && spec
                .dns_config
                .as_ref()
                .is_none_or(|c| c.nameservers.as_ref().is_none_or(Vec::is_empty))
        {
            errs.required(
                &path.child("dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            );
        }
    }
    if let Some(t) = spec.termination_grace_period_seconds
        && t < 0
    {
        errs.invalid(
            &path.child("terminationGracePeriodSeconds"),
            t,
            "must be greater than or equal to 0",
        );
    }
    if let Some(t) = spec.active_deadline_seconds
        && t <= 0
    {
        errs.invalid(
            &path.child("activeDeadlineSeconds"),
            t,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            errs.invalid_msgs(&path.child(field), v, names::dns1123_label(v));
        }
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|v| !v.is_empty())
    {
        errs.invalid_msgs(
            &path.child("serviceAccountName"),
            sa,
            names::dns1123_subdomain(sa),
        );
    }
    if let Some(n) = spec.node_name.as_deref().filter(|v| !v.is_empty()) {
        errs.invalid_msgs(&path.child("nodeName"), n, names::dns1123_subdomain(n));
    }
    super::meta::labels(
        spec.node_selector.as_ref(),
        &path.child("nodeSelector"),
        errs,
    );
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tp = path.child("tolerations").index(i);
        if let Some(op) = t.operator.as_deref() {
            errs.one_of(&tp.child("operator"), op, &["Equal", "Exists"]);
            if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                errs.invalid(
                    &tp.child("operator"),
                    op,
                    "value must be empty when `operator` is 'Exists'",
                );
            }
        }
        if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            errs.one_of(
                &tp.child("effect"),
                e,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
    }
}

fn container(c: &Container, path: &FieldPath, volumes: &HashSet<&str>, errs: &mut FieldErrors) {
    if c.name.is_empty() {
        errs.required(&path.child("name"), "");
    } else {
        errs.invalid_msgs(
            &path.child("name"),
            c.name.as_str(),
            names::dns1123_label(&c.name),
        );
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.required(&path.child("image"), "");
    }
    if let Some(p) = c.image_pull_policy.as_deref() {
        errs.one_of(
            &path.child("imagePullPolicy"),
            p,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(p) = c.termination_message_policy.as_deref() {
        errs.one_of(
            &path.child("terminationMessagePolicy"),
            p,
            &["File", "FallbackToLogsOnError"],
        );
    }
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let pp = path.child("ports").index(i);
        errs.invalid_msgs(
            &pp.child("containerPort"),
            port.container_port,
            names::port_number(port.container_port),
        );
        if let Some(hp) = port.host_port {
            errs.invalid_msgs(&pp.child("hostPort"), hp, names::port_number_or_zero(hp));
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            errs.invalid_msgs(&pp.child("name"), name, names::port_name(name));
            if !port_names.insert(name) {
                errs.duplicate(&pp.child("name"), name);
            }
        }
        if let Some(proto) = port.protocol.as_deref() {
            errs.one_of(&pp.child("protocol"), proto, PROTOCOLS);
        }
    }
    let mut env_names = HashSet::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        let ep = path.child("env").index(i).child("name");
        if e.name.is_empty() {
            errs.required(&ep, "");
        } else if e.name.contains('=') || !e.name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            errs.invalid(&ep, e.name.as_str(), "a valid environment variable name must consist only of printable ASCII characters other than '='");
        }
        let _ = env_names.insert(e.name.as_str());
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = path.child("volumeMounts").index(i);
        if m.name.is_empty() {
            errs.required(&mp.child("name"), "");
        } else if !volumes.contains(m.name.as_str()) {
            errs.not_found(&mp.child("name"), m.name.as_str());
        }
        if m.mount_path.is_empty() {
            errs.required(&mp.child("mountPath"), "");
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(pr) = probe {
            self::probe(pr, &path.child(field), errs);
            if field != "readinessProbe" && pr.success_threshold.is_some_and(|s| s != 1) {
                errs.invalid(
                    &path.child(field).child("successThreshold"),
                    pr.success_threshold.unwrap_or(0),
                    "must be 1",
                );
            }
        }
    }
}

fn probe(p: &Probe, path: &FieldPath, errs: &mut FieldErrors) {
    let mut handlers = 0;
    if let Some(g) = &p.http_get {
        handlers += 1;
        port_num_or_name(&g.port, &path.child("httpGet").child("port"), errs);
        if let Some(s) = g.scheme.as_deref() {
            errs.one_of(
                &path.child("httpGet").child("scheme"),
                s,
                &["HTTP", "HTTPS"],
            );
        }
    }
    if let Some(t) = &p.tcp_socket {
        handlers += 1;
        port_num_or_name(&t.port, &path.child("tcpSocket").child("port"), errs);
    }
    if let Some(g) = &p.grpc {
        handlers += 1;
        errs.invalid_msgs(
            &path.child("grpc").child("port"),
            g.port,
            names::port_number(g.port),
        );
    }
    if p.exec.is_some() {
        handlers += 1;
    }
    if handlers == 0 {
        errs.required(path, "must specify a handler type");
    } else if handlers > 1 {
        errs.forbidden(path, "may not specify more than 1 handler type");
    }
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            errs.invalid(&path.child(field), v, "must be greater than or equal to 0");
        }
    }
}

pub(crate) fn service(svc: &Service, config: &ValidationConfig, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &svc.spec else {
        errs.required(&path, "");
        return;
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    errs.one_of(
        &path.child("type"),
        ty,
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ty == "ExternalName" {
        let name = spec.external_name.as_deref().unwrap_or("");
        let cname = name.strip_suffix('.').unwrap_or(name);
        if cname.is_empty() {
            errs.required(&path.child("externalName"), "");
        } else {
            errs.invalid_msgs(
                &path.child("externalName"),
                name,
                names::dns1123_subdomain(cname),
            );
        }
        if !cluster_ip.is_empty() {
            errs.forbidden(
                &path.child("clusterIP"),
                "may not be set for ExternalName services",
            );
        }
    } else {
        if ports.is_empty() && cluster_ip != "None" {
            errs.required(&path.child("ports"), "");
        }
        if !cluster_ip.is_empty() && cluster_ip != "None" {
            errs.invalid_msgs(
                &path.child("clusterIP"),
                cluster_ip,
                names::ip(cluster_ip)
                    .into_iter()
                    .map(|_| "must be empty, 'None', or a valid IP address".to_string())
                    .collect(),
            );
        }
        if cluster_ip == "None" && (ty == "NodePort" || ty == "LoadBalancer") {
            errs.invalid(
                &path.child("clusterIP"),
                cluster_ip,
                format!("may not be set to 'None' for {ty} services"),
            );
        }
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        if ip != "None" {
            errs.invalid_msgs(
                &path.child("clusterIPs").index(i),
                ip.as_str(),
                names::ip(ip),
            );
        }
    }
    if let (Some(first), false) = (
        spec.cluster_ips.as_ref().and_then(|c| c.first()),
        cluster_ip.is_empty(),
    ) && first != cluster_ip
    {
        errs.invalid(
            &path.child("clusterIPs").index(0),
            first.as_str(),
            "must match `clusterIP` when set",
        );
    }
    let mut port_names = HashSet::new();
    let mut port_protos = HashSet::new();
    let node_ports_allowed = ty == "NodePort" || ty == "LoadBalancer";
    for (i, port) in ports.iter().enumerate() {
        let pp = path.child("ports").index(i);
        let name = port.name.as_deref().unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.required(&pp.child("name"), "");
            }
        } else {
            errs.invalid_msgs(&pp.child("name"), name, names::dns1123_label(name));
            if !port_names.insert(name) {
                errs.duplicate(&pp.child("name"), name);
            }
        }
        errs.invalid_msgs(&pp.child("port"), port.port, names::port_number(port.port));
        let proto = port.protocol.as_deref().unwrap_or("TCP");
        errs.one_of(&pp.child("protocol"), proto, PROTOCOLS);
        if !port_protos.insert((port.port, proto)) {
            errs.duplicate(&pp, format!("{}/{proto}", port.port));
        }
        if let Some(tp) = &port.target_port {
            port_num_or_name(tp, &pp.child("targetPort"), errs);
        }
        if let Some(np) = port.node_port.filter(|n| *n != 0) {
            if !node_ports_allowed {
                errs.forbidden(
                    &pp.child("nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                );
            } else if !u16::try_from(np).is_ok_and(|n| config.node_port_range.contains(&n)) {
                errs.invalid(
                    &pp.child("nodePort"),
                    np,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        config.node_port_range.start(),
                        config.node_port_range.end()
                    ),
                );
            }
        }
    }
    if ty != "ExternalName" {
        super::meta::labels(spec.selector.as_ref(), &path.child("selector"), errs);
    }
    let affinity = spec.session_affinity.as_deref().unwrap_or("None");
    errs.one_of(
        &path.child("sessionAffinity"),
        affinity,
        &["ClientIP", "None"],
    );
    if affinity == "ClientIP" {
        let t = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        if let Some(t) = t.filter(|t| !(1..=86400).contains(t)) {
            errs.invalid(
                &path
                    .child("sessionAffinityConfig")
                    .child("clientIP")
                    .child("timeoutSeconds"),
                t,
                "must be greater than 0 and less than 86400",
            );
        }
    } else if spec.session_affinity_config.is_some() {
        errs.invalid(
            &path.child("sessionAffinityConfig"),
            "",
            format!("must not be set when session affinity is {affinity}"),
        );
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        errs.invalid_msgs(
            &path.child("externalIPs").index(i),
            ip.as_str(),
            names::ip(ip),
        );
    }
    if let Some(p) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        errs.one_of(
            &path.child("externalTrafficPolicy"),
            p,
            &["Cluster", "Local"],
        );
        let external =
            node_ports_allowed || spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
        if !external {
            errs.invalid(
                &path.child("externalTrafficPolicy"),
                p,
                "may only be set for externally-accessible services",
            );
        }
    }
    if let Some(p) = spec.internal_traffic_policy.as_deref() {
        errs.one_of(
            &path.child("internalTrafficPolicy"),
            p,
            &["Cluster", "Local"],
        );
    }
    for (i, f) in spec.ip_families.iter().flatten().enumerate() {
        errs.one_of(&path.child("ipFamilies").index(i), f, &["IPv4", "IPv6"]);
    }
    if let Some(p) = spec.ip_family_policy.as_deref() {
        errs.one_of(
            &path.child("ipFamilyPolicy"),
            p,
            &["SingleStack", "PreferDualStack", "RequireDualStack"],
        );
    }
}

pub(crate) fn endpoints(ep: &Endpoints, errs: &mut FieldErrors) {
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let sp = FieldPath::new("subsets").index(i);
        for (field, list) in [
            ("addresses", &ss.addresses),
            ("notReadyAddresses", &ss.not_ready_addresses),
        ] {
            for (j, a) in list.iter().flatten().enumerate() {
                let ap = sp.child(field).index(j);
                errs.invalid_msgs(&ap.child("ip"), a.ip.as_str(), names::ip(&a.ip));
                if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
                    errs.invalid_msgs(&ap.child("hostname"), h, names::dns1123_label(h));
                }
            }
        }
        let many = ss.ports.as_ref().is_some_and(|p| p.len() > 1);
        for (j, p) in ss.ports.iter().flatten().enumerate() {
            let pp = sp.child("ports").index(j);
            match p.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => errs.invalid_msgs(&pp.child("name"), n, names::dns1123_label(n)),
                None if many => errs.required(&pp.child("name"), ""),
                None => {}
            }
            errs.invalid_msgs(&pp.child("port"), p.port, names::port_number(p.port));
            if let Some(proto) = p.protocol.as_deref() {
                errs.one_of(&pp.child("protocol"), proto, PROTOCOLS);
            }
        }
    }
}

/// Keys of `data`/`binaryData`/`stringData` are config keys; no key in two maps; size limit.
fn data_keys(maps: &[(&str, Vec<(&str, usize)>)], errs: &mut FieldErrors) {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut total = 0;
    for (field, entries) in maps {
        let fp = FieldPath::new(field);
        for (k, len) in entries {
            errs.invalid_msgs(&fp.key(k), *k, names::config_map_key(k));
            if !seen.insert(k) {
                errs.invalid(
                    &fp.key(k),
                    *k,
                    "duplicate of key present in another data map",
                );
            }
            total += len;
        }
    }
    if total > MAX_DATA_SIZE {
        errs.too_long(
            &FieldPath::new(maps.first().map_or("data", |m| m.0)),
            MAX_DATA_SIZE,
        );
    }
}

pub(crate) fn config_map(cm: &ConfigMap, errs: &mut FieldErrors) {
    let data = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), k.len() + v.len()))
        .collect();
    let bin = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), k.len() + v.0.len()))
        .collect();
    data_keys(&[("data", data), ("binaryData", bin)], errs);
}

pub(crate) fn secret(s: &Secret, errs: &mut FieldErrors) {
    let data: Vec<(&str, usize)> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), k.len() + v.0.len()))
        .collect();
    let string_data = s
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), k.len() + v.len()))
        .collect();
    data_keys(&[("data", data), ("stringData", string_data)], errs);
    let has = |key: &str| {
        s.data.as_ref().is_some_and(|d| d.contains_key(key))
            || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
    };
    let data_path = FieldPath::new("data");
    match s.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    errs.required(&data_path.key(key), "");
                }
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.required(&data_path.key(".dockercfg"), "")
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.required(&data_path.key(".dockerconfigjson"), "")
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.required(&data_path.key("ssh-privatekey"), "")
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.required(&data_path.key("username"), "");
            errs.required(&data_path.key("password"), "");
        }
        "kubernetes.io/service-account-token" => {
            let named = s.metadata.annotations.as_ref().is_some_and(|a| {
                a.get("kubernetes.io/service-account.name")
                    .is_some_and(|n| !n.is_empty())
            });
            if !named {
                errs.required(
                    &FieldPath::new("metadata")
                        .child("annotations")
                        .key("kubernetes.io/service-account.name"),
                    "",
                );
            }
        }
        _ => {}
    }
}

pub(crate) fn node(n: &Node, errs: &mut FieldErrors) {
    let Some(spec) = &n.spec else { return };
    let path = FieldPath::new("spec");
    if let Some(c) = spec.pod_cidr.as_deref().filter(|c| !c.is_empty()) {
        errs.invalid_msgs(&path.child("podCIDR"), c, names::cidr(c));
    }
    let cidrs = spec.pod_cidrs.as_deref().unwrap_or(&[]);
    for (i, c) in cidrs.iter().enumerate() {
        errs.invalid_msgs(&path.child("podCIDRs").index(i), c.as_str(), names::cidr(c));
    }
    if cidrs.len() > 2 {
        errs.invalid(
            &path.child("podCIDRs"),
            cidrs.len(),
            "may specify no more than one CIDR for each IP family",
        );
    }
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let tp = path.child("taints").index(i);
        errs.invalid_msgs(
            &tp.child("key"),
            t.key.as_str(),
            names::qualified_name(&t.key),
        );
        if let Some(v) = t.value.as_deref() {
            errs.invalid_msgs(&tp.child("value"), v, names::label_value(v));
        }
        errs.one_of(
            &tp.child("effect"),
            &t.effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
    }
}

pub(crate) fn event(e: &Event, errs: &mut FieldErrors) {
    let io = &e.involved_object;
    let ns = e.metadata.namespace.as_deref().unwrap_or("");
    if let Some(ions) = io.namespace.as_deref().filter(|n| !n.is_empty())
        && !ns.is_empty()
        && ions != ns
    {
        errs.invalid(
            &FieldPath::new("involvedObject").child("namespace"),
            ions,
            "does not match event.namespace",
        );
    }
    if let Some(t) = e.type_.as_deref().filter(|t| !t.is_empty()) {
        errs.one_of(&FieldPath::new("type"), t, &["Normal", "Warning"]);
    }
    if e.count.is_some_and(|c| c < 0) {
        errs.invalid(
            &FieldPath::new("count"),
            e.count.unwrap_or(0),
            "must be greater than or equal to 0",
        );
    }
}
