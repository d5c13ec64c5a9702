//! Validation rules, each with a passing and a failing case asserting the exact field path.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;
use crate::manifest::{Strictness, decode_value};

fn check(v: Value) -> Result<(), FieldErrors> {
    let mut o = decode_value(&v, Strictness::Strict).unwrap().object;
    crate::defaults::apply_defaults(&mut o);
    validate(&o, &ValidationConfig::default())
}

#[track_caller]
fn ok(v: Value) {
    if let Err(e) = check(v) {
        panic!("expected valid, got {e}");
    }
}

/// Assert an error at `field` of type `ty` (other errors may exist too).
#[track_caller]
fn bad(v: Value, field: &str, ty: FieldErrorType) -> FieldErrors {
    let errs = check(v).expect_err("expected a validation error");
    assert!(
        errs.iter().any(|e| e.field == field && e.error_type == ty),
        "no {ty:?} at {field}: {errs}"
    );
    errs
}

fn with(mut base: Value, path: &[&str], value: Value) -> Value {
    let mut cur = &mut base;
    for (i, p) in path.iter().enumerate() {
        let last = i == path.len() - 1;
        cur = if let Ok(idx) = p.parse::<usize>() {
            &mut cur[idx]
        } else {
            if last {
                cur[*p] = value;
                return base;
            }
            &mut cur[*p]
        };
    }
    *cur = value;
    base
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

#[test]
fn names_by_kind() {
    ok(cm("a.b-c"));
    let e = bad(cm("Not_Valid"), "metadata.name", FieldErrorType::Invalid);
    assert!(e.0[0].detail.starts_with("a lowercase RFC 1123 subdomain"));
    assert_eq!(e.0[0].value.as_deref(), Some("\"Not_Valid\""));
    assert!(e.to_string().starts_with(
        "metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 subdomain"
    ));
    bad(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        "metadata.name",
        FieldErrorType::Required,
    );
    ok(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}));
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    ok(ns("team-a"));
    let e = bad(ns("team.a"), "metadata.name", FieldErrorType::Invalid);
    assert!(
        e.0[0]
            .detail
            .starts_with("a lowercase RFC 1123 label must consist of")
    );
    let svc = |n: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}});
    ok(svc("web"));
    let e = bad(svc("1web"), "metadata.name", FieldErrorType::Invalid);
    assert!(e.0[0].detail.starts_with("a DNS-1035 label"));
    bad(
        cm(&"a".repeat(254)),
        "metadata.name",
        FieldErrorType::Invalid,
    );
}

#[test]
fn namespace_scope() {
    let c = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "Bad_NS"}});
    bad(c, "metadata.namespace", FieldErrorType::Invalid);
    let n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "namespace": "default"}});
    bad(n, "metadata.namespace", FieldErrorType::Forbidden);
}

