//! Events: server-side aggregation of repeats, and `kubectl describe` / `get events` showing them.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::{TestServer, kubectl, raw};

fn event(name: &str, pod_uid: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web",
                           "uid": pod_uid, "apiVersion": "v1"},
        "reason": "Pulled", "message": message, "type": "Normal",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    })
}

#[tokio::test]
async fn repeats_aggregate_and_describe_shows_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                     "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}});
    let (code, pod) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some("application/json"),
        pod.to_string().into_bytes(),
    )
    .await?;
    assert_eq!(code, 201);
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let path = "/api/v1/namespaces/default/events";
    let post = |body: Value| {
        raw(
            &client,
            "POST",
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    };
    let (code, first) = post(event("web.1", &uid, "Pulled image nginx:1")).await?;
    assert_eq!(code, 201);
    assert_eq!(first["count"], 1);
    let mut again = event("web.2", &uid, "Pulled image nginx:1");
    again["lastTimestamp"] = json!("2026-01-01T00:05:00Z");
    let (code, bumped) = post(again).await?;
    assert_eq!(code, 201, "{bumped}");
    assert_eq!(bumped["metadata"]["name"], "web.1");
    assert_eq!(bumped["count"], 2);
    assert_eq!(bumped["lastTimestamp"], "2026-01-01T00:05:00Z");
    // A different message is a different event. A dry run bumps nothing.
    let mut started = event("web.3", &uid, "Started container app");
    started["reason"] = json!("Started");
    let (code, _) = post(started).await?;
    assert_eq!(code, 201);
    let (code, dry) = raw(
        &client,
        "POST",
        &format!("{path}?dryRun=All"),
        Some("application/json"),
        event("web.4", &uid, "Pulled image nginx:1")
            .to_string()
            .into_bytes(),
    )
    .await?;
    assert_eq!((code, &dry["count"]), (201, &json!(3)));

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let stored = events.list(&ListParams::default()).await?;
    let mut names: Vec<String> = stored
        .items
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["web.1", "web.3"]);
    let web1 = events.get("web.1").await?;
    assert_eq!(web1.count, Some(2));

    // describe finds them by the involvedObject field selector.
    let out = kubectl(&kc, &["describe", "pod", "web"]).await?;
    assert!(out.contains("Events:"), "{out}");
    assert!(
        out.contains("Pulled image nginx:1") && out.contains("Started container app"),
        "{out}"
    );
    assert!(
        out.contains("(x2 over"),
        "describe shows the aggregated count: {out}"
    );
    let out = kubectl(
        &kc,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.uid={uid},reason=Pulled"),
        ],
    )
    .await?;
    let header = out.lines().next().unwrap_or_default();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        out.contains("pod/web") && !out.contains("Started container"),
        "{out}"
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn describe_deployment_shows_its_events() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let manifest = dir.path().join("deploy.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: hello\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: hello\n  template:\n    metadata:\n      labels:\n        \
         app: hello\n    spec:\n      containers:\n      - name: app\n        image: nginx:1\n",
    )?;
    kubectl(&kc, &["apply", "-f", &manifest.to_string_lossy()]).await?;
    let uid = kubectl(
        &kc,
        &["get", "deploy", "hello", "-o", "jsonpath={.metadata.uid}"],
    )
    .await?;
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "hello.1", "namespace": "default"},
        "involvedObject": {"kind": "Deployment", "namespace": "default", "name": "hello",
                           "uid": uid, "apiVersion": "apps/v1"},
        "reason": "ScalingReplicaSet", "message": "Scaled up replica set hello-1 to 1",
        "type": "Normal", "source": {"component": "deployment-controller"},
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "count": 1,
    });
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/events",
        Some("application/json"),
        ev.to_string().into_bytes(),
    )
    .await?;
    assert_eq!(code, 201);
    let out = kubectl(&kc, &["describe", "deployment", "hello"]).await?;
    assert!(
        out.contains("ScalingReplicaSet") && out.contains("Scaled up replica set hello-1 to 1"),
        "{out}"
    );
    ts.stop().await;
    Ok(())
}
