//! Routing tests: Kubernetes objects in, (host, path) → backend out. The path-type table is
//! the one in the Kubernetes Ingress documentation ("Examples" under "Path types").

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

use crate::class::CONTROLLER_NAME;
use crate::compile::{RoutingConfig, compile};
use crate::model::{BackendRef, Key, Model, PortRef};
use crate::table::{Decision, RouteTable};

fn ingress(name: &str, created: &str, spec: Value) -> Ingress {
    ingress_meta(
        json!({"name": name, "namespace": "default", "creationTimestamp": created}),
        spec,
    )
}

fn ingress_meta(meta: Value, spec: Value) -> Ingress {
    serde_json::from_value(json!({"metadata": meta, "spec": spec})).expect("test ingress")
}

fn path(p: &str, ty: &str, svc: &str) -> Value {
    json!({"path": p, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}})
}

fn rule(host: Option<&str>, paths: Vec<Value>) -> Value {
    let mut r = json!({"http": {"paths": paths}});
    if let Some(h) = host {
        r["host"] = json!(h);
    }
    r
}

fn backend(svc: &str) -> Value {
    json!({"service": {"name": svc, "port": {"number": 80}}})
}

/// A Service with port 80 (named `http`) → targetPort 8080 and one ready endpoint per IP.
fn service(m: &mut Model, name: &str, ips: &[&str]) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("test service");
    m.add_service(&svc);
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    slice(m, name, name, endpoints);
}

fn slice(m: &mut Model, slice_name: &str, svc: &str, endpoints: Vec<Value>) {
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": slice_name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("test slice");
    m.add_slice(&s);
}

fn our_class(m: &mut Model) {
    let c: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "skiff",
                     "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": CONTROLLER_NAME}
    }))
    .expect("test class");
    m.add_class(&c);
}

/// A model with our default class and Services `s0`..`s9` (`sN` at 10.0.0.N).
fn base() -> Model {
    let mut m = Model::default();
    our_class(&mut m);
    for i in 0..10 {
        service(&mut m, &format!("s{i}"), &[&format!("10.0.0.{i}")]);
    }
    m
}

/// The Service a request reaches: `Some(name)`, or `None` for 404.
fn routed(t: &RouteTable, host: &str, path: &str) -> Option<String> {
    match t.lookup(host, path) {
        Decision::Route(r) => Some(r.backend.name.service.name.clone()),
        Decision::NotFound => None,
    }
}

fn table(m: &Model) -> RouteTable {
    compile(m, &RoutingConfig::default(), None).table
}

#[test]
fn path_types_from_the_kubernetes_docs() {
    // (rules as (type, path) each to its own Service, request path, the matched rule index or
    // None for "no match" = default backend / 404). From the documentation's table.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static str,
        Option<usize>,
    );
    let cases: &[Case] = &[
        (&[("Prefix", "/")], "/", Some(0)),
        (&[("Prefix", "/")], "/anything/at/all", Some(0)),
        (&[("Exact", "/foo")], "/foo", Some(0)),
        (&[("Exact", "/foo")], "/bar", None),
        (&[("Exact", "/foo")], "/foo/", None),
        (&[("Exact", "/foo/")], "/foo", None),
        (&[("Prefix", "/foo")], "/foo", Some(0)),
        (&[("Prefix", "/foo")], "/foo/", Some(0)),
        (&[("Prefix", "/foo/")], "/foo", Some(0)),
        (&[("Prefix", "/foo/")], "/foo/", Some(0)),
        (&[("Prefix", "/aaa/bb")], "/aaa/bbb", None),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb", Some(0)),
        (&[("Prefix", "/aaa/bbb/")], "/aaa/bbb", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb/", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbb/ccc", Some(0)),
        (&[("Prefix", "/aaa/bbb")], "/aaa/bbbxyz", None),
        (&[("Prefix", "/"), ("Prefix", "/aaa")], "/aaa/ccc", Some(1)),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/aaa/bbb",
            Some(2),
        ),
        (
            &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
            "/ccc",
            Some(0),
        ),
        (&[("Prefix", "/aaa")], "/ccc", None),
        (&[("Prefix", "/foo"), ("Exact", "/foo")], "/foo", Some(1)),
        (&[("Exact", "/foo"), ("Prefix", "/foo")], "/foo", Some(0)),
        // Beyond the table: case sensitivity, ImplementationSpecific as Prefix, queries are
        // not part of the path the proxy passes in, longest prefix wins over order.
        (&[("Exact", "/foo")], "/FOO", None),
        (&[("Prefix", "/foo")], "/Foo/bar", None),
        (&[("ImplementationSpecific", "/foo")], "/foo/bar", Some(0)),
        (&[("ImplementationSpecific", "/foo")], "/foobar", None),
        (
            &[("Prefix", "/aaa/bbb"), ("Prefix", "/aaa")],
            "/aaa/bbb/c",
            Some(0),
        ),
        (
            &[("Prefix", "/aaa"), ("Exact", "/aaa/bbb")],
            "/aaa/bbb",
            Some(1),
        ),
        (
            &[("Prefix", "/aaa"), ("Exact", "/aaa/bbb")],
            "/aaa/bbb/",
            Some(0),
        ),
    ];
    for (i, (rules, request, want)) in cases.iter().enumerate() {
        let mut m = base();
        let paths = rules
            .iter()
            .enumerate()
            .map(|(k, (ty, p))| path(p, ty, &format!("s{k}")))
            .collect();
        m.add_ingress(&ingress(
            "i",
            "2024-01-01T00:00:00Z",
            json!({"rules": [rule(Some("foo.com"), paths)]}),
        ));
        let t = table(&m);
        let got = routed(&t, "foo.com", request);
        assert_eq!(
            got,
            want.map(|k| format!("s{k}")),
            "case {i}: rules {rules:?}, request {request}"
        );
    }
}