#[test]
fn labels_and_annotations() {
    let m = |meta: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta});
    ok(m(
        json!({"name": "a", "labels": {"app.kubernetes.io/name": "x", "empty": ""}}),
    ));
    bad(
        m(json!({"name": "a", "labels": {"bad key": "x"}})),
        "metadata.labels",
        FieldErrorType::Invalid,
    );
    bad(
        m(json!({"name": "a", "labels": {"k": "bad value"}})),
        "metadata.labels",
        FieldErrorType::Invalid,
    );
    bad(
        m(json!({"name": "a", "labels": {"k": "v".repeat(64)}})),
        "metadata.labels",
        FieldErrorType::Invalid,
    );
    ok(m(
        json!({"name": "a", "annotations": {"Kubectl.kubernetes.io/x": "any value at all"}}),
    ));
    bad(
        m(json!({"name": "a", "annotations": {"a/b/c": "x"}})),
        "metadata.annotations",
        FieldErrorType::Invalid,
    );
    let e = bad(
        m(json!({"name": "a", "annotations": {"big": "x".repeat(256 * 1024)}})),
        "metadata.annotations",
        FieldErrorType::TooLong,
    );
    assert!(
        e.to_string()
            .contains("Too long: must have at most 262144 bytes")
    );
    bad(
        m(json!({"name": "a", "finalizers": ["bad finalizer"]})),
        "metadata.finalizers[0]",
        FieldErrorType::Invalid,
    );
    bad(
        m(json!({"name": "a", "ownerReferences": [
        {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": true},
        {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": true}]})),
        "metadata.ownerReferences",
        FieldErrorType::Invalid,
    );
}

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": spec})
}

#[test]
fn service_ports() {
    ok(service(
        json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443, "targetPort": 8443}]}),
    ));
    let e = bad(
        service(json!({"ports": [{"port": 0}]})),
        "spec.ports[0].port",
        FieldErrorType::Invalid,
    );
    assert!(
        e.to_string().contains(
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ),
        "{e}"
    );
    bad(
        service(json!({"ports": [{"port": 65536}]})),
        "spec.ports[0].port",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"ports": [{"port": 80, "targetPort": 70000}]})),
        "spec.ports[0].targetPort",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]})),
        "spec.ports[0].targetPort",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"ports": [{"port": 80}, {"port": 81}]})),
        "spec.ports[0].name",
        FieldErrorType::Required,
    );
    bad(
        service(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
        "spec.ports[1].name",
        FieldErrorType::Duplicate,
    );
    bad(
        service(json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]})),
        "spec.ports[1]",
        FieldErrorType::Duplicate,
    );
    ok(service(
        json!({"ports": [{"name": "a", "port": 53}, {"name": "b", "port": 53, "protocol": "UDP"}]}),
    ));
    bad(
        service(json!({"ports": [{"port": 80, "protocol": "HTTP"}]})),
        "spec.ports[0].protocol",
        FieldErrorType::NotSupported,
    );
    bad(service(json!({})), "spec.ports", FieldErrorType::Required);
    bad(
        service(json!({"selector": {"bad key": "x"}, "ports": [{"port": 80}]})),
        "spec.selector",
        FieldErrorType::Invalid,
    );
}

#[test]
fn service_types() {
    bad(
        service(json!({"type": "Magic", "ports": [{"port": 80}]})),
        "spec.type",
        FieldErrorType::NotSupported,
    );
    ok(service(
        json!({"type": "ExternalName", "externalName": "db.example.com."}),
    ));
    bad(
        service(json!({"type": "ExternalName"})),
        "spec.externalName",
        FieldErrorType::Required,
    );
    bad(
        service(json!({"type": "ExternalName", "externalName": "not a name"})),
        "spec.externalName",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"type": "ExternalName", "externalName": "a.com", "clusterIP": "10.96.0.5"})),
        "spec.clusterIP",
        FieldErrorType::Forbidden,
    );
    ok(service(json!({"clusterIP": "None"})));
    ok(service(
        json!({"clusterIP": "None", "ports": [{"port": 80}]}),
    ));
    bad(
        service(json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]})),
        "spec.clusterIP",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]})),
        "spec.clusterIP",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"type": "LoadBalancer", "clusterIP": "None", "ports": [{"port": 80}]})),
        "spec.clusterIP",
        FieldErrorType::Invalid,
    );
}

#[test]
fn service_node_ports() {
    ok(service(
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    ));
    let e = bad(
        service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]})),
        "spec.ports[0].nodePort",
        FieldErrorType::Invalid,
    );
    assert!(
        e.to_string()
            .contains("The range of valid ports is 30000-32767")
    );
    bad(
        service(json!({"ports": [{"port": 80, "nodePort": 30080}]})),
        "spec.ports[0].nodePort",
        FieldErrorType::Forbidden,
    );
    let cfg = ValidationConfig {
        node_port_range: 20000..=20010,
    };
    let mut o = decode_value(
        &service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 20005}]})),
        Strictness::Strict,
    )
    .unwrap()
    .object;
    crate::defaults::apply_defaults(&mut o);
    assert!(validate(&o, &cfg).is_ok());
}

