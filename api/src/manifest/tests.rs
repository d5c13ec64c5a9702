//! Manifest parser tests: every bad-input case, strictness modes, lists and JSON streams.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::kinds::Kind;

fn parse(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    parse_manifests("test.yaml", text, Strictness::Strict)
}

fn err(text: &str) -> ManifestError {
    match parse(text) {
        Ok(m) => panic!("expected an error, parsed {} objects", m.len()),
        Err(e) => e,
    }
}

const SVC: &str =
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";

#[test]
fn multi_document_yaml() {
    let text = format!(
        "# leading comment\n---\n{SVC}---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n...\n"
    );
    let m = parse(&text).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].object.kind(), Kind::Service);
    assert_eq!(m[0].document, 0);
    assert_eq!(m[0].line, Some(1));
    assert_eq!(m[1].object.kind(), Kind::Deployment);
    assert_eq!(m[1].document, 2);
    assert_eq!(m[1].file, "test.yaml");
    assert_eq!(m[0].raw["spec"]["ports"][0]["port"], 80);
}

#[test]
fn empty_input_is_no_objects() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("---\n# nothing\n---\n").unwrap().is_empty());
    assert!(parse("~\n").unwrap().is_empty());
}

#[test]
fn json_object_and_stream() {
    let one = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#;
    let m = parse_manifests("a.json", one, Strictness::Strict).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].object.name(), "a");
    let two = format!("{one}\n\n{one}");
    let m = parse_manifests("a.json", &two, Strictness::Strict).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].document, 1);
    assert_eq!(m[1].line, Some(3));
}

#[test]
fn list_is_expanded() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
        {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"b"}}]}"#;
    let m = parse_manifests("l.json", list, Strictness::Strict).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].item, Some(1));
    assert_eq!(m[1].object.kind(), Kind::Deployment);
    let typed = "apiVersion: v1\nkind: ServiceList\nitems:\n- metadata:\n    name: s\n";
    let m = parse(typed).unwrap();
    assert_eq!(m[0].object.kind(), Kind::Service);
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: a\n  bogus: 1\n";
    let e = err(bad);
    assert_eq!(
        e.kind,
        ErrorKind::UnknownFields(vec!["items[0].bogus".into()])
    );
    let e = err("apiVersion: v1\nkind: List\nitems: 3\n");
    assert_eq!(e.field.as_deref(), Some("items"));
}

#[test]
fn malformed_yaml_has_line_info() {
    let text = format!("{SVC}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n");
    let e = err(&text);
    assert!(matches!(e.kind, ErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.document, Some(1));
    assert_eq!(e.file, "test.yaml");
    let line = e.line.unwrap();
    assert!(line >= 11, "line {line} should be in the second document");
    let msg = e.to_string();
    assert!(
        msg.starts_with("test.yaml: document 2 (1-based), line "),
        "{msg}"
    );
    let e = err("a: b: c\n");
    assert_eq!(e.line, Some(1));
    let e = err("key: value\n  bad indent: x\n");
    assert!(matches!(e.kind, ErrorKind::Syntax(_)));
}

#[test]
fn malformed_json_has_line_info() {
    let e = parse_manifests(
        "x.json",
        "{\"apiVersion\": \"v1\",\n \"kind\": }",
        Strictness::Strict,
    )
    .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Syntax(_)));
    assert_eq!(e.line, Some(2));
    assert_eq!(e.document, Some(0));
}

#[test]
fn wrong_api_version_and_kind() {
    let e = err("apiVersion: v1\nkind: Foo\nmetadata:\n  name: a\n");
    assert_eq!(
        e.to_string(),
        "test.yaml: document 1 (1-based), line 1, field kind: no kind \"Foo\" is registered for version \"v1\""
    );
    let e = err("apiVersion: apps/v2\nkind: Deployment\n");
    assert_eq!(
        e.kind,
        ErrorKind::UnknownVersion {
            api_version: "apps/v2".into(),
            kind: "Deployment".into()
        }
    );
    assert_eq!(e.field.as_deref(), Some("apiVersion"));
    let e = err("apiVersion: v1\nkind: Deployment\n");
    assert!(matches!(e.kind, ErrorKind::UnknownKind { .. }));
    let e = err("apiVersion: v1\nmetadata:\n  name: a\n");
    assert_eq!(e.kind, ErrorKind::MissingTypeField("Kind", "kind"));
    let e = err("kind: Pod\n");
    assert_eq!(
        e.kind,
        ErrorKind::MissingTypeField("APIVersion", "apiVersion")
    );
    let e = err("apiVersion: v1\nkind: 3\n");
    assert_eq!(e.kind, ErrorKind::TypeFieldNotString("kind"));
    let e = err("- a\n- b\n");
    assert_eq!(e.kind, ErrorKind::NotAnObject("an array"));
    let e = err("just a string\n");
    assert_eq!(e.kind, ErrorKind::NotAnObject("a string"));
}

