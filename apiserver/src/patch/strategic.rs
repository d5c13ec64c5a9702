//! Strategic merge patch as upstream `apimachinery/pkg/util/strategicpatch` applies it, driven by a path-aware merge-key table.

use serde_json::{Map, Value};
use skiff_api::Kind;

use super::PatchError;

/// How a list field is patched (upstream `x-kubernetes-patch-strategy`); absent → replaced whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// A list of objects merged element-wise by this key (`x-kubernetes-patch-merge-key`).
    MergeByKey(&'static str),
    /// A list of scalars merged as a set union (`patchStrategy=merge`, no key).
    Union,
}

/// Lists under a pod spec (relative to it), from upstream `core/v1` `+patchMergeKey` tags.
const POD_SPEC_LISTS: &[(&str, ListStrategy)] = &[
    ("volumes", ListStrategy::MergeByKey("name")),
    ("initContainers", ListStrategy::MergeByKey("name")),
    ("containers", ListStrategy::MergeByKey("name")),
    ("ephemeralContainers", ListStrategy::MergeByKey("name")),
    ("imagePullSecrets", ListStrategy::MergeByKey("name")),
    ("hostAliases", ListStrategy::MergeByKey("ip")),
    (
        "topologySpreadConstraints",
        ListStrategy::MergeByKey("topologyKey"),
    ),
    ("resourceClaims", ListStrategy::MergeByKey("name")),
    ("schedulingGates", ListStrategy::MergeByKey("name")),
];

/// Lists under each container of a pod spec.
const CONTAINER_LISTS: &[(&str, ListStrategy)] = &[
    ("ports", ListStrategy::MergeByKey("containerPort")),
    ("env", ListStrategy::MergeByKey("name")),
    ("volumeMounts", ListStrategy::MergeByKey("mountPath")),
    ("volumeDevices", ListStrategy::MergeByKey("devicePath")),
];

const CONTAINER_FIELDS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Lists every kind has (`ObjectMeta`).
const META_LISTS: &[(&str, ListStrategy)] = &[
    ("metadata.finalizers", ListStrategy::Union),
    ("metadata.ownerReferences", ListStrategy::MergeByKey("uid")),
];

/// Kind-specific lists outside the pod spec.
fn kind_lists(kind: Kind) -> &'static [(&'static str, ListStrategy)] {
    const CONDITIONS: &[(&str, ListStrategy)] =
        &[("status.conditions", ListStrategy::MergeByKey("type"))];
    match kind {
        Kind::Pod => &[
            ("status.conditions", ListStrategy::MergeByKey("type")),
            ("status.podIPs", ListStrategy::MergeByKey("ip")),
            ("status.hostIPs", ListStrategy::MergeByKey("ip")),
            (
                "status.resourceClaimStatuses",
                ListStrategy::MergeByKey("name"),
            ),
        ],
        Kind::Service => &[
            ("spec.ports", ListStrategy::MergeByKey("port")),
            ("status.conditions", ListStrategy::MergeByKey("type")),
        ],
        Kind::Node => &[
            ("spec.podCIDRs", ListStrategy::Union),
            ("status.conditions", ListStrategy::MergeByKey("type")),
            ("status.addresses", ListStrategy::MergeByKey("type")),
        ],
        Kind::Namespace | Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => CONDITIONS,
        _ => &[],
    }
}

/// Where a kind keeps its pod spec, if it has one.
fn pod_spec_prefix(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Pod => Some("spec"),
        Kind::Deployment | Kind::ReplicaSet | Kind::StatefulSet => Some("spec.template.spec"),
        _ => None,
    }
}

