//! PATCH: JSON, merge and strategic merge patches through the kube client and the real kubectl.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{TestServer, kubectl, raw};

fn deployment(name: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, "tier": "front"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [
                    {"name": "app", "image": "nginx:1",
                     "ports": [{"containerPort": 80}, {"containerPort": 443}],
                     "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "busybox:1"}
                ]}
            }
        }
    }))?)
}

fn containers(d: &Deployment) -> Vec<k8s_openapi::api::core::v1::Container> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn kube_client_merge_json_and_strategic_patches() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let created = deploys
        .create(&PostParams::default(), &deployment("web")?)
        .await?;
    let pp = PatchParams::default();

    // Merge patch: replicas.
    let scaled = deploys
        .patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await?;
    assert_eq!(scaled.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_ne!(
        scaled.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(scaled.metadata.uid, created.metadata.uid);

    // Strategic: one container's image by name, a port deleted by containerPort, env by name,
    // a label removed with null; the other container and fields stay.
    let patched = deploys
        .patch(
            "web",
            &pp,
            &Patch::Strategic(json!({
                "metadata": {"labels": {"tier": null}},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "app", "image": "nginx:2",
                    "ports": [{"$patch": "delete", "containerPort": 443}],
                    "env": [{"name": "B", "value": "2"}]
                }]}}}
            })),
        )
        .await?;
    let cs = containers(&patched);
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("nginx:2"));
    assert_eq!(cs[1].name, "side");
    let ports: Vec<i32> = cs[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [80]);
    let env: Vec<&str> = cs[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(env, ["A", "B"]);
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key("tier") && labels.contains_key("app"));
    // Defaults are applied to what the patch added (protocol TCP on ports).
    assert_eq!(
        cs[0]
            .ports
            .iter()
            .flatten()
            .next()
            .and_then(|p| p.protocol.as_deref()),
        Some("TCP")
    );

    // JSON patch through raw HTTP: test + replace works; a failing test is 422.
    let path = "/apis/apps/v1/namespaces/default/deployments/web";
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/json-patch+json"),
        serde_json::to_vec(&json!([
            {"op": "test", "path": "/spec/replicas", "value": 3},
            {"op": "replace", "path": "/spec/replicas", "value": 5}
        ]))?,
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["replicas"], 5);
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/json-patch+json"),
        br#"[{"op":"test","path":"/spec/replicas","value":9}]"#.to_vec(),
    )
    .await?;
    assert_eq!(
        (code, body["kind"].as_str()),
        (422, Some("Status")),
        "{body}"
    );

    // Malformed patch → 400; unknown media type → 415 listing the patch types; server-side
    // apply → 415 saying so; missing object → 404 (PATCH does not create).
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        b"{not json".to_vec(),
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(&client, "PATCH", path, Some("text/plain"), b"{}".to_vec()).await?;
    assert_eq!(code, 415, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("application/strategic-merge-patch+json")),
        "{body}"
    );
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        b"{}".to_vec(),
    )
    .await?;
    // Server-side apply without a field manager (more in server_side_apply.rs).
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("fieldManager")),
        "{body}"
    );
    let (code, body) = raw(
        &client,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/nope",
        Some("application/merge-patch+json"),
        b"{}".to_vec(),
    )
    .await?;
    assert_eq!(code, 404, "{body}");

    // Identity fields cannot change; a pinned stale resourceVersion is a 409, not retried.
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        br#"{"metadata":{"name":"other"}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        br#"{"metadata":{"uid":"00000000-0000-0000-0000-000000000000"}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    let stale = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        serde_json::to_vec(
            &json!({"metadata": {"resourceVersion": stale}, "spec": {"replicas": 2}}),
        )?,
    )
    .await?;
    assert_eq!(code, 409, "{body}");

    // Invalid results are rejected by validation (422) and nothing is stored.
    let (code, body) = raw(
        &client,
        "PATCH",
        path,
        Some("application/merge-patch+json"),
        br#"{"spec":{"replicas":-1}}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    let now = deploys.get("web").await?;
    assert_eq!(now.spec.as_ref().and_then(|s| s.replicas), Some(5));

    // Strategic merge on a ConfigMap with fieldValidation=Strict: unknown fields are refused.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}}))?,
    )
    .await?;
    let cm = cms
        .patch(
            "c",
            &pp,
            &Patch::Strategic(json!({"data": {"a": null, "b": "2"}})),
        )
        .await?;
    assert_eq!(cm.data, Some([("b".to_owned(), "2".to_owned())].into()));
    let (code, body) = raw(
        &client,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/c?fieldValidation=Strict",
        Some("application/strategic-merge-patch+json"),
        br#"{"bogus":1}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 400, "{body}");

    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn concurrent_patches_all_land() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "race"}}))?,
    )
    .await?;
    // Eight writers at once: each loses at most seven races, so every patch is re-applied
    // on the fresh object until it lands; none is lost and none answers 409.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let cms = cms.clone();
        tasks.push(tokio::spawn(async move {
            cms.patch(
                "race",
                &PatchParams::default(),
                &Patch::Strategic(json!({"metadata": {"labels": {format!("l{i}"): "x"}}})),
            )
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let labels = cms.get("race").await?.metadata.labels.unwrap_or_default();
    assert_eq!(labels.len(), 8, "{labels:?}");
    ts.stop().await;
    Ok(())
}

const APPLY_V1: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: applied
  labels: {app: applied, extra: yes-please}
spec:
  replicas: 2
  selector: {matchLabels: {app: applied}}
  template:
    metadata: {labels: {app: applied}}
    spec:
      containers:
      - name: app
        image: nginx:1
        ports:
        - containerPort: 80
        - containerPort: 443
      - name: side
        image: busybox:1
";

#[tokio::test]
async fn real_kubectl_label_annotate_patch_and_apply() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");

    let manifest = dir.path().join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {k: v}\n---\n".to_owned()
            + &APPLY_V1.replace("applied", "web"),
    )?;
    let path = manifest.to_string_lossy().into_owned();
    kubectl(&kc, &["create", "--validate=false", "-f", &path]).await?;

    let out = kubectl(&kc, &["label", "cm", "x", "a=b"]).await?;
    assert!(out.contains("configmap/x labeled"), "{out}");
    let out = kubectl(&kc, &["annotate", "cm", "x", "note=hi"]).await?;
    assert!(out.contains("configmap/x annotated"), "{out}");
    let out = kubectl(
        &kc,
        &[
            "patch",
            "cm",
            "x",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/data/k2","value":"v2"}]"#,
        ],
    )
    .await?;
    assert!(out.contains("configmap/x patched"), "{out}");
    let x = cms.get("x").await?;
    let labels = x.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("a").map(String::as_str), Some("b"));
    let notes = x.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(notes.get("note").map(String::as_str), Some("hi"));
    let data = x.data.clone().unwrap_or_default();
    assert_eq!(
        (
            data.get("k").map(String::as_str),
            data.get("k2").map(String::as_str)
        ),
        (Some("v"), Some("v2"))
    );
    // Removing a label is a strategic patch with null.
    kubectl(&kc, &["label", "cm", "x", "a-"]).await?;
    let x = cms.get("x").await?;
    assert!(!x.metadata.labels.unwrap_or_default().contains_key("a"));

    let out = kubectl(
        &kc,
        &[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":3}}"#,
        ],
    )
    .await?;
    assert!(out.contains("deployment.apps/web patched"), "{out}");
    let web = deploys.get("web").await?;
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(3));
    // The default --type is strategic.
    kubectl(
        &kc,
        &[
            "patch",
            "deploy",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox:2"}]}}}}"#,
        ],
    )
    .await?;
    let cs = containers(&deploys.get("web").await?);
    assert_eq!(
        cs.iter()
            .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
            .collect::<Vec<_>>(),
        [("app", "nginx:1"), ("side", "busybox:2")]
    );

    // Client-side apply: created, then configured after editing, then unchanged.
    let file = dir.path().join("apply.yaml");
    let file_s = file.to_string_lossy().into_owned();
    std::fs::write(&file, APPLY_V1)?;
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", &file_s]).await?;
    assert!(out.contains("deployment.apps/applied created"), "{out}");
    let edited = APPLY_V1
        .replace("image: nginx:1", "image: nginx:2")
        .replace("        - containerPort: 443\n", "")
        .replace(", extra: yes-please", "");
    std::fs::write(&file, &edited)?;
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", &file_s]).await?;
    assert!(out.contains("deployment.apps/applied configured"), "{out}");
    let applied = deploys.get("applied").await?;
    let labels = applied.metadata.labels.clone().unwrap_or_default();
    assert!(
        labels.contains_key("app") && !labels.contains_key("extra"),
        "{labels:?}"
    );
    let cs = containers(&applied);
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("nginx:2"));
    // The OpenAPI v3 document gives kubectl the merge keys, so its patch deletes the port that
    // left the file (`$patch: delete` by containerPort) rather than resending the list whole.
    let ports: Vec<i32> = cs[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [80]);
    // What kubectl sends when it knows the merge keys: the port goes, the order is kept.
    kubectl(
        &kc,
        &[
            "patch",
            "deploy",
            "applied",
            "-p",
            r#"{"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"app"},{"name":"side"}],
                "containers":[{"name":"app",
                    "$setElementOrder/ports":[{"containerPort":80}],
                    "ports":[{"$patch":"delete","containerPort":443}]}]}}}}"#,
        ],
    )
    .await?;
    let cs = containers(&deploys.get("applied").await?);
    let ports: Vec<i32> = cs[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [80]);
    assert_eq!(
        cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["app", "side"]
    );
    let last_applied = applied
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .get("kubectl.kubernetes.io/last-applied-configuration")
        .cloned()
        .unwrap_or_default();
    let last: Value = serde_json::from_str(&last_applied)?;
    assert_eq!(
        last["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    // Re-applying the same file is "unchanged" and changes nothing stored.
    let before = deploys.get("applied").await?;
    let out = kubectl(&kc, &["apply", "--validate=false", "-f", &file_s]).await?;
    assert!(out.contains("deployment.apps/applied unchanged"), "{out}");
    let after = deploys.get("applied").await?;
    assert_eq!(before.spec, after.spec);
    assert_eq!(before.metadata.labels, after.metadata.labels);

    ts.stop().await;
    Ok(())
}

/// A PATCH or PUT that changes nothing is not written (upstream): same resourceVersion, no
/// watch event, the stored object answered; a stale resourceVersion still conflicts.
#[tokio::test]
async fn a_patch_that_changes_nothing_writes_nothing() -> anyhow::Result<()> {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::WatchParams;
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "still"},
        "spec": {"containers": [{"name": "c", "image": "skiff.dev/pause"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9"}});
    let pp = PatchParams::default();
    let first = pods
        .patch_status("still", &pp, &Patch::Merge(status.clone()))
        .await?;
    let rv = first.metadata.resource_version.clone();
    let watch = pods
        .watch(&WatchParams::default(), rv.as_deref().unwrap_or("0"))
        .await?;
    let again = pods
        .patch_status("still", &pp, &Patch::Merge(status))
        .await?;
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op status patch was written"
    );
    let labels = json!({"metadata": {"labels": {"app": "still"}}});
    let labelled = pods
        .patch("still", &pp, &Patch::Merge(labels.clone()))
        .await?;
    assert_ne!(labelled.metadata.resource_version, rv);
    let same = pods.patch("still", &pp, &Patch::Merge(labels)).await?;
    assert_eq!(
        same.metadata.resource_version,
        labelled.metadata.resource_version
    );
    // a PUT of the stored object, and one with a stale resourceVersion
    let put = pods.replace("still", &PostParams::default(), &same).await?;
    assert_eq!(
        put.metadata.resource_version,
        same.metadata.resource_version
    );
    let mut stale = same.clone();
    stale.metadata.resource_version = rv.clone();
    let err = pods
        .replace("still", &PostParams::default(), &stale)
        .await
        .expect_err("a stale resourceVersion must conflict even when nothing changes");
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err}"
    );
    // the watch from the first status saw exactly one change: the labels
    let mut events = Vec::new();
    let mut watch = Box::pin(watch);
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, watch.next()).await {
        match ev? {
            kube::api::WatchEvent::Bookmark(_) => {}
            ev => events.push(format!("{ev:?}").chars().take(60).collect::<String>()),
        }
    }
    assert_eq!(events.len(), 1, "{events:?}");
    Ok(())
}