#[test]
fn invalid_names_parse_but_fail_validation() {
    let m = parse("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n").unwrap();
    let errs = crate::validation::validate(&m[0].object, &Default::default()).unwrap_err();
    assert_eq!(errs.0[0].field, "metadata.name");
}

#[test]
fn duplicate_keys_yaml() {
    let e = err("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n");
    assert_eq!(e.kind, ErrorKind::DuplicateKey("name".into()));
    assert_eq!(e.line, Some(5));
    assert!(e.to_string().contains("duplicate key \"name\""));
}

#[test]
fn duplicate_keys_json() {
    let text = r#"{"apiVersion":"v1","kind":"Service","spec":{"ports":[{"port":1,"port":2}]}}"#;
    let e = parse_manifests("d.json", text, Strictness::Ignore).unwrap_err();
    assert_eq!(e.kind, ErrorKind::DuplicateKey("port".into()));
    assert_eq!(e.field.as_deref(), Some("spec.ports[0].port"));
    assert_eq!(e.line, Some(1));
    let top = r#"{"kind":"Pod","kind":"Pod"}"#;
    let e = parse_manifests("d.json", top, Strictness::Ignore).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("kind"));
}

#[test]
fn fifty_megabytes_is_refused_quickly() {
    let start = std::time::Instant::now();
    let mut text =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  k: ");
    text.push_str(&"x".repeat(50 * 1024 * 1024));
    let e = err(&text);
    assert!(
        matches!(
            e.kind,
            ErrorKind::TooLarge {
                what: "the input",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("limit"));
    // Functional bound, not a benchmark: refusing must not parse 50 MB.
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn one_big_document_is_refused() {
    let mut text =
        format!("{SVC}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  k: ");
    text.push_str(&"x".repeat(MAX_OBJECT_BYTES));
    let e = err(&text);
    assert!(matches!(
        e.kind,
        ErrorKind::TooLarge {
            what: "the document",
            ..
        }
    ));
    assert_eq!(e.document, Some(1));
    let mut json = String::from(r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"k":""#);
    json.push_str(&"x".repeat(MAX_OBJECT_BYTES));
    json.push_str("\"}}");
    let e = parse_manifests("b.json", &json, Strictness::Strict).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::TooLarge { .. }));
}

#[test]
fn deep_nesting_is_refused() {
    let deep_yaml = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let e = err(&format!(
        "apiVersion: v1\nkind: ConfigMap\nx: {deep_yaml}\n"
    ));
    assert!(
        matches!(
            e.kind,
            ErrorKind::TooDeep(_) | ErrorKind::LimitExceeded(_) | ErrorKind::Syntax(_)
        ),
        "{e}"
    );
    let mut block = String::from("apiVersion: v1\nkind: ConfigMap\n");
    for i in 0..100 {
        block.push_str(&" ".repeat(i));
        block.push_str("a:\n");
    }
    let e = err(&block);
    assert!(matches!(e.kind, ErrorKind::TooDeep(_)), "{e}");
    let deep_json = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let e = parse_manifests("d.json", &deep_json, Strictness::Strict).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooDeep(MAX_DEPTH));
}

#[test]
fn alias_bomb_is_refused() {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\nx:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = err(&text);
    assert!(
        matches!(e.kind, ErrorKind::LimitExceeded(_) | ErrorKind::Syntax(_)),
        "{e}"
    );
}

#[test]
fn type_errors_name_the_field() {
    let e = err(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: eighty\n",
    );
    assert_eq!(e.field.as_deref(), Some("spec.ports[0].port"));
    assert!(matches!(e.kind, ErrorKind::InvalidValue(_)));
    assert!(
        e.to_string()
            .contains("field spec.ports[0].port: invalid type"),
        "{e}"
    );
    let e = err(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\nspec:\n  replicas: [1]\n",
    );
    assert_eq!(e.field.as_deref(), Some("spec.replicas"));
    let e =
        err("apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\ndata:\n  k: '!!!not base64'\n");
    assert_eq!(e.field.as_deref(), Some("data.k"));
}

const UNKNOWN: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: a\n  nmae: b\nspec:\n  replica: 3\n  template:\n    spec:\n      containers:\n      - name: c\n        image: i\n        imagePullPolcy: Always\n";

#[test]
fn unknown_fields_strict_lists_all() {
    let e = err(UNKNOWN);
    assert_eq!(
        e.kind,
        ErrorKind::UnknownFields(vec![
            "metadata.nmae".into(),
            "spec.replica".into(),
            "spec.template.spec.containers[0].imagePullPolcy".into(),
        ])
    );
    assert!(e.to_string().contains(
        "strict decoding error: unknown field \"metadata.nmae\", unknown field \"spec.replica\""
    ));
}

#[test]
fn unknown_fields_warn_and_ignore() {
    let m = parse_manifests("w.yaml", UNKNOWN, Strictness::Warn).unwrap();
    assert_eq!(m[0].warnings.len(), 3);
    assert_eq!(m[0].warnings[0], "unknown field \"metadata.nmae\"");
    let m = parse_manifests("w.yaml", UNKNOWN, Strictness::Ignore).unwrap();
    assert!(m[0].warnings.is_empty());
    assert_eq!(m[0].object.name(), "a");
}

#[test]
fn decode_value_for_the_api_server() {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "x"}]}]}});
    let e = decode_value(&v, Strictness::Strict).unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("spec.containers[0].ports[0].containerPort")
    );
    let v =
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "x": 1});
    let e = decode_value(&v, Strictness::Strict).unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownFields(vec!["x".into()]));
    let d = decode_value(&v, Strictness::Warn).unwrap();
    assert_eq!(d.warnings, vec!["unknown field \"x\"".to_string()]);
    assert_eq!(resolve_kind(&v).unwrap(), Kind::Pod);
}