/// The strategy of the list at `path` (dotted field names, list elements not counted) of
/// `kind`; `None` means the list is replaced whole.
pub fn list_strategy(kind: Kind, path: &str) -> Option<ListStrategy> {
    let lookup = |table: &[(&str, ListStrategy)], p: &str| {
        table.iter().find(|(k, _)| *k == p).map(|(_, s)| *s)
    };
    if let Some(s) = lookup(META_LISTS, path).or_else(|| lookup(kind_lists(kind), path)) {
        return Some(s);
    }
    let rel = path
        .strip_prefix(pod_spec_prefix(kind)?)?
        .strip_prefix('.')?;
    if let Some(s) = lookup(POD_SPEC_LISTS, rel) {
        return Some(s);
    }
    let (container_field, rest) = rel.split_once('.')?;
    if CONTAINER_FIELDS.contains(&container_field) {
        return lookup(CONTAINER_LISTS, rest);
    }
    None
}

/// One schema property's upstream OpenAPI patch extensions, for documents that describe the
/// kinds (kubectl computes its client-side apply patches from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaPatchField {
    /// The OpenAPI schema name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub schema: &'static str,
    /// The property of that schema.
    pub property: &'static str,
    /// `x-kubernetes-patch-strategy`.
    pub strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, if any.
    pub merge_key: Option<&'static str>,
}

const fn field(
    schema: &'static str,
    property: &'static str,
    strategy: &'static str,
    merge_key: Option<&'static str>,
) -> SchemaPatchField {
    SchemaPatchField {
        schema,
        property,
        strategy,
        merge_key,
    }
}