#[test]
fn hosts_exact_wildcard_any_and_case() {
    let mut m = base();
    m.add_ingress(&ingress(
        "i",
        "2024-01-01T00:00:00Z",
        json!({"rules": [
            rule(Some("foo.bar.com"), vec![path("/", "Prefix", "s1")]),
            rule(Some("*.bar.com"), vec![path("/", "Prefix", "s2")]),
            rule(None, vec![path("/any", "Prefix", "s3")]),
        ]}),
    ));
    let t = table(&m);
    let cases = [
        ("foo.bar.com", "/", Some("s1")),
        ("FOO.Bar.COM:8080", "/x", Some("s1")),
        ("foo.bar.com.", "/", Some("s1")),
        ("baz.bar.com", "/", Some("s2")),
        ("BAZ.bar.com", "/", Some("s2")),
        // The wildcard covers exactly one label.
        ("a.baz.bar.com", "/", None),
        ("bar.com", "/", None),
        ("a.baz.bar.com", "/any/x", Some("s3")),
        ("bar.com", "/any", Some("s3")),
        ("other.org", "/any", Some("s3")),
        // A host's own rules win over host-less ones.
        ("foo.bar.com", "/any", Some("s1")),
        ("other.org", "/", None),
    ];
    for (host, p, want) in cases {
        assert_eq!(routed(&t, host, p).as_deref(), want, "{host}{p}");
    }
}

#[test]
fn ingresses_merge_per_host_oldest_first() {
    let mut m = base();
    // Newer, but first by name: must lose to the older one.
    m.add_ingress(&ingress(
        "a-new",
        "2024-06-01T00:00:00Z",
        json!({"rules": [rule(Some("foo.com"), vec![path("/api", "Prefix", "s1"), path("/new", "Exact", "s1")])]}),
    ));
    m.add_ingress(&ingress(
        "z-old",
        "2024-01-01T00:00:00Z",
        json!({"rules": [rule(Some("foo.com"), vec![path("/api", "Prefix", "s2")])]}),
    ));
    // Same timestamp as z-old: namespace/name decides ("b-same" < "z-old").
    m.add_ingress(&ingress(
        "b-same",
        "2024-01-01T00:00:00Z",
        json!({"rules": [rule(Some("foo.com"), vec![path("/api", "Prefix", "s3")])]}),
    ));
    let c = compile(&m, &RoutingConfig::default(), None);
    assert_eq!(routed(&c.table, "foo.com", "/api/x").as_deref(), Some("s3"));
    // Paths that do not collide merge.
    assert_eq!(routed(&c.table, "foo.com", "/new").as_deref(), Some("s1"));
    assert_eq!(
        c.ours,
        vec![
            Key::new("default", "b-same"),
            Key::new("default", "z-old"),
            Key::new("default", "a-new")
        ]
    );
    // The shadowed rules are reported on the Ingresses that lost them.
    let shadowed: Vec<&str> = c.problems.iter().map(|p| p.object.name.as_str()).collect();
    assert_eq!(shadowed, vec!["z-old", "a-new"], "{:?}", c.problems);
    // Recompiling gives the same answer (deterministic).
    let again = table(&m);
    assert_eq!(routed(&again, "foo.com", "/api").as_deref(), Some("s3"));
}

