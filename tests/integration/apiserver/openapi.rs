//! OpenAPI v3 with the real kubectl: `kubectl explain`, and `kubectl create` with server-side field validation.

use super::{TestServer, kubectl, kubectl_run};

#[tokio::test]
async fn kubectl_explains_kinds_from_openapi_v3() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();

    let index: serde_json::Value =
        serde_json::from_str(&kubectl(&kc, &["get", "--raw", "/openapi/v3"]).await?)?;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_default();
    anyhow::ensure!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{index}");

    let out = kubectl(&kc, &["explain", "pods.spec.containers"]).await?;
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
    assert!(
        out.contains("FIELD:") && out.contains("containers"),
        "{out}"
    );
    assert!(out.contains("image"), "{out}");
    assert!(
        out.contains("List of containers belonging to the pod"),
        "{out}"
    );

    let out = kubectl(&kc, &["explain", "deployment.spec.strategy"]).await?;
    assert!(out.contains("GROUP:") && out.contains("apps"), "{out}");
    assert!(out.contains("rollingUpdate"), "{out}");
    assert!(out.contains("RollingUpdate"), "{out}");

    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_create_validates_on_the_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: checked\n  namespace: default\ndata:\n  a: b\n",
    )?;
    let good_path = good.to_string_lossy().into_owned();
    let out = kubectl(&kc, &["create", "-f", &good_path]).await?;
    assert!(out.contains("configmap/checked created"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unchecked\n  namespace: default\ndata:\n  a: b\nbogusField: 1\n",
    )?;
    let bad_path = bad.to_string_lossy().into_owned();
    let run = kubectl_run(&kc, &["create", "-f", &bad_path]).await?;
    assert!(!run.ok, "an unknown field was accepted: {}", run.stdout);
    // Rejected by the server (kubectl sent fieldValidation=Strict), naming the field.
    assert!(run.stderr.contains("Error from server"), "{}", run.stderr);
    assert!(run.stderr.contains("bogusField"), "{}", run.stderr);
    let run = kubectl_run(&kc, &["get", "configmap", "unchecked", "-n", "default"]).await?;
    assert!(!run.ok, "the invalid ConfigMap was stored: {}", run.stdout);

    ts.stop().await;
    Ok(())
}
