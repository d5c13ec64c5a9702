//! Pod binding: `POST .../pods/{name}/binding` and the legacy `POST .../namespaces/{ns}/bindings`.
//!
//! As upstream's `BindingREST`: the Binding's name must be the pod's, its target a Node; the pod
//! gets `spec.nodeName` (and the Binding's annotations, and a `PodScheduled=True` condition)
//! only if it is not bound yet: a second binding is a 409 Conflict. The answer is a `Success`
//! Status with code 201.

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};
use skiff_api::{FieldError, FieldErrorType, FieldErrors, kinds};

use super::handlers::{Body, Query, json_response, object_key, parse_body, read_body};
use super::status::{ApiError, Cause, Details};
use super::{Ctx, dry_run};
use crate::storage::{Preconditions, StoreError};

/// How often a binding re-reads the pod after losing a race with another writer.
const ATTEMPTS: usize = 5;

/// A decoded, validated Binding: the pod it names and the node it targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    pub pod: String,
    pub node: String,
    pub annotations: serde_json::Map<String, Value>,
}

/// Checks a Binding body against the request (`url_pod` is the pod named in the path, `None`
/// for the legacy `bindings` collection) and validates it as upstream `ValidatePodBinding`.
pub(crate) fn parse_binding(
    body: &Value,
    namespace: &str,
    url_pod: Option<&str>,
) -> Result<Binding, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    for (field, expected) in [("apiVersion", "v1"), ("kind", "Binding")] {
        match &body[field] {
            Value::Null => {}
            Value::String(s) if s.is_empty() || s == expected => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({}) does not match the expected {field} \
                     ({expected})",
                    other.as_str().unwrap_or("?")
                )));
            }
        }
    }
    let meta = &body["metadata"];
    let name = meta["name"].as_str().unwrap_or("").to_owned();
    if let Some(url_pod) = url_pod
        && url_pod != name
    {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Binding object",
        ));
    }
    if let Some(ns) = meta["namespace"].as_str().filter(|ns| !ns.is_empty())
        && ns != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        ));
    }
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push(FieldError {
            field: "metadata.name".into(),
            error_type: FieldErrorType::Required,
            value: None,
            detail: "name or generateName is required".into(),
        });
    }
    let kind = body["target"]["kind"].as_str().unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        errors.push(FieldError {
            field: "target.kind".into(),
            error_type: FieldErrorType::NotSupported,
            value: Some(format!("{kind:?}")),
            detail: "supported values: \"Node\"".into(),
        });
    }
    let node = body["target"]["name"].as_str().unwrap_or("").to_owned();
    if node.is_empty() {
        errors.push(FieldError {
            field: "target.name".into(),
            error_type: FieldErrorType::Required,
            value: None,
            detail: String::new(),
        });
    }
    if !errors.is_empty() {
        return Err(invalid(&name, &FieldErrors(errors)));
    }
    let annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
    Ok(Binding {
        pod: name,
        node,
        annotations,
    })
}

/// 422 for a Binding (not a served kind, so `ApiError::invalid` does not fit).
fn invalid(name: &str, errors: &FieldErrors) -> ApiError {
    let mut err = ApiError::new(422, "Invalid", errors.status_message("Binding", name));
    err.details = Some(Box::new(Details {
        name: Some(name.to_owned()),
        group: None,
        kind: Some("Binding".into()),
        causes: errors
            .iter()
            .map(|e| Cause {
                reason: e.error_type.reason().to_owned(),
                message: e.to_string(),
                field: Some(e.field.clone()),
            })
            .collect(),
    }));
    err
}