#[test]
fn default_backends() {
    let mut m = base();
    m.add_ingress(&ingress(
        "host-default",
        "2024-01-01T00:00:00Z",
        json!({"defaultBackend": backend("s4"),
               "rules": [rule(Some("foo.com"), vec![path("/a", "Prefix", "s1")])]}),
    ));
    let t = table(&m);
    // Unmatched path on the Ingress's host: its defaultBackend.
    assert_eq!(routed(&t, "foo.com", "/b").as_deref(), Some("s4"));
    // Another host: no catch-all yet, 404.
    assert_eq!(routed(&t, "other.com", "/b"), None);

    // A defaultBackend-only Ingress is the catch-all.
    m.add_ingress(&ingress(
        "catch-all",
        "2024-02-01T00:00:00Z",
        json!({"defaultBackend": backend("s5")}),
    ));
    let t = table(&m);
    assert_eq!(routed(&t, "other.com", "/b").as_deref(), Some("s5"));
    assert_eq!(routed(&t, "foo.com", "/b").as_deref(), Some("s4"));

    // Controller-wide default only when no Ingress gives one.
    let cfg = RoutingConfig {
        default_backend: Some(BackendRef {
            service: Key::new("default", "s6"),
            port: PortRef::Name("http".into()),
        }),
        ..Default::default()
    };
    let t = compile(&m, &cfg, None).table;
    assert_eq!(routed(&t, "other.com", "/").as_deref(), Some("s5"));
    m.ingresses.remove(&Key::new("default", "catch-all"));
    let t = compile(&m, &cfg, None).table;
    let Decision::Route(r) = t.lookup("other.com", "/") else {
        panic!("controller default expected");
    };
    assert_eq!(r.backend.name.service.name, "s6");
    assert!(r.ingress.is_none());
    assert_eq!(r.backend.endpoints[0].addr.to_string(), "10.0.0.6:8080");
}

#[test]
fn backends_resolve_to_ready_pod_target_ports() {
    let mut m = base();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "admin", "port": 9000, "targetPort": 9901},
        ]}
    }))
    .expect("svc");
    m.add_service(&svc);
    let s: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9901}],
        "endpoints": [
            {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.1.0.1"]},
            {"addresses": ["10.1.0.3"], "conditions": {"ready": false}},
        ],
    }))
    .expect("slice");
    m.add_slice(&s);
    // A second slice of the same Service adds endpoints.
    let s2: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-def", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["10.1.0.4"]}],
    }))
    .expect("slice");
    m.add_slice(&s2);
    let by_name = json!({"path": "/byname", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"name": "admin"}}}});
    let by_number = json!({"path": "/bynumber", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 80}}}});
    let bad_port = json!({"path": "/badport", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 81}}}});
    m.add_ingress(&ingress(
        "i",
        "2024-01-01T00:00:00Z",
        json!({"rules": [rule(None, vec![
            by_name, by_number, bad_port,
            path("/missing", "Prefix", "nope"),
            path("/empty", "Prefix", "empty"),
        ])]}),
    ));
    service(&mut m, "empty", &[]);
    let t = table(&m);
    let addrs = |p: &str| match t.lookup("x", p) {
        Decision::Route(r) => (
            r.backend
                .endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect::<Vec<_>>(),
            r.backend.unavailable.clone(),
        ),
        Decision::NotFound => panic!("{p} not routed"),
    };
    assert_eq!(
        addrs("/bynumber").0,
        vec!["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.4:8080"]
    );
    assert_eq!(addrs("/byname").0, vec!["10.1.0.1:9901", "10.1.0.2:9901"]);
    for (p, why) in [
        ("/badport", "service default/web has no TCP port 81"),
        ("/missing", "service default/nope does not exist"),
        (
            "/empty",
            "service default/empty port 80 has no ready endpoints",
        ),
    ] {
        let (eps, reason) = addrs(p);
        assert!(eps.is_empty(), "{p}");
        assert_eq!(reason.as_deref(), Some(why), "{p}");
    }
}