#[test]
fn service_affinity_and_policies() {
    ok(service(
        json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}),
    ));
    bad(
        service(json!({"sessionAffinity": "Cookie", "ports": [{"port": 80}]})),
        "spec.sessionAffinity",
        FieldErrorType::NotSupported,
    );
    bad(
        service(
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}, "ports": [{"port": 80}]}),
        ),
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
        FieldErrorType::Invalid,
    );
    bad(
        service(json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]})),
        "spec.externalTrafficPolicy",
        FieldErrorType::Invalid,
    );
    ok(service(
        json!({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
    ));
    bad(
        service(json!({"internalTrafficPolicy": "Nearby", "ports": [{"port": 80}]})),
        "spec.internalTrafficPolicy",
        FieldErrorType::NotSupported,
    );
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn c(name: &str) -> Value {
    json!({"name": name, "image": "skiff.dev/echo"})
}

#[test]
fn pod_containers() {
    ok(pod(json!({"containers": [c("a"), c("b")]})));
    bad(
        pod(json!({"containers": []})),
        "spec.containers",
        FieldErrorType::Required,
    );
    bad(
        pod(json!({"containers": [c("a"), c("a")]})),
        "spec.containers[1].name",
        FieldErrorType::Duplicate,
    );
    bad(
        pod(json!({"initContainers": [c("a")], "containers": [c("a")]})),
        "spec.containers[0].name",
        FieldErrorType::Duplicate,
    );
    bad(
        pod(json!({"containers": [c("Bad_Name")]})),
        "spec.containers[0].name",
        FieldErrorType::Invalid,
    );
    bad(
        pod(json!({"containers": [{"name": "a"}]})),
        "spec.containers[0].image",
        FieldErrorType::Required,
    );
    bad(
        pod(json!({"containers": [{"name": "a", "image": "i", "imagePullPolicy": "Sometimes"}]})),
        "spec.containers[0].imagePullPolicy",
        FieldErrorType::NotSupported,
    );
}

#[test]
fn pod_policies() {
    bad(
        pod(json!({"restartPolicy": "Sometimes", "containers": [c("a")]})),
        "spec.restartPolicy",
        FieldErrorType::NotSupported,
    );
    bad(
        pod(json!({"dnsPolicy": "Google", "containers": [c("a")]})),
        "spec.dnsPolicy",
        FieldErrorType::NotSupported,
    );
    bad(
        pod(json!({"dnsPolicy": "None", "containers": [c("a")]})),
        "spec.dnsConfig",
        FieldErrorType::Required,
    );
    ok(pod(
        json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}, "containers": [c("a")]}),
    ));
    bad(
        pod(json!({"terminationGracePeriodSeconds": -1, "containers": [c("a")]})),
        "spec.terminationGracePeriodSeconds",
        FieldErrorType::Invalid,
    );
    bad(
        pod(json!({"hostname": "Bad.Host", "containers": [c("a")]})),
        "spec.hostname",
        FieldErrorType::Invalid,
    );
    bad(
        pod(json!({"tolerations": [{"key": "k", "operator": "Maybe"}], "containers": [c("a")]})),
        "spec.tolerations[0].operator",
        FieldErrorType::NotSupported,
    );
}

