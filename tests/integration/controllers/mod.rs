//! Controllers against an in-process API server (real storage, real HTTPS), pods made Ready through `/status` as a kubelet would.

mod endpoints;
mod services;
mod stateful;
mod workloads;

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Polls `check` until it returns `Some`, failing with `what` after a generous deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a kubelet reports for a started pod: Running, with an IP, Ready or not.
pub async fn set_pod_status(
    pods: &Api<Pod>,
    name: &str,
    ip: &str,
    ready: bool,
) -> anyhow::Result<()> {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}
