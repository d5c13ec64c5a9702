//! Checks the generated schema against k8s-openapi: a value with every table field set must
//! survive a round trip through the k8s-openapi type unchanged (k8s-openapi drops unknown
//! names and rejects wrong types, so any mismatch shows up as a difference).

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::message::{Card, Message, Ty};
use super::schema::ROOTS;

fn sample(ty: Ty, depth: usize) -> Value {
    match ty {
        Ty::Str => json!("x"),
        Ty::Bytes => json!("eA=="),
        Ty::Bool => json!(true),
        Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 => json!(1),
        Ty::F64 => json!(1.5),
        Ty::Time => json!("2024-01-02T03:04:05Z"),
        Ty::MicroTime => json!("2024-01-02T03:04:05.000006Z"),
        Ty::Quantity => json!("1"),
        Ty::IntOrString => json!(1),
        Ty::RawJson => json!({"f:a": {}}),
        Ty::Msg(m) => Value::Object(populated(m, depth + 1)),
    }
}

/// Every field of `message` set, recursively.
pub(crate) fn populated(message: &Message, depth: usize) -> Map<String, Value> {
    assert!(depth < 30, "{} recurses", message.name);
    let mut out = Map::new();
    for field in message.fields {
        let value = sample(field.ty, depth);
        match field.card {
            Card::One => {
                out.insert(field.json.to_owned(), value);
            }
            Card::List => {
                out.insert(field.json.to_owned(), json!([value]));
            }
            Card::Map => {
                out.insert(field.json.to_owned(), json!({ "k": value }));
            }
            Card::Inline => {
                if let Value::Object(inner) = value {
                    out.extend(inner);
                }
            }
        }
    }
    out
}

fn round_trip<T: DeserializeOwned + Serialize>(api_version: &str, kind: &str, message: &Message) {
    let mut object = populated(message, 0);
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    let value = Value::Object(object);
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{api_version} {kind}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    let mut diffs = Vec::new();
    differences(&value, &back, String::new(), &mut diffs);
    assert!(
        diffs.is_empty(),
        "{api_version} {kind}: table vs k8s-openapi: {diffs:?}"
    );
}

/// Paths where `a` (the table's sample) and `b` (after k8s-openapi) differ.
fn differences(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => differences(v, w, format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k} dropped")),
                }
            }
            // k8s-openapi writes the type of an embedded resource (volumeClaimTemplates).
            let type_meta = |k: &str| k == "apiVersion" || k == "kind";
            for k in y.keys().filter(|k| !x.contains_key(*k) && !type_meta(k)) {
                out.push(format!("{path}.{k} added"));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                differences(v, w, format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} became {b}")),
        _ => {}
    }
}

#[test]
fn every_table_field_is_a_k8s_openapi_field() {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, networking};
    use k8s_openapi::apimachinery::pkg::apis::meta;
    for (api_version, kind, message) in ROOTS {
        let f = match *kind {
            "Namespace" => round_trip::<core::v1::Namespace>,
            "Pod" => round_trip::<core::v1::Pod>,
            "Service" => round_trip::<core::v1::Service>,
            "Endpoints" => round_trip::<core::v1::Endpoints>,
            "ConfigMap" => round_trip::<core::v1::ConfigMap>,
            "Secret" => round_trip::<core::v1::Secret>,
            "Node" => round_trip::<core::v1::Node>,
            "Event" => round_trip::<core::v1::Event>,
            "Deployment" => round_trip::<apps::v1::Deployment>,
            "ReplicaSet" => round_trip::<apps::v1::ReplicaSet>,
            "StatefulSet" => round_trip::<apps::v1::StatefulSet>,
            "Lease" => round_trip::<coordination::v1::Lease>,
            "EndpointSlice" => round_trip::<discovery::v1::EndpointSlice>,
            "Ingress" => round_trip::<networking::v1::Ingress>,
            "IngressClass" => round_trip::<networking::v1::IngressClass>,
            "Scale" => round_trip::<autoscaling::v1::Scale>,
            "DeleteOptions" => round_trip::<meta::v1::DeleteOptions>,
            other => panic!("no k8s-openapi type listed for {other}"),
        };
        f(api_version, kind, message);
    }
}

#[test]
fn every_served_kind_has_a_root() {
    for info in skiff_api::kinds::KINDS {
        assert!(
            ROOTS
                .iter()
                .any(|(v, k, _)| *v == info.api_version() && *k == info.name),
            "{} has no protobuf schema",
            info.name
        );
    }
}
