//! The same kubectl session with each supported client minor (1.29, 1.31, 1.33): apply (created,
//! unchanged, configured, removals, then server-side with a conflict and --force-conflicts), get with -o wide|yaml|json, -A and -l, describe, explain,
//! edit, scale, create, get -w and delete, asserting kubectl's output and what the server stored.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Kubectl, TestServer, api_code};

const APP_V1: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web, tier: front}
data: {greeting: hello, mode: fast}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        - containerPort: 8443
        env:
        - {name: A, value: a}
        - {name: B, value: b}
";

/// APP_V1 with a label, a data key, a container port and an env entry removed and the image changed.
fn app_v2() -> String {
    APP_V1
        .replace("labels: {app: web, tier: front}", "labels: {app: web}")
        .replace(
            "data: {greeting: hello, mode: fast}",
            "data: {greeting: hello}",
        )
        .replace("        - containerPort: 8443\n", "")
        .replace("        - {name: B, value: b}\n", "")
        .replace("nginx:1.27", "nginx:1.28")
}

/// An editor for `kubectl edit`: rewrites `greeting: hello` to `greeting: edited` in the file.
fn write_editor(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("editor.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nsed -i 's/greeting: hello/greeting: edited/' \"$1\"\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path.to_string_lossy().into_owned())
}

fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

async fn session(minor: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut k = Kubectl::version(minor, ts.server.kubeconfig_path());
    let file = dir.path().join("app.yaml");
    let file_s = file.to_string_lossy().into_owned();

    // Client-side apply: created, unchanged, configured with removals.
    std::fs::write(&file, APP_V1)?;
    let out = k.ok(&["apply", "-f", &file_s]).await?;
    assert!(out.contains("configmap/web-config created"), "{out}");
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = k.ok(&["apply", "-f", &file_s]).await?;
    assert!(out.contains("configmap/web-config unchanged"), "{out}");
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    std::fs::write(&file, app_v2())?;
    let out = k.ok(&["apply", "-f", &file_s]).await?;
    assert!(out.contains("configmap/web-config configured"), "{out}");
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let cm = cms.get("web-config").await?;
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    assert!(
        labels.contains_key("app") && !labels.contains_key("tier"),
        "{labels:?}"
    );
    let data = cm.data.clone().unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["greeting"]);
    let web = deploys.get("web").await?;
    let spec = web
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .context("stored deployment has a pod spec")?;
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("nginx:1.28"));
    let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [80]);
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["A"]);

    // Tables: the upstream columns, wide ones included.
    let out = k.ok(&["get", "deployments", "-o", "wide"]).await?;
    assert_eq!(
        header(&out),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains("nginx:1.28") && l.contains("app=web")),
        "{out}"
    );
    let out = k.ok(&["get", "configmaps", "-A", "-l", "app=web"]).await?;
    assert_eq!(header(&out), ["NAMESPACE", "NAME", "DATA", "AGE"], "{out}");
    assert!(
        out.lines().any(|l| l
            .split_whitespace()
            .take(3)
            .eq(["default", "web-config", "1"])),
        "{out}"
    );
    let run = k.run(&["get", "configmaps", "-l", "app=nope"]).await?;
    assert!(run.ok && run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("No resources found"), "{}", run.stderr);

    // -o json and -o yaml carry the stored object.
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "cm", "web-config", "-o", "json"]).await?)?;
    assert_eq!(json["data"]["greeting"], "hello");
    assert_eq!(
        json["metadata"]["uid"],
        cm.metadata.uid.clone().unwrap_or_default()
    );
    let yaml = k.ok(&["get", "deploy", "web", "-o", "yaml"]).await?;
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("image: nginx:1.28"),
        "{yaml}"
    );

    // describe and explain.
    let out = k.ok(&["describe", "deployment", "web"]).await?;
    assert!(out.contains("Name:") && out.contains("web"), "{out}");
    assert!(out.contains("Replicas:"), "{out}");
    assert!(out.contains("nginx:1.28"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.replicas"]).await?;
    assert!(out.contains("replicas") && out.contains("integer"), "{out}");

    // edit through an editor script, then scale.
    k.env = vec![("KUBE_EDITOR".to_owned(), write_editor(dir.path())?)];
    let out = k.ok(&["edit", "configmap", "web-config"]).await?;
    assert!(out.contains("configmap/web-config edited"), "{out}");
    let cm = cms.get("web-config").await?;
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("edited")
    );
    k.env.clear();
    let out = k
        .ok(&["scale", "deployment", "web", "--replicas=4"])
        .await?;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let web = deploys.get("web").await?;
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(4));

    // get -w sees a ConfigMap created while it watches.
    let mut watch = tokio::process::Command::from(k.command(&[
        "get",
        "configmaps",
        "-w",
        "--output-watch-events",
    ])?);
    let mut child = watch
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("kubectl -w stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The initial list: the existing ConfigMap.
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("kubectl get -w printed nothing")??
        .unwrap_or_default();
    assert!(
        first.contains("EVENT") || first.contains("web-config"),
        "{first}"
    );
    let created_file = dir.path().join("late.yaml");
    std::fs::write(
        &created_file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\ndata: {a: b}\n",
    )?;
    let out = k
        .ok(&["create", "-f", &created_file.to_string_lossy()])
        .await?;
    assert!(out.contains("configmap/late created"), "{out}");
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("late") {
                return anyhow::Ok(line);
            }
        }
        anyhow::bail!("kubectl get -w ended before showing the new ConfigMap")
    })
    .await
    .context("kubectl get -w did not show the new ConfigMap")??;
    assert!(seen.starts_with("ADDED"), "{seen}");
    child.kill().await?;

    // Server-side apply takes over from client-side apply and then owns what it applies.
    std::fs::write(&file, app_v2().replace("replicas: 2", "replicas: 5"))?;
    let run = k.run(&["apply", "--server-side", "-f", &file_s]).await?;
    // kubectl scale took spec.replicas: a conflict, unless forced.
    assert!(!run.ok, "{}", run.stdout);
    assert!(run.stderr.contains("conflict"), "{}", run.stderr);
    let out = k
        .ok(&["apply", "--server-side", "--force-conflicts", "-f", &file_s])
        .await?;
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let web = deploys.get("web").await?;
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let managers: Vec<String> = web
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "kubectl"), "{managers:?}");

    // delete -f removes what apply made.
    let out = k.ok(&["delete", "-f", &file_s]).await?;
    assert!(out.contains("configmap \"web-config\" deleted"), "{out}");
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = deploys.get("web").await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404), "{err:?}");
    let err = cms.get("web-config").await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404), "{err:?}");
    assert!(cms.get("late").await.is_ok());

    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_1_29_session() -> anyhow::Result<()> {
    session(29).await
}

#[tokio::test]
async fn kubectl_1_31_session() -> anyhow::Result<()> {
    session(31).await
}

#[tokio::test]
async fn kubectl_1_33_session() -> anyhow::Result<()> {
    session(33).await
}
