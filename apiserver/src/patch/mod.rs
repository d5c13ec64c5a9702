//! PATCH bodies: JSON patch, JSON merge patch and strategic merge patch applied to an object's JSON.

pub mod json_patch;
pub mod strategic;

use serde_json::Value;
use skiff_api::Kind;

/// The patch formats a PATCH request may carry (its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (Kubernetes).
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply (`crate::apply`), not a patch of the
    /// stored object.
    Apply,
}

/// The media types PATCH accepts, for 415 messages.
pub const ACCEPTED_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch is malformed (not JSON, wrong shape, unknown directive): 400.
    #[error("{0}")]
    BadPatch(String),
    /// A well-formed patch does not apply to this object (test failed, path missing): 422.
    #[error("{0}")]
    Apply(String),
    /// The `Content-Type` is no patch format: 415.
    #[error(
        "the body of the request was in an unknown format ({0:?}) - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, \
         application/strategic-merge-patch+json, application/apply-patch+yaml"
    )]
    UnsupportedMediaType(String),
}

impl PatchError {
    /// The HTTP status upstream answers with.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadPatch(_) => 400,
            Self::Apply(_) => 422,
            Self::UnsupportedMediaType(_) => 415,
        }
    }
}

/// The media type of a `Content-Type` value: parameters dropped, lower-cased.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl PatchType {
    /// The patch type of a `Content-Type` header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Result<Self, PatchError> {
        match media_type(content_type).as_str() {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            _ => Err(PatchError::UnsupportedMediaType(content_type.to_owned())),
        }
    }
}

/// Applies `patch` of `patch_type` to `original` (an object of `kind`), returning the result.
pub fn apply_patch(
    kind: Kind,
    original: &Value,
    patch_type: PatchType,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let out = match patch_type {
        PatchType::Json => json_patch::apply_json_patch(original, patch)?,
        PatchType::Merge => json_patch::apply_merge_patch(original, patch)?,
        PatchType::Strategic => strategic::apply_strategic_patch(kind, original, patch)?,
        PatchType::Apply => {
            return Err(PatchError::BadPatch(
                "an apply patch is server-side apply, not a patch".to_owned(),
            ));
        }
    };
    if !out.is_object() {
        return Err(PatchError::Apply(
            "the patched object is not a JSON object".to_owned(),
        ));
    }
    Ok(out)
}

