//! Generated Services and EndpointSlices for the proxy benchmarks: N ClusterIP Services of
//! one port, each with an EndpointSlice of `ENDPOINTS` ready IPv4 endpoints on three nodes.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_proxy::NodeInfo;

pub const ENDPOINTS: usize = 10;

fn ip(base: u32, i: usize) -> String {
    let v = base + i as u32;
    format!(
        "{}.{}.{}.{}",
        v >> 24,
        (v >> 16) & 255,
        (v >> 8) & 255,
        v & 255
    )
}

pub fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"clusterIP": ip(0x0a60_0000, i + 1),
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap()
}

pub fn slice(i: usize, shift: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..ENDPOINTS)
        .map(|e| {
            json!({"addresses": [ip(0x0af4_0000, i * ENDPOINTS + e + shift)],
                   "conditions": {"ready": true}, "nodeName": format!("node-{}", e % 3)})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

pub fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    (
        (0..n).map(service).collect(),
        (0..n).map(|i| slice(i, 0)).collect(),
    )
}

pub fn node() -> NodeInfo {
    NodeInfo {
        name: "node-0".into(),
        zone: None,
        addresses: vec!["192.168.0.10".parse().unwrap()],
    }
}
