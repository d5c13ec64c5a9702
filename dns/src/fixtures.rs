//! Builders of the API objects the DNS server reads, for tests and benchmarks (not part of
//! the server).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

/// `(name, protocol, port)`; an empty name is an unnamed port.
pub type Port<'a> = (&'a str, &'a str, i32);

fn service_ports(ports: &[Port<'_>]) -> Vec<ServicePort> {
    ports
        .iter()
        .map(|&(name, protocol, port)| ServicePort {
            name: (!name.is_empty()).then(|| name.into()),
            protocol: Some(protocol.into()),
            port,
            ..ServicePort::default()
        })
        .collect()
}

/// A ClusterIP Service with these addresses (one per family).
pub fn service(ns: &str, name: &str, ips: &[&str], ports: &[Port<'_>]) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: ips.first().map(|s| s.to_string()),
            cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(service_ports(ports)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A headless Service (`clusterIP: None`).
pub fn headless(ns: &str, name: &str, ports: &[Port<'_>]) -> Service {
    let mut s = service(ns, name, &["None"], ports);
    if let Some(spec) = s.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
    }
    s
}

/// An ExternalName Service.
pub fn external_name(ns: &str, name: &str, target: &str) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some(target.into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// One endpoint: `(address, hostname, ready)`.
pub type Ep<'a> = (&'a str, Option<&'a str>, bool);

/// An EndpointSlice of `service` (address type from the first address).
pub fn slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[Ep<'_>],
    ports: &[Port<'_>],
) -> EndpointSlice {
    let mut m = meta(ns, name);
    m.labels = Some(BTreeMap::from([(
        crate::model::SERVICE_NAME_LABEL.to_string(),
        service.to_string(),
    )]));
    let v6 = endpoints.first().is_some_and(|e| e.0.contains(':'));
    EndpointSlice {
        metadata: m,
        address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
        endpoints: endpoints
            .iter()
            .map(|&(addr, hostname, ready)| Endpoint {
                addresses: vec![addr.into()],
                hostname: hostname.map(Into::into),
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(ready),
                    terminating: None,
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|&(name, protocol, port)| EndpointPort {
                    name: Some(name.into()),
                    protocol: Some(protocol.into()),
                    port: Some(port),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    }
}

/// A running Pod with these addresses.
pub fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: meta(ns, name),
        status: Some(PodStatus {
            pod_ip: ips.first().map(|s| s.to_string()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    }
}

/// The cluster the conformance tests and the unit tests share: every kind of record.
pub fn cluster() -> (Vec<Service>, Vec<EndpointSlice>, Vec<Pod>) {
    let mut tolerate = headless("default", "tolerant", &[("http", "TCP", 80)]);
    tolerate.metadata.annotations = Some(BTreeMap::from([(
        crate::model::TOLERATE_UNREADY_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    let mut publish = headless("default", "publish", &[("http", "TCP", 80)]);
    if let Some(spec) = publish.spec.as_mut() {
        spec.publish_not_ready_addresses = Some(true);
    }
    let services = vec![
        service(
            "default",
            "kubernetes",
            &["10.96.0.1"],
            &[("https", "TCP", 443)],
        ),
        service(
            "kube-system",
            "kube-dns",
            &["10.96.0.10"],
            &[
                ("dns", "UDP", 53),
                ("dns-tcp", "TCP", 53),
                ("", "TCP", 9153),
            ],
        ),
        service(
            "default",
            "dual",
            &["10.96.0.20", "fd00:10:96::20"],
            &[("http", "TCP", 80)],
        ),
        service("default", "v6only", &["fd00:10:96::30"], &[]),
        headless("default", "web", &[("http", "TCP", 8080)]),
        headless("default", "empty", &[("http", "TCP", 8080)]),
        tolerate,
        publish,
        external_name("default", "ext", "www.example.com"),
        external_name("default", "alias", "kubernetes.default.svc.cluster.local"),
        service(
            "other",
            "api",
            &["10.96.1.1"],
            &[("grpc", "TCP", 9000), ("metrics", "UDP", 9100)],
        ),
    ];
    let slices = vec![
        slice(
            "default",
            "web-abc",
            "web",
            &[
                ("10.244.0.5", Some("web-0"), true),
                ("10.244.0.6", None, true),
                ("10.244.0.7", Some("web-2"), false),
            ],
            &[("http", "TCP", 8080)],
        ),
        slice(
            "default",
            "web-v6",
            "web",
            &[("fd00:10:244::5", Some("web-0"), true)],
            &[("http", "TCP", 8080)],
        ),
        slice(
            "default",
            "empty-1",
            "empty",
            &[("10.244.0.9", None, false)],
            &[("http", "TCP", 8080)],
        ),
        slice(
            "default",
            "tolerant-1",
            "tolerant",
            &[("10.244.0.10", None, false)],
            &[("http", "TCP", 80)],
        ),
        slice(
            "default",
            "publish-1",
            "publish",
            &[("10.244.0.11", Some("p-0"), false)],
            &[("http", "TCP", 80)],
        ),
    ];
    let pods = vec![pod("default", "web-0", &["10.244.0.5", "fd00:10:244::5"])];
    (services, slices, pods)
}

/// Of the benchmark cluster's Services, every this-many-th is headless (3 ready endpoints);
/// the others are ClusterIP with one named port.
pub const BENCH_HEADLESS_EVERY: usize = 5;

/// The benchmark cluster: `n` Services over 100 namespaces (`svc-<i>.ns-<i % 100>`), every
/// [`BENCH_HEADLESS_EVERY`]-th headless with 3 endpoints at `10.{128+e}.{i/256}.{i%256}`, the
/// others ClusterIP at `10.{96 + i/65536}.{(i/256)%256}.{i%256}` with port `http` 80/TCP.
pub fn bench_cluster(n: usize) -> crate::Model {
    use crate::model::{ServiceInfo, SliceInfo};
    // Each object is cut down as soon as it is made, as the watch does with a listed page.
    let mut model = crate::Model::default();
    for i in 0..n {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let svc = if i.is_multiple_of(BENCH_HEADLESS_EVERY) {
            let ips: Vec<String> = (0..3)
                .map(|e| format!("10.{}.{}.{}", 128 + e, (i / 256) % 256, i % 256))
                .collect();
            let eps: Vec<Ep<'_>> = ips.iter().map(|a| (a.as_str(), None, true)).collect();
            let s = slice(
                &ns,
                &format!("{name}-1"),
                &name,
                &eps,
                &[("http", "TCP", 8080)],
            );
            if let Some(s) = SliceInfo::from_slice(&s) {
                model.slices.insert(s.key.clone(), s);
            }
            headless(&ns, &name, &[("http", "TCP", 8080)])
        } else {
            let ip = format!("10.{}.{}.{}", 96 + i / 65536, (i / 256) % 256, i % 256);
            service(&ns, &name, &[ip.as_str()], &[("http", "TCP", 80)])
        };
        if let Some(s) = ServiceInfo::from_service(&svc) {
            model.services.insert(s.key.clone(), s);
        }
    }
    model
}
