//! Unit tests of the OpenAPI v3 documents.

use serde_json::Value;
use skiff_api::kinds;

use super::*;

fn doc(group: &str, version: &str) -> Value {
    serde_json::from_slice(document(group, version).unwrap()).unwrap()
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_kind_has_a_patch_operation_kubectl_can_use() {
    for info in kinds::KINDS {
        let d = doc(info.group, info.version);
        assert_eq!(d["openapi"], "3.0.0");
        let prefix = if info.group.is_empty() {
            format!("/api/{}", info.version)
        } else {
            format!("/apis/{}/{}", info.group, info.version)
        };
        let path = if info.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", info.plural)
        } else {
            format!("{prefix}/{}/{{name}}", info.plural)
        };
        let patch = &d["paths"][&path]["patch"];
        assert_eq!(patch["x-kubernetes-action"], "patch", "{path}");
        let gvk = &patch["x-kubernetes-group-version-kind"];
        assert_eq!(gvk["group"], info.group);
        assert_eq!(gvk["version"], info.version);
        assert_eq!(gvk["kind"], info.name);
        let params = patch["parameters"].as_array().unwrap();
        assert!(
            params.iter().any(|p| p["name"] == "fieldValidation"),
            "{path}"
        );
        for ct in [
            "application/strategic-merge-patch+json",
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/apply-patch+yaml",
        ] {
            assert!(
                patch["requestBody"]["content"].get(ct).is_some(),
                "{path}: {ct}"
            );
        }
        for verb in ["get", "put", "delete"] {
            assert!(d["paths"][&path].get(verb).is_some(), "{path} {verb}");
        }
        let collection = path.trim_end_matches("/{name}");
        let post = &d["paths"][collection]["post"];
        assert_eq!(post["x-kubernetes-action"], "post");
        assert!(
            post["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert_eq!(d["paths"][collection]["get"]["x-kubernetes-action"], "list");
    }
}

#[test]
fn every_ref_resolves() {
    for (group, version) in kinds::group_versions() {
        let d = doc(group, version);
        let schemas = d["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&d, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component ref"));
            assert!(schemas.contains_key(name), "{group}/{version}: {r}");
        }
    }
}

#[test]
fn top_level_kinds_have_real_schemas_with_gvk() {
    for info in kinds::KINDS {
        let d = doc(info.group, info.version);
        let schemas = d["components"]["schemas"].as_object().unwrap();
        let (_, schema) = schemas
            .iter()
            .find(|(_, s)| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g["kind"] == info.name))
            })
            .unwrap_or_else(|| panic!("no schema with the GVK of {}", info.name));
        assert!(schema["description"].as_str().is_some());
        assert!(schema["properties"]["metadata"].is_object());
    }
    let core = doc("", "v1");
    let schemas = &core["components"]["schemas"];
    let pod = &schemas["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["type"], "object");
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["type"], "array");
    assert!(
        schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["name"]
            .is_object()
    );
    let env = &schemas["io.k8s.api.core.v1.Container"]["properties"]["env"];
    assert_eq!(env["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(env["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"][0], "name");
    let finalizers =
        &schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"];
    assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    let apps = doc("apps", "v1");
    assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentStrategy"].is_object());
}

#[test]
fn index_lists_every_group_version_with_a_content_hash() {
    let index: Value = serde_json::from_slice(index().unwrap()).unwrap();
    let paths = index["paths"].as_object().unwrap();
    assert_eq!(paths.len(), kinds::group_versions().len());
    for (group, version) in kinds::group_versions() {
        let key = index_key(group, version);
        let url = paths[&key]["serverRelativeURL"].as_str().unwrap();
        let expected = hash(document(group, version).unwrap());
        assert_eq!(url, format!("/openapi/v3/{key}?hash={expected}"));
    }
    // The hash follows the content.
    let a = hash(b"{\"openapi\":\"3.0.0\"}");
    let b = hash(b"{\"openapi\":\"3.0.1\"}");
    assert_ne!(a, b);
    assert!(document("nope", "v1").is_err());
}

#[test]
fn pod_binding_is_a_post_of_a_binding() {
    let core = doc("", "v1");
    let post = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"];
    assert_eq!(post["x-kubernetes-action"], "post");
    assert_eq!(post["x-kubernetes-group-version-kind"]["kind"], "Binding");
    let schema = &post["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert!(
        schema
            .as_str()
            .is_some_and(|r| r.ends_with("io.k8s.api.core.v1.Binding")),
        "{schema}"
    );
}
