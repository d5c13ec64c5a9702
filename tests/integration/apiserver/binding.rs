//! `pods/binding`, the legacy `bindings` collection, and `dryRun=All` with the real kubectl.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use serde_json::{Value, json};

use super::{TestServer, kubectl, kubectl_run, raw};

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}})
}

fn binding(name: &str, kind: &str, node: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
           "target": {"kind": kind, "name": node}})
    .to_string()
    .into_bytes()
}

async fn node_name(pods: &Api<Pod>, name: &str) -> anyhow::Result<Option<String>> {
    Ok(pods.get(name).await?.spec.and_then(|s| s.node_name))
}

#[tokio::test]
async fn binding_sets_node_name_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let base = "/api/v1/namespaces/default/pods";
    for name in ["p1", "p2", "p3"] {
        let (code, _) = raw(
            &client,
            "POST",
            base,
            Some("application/json"),
            pod(name).to_string().into_bytes(),
        )
        .await?;
        assert_eq!(code, 201);
    }

    // Dry run: answered as a success, nothing written.
    let (code, _) = raw(
        &client,
        "POST",
        &format!("{base}/p1/binding?dryRun=All"),
        Some("application/json"),
        binding("p1", "Node", "n1"),
    )
    .await?;
    assert_eq!(code, 201);
    assert_eq!(node_name(&pods, "p1").await?, None);

    let (code, status) = raw(
        &client,
        "POST",
        &format!("{base}/p1/binding"),
        Some("application/json"),
        binding("p1", "Node", "n1"),
    )
    .await?;
    assert_eq!(code, 201, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Success");
    let stored = pods.get("p1").await?;
    assert_eq!(
        stored.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("n1")
    );
    let scheduled = stored.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        scheduled
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );

    // Bound already: 409 with upstream's message, and the node is unchanged.
    let (code, status) = raw(
        &client,
        "POST",
        &format!("{base}/p1/binding"),
        Some("application/json"),
        binding("p1", "Node", "n2"),
    )
    .await?;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on pods \"p1\": pod p1 is already assigned to node \"n1\""
    );
    assert_eq!(node_name(&pods, "p1").await?.as_deref(), Some("n1"));

    // Missing pod: 404. Invalid target: 422 naming the fields. Name mismatch: 400.
    let (code, status) = raw(
        &client,
        "POST",
        &format!("{base}/nope/binding"),
        Some("application/json"),
        binding("nope", "Node", "n1"),
    )
    .await?;
    assert_eq!(
        (code, status["message"].as_str()),
        (404, Some("pods \"nope\" not found"))
    );
    let (code, status) = raw(
        &client,
        "POST",
        &format!("{base}/p2/binding"),
        Some("application/json"),
        binding("p2", "Service", ""),
    )
    .await?;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["target.kind", "target.name"]);
    let (code, _) = raw(
        &client,
        "POST",
        &format!("{base}/p2/binding"),
        Some("application/json"),
        binding("p3", "Node", "n1"),
    )
    .await?;
    assert_eq!(code, 400);
    assert_eq!(node_name(&pods, "p2").await?, None);

    // The legacy collection takes the pod from the body.
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some("application/json"),
        binding("p2", "Node", "n2"),
    )
    .await?;
    assert_eq!(code, 201);
    assert_eq!(node_name(&pods, "p2").await?.as_deref(), Some("n2"));

    // Discovery lists the subresource and the collection.
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let v1 = kubectl(&kc, &["get", "--raw", "/api/v1"]).await?;
    assert!(
        v1.contains("\"pods/binding\"") && v1.contains("\"bindings\""),
        "{v1}"
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_server_dry_run_stores_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let manifest = dir.path().join("cm.yaml");
    let write = |value: &str| {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  k: {value}\n"
            ),
        )
    };
    write("one")?;
    let file = manifest.to_string_lossy().into_owned();

    let out = kubectl(&kc, &["create", "--dry-run=server", "-f", &file]).await?;
    assert!(out.contains("created (server dry run)"), "{out}");
    let out = kubectl(&kc, &["apply", "--dry-run=server", "-f", &file]).await?;
    assert!(out.contains("created (server dry run)"), "{out}");
    let out = kubectl(
        &kc,
        &["create", "--dry-run=server", "-f", &file, "-o", "json"],
    )
    .await?;
    let answered: Value = serde_json::from_str(&out)?;
    assert_eq!(answered["data"]["k"], "one");
    assert!(answered["metadata"]["uid"].is_string());
    assert!(
        cms.get_opt("dry").await?.is_none(),
        "a dry run stored the object"
    );

    kubectl(&kc, &["apply", "-f", &file]).await?;
    let before = cms.get("dry").await?;
    write("two")?;
    let out = kubectl(
        &kc,
        &["apply", "--dry-run=server", "-f", &file, "-o", "json"],
    )
    .await?;
    let answered: Value = serde_json::from_str(&out)?;
    assert_eq!(answered["data"]["k"], "two");
    assert_eq!(
        answered["metadata"]["resourceVersion"].as_str(),
        before.metadata.resource_version.as_deref()
    );
    let after = cms.get("dry").await?;
    assert_eq!(after.data, before.data);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );

    let out = kubectl(&kc, &["delete", "--dry-run=server", "-f", &file]).await?;
    assert!(out.contains("deleted (server dry run)"), "{out}");
    assert!(cms.get_opt("dry").await?.is_some());

    // Creating over an existing object fails in a dry run as it would for real.
    let run = kubectl_run(&kc, &["create", "--dry-run=server", "-f", &file]).await?;
    assert!(
        !run.ok && run.stderr.contains("already exists"),
        "{}",
        run.stderr
    );

    let (code, status) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/dry?dryRun=Bogus",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 400, "{status}");
    assert!(cms.get_opt("dry").await?.is_some());
    ts.stop().await;
    Ok(())
}