#[test]
fn pod_ports_and_probes() {
    let port = |p: Value| pod(json!({"containers": [{"name": "a", "image": "i", "ports": p}]}));
    ok(port(
        json!([{"name": "http", "containerPort": 80}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
    ));
    bad(
        port(json!([{"containerPort": 0}])),
        "spec.containers[0].ports[0].containerPort",
        FieldErrorType::Invalid,
    );
    bad(
        port(json!([{"containerPort": 80, "hostPort": 70000}])),
        "spec.containers[0].ports[0].hostPort",
        FieldErrorType::Invalid,
    );
    bad(
        port(json!([{"name": "HTTP", "containerPort": 80}])),
        "spec.containers[0].ports[0].name",
        FieldErrorType::Invalid,
    );
    bad(
        port(json!([{"name": "h", "containerPort": 80}, {"name": "h", "containerPort": 81}])),
        "spec.containers[0].ports[1].name",
        FieldErrorType::Duplicate,
    );
    bad(
        port(json!([{"containerPort": 80, "protocol": "ICMP"}])),
        "spec.containers[0].ports[0].protocol",
        FieldErrorType::NotSupported,
    );
    let probe =
        |p: Value| pod(json!({"containers": [{"name": "a", "image": "i", "livenessProbe": p}]}));
    ok(probe(json!({"httpGet": {"port": "http"}})));
    bad(
        probe(json!({"httpGet": {"port": 0}})),
        "spec.containers[0].livenessProbe.httpGet.port",
        FieldErrorType::Invalid,
    );
    bad(
        probe(json!({})),
        "spec.containers[0].livenessProbe",
        FieldErrorType::Required,
    );
    bad(
        probe(json!({"httpGet": {"port": 80}, "tcpSocket": {"port": 80}})),
        "spec.containers[0].livenessProbe",
        FieldErrorType::Forbidden,
    );
    bad(
        probe(json!({"tcpSocket": {"port": 80}, "successThreshold": 2})),
        "spec.containers[0].livenessProbe.successThreshold",
        FieldErrorType::Invalid,
    );
}

#[test]
fn pod_volumes_and_env() {
    let v = |vols: Value, mounts: Value| {
        pod(
            json!({"volumes": vols, "containers": [{"name": "a", "image": "i", "volumeMounts": mounts}]}),
        )
    };
    ok(v(
        json!([{"name": "data", "emptyDir": {}}]),
        json!([{"name": "data", "mountPath": "/data"}]),
    ));
    bad(
        v(json!([]), json!([{"name": "data", "mountPath": "/data"}])),
        "spec.containers[0].volumeMounts[0].name",
        FieldErrorType::NotFound,
    );
    bad(
        v(
            json!([{"name": "d", "emptyDir": {}}, {"name": "d", "emptyDir": {}}]),
            json!([]),
        ),
        "spec.volumes[1].name",
        FieldErrorType::Duplicate,
    );
    bad(
        pod(json!({"containers": [{"name": "a", "image": "i", "env": [{"name": "A=B"}]}]})),
        "spec.containers[0].env[0].name",
        FieldErrorType::Invalid,
    );
}

fn workload(kind: &str, spec_extra: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [c("c")]}}});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"}, "spec": spec})
}

#[test]
fn workload_selectors() {
    for kind in ["Deployment", "ReplicaSet", "StatefulSet"] {
        ok(workload(kind, json!({})));
        let e = bad(
            workload(kind, json!({"selector": {"matchLabels": {"app": "b"}}})),
            "spec.template.metadata.labels",
            FieldErrorType::Invalid,
        );
        assert!(
            e.to_string()
                .contains("`selector` does not match template `labels`"),
            "{e}"
        );
        bad(
            workload(kind, json!({"selector": {}})),
            "spec.selector",
            FieldErrorType::Required,
        );
        bad(
            workload(kind, json!({"replicas": -1})),
            "spec.replicas",
            FieldErrorType::Invalid,
        );
        ok(workload(kind, json!({"replicas": 0})));
        bad(
            workload(
                kind,
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
            ),
            "spec.selector.matchExpressions[0].values",
            FieldErrorType::Required,
        );
        ok(workload(
            kind,
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}}),
        ));
        let w = with(
            workload(kind, json!({})),
            &["spec", "template", "spec", "restartPolicy"],
            json!("Never"),
        );
        bad(
            w,
            "spec.template.spec.restartPolicy",
            FieldErrorType::NotSupported,
        );
        let w = with(
            workload(kind, json!({})),
            &["spec", "template", "spec", "containers"],
            json!([]),
        );
        bad(w, "spec.template.spec.containers", FieldErrorType::Required);
    }
}