/// Upstream's `x-kubernetes-patch-strategy` / `x-kubernetes-patch-merge-key` on the schemas
/// of the kinds skiff serves (the same facts as [`list_strategy`], keyed by schema).
pub const SCHEMA_PATCH_FIELDS: &[SchemaPatchField] = &[
    field(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    field(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    field("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    field(
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    field(
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    field(
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    field(
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    field(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    field(
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    field(
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        "merge",
        Some("ip"),
    ),
    field(
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        Some("name"),
    ),
    field(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    field(
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    field(
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    field(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    field(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch (JSON bytes) to `original`.
pub fn apply_strategic_patch(
    kind: Kind,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError::BadPatch(format!("invalid strategic merge patch: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(PatchError::BadPatch(
            "a strategic merge patch must be a JSON object".to_owned(),
        ));
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    match merge_map(kind, "", original, &patch)? {
        Some(merged) => Ok(Value::Object(merged)),
        None => Err(PatchError::BadPatch(
            "a strategic merge patch cannot delete the whole object".to_owned(),
        )),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(SET_ELEMENT_ORDER)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Merges `patch` into `original`; `None` when the patch says `$patch: delete`.
fn merge_map(
    kind: Kind,
    path: &str,
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(DIRECTIVE) {
        None => {}
        Some(Value::String(d)) if d == "merge" => {}
        Some(Value::String(d)) if d == "replace" => {
            let mut replaced = patch.clone();
            replaced.remove(DIRECTIVE);
            return Ok(Some(replaced));
        }
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => {
            return Err(PatchError::BadPatch(format!(
                "unknown patch directive {other} at {}",
                display_path(path)
            )));
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let Some(retain) = retain.as_array() else {
            return Err(PatchError::BadPatch(format!(
                "$retainKeys at {} must be a list of field names",
                display_path(path)
            )));
        };
        let retain: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        for (k, v) in patch {
            if !is_directive_key(k) && !v.is_null() && !retain.contains(&k.as_str()) {
                return Err(PatchError::Apply(format!(
                    "the patch sets {} which $retainKeys does not list",
                    display_path(&join(path, k))
                )));
            }
        }
        original.retain(|k, _| retain.contains(&k.as_str()));
    }
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let Some(remove) = v.as_array() else {
            return Err(PatchError::BadPatch(format!(
                "{k} at {} must be a list",
                display_path(path)
            )));
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            list.retain(|item| !remove.contains(item));
        }
    }
    for (k, v) in patch {
        if is_directive_key(k) {
            continue;
        }
        let child = join(path, k);
        match v {
            Value::Null => {
                original.remove(k);
            }
            Value::Object(p) => {
                let base = match original.remove(k) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Some(merged) = merge_map(kind, &child, base, p)? {
                    original.insert(k.clone(), Value::Object(merged));
                }
            }
            Value::Array(p) => {
                let base = match original.remove(k) {
                    Some(Value::Array(l)) => l,
                    _ => Vec::new(),
                };
                let merged = merge_list(kind, &child, base, p)?;
                original.insert(k.clone(), Value::Array(merged));
            }
            other => {
                original.insert(k.clone(), other.clone());
            }
        }
    }
    for (k, v) in patch {
        let Some(field) = k.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let Some(order) = v.as_array() else {
            return Err(PatchError::BadPatch(format!(
                "{k} at {} must be a list",
                display_path(path)
            )));
        };
        let key = match list_strategy(kind, &join(path, field)) {
            Some(ListStrategy::MergeByKey(key)) => Some(key),
            _ => None,
        };
        if let Some(Value::Array(list)) = original.get_mut(field) {
            set_element_order(list, order, key);
        }
    }
    Ok(Some(original))
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the top level"
    } else {
        path
    }
}

/// Whether a list element carries `$patch: <directive>`.
fn has_directive(item: &Value, directive: &str) -> bool {
    item.get(DIRECTIVE).and_then(Value::as_str) == Some(directive)
}

fn merge_list(
    kind: Kind,
    path: &str,
    mut original: Vec<Value>,
    patch: &[Value],
) -> Result<Vec<Value>, PatchError> {
    if patch.iter().any(|item| has_directive(item, "replace")) {
        return Ok(patch
            .iter()
            .filter(|item| !has_directive(item, "replace"))
            .cloned()
            .collect());
    }
    match list_strategy(kind, path) {
        None => Ok(patch.to_vec()),
        Some(ListStrategy::Union) => {
            for item in patch {
                if item.is_object() {
                    return Err(PatchError::BadPatch(format!(
                        "{path} is a list of scalars, not of objects"
                    )));
                }
                if !original.contains(item) {
                    original.push(item.clone());
                }
            }
            Ok(original)
        }
        Some(ListStrategy::MergeByKey(key)) => {
            for item in patch {
                let Value::Object(item) = item else {
                    return Err(PatchError::BadPatch(format!(
                        "{path} is a list of objects merged by {key:?}, not of scalars"
                    )));
                };
                if item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    let mut wanted = item.clone();
                    wanted.remove(DIRECTIVE);
                    original.retain(|o| match wanted.get(key) {
                        Some(id) => o.get(key) != Some(id),
                        None => !wanted.iter().all(|(k, v)| o.get(k) == Some(v)),
                    });
                    continue;
                }
                let Some(id) = item.get(key) else {
                    return Err(PatchError::BadPatch(format!(
                        "an element of {path} does not contain its merge key {key:?}"
                    )));
                };
                match original.iter().position(|o| o.get(key) == Some(id)) {
                    Some(i) => {
                        let base = match original.remove(i) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        if let Some(merged) = merge_map(kind, path, base, item)? {
                            original.insert(i, Value::Object(merged));
                        }
                    }
                    None => {
                        if let Some(merged) = merge_map(kind, path, Map::new(), item)? {
                            original.push(Value::Object(merged));
                        }
                    }
                }
            }
            Ok(original)
        }
    }
}

/// Reorders `list` as `$setElementOrder` says: listed elements first in that order, then
/// the elements the order does not mention (present only on the server) as they were.
fn set_element_order(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Option<Value> {
        match key {
            Some(k) => v.get(k).cloned(),
            None => Some(v.clone()),
        }
    };
    let order_ids: Vec<Value> = order.iter().filter_map(id).collect();
    let mut listed: Vec<(usize, Value)> = Vec::new();
    let mut rest = Vec::new();
    for item in list.drain(..) {
        match id(&item).and_then(|i| order_ids.iter().position(|o| *o == i)) {
            Some(pos) => listed.push((pos, item)),
            None => rest.push(item),
        }
    }
    listed.sort_by_key(|(pos, _)| *pos);
    list.extend(listed.into_iter().map(|(_, item)| item));
    list.extend(rest);
}
