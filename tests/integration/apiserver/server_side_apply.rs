//! Server-side apply and managedFields, driven by the real kubectl and kube-rs.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{TestServer, kubectl, kubectl_run, raw};

/// A Deployment manifest: `replicas`, with or without the `tier` label, the `side` container
/// and the 443 port.
fn manifest(replicas: u32, tier: bool, side: bool, https: bool) -> String {
    let mut s = String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: web\n",
    );
    if tier {
        s.push_str("    tier: front\n");
    }
    s.push_str(&format!(
        "spec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    \
         metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        \
         image: nginx:1\n        ports:\n        - containerPort: 80\n"
    ));
    if https {
        s.push_str("        - containerPort: 443\n");
    }
    if side {
        s.push_str("      - name: side\n        image: busybox:1\n");
    }
    s
}

fn write(dir: &Path, text: &str) -> anyhow::Result<String> {
    let path = dir.join("web.yaml");
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

async fn get(client: &kube::Client) -> anyhow::Result<Value> {
    let (code, v) = raw(
        client,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        None,
        Vec::new(),
    )
    .await?;
    anyhow::ensure!(code == 200, "GET: {code} {v}");
    Ok(v)
}

fn managers(v: &Value) -> Vec<String> {
    v["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{}/{}{}",
                        e["manager"].as_str().unwrap_or(""),
                        e["operation"].as_str().unwrap_or(""),
                        e["subresource"]
                            .as_str()
                            .map(|s| format!("/{s}"))
                            .unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(v: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    v["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| &e["fieldsV1"])
}

fn containers(v: &Value) -> Vec<String> {
    v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn kubectl_server_side_apply_create_update_and_removal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;

    let file = write(dir.path(), &manifest(2, true, true, true))?;
    let out = kubectl(&kc, &["apply", "--server-side", "-f", &file]).await?;
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let created = get(&client).await?;
    assert_eq!(managers(&created), ["kubectl/Apply"]);
    let f = fields_of(&created, "kubectl", "Apply")
        .cloned()
        .unwrap_or_default();
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:ports"]["k:{\"containerPort\":443,\"protocol\":\"TCP\"}"]
            ["."],
        json!({})
    );
    // Defaults are applied but owned by nobody.
    assert_eq!(created["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(f["f:spec"].get("f:strategy").is_none());

    // Unchanged: same object, nothing written.
    kubectl(&kc, &["apply", "--server-side", "-f", &file]).await?;
    let again = get(&client).await?;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // Update and removal: replicas, the tier label, the side container and port 443.
    let file = write(dir.path(), &manifest(3, false, false, false))?;
    kubectl(&kc, &["apply", "--server-side", "-f", &file]).await?;
    let updated = get(&client).await?;
    assert_eq!(updated["spec"]["replicas"], 3);
    assert_eq!(updated["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(containers(&updated), ["app"]);
    assert_eq!(
        updated["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );

    // --show-managed-fields prints the entries; without it kubectl hides them.
    let yaml = kubectl(
        &kc,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "yaml",
            "--show-managed-fields",
        ],
    )
    .await?;
    assert!(yaml.contains("managedFields:"), "{yaml}");
    assert!(yaml.contains("manager: kubectl"), "{yaml}");
    assert!(yaml.contains("operation: Apply"), "{yaml}");
    assert!(yaml.contains("fieldsType: FieldsV1"), "{yaml}");
    assert!(yaml.contains("f:replicas: {}"), "{yaml}");
    let plain = kubectl(&kc, &["get", "deploy", "web", "-o", "yaml"]).await?;
    assert!(!plain.contains("managedFields"), "{plain}");
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_scale_then_server_side_apply_conflicts_unless_forced() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;
    let file = write(dir.path(), &manifest(2, true, false, false))?;
    kubectl(&kc, &["apply", "--server-side", "-f", &file]).await?;
    kubectl(&kc, &["scale", "deploy", "web", "--replicas=5"]).await?;
    let scaled = get(&client).await?;
    let scaler = scaled["metadata"]["managedFields"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["subresource"] == "scale"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(scaler["operation"], "Update", "{scaled}");
    assert_eq!(scaler["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let scaler_name = scaler["manager"].as_str().unwrap_or("").to_owned();
    assert!(scaler_name.starts_with("kubectl"), "{scaler_name}");
    // The applier no longer owns replicas.
    let applier = fields_of(&scaled, "kubectl", "Apply")
        .cloned()
        .unwrap_or_default();
    assert!(applier["f:spec"].get("f:replicas").is_none(), "{applier}");

    // kubectl's Status: 409 with the owner and field.
    let run = kubectl_run(&kc, &["apply", "--server-side", "-f", &file]).await?;
    assert!(!run.ok);
    let expected = format!(
        "conflict with \"{scaler_name}\" with subresource \"scale\" using apps/v1: .spec.replicas"
    );
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert_eq!(get(&client).await?["spec"]["replicas"], 5);

    // The raw Status has one FieldManagerConflict cause.
    let body = serde_json::to_vec(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 1}}))?;
    let (code, status) = raw(
        &client,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=other",
        Some("application/apply-patch+yaml"),
        body,
    )
    .await?;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "field": ".spec.replicas",
                "message": format!("conflict with \"{scaler_name}\" with subresource \"scale\" using apps/v1")}])
    );

    // --force-conflicts takes replicas back.
    kubectl(
        &kc,
        &["apply", "--server-side", "--force-conflicts", "-f", &file],
    )
    .await?;
    let forced = get(&client).await?;
    assert_eq!(forced["spec"]["replicas"], 2);
    assert_eq!(managers(&forced), ["kubectl/Apply"]);
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn client_side_then_server_side_apply_keeps_the_spec() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;
    let file = write(dir.path(), &manifest(2, true, true, true))?;
    kubectl(&kc, &["apply", "-f", &file]).await?;
    let csa = get(&client).await?;
    assert_eq!(managers(&csa), ["kubectl-client-side-apply/Update"]);
    assert!(
        csa["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // The same configuration, server-side: kubectl also sends its last-applied-only apply.
    let run = kubectl_run(&kc, &["apply", "--server-side", "-f", &file]).await?;
    assert!(run.ok, "{}", run.stderr);
    assert!(!run.stderr.contains("Warning"), "{}", run.stderr);
    let ssa = get(&client).await?;
    // kubectl's second apply owns only the annotation; the spec is intact.
    assert_eq!(
        fields_of(&ssa, "kubectl-last-applied", "Apply"),
        Some(&json!({"f:metadata": {"f:annotations": {
            "f:kubectl.kubernetes.io/last-applied-configuration": {}}}})),
        "{:?}",
        managers(&ssa)
    );
    assert_eq!(ssa["spec"]["replicas"], 2);
    assert_eq!(containers(&ssa), ["app", "side"]);
    assert_eq!(ssa["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        ssa["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // A changed value that client-side apply set: kubectl may take it over.
    let file = write(dir.path(), &manifest(4, true, true, true))?;
    let run = kubectl_run(&kc, &["apply", "--server-side", "-f", &file]).await?;
    assert!(run.ok, "{}", run.stderr);
    let taken = get(&client).await?;
    assert_eq!(taken["spec"]["replicas"], 4);
    assert_eq!(containers(&taken), ["app", "side"]);
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kube_client_apply_round_trip_and_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PatchParams::apply("skiff-test");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
    let created = cms.patch("cfg", &pp, &Patch::Apply(&cm)).await?;
    assert_eq!(created.data.as_ref().map(|d| d.len()), Some(2));
    let entries = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].manager.as_deref(), Some("skiff-test"));
    assert_eq!(entries[0].operation.as_deref(), Some("Apply"));

    // Another manager's Update (a merge patch) takes `y`; the applier drops `x` and `y`:
    // only `x` goes.
    let merge = PatchParams {
        field_manager: Some("editor".into()),
        ..PatchParams::default()
    };
    cms.patch("cfg", &merge, &Patch::Merge(json!({"data": {"y": "3"}})))
        .await?;
    let smaller = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg"}, "data": {"z": "9"}});
    let after = cms.patch("cfg", &pp, &Patch::Apply(&smaller)).await?;
    let stored = cms.get("cfg").await?;
    assert_eq!(stored.data, after.data);
    let data = stored.data.unwrap_or_default();
    assert_eq!(data.get("y").map(String::as_str), Some("3"));
    assert_eq!(data.get("z").map(String::as_str), Some("9"));
    assert!(!data.contains_key("x"));
    assert!(stored.metadata.labels.unwrap_or_default().is_empty());

    // fieldManager is required (422 naming it), force is for applies only.
    let path = "/api/v1/namespaces/default/configmaps/cfg";
    let body = serde_json::to_vec(&smaller)?;
    let (code, status) = raw(
        &client,
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        body,
    )
    .await?;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "fieldManager");
    let (code, _) = raw(
        &client,
        "PATCH",
        &format!("{path}?force=true"),
        Some("application/merge-patch+json"),
        b"{}".to_vec(),
    )
    .await?;
    assert_eq!(code, 422);
    // YAML bodies, and Strict field validation of the result.
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\nbogus: 1\n".to_vec();
    let (code, status) = raw(
        &client,
        "PATCH",
        &format!("{path}?fieldManager=y&fieldValidation=Strict"),
        Some("application/apply-patch+yaml"),
        yaml,
    )
    .await?;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"].as_str().unwrap_or("").contains("bogus"),
        "{status}"
    );
    // A list-map item without its key: 400, nothing stored.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let no_key = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"image": "x"}]}}}});
    let err = deploys
        .patch("d", &pp, &Patch::Apply(&no_key))
        .await
        .err()
        .and_then(|e| super::api_code(&e));
    assert_eq!(err, Some(400));
    assert!(deploys.get_opt("d").await?.is_none());
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn non_apply_writes_record_update_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;
    let file = write(dir.path(), &manifest(2, true, false, false))?;
    kubectl(&kc, &["create", "-f", &file]).await?;
    let created = get(&client).await?;
    let creator = managers(&created);
    assert_eq!(creator.len(), 1);
    assert!(
        creator[0].starts_with("kubectl") && creator[0].ends_with("/Update"),
        "{creator:?}"
    );
    kubectl(&kc, &["label", "deploy", "web", "extra=yes"]).await?;
    let labelled = get(&client).await?;
    assert_eq!(
        fields_of(&labelled, "kubectl-label", "Update"),
        Some(&json!({"f:metadata": {"f:labels": {"f:extra": {}}}}))
    );
    ts.stop().await;
    Ok(())
}
