//! Upstream's list-merge extensions (`x-kubernetes-patch-merge-key`, `-list-type`...), which schemars output lacks.

use serde_json::{Map, Value, json};

/// How a list property merges.
#[derive(Debug, Clone, Copy)]
pub enum ListKind {
    /// Items are merged by these keys (the first is the strategic-merge-patch key).
    Map(&'static [&'static str]),
    /// A set of scalars.
    Set,
}

/// (schema, property, merge kind) for every merged list of the served group-versions and
/// meta/v1. Generated from k8s-openapi 0.29's `DeepMerge` impls (`merge_strategies::list::map`
/// and `::set`, which k8s-openapi derives from upstream's patch-merge-key / list-type), so the
/// keys are upstream's strategic-merge-patch keys; `list-map-keys` of multi-key upstream maps
/// (e.g. `containerPort` + `protocol`) carry only that first key.
const LISTS: &[(&str, &str, ListKind)] = &[
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "env",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        ListKind::Map(&["containerPort"]),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        ListKind::Map(&["devicePath"]),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        ListKind::Map(&["mountPath"]),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "allocatedResourcesStatus",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.ContainerStatus",
        "volumeMounts",
        ListKind::Map(&["mountPath"]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        ListKind::Map(&["containerPort"]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        ListKind::Map(&["devicePath"]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        ListKind::Map(&["mountPath"]),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", ListKind::Set),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        ListKind::Map(&["ip"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        ListKind::Map(&["topologyKey"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "hostIPs",
        ListKind::Map(&["ip"]),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        ListKind::Map(&["ip"]),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.ResourceStatus",
        "resources",
        ListKind::Map(&["resourceID"]),
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        ListKind::Map(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        ListKind::Map(&["port"]),
    ),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.api.discovery.v1.Endpoint",
        "addresses",
        ListKind::Set,
    ),
    (
        "io.k8s.api.networking.v1.ServiceCIDRStatus",
        "conditions",
        ListKind::Map(&["type"]),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        ListKind::Set,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        ListKind::Map(&["uid"]),
    ),
];

/// Adds the extensions of [`LISTS`] to the schemas present in `schemas`.
pub fn add(schemas: &mut Map<String, Value>) {
    for (schema, property, kind) in LISTS {
        let Some(Value::Object(prop)) = schemas
            .get_mut(*schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
        else {
            continue;
        };
        match kind {
            ListKind::Map(keys) => {
                prop.insert("x-kubernetes-list-type".into(), json!("map"));
                prop.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                if let Some(key) = keys.first() {
                    prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
                    prop.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
                }
            }
            ListKind::Set => {
                prop.insert("x-kubernetes-list-type".into(), json!("set"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row names a property that exists, in every served document holding its schema.
    #[test]
    fn every_row_names_a_real_property() {
        let mut seen = 0;
        for (group, version) in skiff_api::kinds::group_versions() {
            let doc = super::super::build_document(group, version);
            let schemas = &doc["components"]["schemas"];
            for (schema, property, _) in LISTS {
                if let Some(s) = schemas.get(*schema) {
                    seen += 1;
                    assert!(
                        s["properties"].get(*property).is_some(),
                        "{schema}.{property}"
                    );
                    assert!(s["properties"][*property]["x-kubernetes-list-type"].is_string());
                }
            }
        }
        assert!(seen > 20, "only {seen} rows applied");
    }
}