/// Whether the patch itself names `metadata.resourceVersion` (then a conflict is final: no retry).
pub fn sets_resource_version(patch_type: PatchType, patch: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(patch) else {
        return false;
    };
    match patch_type {
        PatchType::Json => value.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op["path"].as_str() == Some("/metadata/resourceVersion")
                    && op["op"].as_str() != Some("test")
            })
        }),
        PatchType::Merge | PatchType::Strategic | PatchType::Apply => value
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_some_and(|rv| !rv.is_null()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strategic(kind: Kind, original: Value, patch: Value) -> Value {
        apply_patch(
            kind,
            &original,
            PatchType::Strategic,
            &serde_json::to_vec(&patch).unwrap(),
        )
        .unwrap()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"a": "1", "b": "2"},
                         "finalizers": ["x"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "ports": [
                    {"containerPort": 80, "protocol": "TCP"},
                    {"containerPort": 443, "protocol": "TCP"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "side", "image": "busybox"}
            ]}}}
        })
    }

    fn containers(v: &Value) -> &Vec<Value> {
        v["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Ok(PatchType::Apply)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+cbor").map_err(|e| e.code()),
            Err(415)
        );
        let err = PatchType::from_content_type("text/plain").unwrap_err();
        assert_eq!(err.code(), 415);
        assert!(err.to_string().contains("application/json-patch+json"));
    }

    #[test]
    fn strategic_change_image_keeps_other_fields() {
        let out = strategic(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}}),
        );
        let c = containers(&out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(c[0]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn strategic_add_and_delete_container_with_order() {
        let out = strategic(
            Kind::Deployment,
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "new"}, {"name": "app"}],
                "containers": [{"name": "new", "image": "redis"},
                               {"$patch": "delete", "name": "side"}]}}}}),
        );
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new", "app"]);
    }

    #[test]
    fn strategic_ports_env_and_nulls() {
        let out = strategic(
            Kind::Deployment,
            deployment(),
            json!({
                "metadata": {"labels": {"tier": null}, "annotations": {"b": null, "c": "3"}},
                "spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
                    "containers": [{"name": "app",
                        "$setElementOrder/ports": [{"containerPort": 80}],
                        "ports": [{"$patch": "delete", "containerPort": 443}],
                        "$setElementOrder/env": [{"name": "B"}, {"name": "A"}],
                        "env": [{"name": "B", "value": "two"}]}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["metadata"]["annotations"], json!({"a": "1", "c": "3"}));
        let app = &containers(&out)[0];
        assert_eq!(
            app["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(
            app["env"],
            json!([{"name": "B", "value": "two"}, {"name": "A", "value": "1"}])
        );
    }

    #[test]
    fn strategic_service_ports_by_port_and_replaced_lists() {
        let svc = json!({"spec": {
            "ports": [{"port": 80, "targetPort": 8080}, {"port": 443}],
            "selector": {"app": "x"}}});
        let out = strategic(
            Kind::Service,
            svc.clone(),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        // Pod tolerations have no merge key: replaced whole.
        let pod = json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}});
        let out = strategic(
            Kind::Pod,
            pod,
            json!({"spec": {"tolerations": [{"key": "c"}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "c"}]));
    }

    #[test]
    fn strategic_directives() {
        // finalizers are unioned; $deleteFromPrimitiveList removes.
        let out = strategic(
            Kind::Deployment,
            deployment(),
            json!({"metadata": {"finalizers": ["y", "x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let out = strategic(
            Kind::Deployment,
            out,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        // $patch: replace on a map and on a list.
        let out = strategic(
            Kind::Deployment,
            deployment(),
            json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}},
                   "spec": {"template": {"spec": {"containers": [
                       {"$patch": "replace"}, {"name": "solo", "image": "x"}]}}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "solo", "image": "x"})]
        );
        // $retainKeys drops the fields it does not list.
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = strategic(
            Kind::Deployment,
            d,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // A new element without its merge key is a bad patch.
        let err = apply_patch(
            Kind::Deployment,
            &deployment(),
            PatchType::Strategic,
            br#"{"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn merge_patch_replicas_and_lists_replace() {
        let out = apply_patch(
            Kind::Deployment,
            &deployment(),
            PatchType::Merge,
            br#"{"spec":{"replicas":3},"metadata":{"labels":{"tier":null}}}"#,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(containers(&out).len(), 2);
        let err =
            apply_patch(Kind::Deployment, &deployment(), PatchType::Merge, b"{nope").unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn json_patch_ops() {
        let patch = br#"[
            {"op":"test","path":"/spec/replicas","value":1},
            {"op":"replace","path":"/spec/replicas","value":5},
            {"op":"add","path":"/metadata/labels/new","value":"v"},
            {"op":"remove","path":"/metadata/annotations/a"}
        ]"#;
        let out = apply_patch(Kind::Deployment, &deployment(), PatchType::Json, patch).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["metadata"]["labels"]["new"], "v");
        assert_eq!(out["metadata"]["annotations"], json!({"b": "2"}));

        let failed = br#"[{"op":"test","path":"/spec/replicas","value":9}]"#;
        let err =
            apply_patch(Kind::Deployment, &deployment(), PatchType::Json, failed).unwrap_err();
        assert_eq!(err.code(), 422);
        let missing = br#"[{"op":"remove","path":"/spec/nothing"}]"#;
        let err =
            apply_patch(Kind::Deployment, &deployment(), PatchType::Json, missing).unwrap_err();
        assert_eq!(err.code(), 422);
        let bad = br#"{"op":"remove"}"#;
        let err = apply_patch(Kind::Deployment, &deployment(), PatchType::Json, bad).unwrap_err();
        assert_eq!(err.code(), 400);
    }

    #[test]
    fn resource_version_detection() {
        assert!(sets_resource_version(
            PatchType::Merge,
            br#"{"metadata":{"resourceVersion":"5"}}"#
        ));
        assert!(!sets_resource_version(
            PatchType::Strategic,
            br#"{"metadata":{}}"#
        ));
        assert!(sets_resource_version(
            PatchType::Json,
            br#"[{"op":"replace","path":"/metadata/resourceVersion","value":"5"}]"#
        ));
    }

    #[test]
    fn schema_table_agrees_with_the_path_table() {
        use strategic::{ListStrategy, SCHEMA_PATCH_FIELDS, list_strategy};
        for f in SCHEMA_PATCH_FIELDS {
            let path = match f.schema {
                "io.k8s.api.core.v1.PodSpec" => format!("spec.{}", f.property),
                "io.k8s.api.core.v1.Container" => format!("spec.containers.{}", f.property),
                "io.k8s.api.core.v1.PodStatus" => format!("status.{}", f.property),
                "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" => {
                    format!("metadata.{}", f.property)
                }
                _ => continue,
            };
            let expected = match f.merge_key {
                Some(key) => ListStrategy::MergeByKey(key),
                None => ListStrategy::Union,
            };
            assert_eq!(list_strategy(Kind::Pod, &path), Some(expected), "{path}");
        }
    }

    #[test]
    fn merge_keys_are_path_aware() {
        use strategic::{ListStrategy, list_strategy};
        assert_eq!(
            list_strategy(Kind::Deployment, "spec.template.spec.containers.ports"),
            Some(ListStrategy::MergeByKey("containerPort"))
        );
        assert_eq!(
            list_strategy(Kind::Pod, "spec.initContainers.volumeMounts"),
            Some(ListStrategy::MergeByKey("mountPath"))
        );
        assert_eq!(
            list_strategy(Kind::Pod, "spec.template.spec.containers"),
            None
        );
        assert_eq!(
            list_strategy(Kind::Service, "spec.ports"),
            Some(ListStrategy::MergeByKey("port"))
        );
        assert_eq!(list_strategy(Kind::Pod, "spec.tolerations"), None);
    }
}