#[test]
fn foreign_classes_are_ignored() {
    let mut m = base();
    let nginx: IngressClass = serde_json::from_value(json!({
        "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}
    }))
    .expect("class");
    m.add_class(&nginx);
    let mut spec = json!({"ingressClassName": "nginx",
        "rules": [rule(Some("foo.com"), vec![path("/", "Prefix", "s1")])]});
    m.add_ingress(&ingress("foreign", "2024-01-01T00:00:00Z", spec.clone()));
    // The legacy annotation counts as a class too.
    m.add_ingress(&ingress_meta(
        json!({"name": "legacy", "namespace": "default",
               "annotations": {"kubernetes.io/ingress.class": "nginx"}}),
        json!({"rules": [rule(Some("bar.com"), vec![path("/", "Prefix", "s1")])]}),
    ));
    spec["ingressClassName"] = json!("skiff");
    spec["rules"][0]["host"] = json!("mine.com");
    m.add_ingress(&ingress("mine", "2024-01-01T00:00:00Z", spec));
    let c = compile(&m, &RoutingConfig::default(), None);
    assert_eq!(routed(&c.table, "foo.com", "/"), None);
    assert_eq!(routed(&c.table, "bar.com", "/"), None);
    assert_eq!(routed(&c.table, "mine.com", "/").as_deref(), Some("s1"));
    assert_eq!(c.ours, vec![Key::new("default", "mine")]);
}

#[test]
fn invalid_parts_are_reported_and_the_rest_served() {
    let mut m = base();
    m.add_ingress(&ingress(
        "bad",
        "2024-01-01T00:00:00Z",
        json!({"rules": [
            rule(Some("foo.com"), vec![
                path("no-slash", "Prefix", "s1"),
                path("/ok", "Prefix", "s2"),
                path("/x", "Regex", "s1"),
                json!({"path": "/noport", "pathType": "Prefix", "backend": {"service": {"name": "s1"}}}),
            ]),
            rule(Some("bad_host!"), vec![path("/", "Prefix", "s1")]),
        ]}),
    ));
    let c = compile(&m, &RoutingConfig::default(), None);
    assert_eq!(routed(&c.table, "foo.com", "/ok").as_deref(), Some("s2"));
    assert_eq!(c.table.rule_count(), 1);
    let fields: Vec<&str> = c.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.rules[0].http.paths[0].path",
            "spec.rules[0].http.paths[2].pathType",
            "spec.rules[0].http.paths[3].backend",
            "spec.rules[1].host",
        ]
    );
    assert!(c.problems[0].message.contains("\"no-slash\""));
}

#[test]
fn https_redirect_follows_tls_hosts_and_the_annotation() {
    let mut m = base();
    let spec = |host: &str, tls_host: &str| {
        json!({"tls": [{"hosts": [tls_host], "secretName": "cert"}],
               "rules": [rule(Some(host), vec![path("/", "Prefix", "s1")])]})
    };
    m.add_ingress(&ingress(
        "a",
        "2024-01-01T00:00:00Z",
        spec("a.com", "a.com"),
    ));
    m.add_ingress(&ingress(
        "w",
        "2024-01-01T00:00:00Z",
        spec("w.foo.com", "*.foo.com"),
    ));
    m.add_ingress(&ingress(
        "n",
        "2024-01-01T00:00:00Z",
        spec("n.com", "other.com"),
    ));
    m.add_ingress(&ingress_meta(
        json!({"name": "off", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
               "annotations": {"skiff.dev/ssl-redirect": "false"}}),
        spec("off.com", "off.com"),
    ));
    let t = table(&m);
    for (host, want) in [
        ("a.com", true),
        ("w.foo.com", true),
        ("n.com", false),
        ("off.com", false),
    ] {
        let Decision::Route(r) = t.lookup(host, "/") else {
            panic!("{host} not routed")
        };
        assert_eq!(r.redirect_https, want, "{host}");
    }
}

