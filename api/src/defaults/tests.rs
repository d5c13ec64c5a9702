//! One test per default, checked against what upstream's defaulting produces.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;
use crate::manifest::{Strictness, decode_value};

fn defaulted(v: Value) -> Value {
    let mut o = decode_value(&v, Strictness::Strict).unwrap().object;
    apply_defaults(&mut o);
    let out = o.to_value().unwrap();
    // Idempotent.
    let mut again = o.clone();
    apply_defaults(&mut again);
    assert_eq!(again, o);
    out
}

fn svc(spec: Value) -> Value {
    defaulted(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec}),
    )
}

#[test]
fn service_defaults() {
    let s =
        svc(json!({"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}));
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["sessionAffinity"], "None");
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    assert!(s["spec"].get("externalTrafficPolicy").is_none());
    assert!(s["spec"].get("allocateLoadBalancerNodePorts").is_none());
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
    assert_eq!(s["spec"]["ports"][1]["protocol"], "UDP");
    assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
}

#[test]
fn service_target_port_zero_or_empty_becomes_port() {
    let s = svc(
        json!({"ports": [{"port": 8080, "targetPort": 0}, {"name": "b", "port": 81, "targetPort": ""}]}),
    );
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(s["spec"]["ports"][1]["targetPort"], 81);
}

#[test]
fn service_external_types() {
    let s = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
    let s = svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]}));
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(s["spec"]["allocateLoadBalancerNodePorts"], true);
    let s = svc(json!({"type": "ExternalName", "externalName": "example.com"}));
    assert!(s["spec"].get("internalTrafficPolicy").is_none());
    assert!(s["spec"].get("externalTrafficPolicy").is_none());
    let s = svc(json!({"externalIPs": ["1.2.3.4"], "ports": [{"port": 80}]}));
    assert_eq!(s["spec"]["externalTrafficPolicy"], "Cluster");
}

#[test]
fn service_session_affinity() {
    let s = svc(json!({"sessionAffinity": "ClientIP", "ports": [{"port": 80}]}));
    assert_eq!(
        s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    let s = svc(
        json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
    );
    assert_eq!(
        s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        60
    );
    let s = svc(
        json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
    );
    assert!(s["spec"].get("sessionAffinityConfig").is_none());
}

fn pod(spec: Value) -> Value {
    defaulted(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}))
}

#[test]
fn pod_spec_defaults() {
    let p = pod(json!({"containers": [{"name": "c", "image": "nginx"}]}));
    let s = &p["spec"];
    assert_eq!(s["restartPolicy"], "Always");
    assert_eq!(s["dnsPolicy"], "ClusterFirst");
    assert_eq!(s["terminationGracePeriodSeconds"], 30);
    assert_eq!(s["schedulerName"], "default-scheduler");
    assert_eq!(s["securityContext"], json!({}));
    assert_eq!(s["enableServiceLinks"], true);
    let c = &s["containers"][0];
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["imagePullPolicy"], "Always");
    let p = pod(
        json!({"restartPolicy": "Never", "dnsPolicy": "Default", "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "i"}]}),
    );
    assert_eq!(p["spec"]["restartPolicy"], "Never");
    assert_eq!(p["spec"]["dnsPolicy"], "Default");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 0);
}

