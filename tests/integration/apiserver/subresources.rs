//! The `status` and `scale` subresources through the kube client, raw HTTPS and the real kubectl.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{TestServer, api_code, kubectl, raw};

fn deployment(name: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}
            }
        },
        // Dropped on create, as upstream.
        "status": {"replicas": 7}
    }))?)
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

fn status_replicas(d: &Deployment) -> Option<i32> {
    d.status.as_ref().and_then(|s| s.replicas)
}

#[tokio::test]
async fn kubectl_scale_deployment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let manifest = dir.path().join("deploy.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: hello\n  template:\n    metadata:\n      labels:\n        \
         app: hello\n    spec:\n      containers:\n      - name: app\n        image: nginx:1\n",
    )?;
    let manifest = manifest.to_string_lossy().into_owned();
    kubectl(&kc, &["apply", "-f", &manifest]).await?;
    let out = kubectl(&kc, &["scale", "deploy", "hello", "--replicas=5"]).await?;
    assert!(out.contains("scaled"), "{out}");
    let out = kubectl(&kc, &["get", "deploy", "hello"]).await?;
    assert!(out.contains("0/5"), "{out}");
    let out = kubectl(
        &kc,
        &["get", "deploy", "hello", "-o", "jsonpath={.spec.replicas}"],
    )
    .await?;
    assert_eq!(out.trim(), "5");
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kube_client_scale_and_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let created = deploys
        .create(&PostParams::default(), &deployment("web")?)
        .await?;
    assert_eq!(
        status_replicas(&created),
        None,
        "status is dropped on create"
    );

    // GET scale.
    let scale = deploys.get_scale("web").await?;
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    let st = scale.status.as_ref();
    assert_eq!(st.map(|s| s.replicas), Some(0));
    assert_eq!(
        st.and_then(|s| s.selector.clone()).as_deref(),
        Some("app=web")
    );
    assert_eq!(scale.metadata.uid, created.metadata.uid);

    // PATCH scale (merge).
    let scale = deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(4));
    assert_eq!(replicas(&deploys.get("web").await?), Some(4));

    // replace_status changes only status.
    let mut d = deploys.get("web").await?;
    d.status = Some(DeploymentStatus {
        replicas: Some(3),
        ready_replicas: Some(2),
        ..Default::default()
    });
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(9);
    }
    let updated = deploys
        .replace_status("web", &PostParams::default(), &d)
        .await?;
    assert_eq!(status_replicas(&updated), Some(3));
    assert_eq!(
        replicas(&updated),
        Some(4),
        "status update must not change spec"
    );

    // A stale resourceVersion on /status is a conflict.
    let err = deploys
        .replace_status("web", &PostParams::default(), &d)
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(409));

    // patch_status.
    let patched = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 3}, "spec": {"replicas": 8}})),
        )
        .await?;
    assert_eq!(
        patched.status.as_ref().and_then(|s| s.ready_replicas),
        Some(3)
    );
    assert_eq!(replicas(&patched), Some(4));

    // The main resource ignores status changes (PUT and PATCH).
    let mut d = deploys.get("web").await?;
    d.status = Some(DeploymentStatus {
        replicas: Some(100),
        ..Default::default()
    });
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(6);
    }
    let replaced = deploys.replace("web", &PostParams::default(), &d).await?;
    assert_eq!(replicas(&replaced), Some(6));
    assert_eq!(
        status_replicas(&replaced),
        Some(3),
        "main PUT must keep status"
    );
    let patched = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 50}})),
        )
        .await?;
    assert_eq!(
        status_replicas(&patched),
        Some(3),
        "main PATCH must keep status"
    );

    // GET /status answers the whole object.
    let got = deploys.get_status("web").await?;
    assert_eq!(status_replicas(&got), Some(3));
    assert_eq!(replicas(&got), Some(6));

    // The Scale reports status.replicas.
    let scale = deploys.get_scale("web").await?;
    assert_eq!(scale.status.as_ref().map(|s| s.replicas), Some(3));
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(6));
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn scale_errors_and_put_without_content_type() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment("web")?)
        .await?;
    let base = "/apis/apps/v1/namespaces/default/deployments";

    // Missing parent → 404 Status.
    let err = deploys.get_scale("missing").await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404));
    let (code, body) = raw(
        &client,
        "PATCH",
        &format!("{base}/missing/scale"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":2}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");

    // Negative replicas → 422, nothing stored.
    let (code, body) = raw(
        &client,
        "PATCH",
        &format!("{base}/web/scale"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":-1}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(replicas(&deploys.get("web").await?), Some(1));

    // PUT with no Content-Type is JSON.
    let (code, body) = raw(
        &client,
        "PUT",
        &format!("{base}/web/scale"),
        None,
        serde_json::to_vec(&json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2}
        }))?,
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "Scale");
    assert_eq!(body["spec"]["replicas"], 2);
    assert_eq!(replicas(&deploys.get("web").await?), Some(2));

    // ReplicaSets and StatefulSets scale too.
    for (plural, kind) in [
        ("replicasets", "ReplicaSet"),
        ("statefulsets", "StatefulSet"),
    ] {
        let mut spec = json!({
            "replicas": 1,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {
                "metadata": {"labels": {"app": "rs"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}
            }
        });
        if kind == "StatefulSet" {
            spec["serviceName"] = json!("rs");
        }
        let obj = json!({"apiVersion": "apps/v1", "kind": kind,
                         "metadata": {"name": "rs"}, "spec": spec});
        let coll = format!("/apis/apps/v1/namespaces/default/{plural}");
        let (code, body) = raw(
            &client,
            "POST",
            &coll,
            Some("application/json"),
            serde_json::to_vec(&obj)?,
        )
        .await?;
        assert_eq!(code, 201, "{body}");
        let (code, body) = raw(
            &client,
            "PATCH",
            &format!("{coll}/rs/scale"),
            Some("application/strategic-merge-patch+json"),
            br#"{"spec":{"replicas":3}}"#.to_vec(),
        )
        .await?;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["spec"]["replicas"], 3);
        assert_eq!(body["status"]["selector"], "app=rs");
        let (code, body) = raw(&client, "GET", &format!("{coll}/rs"), None, Vec::new()).await?;
        assert_eq!(code, 200);
        assert_eq!(body["spec"]["replicas"], 3, "{kind}");
    }

    // Unknown subresources and subresources a kind lacks → 404.
    for path in [
        format!("{base}/web/bogus"),
        "/api/v1/namespaces/default/configmaps/x/status".to_owned(),
        "/api/v1/namespaces/default/pods/x/scale".to_owned(),
    ] {
        let (code, body) = raw(&client, "GET", &path, None, Vec::new()).await?;
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body["kind"], "Status");
    }
    ts.stop().await;
    Ok(())
}
