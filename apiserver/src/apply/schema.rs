//! How server-side apply sees each field of a kind: list types (atomic, set, map with keys) and atomic structs.

use serde_json::{Value, json};
use skiff_api::Kind;

use crate::patch::strategic::{ListStrategy, list_strategy};

/// How the items of a list are identified (upstream `x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole (lists with no merge strategy).
    Atomic,
    /// Scalars identified by their value.
    Set,
    /// Objects identified by these key fields (`x-kubernetes-list-map-keys`).
    Map(&'static [&'static str]),
}

/// The list type of the list at `path` (dotted field names, list items not counted) of `kind`.
///
/// The strategic-merge-patch table gives the lists that merge; server-side apply uses the same
/// lists, except where upstream declares more keys than the patch merge key.
pub fn list_type(kind: Kind, path: &str) -> ListType {
    match list_strategy(kind, path) {
        None => ListType::Atomic,
        Some(ListStrategy::Union) => ListType::Set,
        Some(ListStrategy::MergeByKey(key)) => ListType::Map(map_keys(key)),
    }
}

/// Upstream `+listMapKey`s for a patch merge key: a container port is `containerPort` +
/// `protocol`, a Service port `port` + `protocol`, a spread constraint `topologyKey` +
/// `whenUnsatisfiable`. Those are the only merged lists with a merge key of that name.
fn map_keys(merge_key: &'static str) -> &'static [&'static str] {
    match merge_key {
        "containerPort" => &["containerPort", "protocol"],
        "port" => &["port", "protocol"],
        "topologyKey" => &["topologyKey", "whenUnsatisfiable"],
        "name" => &["name"],
        "type" => &["type"],
        "ip" => &["ip"],
        "uid" => &["uid"],
        "mountPath" => &["mountPath"],
        "devicePath" => &["devicePath"],
        "resourceID" => &["resourceID"],
        _ => &[],
    }
}

/// The value upstream's schema defaults a missing key field to (upstream uses schema
/// defaults for list-map keys, so `{containerPort: 80}` and `{containerPort: 80, protocol:
/// TCP}` are the same item).
pub fn key_default(field: &str) -> Option<Value> {
    match field {
        "protocol" => Some(json!("TCP")),
        _ => None,
    }
}

/// Struct types upstream marks `+structType=atomic`, by the field that holds them.
const ATOMIC_STRUCT_FIELDS: &[&str] = &[
    // LabelSelector
    "labelSelector",
    "namespaceSelector",
    // ObjectReference
    "involvedObject",
    "related",
    "targetRef",
    // ConfigMapKeySelector, SecretKeySelector, ObjectFieldSelector, ResourceFieldSelector
    "configMapKeyRef",
    "secretKeyRef",
    "fieldRef",
    "resourceFieldRef",
];

/// Whether the struct at `path` is atomic: owned and replaced whole, like a scalar.
pub fn is_atomic_struct(kind: Kind, path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    if ATOMIC_STRUCT_FIELDS.contains(&last) {
        return true;
    }
    // NodeSelector (required node affinity).
    if path.ends_with("nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution") {
        return true;
    }
    // The workloads' `spec.selector` is a LabelSelector; a Service's is a plain map.
    path == "spec.selector"
        && matches!(
            kind,
            Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_types_follow_upstream() {
        assert_eq!(
            list_type(Kind::Deployment, "spec.template.spec.containers"),
            ListType::Map(&["name"])
        );
        assert_eq!(
            list_type(Kind::Deployment, "spec.template.spec.containers.ports"),
            ListType::Map(&["containerPort", "protocol"])
        );
        assert_eq!(
            list_type(Kind::Service, "spec.ports"),
            ListType::Map(&["port", "protocol"])
        );
        assert_eq!(list_type(Kind::Pod, "metadata.finalizers"), ListType::Set);
        assert_eq!(list_type(Kind::Pod, "spec.tolerations"), ListType::Atomic);
        assert_eq!(
            list_type(Kind::Pod, "spec.containers.args"),
            ListType::Atomic
        );
        assert!(is_atomic_struct(Kind::Deployment, "spec.selector"));
        assert!(!is_atomic_struct(Kind::Service, "spec.selector"));
        assert!(is_atomic_struct(
            Kind::Pod,
            "spec.containers.env.valueFrom.fieldRef"
        ));
    }

    /// Every merge key of the strategic table has its list-map keys here.
    #[test]
    fn every_merge_key_has_map_keys() {
        for f in crate::patch::strategic::SCHEMA_PATCH_FIELDS {
            if let Some(key) = f.merge_key {
                assert!(map_keys(key).contains(&key), "{key}");
            }
        }
    }
}