#[test]
fn image_pull_policy_by_tag() {
    let policy = |image: &str| {
        let p = pod(json!({"containers": [{"name": "c", "image": image}]}));
        p["spec"]["containers"][0]["imagePullPolicy"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(policy("nginx"), "Always");
    assert_eq!(policy("nginx:latest"), "Always");
    assert_eq!(policy("nginx:1.25"), "IfNotPresent");
    assert_eq!(policy("localhost:5000/nginx"), "Always");
    assert_eq!(policy("localhost:5000/nginx:v1"), "IfNotPresent");
    assert_eq!(policy("nginx@sha256:abcd"), "IfNotPresent");
    assert_eq!(image_tag("skiff.dev/echo"), Some("latest".into()));
    let p =
        pod(json!({"containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]}));
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
}

#[test]
fn container_ports_probes_and_env() {
    let p = pod(json!({"containers": [{"name": "c", "image": "i",
        "ports": [{"containerPort": 80}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]}],
        "initContainers": [{"name": "init", "image": "i:1"}]}));
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    let l = &c["livenessProbe"];
    assert_eq!(l["timeoutSeconds"], 1);
    assert_eq!(l["periodSeconds"], 10);
    assert_eq!(l["successThreshold"], 1);
    assert_eq!(l["failureThreshold"], 3);
    assert_eq!(l["httpGet"]["scheme"], "HTTP");
    assert_eq!(l["httpGet"]["path"], "/");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
    assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["path"], "/stop");
    assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["scheme"], "HTTP");
    assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
    let init = &p["spec"]["initContainers"][0];
    assert_eq!(init["imagePullPolicy"], "IfNotPresent");
    assert_eq!(init["terminationMessagePolicy"], "File");
}

#[test]
fn pod_requests_from_limits_and_resize_policy() {
    let p = pod(json!({"containers": [{"name": "c", "image": "i",
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}}]}));
    let c = &p["spec"]["containers"][0];
    assert_eq!(c["resources"]["requests"]["cpu"], "100m");
    assert_eq!(c["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(
        c["resizePolicy"],
        json!([
        {"resourceName": "cpu", "restartPolicy": "NotRequired"},
        {"resourceName": "memory", "restartPolicy": "NotRequired"}])
    );
    let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
    assert!(p["spec"]["containers"][0].get("resizePolicy").is_none());
}

#[test]
fn host_network_ports() {
    let p = pod(
        json!({"hostNetwork": true, "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 8080}]}]}),
    );
    assert_eq!(p["spec"]["containers"][0]["ports"][0]["hostPort"], 8080);
}

#[test]
fn volumes() {
    let p = pod(
        json!({"containers": [{"name": "c", "image": "i"}], "volumes": [
        {"name": "scratch"},
        {"name": "s", "secret": {"secretName": "x"}},
        {"name": "c", "configMap": {"name": "x"}},
        {"name": "d", "configMap": {"name": "x", "defaultMode": 256}}]}),
    );
    let v = &p["spec"]["volumes"];
    assert_eq!(v[0]["emptyDir"], json!({}));
    assert_eq!(v[1]["secret"]["defaultMode"], 420);
    assert_eq!(v[2]["configMap"]["defaultMode"], 420);
    assert_eq!(v[3]["configMap"]["defaultMode"], 256);
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}})
}

#[test]
fn deployment_defaults() {
    let d = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
    );
    let s = &d["spec"];
    assert_eq!(s["replicas"], 1);
    assert_eq!(
        s["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(s["revisionHistoryLimit"], 10);
    assert_eq!(s["progressDeadlineSeconds"], 600);
    let ts = &s["template"]["spec"];
    assert_eq!(ts["restartPolicy"], "Always");
    assert_eq!(ts["containers"][0]["imagePullPolicy"], "IfNotPresent");
    // Pod-only defaults are not applied to templates.
    assert!(ts.get("enableServiceLinks").is_none());
    let d = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
    );
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    let d = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}, "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
    );
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"],
        json!({"maxSurge": 1, "maxUnavailable": "25%"})
    );
}

#[test]
fn replica_set_defaults() {
    let r = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
    );
    assert_eq!(r["spec"]["replicas"], 1);
    assert_eq!(r["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
}

#[test]
fn stateful_set_defaults() {
    let s = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
        "spec": {"serviceName": "s", "selector": {"matchLabels": {"app": "a"}}, "template": template(),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
    );
    let sp = &s["spec"];
    assert_eq!(sp["replicas"], 1);
    assert_eq!(sp["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sp["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(sp["revisionHistoryLimit"], 10);
    assert_eq!(
        sp["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(
        sp["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(sp["volumeClaimTemplates"][0]["status"]["phase"], "Pending");
    let s = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s"},
        "spec": {"updateStrategy": {"type": "OnDelete"}, "selector": {"matchLabels": {"app": "a"}}, "template": template()}}),
    );
    assert_eq!(s["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
}

#[test]
fn secret_defaults_and_string_data() {
    let s = defaulted(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "YQ=="}, "stringData": {"b": "hello", "a": "override"}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"]["b"], "aGVsbG8=");
    assert_eq!(s["data"]["a"], "b3ZlcnJpZGU=");
    assert!(s.get("stringData").is_none());
    let s = defaulted(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "kubernetes.io/tls"}),
    );
    assert_eq!(s["type"], "kubernetes.io/tls");
}

#[test]
fn endpoints_and_slices() {
    let e = defaulted(
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e"},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
    );
    assert_eq!(e["subsets"][0]["ports"][0]["protocol"], "TCP");
    let s = defaulted(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "e"},
        "addressType": "IPv4", "endpoints": [], "ports": [{"port": 80}]}),
    );
    assert_eq!(s["ports"][0]["protocol"], "TCP");
    assert_eq!(s["ports"][0]["name"], "");
}

#[test]
fn namespace_and_node() {
    let n =
        defaulted(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    assert_eq!(
        n["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    assert_eq!(n["status"]["phase"], "Active");
    // Not a v1 default: spec.finalizers is set by the registry on create.
    assert!(n.get("spec").is_none());
    let n = defaulted(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
        "status": {"capacity": {"cpu": "2", "pods": "110"}}}),
    );
    assert_eq!(
        n["status"]["allocatable"],
        json!({"cpu": "2", "pods": "110"})
    );
}

#[test]
fn kinds_without_defaults_are_unchanged() {
    for v in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
            "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}}),
    ] {
        let mut expected = v.clone();
        if expected["kind"] == "Ingress" {
            // pathType has no default: it stays empty (and validation requires it).
            expected["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("");
        }
        assert_eq!(defaulted(v), expected);
    }
}