/// The pod after binding, or the upstream Conflict when it cannot be bound.
pub(crate) fn bind_pod(pod: &Value, binding: &Binding) -> Result<Value, ApiError> {
    let conflict = |why: String| {
        let mut err = ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods {:?}: {why}",
                binding.pod
            ),
        );
        err.details = Some(Box::new(Details {
            name: Some(binding.pod.clone()),
            kind: Some("pods".into()),
            ..Details::default()
        }));
        err
    };
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return Err(conflict(format!(
            "pod {} is being deleted, cannot be assigned to a host",
            binding.pod
        )));
    }
    if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Err(conflict(format!(
            "pod {} is already assigned to node {node:?}",
            binding.pod
        )));
    }
    let mut pod = pod.clone();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("nodeName".into(), json!(binding.node));
    }
    if !binding.annotations.is_empty()
        && let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(map) = annotations.as_object_mut() {
            map.extend(binding.annotations.clone());
        }
    }
    set_scheduled_condition(&mut pod);
    Ok(pod)
}

/// `status.conditions[type=PodScheduled]` = True, as upstream's `assignPod` does.
fn set_scheduled_condition(pod: &mut Value) {
    let Some(map) = pod.as_object_mut() else {
        return;
    };
    let status = map.entry("status").or_insert_with(|| json!({}));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let condition = json!({
        "type": "PodScheduled",
        "status": "True",
        "lastProbeTime": null,
        "lastTransitionTime": crate::storage::meta::now_rfc3339(),
    });
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}

/// Handles a binding POST. `url_pod` is the pod in the path (`None` for `bindings`).
pub(crate) async fn bind(
    ctx: &Ctx,
    req: Request<Incoming>,
    namespace: &str,
    url_pod: Option<&str>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    if req.method() != http::Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not allowed on bindings: only POST (create)",
            req.method()
        )));
    }
    let (parts, bytes) = read_body(req).await?;
    let body = parse_body(&parts, &bytes)?;
    let binding = parse_binding(&body, namespace, url_pod)?;
    let pods = kinds::by_resource("", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    let key = object_key(pods, Some(namespace), &binding.pod)?;
    let store = dry_run::store_for(ctx, query.dry_run);
    for attempt in 1..=ATTEMPTS {
        let pod = store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(pods, &binding.pod, e))?;
        let bound = bind_pod(&pod, &binding)?;
        // `bound` carries the resourceVersion read: the write is conditional on it.
        match store.update(&key, bound, &Preconditions::default()).await {
            Ok(_) => {
                return Ok(json_response(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Success", "code": 201}),
                ));
            }
            Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {}
            Err(e) => return Err(ApiError::from_store(pods, &binding.pod, e)),
        }
    }
    Err(ApiError::conflict(pods, &binding.pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, kind: &str, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
               "target": {"kind": kind, "name": node}})
    }

    #[test]
    fn validation_names_fields() {
        let err = parse_binding(&binding("p", "Pod", ""), "default", Some("p"))
            .err()
            .map(|e| e.to_status());
        let status = err.unwrap_or_default();
        assert_eq!(status["code"], 422);
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["target.kind", "target.name"]);
        assert!(status["message"].as_str().is_some_and(|m| {
            m.starts_with("Binding \"p\" is invalid: [target.kind: Unsupported value: \"Pod\"")
        }));
        let err = parse_binding(&binding("q", "Node", "n"), "default", Some("p")).err();
        assert_eq!(err.map(|e| e.code), Some(400));
        let ok = parse_binding(&binding("p", "", "n"), "default", None).ok();
        assert_eq!(ok.map(|b| (b.pod, b.node)), Some(("p".into(), "n".into())));
    }

    #[test]
    fn binds_once() {
        let b = Binding {
            pod: "p".into(),
            node: "n1".into(),
            annotations: serde_json::Map::new(),
        };
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        let bound = bind_pod(&pod, &b).ok().unwrap_or_default();
        assert_eq!(bound["spec"]["nodeName"], "n1");
        assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
        let err = bind_pod(&bound, &b)
            .err()
            .map(|e| e.to_status())
            .unwrap_or_default();
        assert_eq!(err["code"], 409);
        assert_eq!(
            err["message"],
            "Operation cannot be fulfilled on pods \"p\": pod p is already assigned to node \"n1\""
        );
    }
}
