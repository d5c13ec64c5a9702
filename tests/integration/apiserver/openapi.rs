//! OpenAPI v3 with the real kubectl: `kubectl explain`, and `kubectl create` with server-side field validation.

use std::path::Path;

use super::TestServer;

/// kubectl's outcome: success, stdout, stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the real kubectl (the `/usr/bin/kubectl` dispatcher) against `kubeconfig`.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Run> {
    anyhow::ensure!(
        Path::new("/usr/bin/kubectl").exists(),
        "the API tests drive the real kubectl, and /usr/bin/kubectl is missing: install kubectl"
    );
    let mut cmd = std::process::Command::new("/usr/bin/kubectl");
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    Ok(Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

async fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let run = kubectl(kubeconfig, args).await?;
    anyhow::ensure!(run.ok, "kubectl {args:?} failed: {}", run.stderr);
    Ok(run.stdout)
}

#[tokio::test]
async fn kubectl_explains_kinds_from_openapi_v3() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();

    let index: serde_json::Value =
        serde_json::from_str(&kubectl_ok(&kc, &["get", "--raw", "/openapi/v3"]).await?)?;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_default();
    anyhow::ensure!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{index}");

    let out = kubectl_ok(&kc, &["explain", "pods.spec.containers"]).await?;
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

    let out = kubectl_ok(&kc, &["explain", "deployment.spec.strategy"]).await?;
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
    let out = kubectl_ok(&kc, &["create", "-f", &good_path]).await?;
    assert!(out.contains("configmap/checked created"), "{out}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unchecked\n  namespace: default\ndata:\n  a: b\nbogusField: 1\n",
    )?;
    let bad_path = bad.to_string_lossy().into_owned();
    let run = kubectl(&kc, &["create", "-f", &bad_path]).await?;
    assert!(!run.ok, "an unknown field was accepted: {}", run.stdout);
    // Rejected by the server (kubectl sent fieldValidation=Strict), naming the field.
    assert!(run.stderr.contains("Error from server"), "{}", run.stderr);
    assert!(run.stderr.contains("bogusField"), "{}", run.stderr);
    let run = kubectl(&kc, &["get", "configmap", "unchecked", "-n", "default"]).await?;
    assert!(!run.ok, "the invalid ConfigMap was stored: {}", run.stdout);

    ts.stop().await;
    Ok(())
}