#[test]
fn deployment_strategy() {
    bad(
        workload("Deployment", json!({"strategy": {"type": "Blue"}})),
        "spec.strategy.type",
        FieldErrorType::NotSupported,
    );
    bad(
        workload(
            "Deployment",
            json!({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}),
        ),
        "spec.strategy.rollingUpdate",
        FieldErrorType::Forbidden,
    );
    bad(
        workload(
            "Deployment",
            json!({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        FieldErrorType::Invalid,
    );
    bad(
        workload(
            "Deployment",
            json!({"strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}),
        ),
        "spec.strategy.rollingUpdate.maxUnavailable",
        FieldErrorType::Invalid,
    );
    bad(
        workload(
            "Deployment",
            json!({"strategy": {"rollingUpdate": {"maxSurge": "lots"}}}),
        ),
        "spec.strategy.rollingUpdate.maxSurge",
        FieldErrorType::Invalid,
    );
    bad(
        workload("Deployment", json!({"minReadySeconds": 700})),
        "spec.progressDeadlineSeconds",
        FieldErrorType::Invalid,
    );
    bad(
        workload("Deployment", json!({"revisionHistoryLimit": -1})),
        "spec.revisionHistoryLimit",
        FieldErrorType::Invalid,
    );
}

#[test]
fn stateful_set_rules() {
    bad(
        workload("StatefulSet", json!({"podManagementPolicy": "Random"})),
        "spec.podManagementPolicy",
        FieldErrorType::NotSupported,
    );
    bad(
        workload(
            "StatefulSet",
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": -1}}}),
        ),
        "spec.updateStrategy.rollingUpdate.partition",
        FieldErrorType::Invalid,
    );
    bad(
        workload(
            "StatefulSet",
            json!({"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"}}),
        ),
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
        FieldErrorType::NotSupported,
    );
    bad(
        workload(
            "StatefulSet",
            json!({"volumeClaimTemplates": [{"metadata": {}}]}),
        ),
        "spec.volumeClaimTemplates[0].metadata.name",
        FieldErrorType::Required,
    );
}

fn ingress(spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}, "spec": spec})
}

fn rule(path: Value) -> Value {
    json!({"rules": [{"host": "a.example.com", "http": {"paths": [path]}}]})
}

fn backend() -> Value {
    json!({"service": {"name": "web", "port": {"number": 80}}})
}

#[test]
fn ingress_paths() {
    ok(ingress(rule(
        json!({"path": "/api", "pathType": "Prefix", "backend": backend()}),
    )));
    ok(ingress(rule(
        json!({"path": "/", "pathType": "Exact", "backend": backend()}),
    )));
    ok(ingress(rule(
        json!({"pathType": "ImplementationSpecific", "backend": backend()}),
    )));
    let p = "spec.rules[0].http.paths[0]";
    let e = bad(
        ingress(rule(json!({"path": "/", "backend": backend()}))),
        &format!("{p}.pathType"),
        FieldErrorType::Required,
    );
    assert!(e.to_string().contains("pathType must be specified"));
    bad(
        ingress(rule(
            json!({"path": "/", "pathType": "Regex", "backend": backend()}),
        )),
        &format!("{p}.pathType"),
        FieldErrorType::NotSupported,
    );
    let e = bad(
        ingress(rule(
            json!({"path": "api", "pathType": "Prefix", "backend": backend()}),
        )),
        &format!("{p}.path"),
        FieldErrorType::Invalid,
    );
    assert!(e.to_string().contains("must be an absolute path"));
    bad(
        ingress(rule(
            json!({"path": "api", "pathType": "Exact", "backend": backend()}),
        )),
        &format!("{p}.path"),
        FieldErrorType::Invalid,
    );
    bad(
        ingress(rule(
            json!({"path": "/a//b", "pathType": "Prefix", "backend": backend()}),
        )),
        &format!("{p}.path"),
        FieldErrorType::Invalid,
    );
    bad(
        ingress(json!({"rules": [{"http": {"paths": []}}]})),
        "spec.rules[0].http.paths",
        FieldErrorType::Required,
    );
    bad(ingress(json!({})), "spec", FieldErrorType::Invalid);
    ok(ingress(json!({"defaultBackend": backend()})));
}

#[test]
fn ingress_backends_and_hosts() {
    let p = "spec.rules[0].http.paths[0].backend";
    let path = |b: Value| {
        ingress(rule(
            json!({"path": "/", "pathType": "Prefix", "backend": b}),
        ))
    };
    bad(path(json!({})), p, FieldErrorType::Invalid);
    bad(
        path(
            json!({"service": {"name": "web", "port": {"number": 80}}, "resource": {"kind": "Bucket", "name": "b"}}),
        ),
        p,
        FieldErrorType::Invalid,
    );
    bad(
        path(json!({"service": {"name": "web", "port": {"number": 80, "name": "http"}}})),
        &format!("{p}.service.port"),
        FieldErrorType::Invalid,
    );
    bad(
        path(json!({"service": {"name": "web", "port": {}}})),
        &format!("{p}.service.port"),
        FieldErrorType::Invalid,
    );
    bad(
        path(json!({"service": {"name": "web", "port": {"number": 70000}}})),
        &format!("{p}.service.port.number"),
        FieldErrorType::Invalid,
    );
    ok(path(
        json!({"service": {"name": "web", "port": {"name": "http"}}}),
    ));
    bad(
        path(json!({"service": {"name": "Web", "port": {"name": "http"}}})),
        &format!("{p}.service.name"),
        FieldErrorType::Invalid,
    );
    let host = |h: &str| {
        ingress(
            json!({"rules": [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend()}]}}]}),
        )
    };
    ok(host("*.example.com"));
    bad(
        host("foo.*.com"),
        "spec.rules[0].host",
        FieldErrorType::Invalid,
    );
    bad(
        host("10.0.0.1"),
        "spec.rules[0].host",
        FieldErrorType::Invalid,
    );
    bad(
        host("Upper.com"),
        "spec.rules[0].host",
        FieldErrorType::Invalid,
    );
    bad(
        ingress(
            json!({"defaultBackend": backend(), "tls": [{"hosts": ["bad host"], "secretName": "tls"}]}),
        ),
        "spec.tls[0].hosts[0]",
        FieldErrorType::Invalid,
    );
}

