//! Decoding one `serde_json::Value` into a typed [`Object`], with strictness and field paths.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{DecodeError, ErrorKind};
use super::{MAX_DEPTH, Strictness};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::kinds::{self, Kind};
use crate::object::Object;

/// A decoded object and the unknown fields found in it (only filled in [`Strictness::Warn`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub object: Object,
    /// Upstream-style warnings: `unknown field "spec.foo"`.
    pub warnings: Vec<String>,
}

/// Name of a JSON value's type, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Depth of a value (scalars are 0, `{}` is 1), computed without recursion.
pub(crate) fn depth_exceeds(value: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        if d + 1 > limit {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// Read `apiVersion` and `kind` and find the kind in the registry.
pub fn resolve_kind(value: &Value) -> Result<Kind, DecodeError> {
    let obj = value
        .as_object()
        .ok_or_else(|| DecodeError::new(ErrorKind::NotAnObject(type_name(value))))?;
    let field = |name: &'static str, go: &'static str| -> Result<&str, DecodeError> {
        match obj.get(name) {
            None | Some(Value::Null) => {
                Err(DecodeError::at(name, ErrorKind::MissingTypeField(go, name)))
            }
            Some(Value::String(s)) if s.is_empty() => {
                Err(DecodeError::at(name, ErrorKind::MissingTypeField(go, name)))
            }
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(DecodeError::at(name, ErrorKind::TypeFieldNotString(name))),
        }
    };
    let kind = field("kind", "Kind")?;
    let api_version = field("apiVersion", "APIVersion")?;
    match kinds::by_api_version_kind(api_version, kind) {
        Some(info) => Ok(info.kind),
        None if kinds::is_served_version(api_version) => Err(DecodeError::at(
            "kind",
            ErrorKind::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            },
        )),
        None => Err(DecodeError::at(
            "apiVersion",
            ErrorKind::UnknownVersion {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            },
        )),
    }
}

/// Decode a request body or manifest document into a typed object.
///
/// Checks nesting depth, `apiVersion`/`kind` against the registry, value types (errors carry the
/// field path, e.g. `spec.ports[0].port`) and unknown fields per `mode`, mirroring Kubernetes
/// `fieldValidation=Strict|Warn|Ignore`.
pub fn decode_value(value: &Value, mode: Strictness) -> Result<Decoded, DecodeError> {
    if depth_exceeds(value, MAX_DEPTH) {
        return Err(DecodeError::new(ErrorKind::TooDeep(MAX_DEPTH)));
    }
    let kind = resolve_kind(value)?;
    let (object, unknown) = decode_kind(kind, value)?;
    let warnings = match mode {
        Strictness::Strict if !unknown.is_empty() => {
            return Err(DecodeError::new(ErrorKind::UnknownFields(unknown)));
        }
        Strictness::Warn => unknown
            .into_iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Decoded { object, warnings })
}

macro_rules! decode_kinds {
    ($kind:expr, $value:expr, $($variant:ident),*) => {
        match $kind {
            $(Kind::$variant => {
                let (o, u) = typed::<$variant>($value)?;
                (Object::from(o), u)
            })*
        }
    };
}

fn decode_kind(kind: Kind, value: &Value) -> Result<(Object, Vec<String>), DecodeError> {
    Ok(kinds::for_all_kinds!(decode_kinds!(kind, value,)))
}

/// Deserialize into `T`, collecting unknown field paths and the path of the first type error.
fn typed<T: DeserializeOwned>(value: &Value) -> Result<(T, Vec<String>), DecodeError> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result = {
        let de = serde_path_to_error::Deserializer::new(value, &mut track);
        serde_ignored::deserialize(de, |path| unknown.push(ignored_path(&path)))
    };
    match result {
        Ok(t) => Ok((t, unknown)),
        Err(e) => {
            let path = track.path().to_string();
            let field = if path == "." { None } else { Some(path) };
            Err(DecodeError {
                field,
                kind: ErrorKind::InvalidValue(e.to_string()),
            })
        }
    }
}

/// Format a `serde_ignored` path as a Kubernetes field path: `spec.ports[0].foo`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let p = ignored_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}
