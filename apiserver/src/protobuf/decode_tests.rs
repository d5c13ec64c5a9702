//! Decoding hand-built protobuf bodies, including one captured from kubectl 1.32.

use serde_json::{Value, json};

use super::{ProtobufError, decode};

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A varint field.
fn vi(number: u64, v: u64) -> Vec<u8> {
    [varint(number << 3), varint(v)].concat()
}

/// A length-delimited field.
fn ld(number: u64, bytes: impl AsRef<[u8]>) -> Vec<u8> {
    let bytes = bytes.as_ref();
    [
        varint(number << 3 | 2),
        varint(bytes.len() as u64),
        bytes.to_vec(),
    ]
    .concat()
}

fn map_entry(number: u64, key: &str, value: impl AsRef<[u8]>) -> Vec<u8> {
    ld(number, [ld(1, key), ld(2, value)].concat())
}

fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [ld(1, api_version), ld(2, kind)].concat();
    [
        b"k8s\0".to_vec(),
        ld(1, type_meta),
        ld(2, raw),
        ld(3, ""),
        ld(4, ""),
    ]
    .concat()
}

fn meta(name: &str) -> Vec<u8> {
    // Go writes every non-pointer field, zero or not; creationTimestamp is an empty Time.
    [ld(1, name), ld(2, ""), ld(3, ""), vi(7, 0), ld(8, "")].concat()
}

#[test]
fn configmap_as_kubectl_sends_it() {
    // `kubectl create configmap c1 --from-literal=a=b`, captured with -v=8.
    let captured: &[u8] = &[
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x43, 0x6f, 0x6e,
        0x66, 0x69, 0x67, 0x4d, 0x61, 0x70, 0x12, 0x1c, 0x0a, 0x12, 0x0a, 0x02, 0x63, 0x31, 0x12,
        0x00, 0x1a, 0x00, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00, 0x42, 0x00, 0x12, 0x06,
        0x0a, 0x01, 0x61, 0x12, 0x01, 0x62, 0x1a, 0x00, 0x22, 0x00,
    ];
    assert_eq!(
        decode(captured).unwrap(),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"},
               "data": {"a": "b"}})
    );
}

#[test]
fn secret_bytes_become_base64_and_empty_values_stay() {
    let raw = [
        ld(1, meta("s")),
        map_entry(2, "tls.key", [0u8, 0xff, b'k']),
        map_entry(2, "empty", ""),
        ld(3, "kubernetes.io/tls"),
        vi(5, 0),
    ]
    .concat();
    assert_eq!(
        decode(&body("v1", "Secret", &raw)).unwrap(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": {"tls.key": "AP9r", "empty": ""}, "type": "kubernetes.io/tls",
               // `immutable` is a *bool: an explicit false is data.
               "immutable": false})
    );
}

#[test]
fn deployment_nested_messages_int_or_string_quantity_and_zeros() {
    let int_or_string_int = |v| [vi(1, 0), vi(2, v), ld(3, "")].concat();
    let int_or_string_str = |s: &str| [vi(1, 1), vi(2, 0), ld(3, s)].concat();
    let port = [ld(1, ""), vi(2, 0), vi(3, 80), ld(4, "TCP")].concat();
    let probe = [ld(
        1,
        ld(
            2,
            [ld(1, "/healthz"), ld(2, int_or_string_str("http"))].concat(),
        ),
    )]
    .concat();
    let resources = [
        map_entry(1, "memory", ld(1, "64Mi")),
        map_entry(1, "cpu", ld(1, "1")),
    ]
    .concat();
    let container = [
        ld(1, "web"),
        ld(2, "nginx"),
        ld(6, &port),
        ld(8, resources),
        ld(10, probe),
    ]
    .concat();
    let volume = [
        ld(1, "cfg"),
        ld(2, ld(19, [ld(1, ld(1, "app-config")), vi(3, 420)].concat())),
    ]
    .concat();
    let pod_spec = [
        ld(1, volume),
        ld(2, container),
        ld(14, [vi(4, 1), vi(4, 2)].concat()),
    ]
    .concat();
    let labels = map_entry(11, "app", "web");
    let template = [ld(1, [meta(""), labels.clone()].concat()), ld(2, pod_spec)].concat();
    let strategy = [
        ld(1, "RollingUpdate"),
        ld(
            2,
            [ld(1, int_or_string_int(1)), ld(2, int_or_string_str("25%"))].concat(),
        ),
    ]
    .concat();
    let spec = [
        vi(1, 0),
        ld(2, ld(1, [ld(1, "app"), ld(2, "web")].concat())),
        ld(3, template),
        ld(4, strategy),
        vi(5, 0),
        vi(7, 0),
    ]
    .concat();
    let raw = [
        ld(1, [meta("web"), labels].concat()),
        ld(2, spec),
        ld(3, ""),
    ]
    .concat();
    assert_eq!(
        decode(&body("apps/v1", "Deployment", &raw)).unwrap(),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                // replicas is a *int32: an explicit 0 is kept; minReadySeconds/paused are not.
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "volumes": [{"name": "cfg",
                                     "configMap": {"name": "app-config", "defaultMode": 420}}],
                        "containers": [{
                            "name": "web", "image": "nginx",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {"limits": {"memory": "64Mi", "cpu": "1"}},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        }],
                        "securityContext": {"supplementalGroups": [1, 2]},
                    },
                },
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
            },
            "status": {},
        })
    );
}