#[test]
fn ingress_class() {
    let ic = |spec: Value| json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "skiff"}, "spec": spec});
    ok(ic(json!({"controller": "skiff.dev/ingress-controller"})));
    bad(ic(json!({})), "spec.controller", FieldErrorType::Required);
    bad(
        ic(json!({"controller": "nodomain"})),
        "spec.controller",
        FieldErrorType::Invalid,
    );
    bad(
        ic(
            json!({"controller": "a.dev/x", "parameters": {"kind": "K", "name": "n", "scope": "Namespace"}}),
        ),
        "spec.parameters.namespace",
        FieldErrorType::Required,
    );
}

fn secret(ty: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": ty, "data": data})
}

#[test]
fn secrets() {
    ok(secret(
        "kubernetes.io/tls",
        json!({"tls.crt": "Y2VydA==", "tls.key": "a2V5"}),
    ));
    let e = bad(
        secret("kubernetes.io/tls", json!({"tls.crt": "Y2VydA=="})),
        "data[tls.key]",
        FieldErrorType::Required,
    );
    assert_eq!(e.len(), 1);
    bad(
        secret("kubernetes.io/tls", json!({})),
        "data[tls.crt]",
        FieldErrorType::Required,
    );
    ok(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "c", "tls.key": "k"}}),
    );
    bad(
        secret("Opaque", json!({"bad/key": "YQ=="})),
        "data[bad/key]",
        FieldErrorType::Invalid,
    );
    bad(
        secret("kubernetes.io/dockerconfigjson", json!({})),
        "data[.dockerconfigjson]",
        FieldErrorType::Required,
    );
    bad(
        secret("kubernetes.io/service-account-token", json!({})),
        "metadata.annotations[kubernetes.io/service-account.name]",
        FieldErrorType::Required,
    );
}

#[test]
fn config_maps() {
    ok(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"app.properties": "x", "KEY_1": "y"}}),
    );
    bad(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a b": "x"}}),
        "data[a b]",
        FieldErrorType::Invalid,
    );
    bad(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"..a": "x"}}),
        "data[..a]",
        FieldErrorType::Invalid,
    );
    bad(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "x"}, "binaryData": {"a": "eA=="}}),
        "binaryData[a]",
        FieldErrorType::Invalid,
    );
    bad(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "x".repeat(1024 * 1024 + 1)}}),
        "data",
        FieldErrorType::TooLong,
    );
}