#[test]
fn quantities_and_int_or_string_from_yaml() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: i\n    resources:\n      limits:\n        cpu: 1\n        memory: 128Mi\n    livenessProbe:\n      httpGet:\n        port: http\n";
    let m = parse(text).unwrap();
    let crate::object::Object::Pod(p) = &m[0].object else {
        panic!()
    };
    let c = &p.spec.as_ref().unwrap().containers[0];
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "1");
}

fn every_kind_yaml() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "Namespace",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n",
        ),
        (
            "Pod",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: skiff.dev/echo\n    ports:\n    - containerPort: 3000\n",
        ),
        ("Service", SVC),
        (
            "Endpoints",
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: web\nsubsets:\n- addresses:\n  - ip: 10.244.0.5\n  ports:\n  - port: 80\n",
        ),
        (
            "EndpointSlice",
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-abc\naddressType: IPv4\nendpoints:\n- addresses: [10.244.0.5]\nports:\n- port: 80\n",
        ),
        (
            "ConfigMap",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  a.txt: hello\n",
        ),
        (
            "Secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ntype: Opaque\ndata:\n  k: aGVsbG8=\n",
        ),
        (
            "Node",
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nspec:\n  podCIDR: 10.244.0.0/24\n",
        ),
        (
            "Event",
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\ninvolvedObject:\n  kind: Pod\n  name: p\nreason: Started\n",
        ),
        (
            "Deployment",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: c\n        image: i\n",
        ),
        (
            "ReplicaSet",
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: r\nspec:\n  selector:\n    matchLabels: {app: r}\n  template:\n    metadata:\n      labels: {app: r}\n    spec:\n      containers:\n      - name: c\n        image: i\n",
        ),
        (
            "StatefulSet",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: s\nspec:\n  serviceName: s\n  selector:\n    matchLabels: {app: s}\n  template:\n    metadata:\n      labels: {app: s}\n    spec:\n      containers:\n      - name: c\n        image: i\n",
        ),
        (
            "Ingress",
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i\nspec:\n  rules:\n  - host: a.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: web\n            port:\n              number: 80\n",
        ),
        (
            "IngressClass",
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: skiff\nspec:\n  controller: skiff.dev/ingress-controller\n",
        ),
        (
            "Lease",
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: l\nspec:\n  holderIdentity: node-1\n  leaseDurationSeconds: 40\n",
        ),
    ]
}

#[test]
fn round_trip_every_kind() {
    let cases = every_kind_yaml();
    assert_eq!(cases.len(), 15);
    for (kind, text) in cases {
        let m = parse(text).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(m.len(), 1);
        let obj = &m[0].object;
        assert_eq!(obj.kind().to_string(), kind);
        // typed -> JSON -> typed is the identity, and JSON keeps what the user wrote.
        let v = obj.to_value().unwrap();
        let back = decode_value(&v, Strictness::Strict).unwrap().object;
        assert_eq!(&back, obj, "{kind}");
        assert_eq!(v, m[0].raw, "{kind}");
        // Defaulted and validated objects round-trip too.
        let mut d = obj.clone();
        crate::defaults::apply_defaults(&mut d);
        crate::validation::validate(&d, &Default::default())
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let v = d.to_value().unwrap();
        assert_eq!(
            decode_value(&v, Strictness::Strict).unwrap().object,
            d,
            "{kind}"
        );
    }
}