#[test]
fn endpoint_load_state_survives_recompiles() {
    let m = base();
    let mut m = m;
    m.add_ingress(&ingress(
        "i",
        "2024-01-01T00:00:00Z",
        json!({"rules": [rule(None, vec![path("/", "Prefix", "s1")])]}),
    ));
    let first = table(&m);
    let Decision::Route(r1) = first.lookup("x", "/") else {
        panic!("not routed")
    };
    r1.backend.endpoints[0].start();
    let second = compile(&m, &RoutingConfig::default(), Some(&first)).table;
    let Decision::Route(r2) = second.lookup("x", "/") else {
        panic!("not routed")
    };
    assert_eq!(r2.backend.endpoints[0].pending(), 1);
}

#[test]
fn backend_protocol_annotation() {
    use crate::model::BackendProtocol;
    let mut m = base();
    for (name, value) in [("g", "grpc"), ("h", "H2C"), ("s", "HTTPS"), ("bad", "SPDY")] {
        m.add_ingress(&ingress_meta(
            json!({"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                   "annotations": {"skiff.dev/backend-protocol": value}}),
            json!({"rules": [rule(Some(&format!("{name}.com")), vec![path("/", "Prefix", "s1")])]}),
        ));
    }
    let c = compile(&m, &RoutingConfig::default(), None);
    for (host, want) in [
        ("g.com", BackendProtocol::Grpc),
        ("h.com", BackendProtocol::H2c),
        ("s.com", BackendProtocol::Https),
        ("bad.com", BackendProtocol::Http),
    ] {
        let Decision::Route(r) = c.table.lookup(host, "/") else {
            panic!("{host} not routed")
        };
        assert_eq!(r.protocol, want, "{host}");
    }
    assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
    assert!(c.problems[0].message.contains("\"SPDY\""));
}

#[test]
fn canary_ingresses_attach_to_main_routes() {
    let mut m = base();
    let canary = |name: &str, weight: &str, host: &str, svc: &str| {
        ingress_meta(
            json!({"name": name, "namespace": "default", "creationTimestamp": "2023-01-01T00:00:00Z",
                   "annotations": {"skiff.dev/canary-weight": weight}}),
            json!({"rules": [rule(Some(host), vec![path("/", "Prefix", svc)])]}),
        )
    };
    // Older than the main Ingress, still a canary of it.
    m.add_ingress(&canary("c", "30", "foo.com", "s2"));
    m.add_ingress(&canary("lonely", "50", "nomain.com", "s3"));
    m.add_ingress(&canary("bad", "150", "bar.com", "s4"));
    m.add_ingress(&ingress(
        "main",
        "2024-01-01T00:00:00Z",
        json!({"rules": [
            rule(Some("foo.com"), vec![path("/", "Prefix", "s1")]),
            rule(Some("bar.com"), vec![path("/", "Prefix", "s1")]),
        ]}),
    ));
    let c = compile(&m, &RoutingConfig::default(), None);
    let Decision::Route(r) = c.table.lookup("foo.com", "/x") else {
        panic!("not routed")
    };
    assert_eq!(r.ingress, Some(Key::new("default", "main")));
    let canary = r
        .canary
        .as_ref()
        .map(|c| (c.ingress.name.as_str(), c.weight));
    assert_eq!(canary, Some(("c", 30)));
    assert_eq!(r.choose_backend(29).name.service.name, "s2");
    assert_eq!(r.choose_backend(30).name.service.name, "s1");
    // A canary without a main Ingress routes nothing and is reported.
    assert_eq!(routed(&c.table, "nomain.com", "/"), None);
    // An invalid weight makes an ordinary Ingress of it: here the older one, so it owns the path.
    let Decision::Route(bar) = c.table.lookup("bar.com", "/") else {
        panic!("not routed")
    };
    assert!(bar.canary.is_none());
    assert_eq!(bar.backend.name.service.name, "s4");
    let msgs: Vec<String> = c.problems.iter().map(|p| p.to_string()).collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("default/lonely") && m.contains("no main Ingress")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("default/bad") && m.contains("\"150\"")),
        "{msgs:?}"
    );
}