#[test]
fn endpoint_slices() {
    let es = |at: &str, addr: &str| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"},
        "addressType": at, "endpoints": [{"addresses": [addr]}], "ports": [{"name": "http", "port": 80}]})
    };
    ok(es("IPv4", "10.244.0.5"));
    ok(es("IPv6", "fd00::5"));
    ok(es("FQDN", "db.example.com"));
    bad(
        es("IPv4", "fd00::5"),
        "endpoints[0].addresses[0]",
        FieldErrorType::Invalid,
    );
    bad(
        es("IPv6", "10.0.0.1"),
        "endpoints[0].addresses[0]",
        FieldErrorType::Invalid,
    );
    bad(
        es("FQDN", "Not A Name"),
        "endpoints[0].addresses[0]",
        FieldErrorType::Invalid,
    );
    bad(
        es("IPX", "10.0.0.1"),
        "addressType",
        FieldErrorType::NotSupported,
    );
    let mut dup = es("IPv4", "10.0.0.1");
    dup["ports"] = json!([{"name": "a", "port": 1}, {"name": "a", "port": 2}]);
    bad(dup, "ports[1].name", FieldErrorType::Duplicate);
    let mut none = es("IPv4", "10.0.0.1");
    none["endpoints"] = json!([{"addresses": []}]);
    bad(none, "endpoints[0].addresses", FieldErrorType::Required);
}

#[test]
fn endpoints_nodes_events_leases_namespaces() {
    let ep = |ip: &str, port: i64| {
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": port}]}]})
    };
    ok(ep("10.0.0.1", 80));
    bad(
        ep("nope", 80),
        "subsets[0].addresses[0].ip",
        FieldErrorType::Invalid,
    );
    bad(
        ep("10.0.0.1", 0),
        "subsets[0].ports[0].port",
        FieldErrorType::Invalid,
    );
    let node = |spec: Value| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": spec});
    ok(node(
        json!({"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:10:244::/64"]}),
    ));
    bad(
        node(json!({"podCIDR": "10.244.0.0/40"})),
        "spec.podCIDR",
        FieldErrorType::Invalid,
    );
    bad(
        node(json!({"taints": [{"key": "k", "effect": "Sometimes"}]})),
        "spec.taints[0].effect",
        FieldErrorType::NotSupported,
    );
    let ev = |ns: &str, ions: &str, ty: &str| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": ns},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": ions}, "type": ty})
    };
    ok(ev("default", "default", "Normal"));
    bad(
        ev("default", "other", "Normal"),
        "involvedObject.namespace",
        FieldErrorType::Invalid,
    );
    bad(
        ev("default", "default", "Fatal"),
        "type",
        FieldErrorType::NotSupported,
    );
    let lease = |spec: Value| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": spec});
    ok(lease(
        json!({"holderIdentity": "n1", "leaseDurationSeconds": 40}),
    ));
    bad(
        lease(json!({"leaseDurationSeconds": 0})),
        "spec.leaseDurationSeconds",
        FieldErrorType::Invalid,
    );
    bad(
        lease(json!({"leaseTransitions": -1})),
        "spec.leaseTransitions",
        FieldErrorType::Invalid,
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "spec": {"finalizers": ["bad finalizer"]}});
    bad(ns, "spec.finalizers[0]", FieldErrorType::Invalid);
}

#[test]
fn error_rendering() {
    let errs = check(service(json!({"type": "Magic", "ports": [{"port": 0}]}))).unwrap_err();
    let msg = errs.status_message("Service", "web");
    assert!(msg.starts_with("Service \"web\" is invalid: ["), "{msg}");
    assert!(msg.contains("spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""), "{msg}");
    assert_eq!(FieldErrorType::Required.reason(), "FieldValueRequired");
    let one = check(service(json!({}))).unwrap_err();
    assert_eq!(one.to_string(), "spec.ports: Required value");
    assert!(one.has_field("spec.ports"));
}