#[test]
fn times_and_packed_repeated_fields() {
    let time = [vi(1, 1_700_000_000), vi(2, 123_456_789)].concat();
    let lease_spec = [ld(1, "node-a"), vi(2, 40), ld(4, &time)].concat();
    let metadata = [meta("l"), ld(8, &time)].concat();
    let raw = [ld(1, metadata), ld(2, lease_spec)].concat();
    assert_eq!(
        decode(&body("coordination.k8s.io/v1", "Lease", &raw)).unwrap(),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               // Time keeps whole seconds (as upstream decodes it); MicroTime microseconds.
               "metadata": {"name": "l", "creationTimestamp": "2023-11-14T22:13:20Z"},
               "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                        "renewTime": "2023-11-14T22:13:20.123456Z"}})
    );
    // Packed encoding of a repeated int64, and a negative number (sign-extended varint).
    let packed = ld(4, [varint(7), varint(u64::MAX)].concat());
    let pod_spec = ld(14, packed);
    let v = decode(&body("v1", "Pod", &ld(2, pod_spec))).unwrap();
    assert_eq!(
        v["spec"]["securityContext"]["supplementalGroups"],
        json!([7, -1])
    );
}

#[test]
fn managed_fields_raw_json_and_delete_options_in_any_group() {
    let entry = [ld(1, "kubectl"), ld(7, ld(1, br#"{"f:data":{}}"#))].concat();
    let raw = ld(1, [meta("c"), ld(17, entry)].concat());
    let v = decode(&body("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        v["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "fieldsV1": {"f:data": {}}}])
    );
    let options = [vi(1, 0), ld(4, "Background")].concat();
    assert_eq!(
        decode(&body("apps/v1", "DeleteOptions", &options)).unwrap(),
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions",
               "gracePeriodSeconds": 0, "propagationPolicy": "Background"})
    );
}

#[test]
fn unknown_fields_are_errors_naming_message_and_number() {
    let raw = [ld(1, meta("c")), ld(99, "x")].concat();
    assert_eq!(
        decode(&body("v1", "ConfigMap", &raw)),
        Err(ProtobufError::UnknownField {
            message: "ConfigMap",
            field: 99
        })
    );
    let raw = ld(1, [meta("c"), vi(40, 1)].concat());
    let err = decode(&body("v1", "ConfigMap", &raw)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the protobuf message ObjectMeta has an unknown field number 40"
    );
    assert_eq!(err.code(), 400);
}

#[test]
fn wrong_wire_types_kinds_magic_and_encodings() {
    let err = decode(&body("v1", "ConfigMap", &vi(1, 5))).unwrap_err();
    assert!(matches!(
        err,
        ProtobufError::WireType {
            message: "ConfigMap",
            field: 1,
            ..
        }
    ));
    let err = decode(&body("batch/v1", "Job", &[])).unwrap_err();
    assert_eq!(err.code(), 415);
    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(ProtobufError::BadMagic));
    let mut b = body("v1", "ConfigMap", &[]);
    b.extend(ld(3, "gzip"));
    assert_eq!(
        decode(&b),
        Err(ProtobufError::ContentEncoding("gzip".into()))
    );
    let bad_utf8 = ld(1, ld(1, [0xffu8, 0xfe]));
    assert!(matches!(
        decode(&body("v1", "ConfigMap", &bad_utf8)),
        Err(ProtobufError::InvalidValue {
            message: "ObjectMeta",
            ..
        })
    ));
    // spec.ports[0].targetPort with an IntOrString type that is neither int nor string.
    let bad_ios = ld(2, ld(1, ld(4, vi(1, 7))));
    assert!(matches!(
        decode(&body("v1", "Service", &bad_ios)),
        Err(ProtobufError::InvalidValue {
            message: "ServicePort",
            field: "targetPort",
            ..
        })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let raw = [
        ld(1, [meta("c"), map_entry(11, "a", "b")].concat()),
        map_entry(2, "k", "v"),
    ]
    .concat();
    let full = body("v1", "ConfigMap", &raw);
    assert!(decode(&full).is_ok());
    // Cutting inside the envelope's `raw` field always leaves a length that overruns.
    let raw_start = full.len() - raw.len() - 4;
    for cut in 4..full.len() - 4 {
        let result = decode(&full[..cut]);
        if cut > raw_start - 2 && cut < full.len() - 4 {
            assert!(result.is_err(), "cut at {cut} decoded: {result:?}");
        }
    }
}

#[test]
fn garbage_never_panics() {
    // A small LCG: deterministic, no extra crates.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as u8
    };
    let valid = body(
        "apps/v1",
        "Deployment",
        &[
            ld(1, meta("web")),
            ld(2, [vi(1, 3), ld(3, ld(2, ld(2, ld(1, "c"))))].concat()),
        ]
        .concat(),
    );
    for round in 0..20_000 {
        let mut b = valid.clone();
        for _ in 0..1 + round % 4 {
            let i = 4 + usize::from(next()) % (b.len() - 4);
            b[i] = next();
        }
        let _ = decode(&b);
        let random: Vec<u8> = (0..usize::from(next()) % 64).map(|_| next()).collect();
        let _ = decode(&body("v1", "Pod", &random));
        let _: Result<Value, _> = decode(&[b"k8s\0".as_slice(), &random].concat());
    }
}
