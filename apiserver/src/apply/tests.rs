#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;

fn req(manager: &str) -> Request<'_> {
    Request {
        kind: Kind::Deployment,
        api_version: "apps/v1",
        manager,
        subresource: "",
        status_is_separate: true,
        now: "2026-01-01T00:00:00Z",
    }
}

fn config(replicas: i64, label: bool, side: bool) -> Value {
    let mut containers = vec![json!({"name": "app", "image": "nginx:1",
        "ports": [{"containerPort": 80}, {"containerPort": 443}]})];
    if side {
        containers.push(json!({"name": "side", "image": "busybox"}));
    }
    let mut labels = json!({"app": "web"});
    if label {
        labels["tier"] = json!("front");
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": containers}}}})
}

fn managers(v: &Value) -> Vec<(String, String)> {
    v["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap().to_owned(),
                        e["operation"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(v: &'a Value, manager: &str) -> &'a Value {
    v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == manager)
        .map(|e| &e["fieldsV1"])
        .unwrap()
}

#[test]
fn create_records_the_applied_fields() {
    let out = apply(&req("kubectl"), None, &config(2, true, true), false).unwrap();
    assert!(out.changed);
    assert_eq!(managers(&out.object), [("kubectl".into(), "Apply".into())]);
    let f = fields_of(&out.object, "kubectl");
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(f["f:spec"]["f:selector"], json!({}));
    assert!(f["f:metadata"].get("f:name").is_none());
    assert!(
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:ports"]
            ["k:{\"containerPort\":443,\"protocol\":\"TCP\"}"]
            .is_object()
    );
    assert_eq!(
        out.object["metadata"]["managedFields"][0]["time"],
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn omitted_fields_are_removed_and_reapply_is_a_no_op() {
    let live = apply(&req("kubectl"), None, &config(2, true, true), false)
        .unwrap()
        .object;
    let same = apply(&req("kubectl"), Some(&live), &config(2, true, true), false).unwrap();
    assert!(!same.changed);
    assert_eq!(same.object, live);
    // Drop a label, a container and a port.
    let mut smaller = config(2, false, false);
    smaller["spec"]["template"]["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}]);
    let out = apply(&req("kubectl"), Some(&live), &smaller, false).unwrap();
    assert!(out.changed);
    assert_eq!(out.object["metadata"]["labels"], json!({"app": "web"}));
    let containers = &out.object["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1);
    assert_eq!(containers[0]["ports"], json!([{"containerPort": 80}]));
    assert!(
        fields_of(&out.object, "kubectl")["f:metadata"]["f:labels"]
            .get("f:tier")
            .is_none()
    );
}

#[test]
fn fields_owned_by_another_manager_survive_removal() {
    let live = apply(&req("kubectl"), None, &config(2, true, true), false)
        .unwrap()
        .object;
    // Another applier sets the same label to the same value: shared, no conflict.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"tier": "front"}}});
    let shared = apply(&req("labeller"), Some(&live), &other, false).unwrap();
    assert!(!shared.changed);
    assert_eq!(managers(&shared.object).len(), 2);
    // kubectl drops the label: labeller still owns it, so it stays.
    let out = apply(
        &req("kubectl"),
        Some(&shared.object),
        &config(2, false, true),
        false,
    )
    .unwrap();
    assert_eq!(out.object["metadata"]["labels"]["tier"], "front");
}

#[test]
fn conflicts_and_force() {
    let live = apply(&req("kubectl"), None, &config(2, true, true), false)
        .unwrap()
        .object;
    // A scale (an Update through /scale) takes spec.replicas.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    let scale_req = Request {
        subresource: "scale",
        manager: "kubectl-scale",
        ..req("")
    };
    record_update(&scale_req, Some(&live), &mut scaled);
    assert!(
        fields_of(&scaled, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert_eq!(
        fields_of(&scaled, "kubectl-scale"),
        &json!({"f:spec": {"f:replicas": {}}})
    );
    assert_eq!(
        scaled["metadata"]["managedFields"][1]["subresource"],
        "scale"
    );

    let err = apply(
        &req("kubectl"),
        Some(&scaled),
        &config(2, true, true),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-scale\" with subresource \"scale\" \
         using apps/v1: .spec.replicas"
    );
    // Applying the live value is no conflict: the field becomes shared.
    let shared = apply(
        &req("kubectl"),
        Some(&scaled),
        &config(5, true, true),
        false,
    )
    .unwrap();
    assert!(!shared.changed);
    assert!(
        fields_of(&shared.object, "kubectl-scale")["f:spec"]
            .get("f:replicas")
            .is_some()
    );
    // Force takes the field over; the scaler's entry, now empty, is dropped.
    let forced = apply(&req("kubectl"), Some(&scaled), &config(2, true, true), true).unwrap();
    assert_eq!(forced.object["spec"]["replicas"], 2);
    assert_eq!(
        managers(&forced.object),
        [("kubectl".into(), "Apply".into())]
    );
}

#[test]
fn last_applied_only_apply_keeps_the_spec() {
    // A client-side apply created the object (an Update owning everything).
    let mut live = config(2, true, true);
    live["metadata"]["annotations"] =
        json!({last_applied::ANNOTATION: config(2, true, true).to_string()});
    let mut created = live.clone();
    record_update(&req("kubectl-client-side-apply"), None, &mut created);
    // kubectl's follow-up apply of only the annotation, as its own manager.
    let only_annotation = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default",
            "annotations": {last_applied::ANNOTATION: config(3, true, true).to_string()}}});
    let out = apply(
        &req("kubectl-last-applied"),
        Some(&created),
        &only_annotation,
        true,
    )
    .unwrap();
    assert_eq!(out.object["spec"], live["spec"]);
    assert_eq!(out.object["metadata"]["labels"], live["metadata"]["labels"]);
    // `kubectl` may take over fields client-side apply set without a conflict...
    let taken = apply(
        &req("kubectl"),
        Some(&created),
        &config(3, true, true),
        false,
    )
    .unwrap();
    assert_eq!(taken.object["spec"]["replicas"], 3);
    // ...but another manager may not.
    let err = apply(&req("other"), Some(&created), &config(3, true, true), false).unwrap_err();
    assert!(matches!(err, ApplyError::Conflicts(_)));
    assert!(
        err.to_string()
            .contains("\"kubectl-client-side-apply\" using apps/v1: .spec.replicas")
    );
}

#[test]
fn updates_move_fields_and_drop_empty_entries() {
    let live = apply(&req("kubectl"), None, &config(2, true, true), false)
        .unwrap()
        .object;
    let mut edited = live.clone();
    edited["metadata"]["labels"]["tier"] = json!("back");
    edited["metadata"]["labels"]["new"] = json!("x");
    record_update(&req("kubectl-edit"), Some(&live), &mut edited);
    assert_eq!(
        fields_of(&edited, "kubectl-edit"),
        &json!({"f:metadata": {"f:labels": {"f:new": {}, "f:tier": {}}}})
    );
    assert!(
        fields_of(&edited, "kubectl")["f:metadata"]["f:labels"]
            .get("f:tier")
            .is_none()
    );
    // A PUT that sends managedFields replaces them.
    let mut put = edited.clone();
    put["metadata"]["managedFields"] = json!([{"manager": "mine", "operation": "Update",
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    record_update(&req("kubectl"), Some(&edited), &mut put);
    assert_eq!(managers(&put), [("mine".into(), "Update".into())]);
}

#[test]
fn bad_configurations() {
    let no_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = apply(&req("kubectl"), None, &no_key, false).unwrap_err();
    assert!(matches!(err, ApplyError::BadRequest(_)));
    assert!(
        err.to_string().contains("omits key field \"name\""),
        "{err}"
    );
    let with_managed = json!({"metadata": {"managedFields": [{"manager": "x"}]}});
    assert!(apply(&req("kubectl"), None, &with_managed, false).is_err());
    assert!(apply(&req("kubectl"), None, &json!([1]), false).is_err());
    assert_eq!(
        manager_or_user_agent(None, Some("kubectl/v1.32.0 (linux/amd64)")),
        "kubectl"
    );
    assert_eq!(manager_or_user_agent(Some("me"), Some("kubectl/v1")), "me");
    assert!(validate_field_manager(&"x".repeat(129)).is_err());
    assert!(validate_field_manager("ok").is_ok());
}
