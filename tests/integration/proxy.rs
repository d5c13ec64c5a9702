//! The service proxy's watch loop against a real in-process API server, with a recording
//! data plane: a Service and an EndpointSlice created through the API become a programmed
//! table; an endpoint change arrives as one changed entry; a failed apply is retried as a full
//! resync; shutdown reaches the data plane.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_proxy::{Config, Dataplane, DataplaneError, NodeInfo, Proxy, ServiceTable, TableDiff};

use crate::apiserver::TestServer;

/// What one `apply` call received.
#[derive(Debug, Clone)]
struct Applied {
    full: bool,
    added: usize,
    removed: usize,
    changed: usize,
    dump: String,
}

/// Records every call; fails the first `fail_first` applies.
#[derive(Debug, Default)]
struct Recording {
    calls: Mutex<Vec<Applied>>,
    fail_first: Mutex<usize>,
    shut_down: Mutex<bool>,
}

#[async_trait]
impl Dataplane for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn apply(
        &self,
        table: &Arc<ServiceTable>,
        diff: &TableDiff,
    ) -> Result<(), DataplaneError> {
        let fail = {
            let mut left = self
                .fail_first
                .lock()
                .map_err(|e| DataplaneError::Other(e.to_string()))?;
            let fail = *left > 0;
            *left = left.saturating_sub(1);
            fail
        };
        self.calls
            .lock()
            .map_err(|e| DataplaneError::Other(e.to_string()))?
            .push(Applied {
                full: diff.full,
                added: diff.added.len(),
                removed: diff.removed.len(),
                changed: diff.changed.len(),
                dump: table.dump(),
            });
        if fail {
            return Err(DataplaneError::Other("injected failure".into()));
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), DataplaneError> {
        *self
            .shut_down
            .lock()
            .map_err(|e| DataplaneError::Other(e.to_string()))? = true;
        Ok(())
    }
}

impl Recording {
    fn calls(&self) -> Vec<Applied> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) -> anyhow::Result<()> {
    for _ in 0..300 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

fn slice(ips: &[&str]) -> anyhow::Result<EndpointSlice> {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))?)
}

#[tokio::test]
async fn run_programs_services_and_endpoint_slices_from_the_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let node = NodeInfo {
        name: "node-a".into(),
        zone: None,
        addresses: vec!["192.168.0.10".parse()?],
    };
    let proxy = Proxy::new(node);
    let dataplane = Arc::new(Recording::default());
    *dataplane
        .fail_first
        .lock()
        .map_err(|e| anyhow::anyhow!("{e}"))? = 1;
    let config = Config {
        retry: Duration::from_millis(50),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(skiff_proxy::run_with(
        client.clone(),
        Arc::clone(&proxy),
        dataplane.clone(),
        config,
        async move {
            let _ = stopped.await;
        },
    ));

    // The first (empty) table fails once, then the retry is a full resync.
    until("the first table", || dataplane.calls().len() >= 2).await?;
    let calls = dataplane.calls();
    assert!(calls[0].full && calls[1].full, "{calls:?}");
    assert_eq!(proxy.metrics().sync_errors.get(), 1);

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    let cluster_ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .ok_or_else(|| anyhow::anyhow!("no clusterIP allocated"))?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(&PostParams::default(), &slice(&["10.244.0.5"])?)
        .await?;

    let expected = format!(
        "node node-a zone -\n\
         port default/web:http/TCP id 1 port 80\n  \
         frontend ClusterIP {cluster_ip}:80\n  \
         backend 10.244.0.5:8080 local\n"
    );
    until("the service in the table", || proxy.dump() == expected)
        .await
        .map_err(|e| anyhow::anyhow!("{e}: {}", proxy.dump()))?;
    assert_eq!(
        dataplane.calls().last().map(|c| c.dump.clone()),
        Some(expected)
    );

    // One endpoint more: one changed entry, not a full resync.
    let before = dataplane.calls().len();
    slices
        .patch(
            "web-1",
            &PatchParams::apply("test").force(),
            &Patch::Apply(slice(&["10.244.0.5", "10.244.0.6"])?),
        )
        .await?;
    until("the endpoint change", || {
        proxy.dump().contains("backend 10.244.0.6:8080")
    })
    .await?;
    let last = dataplane
        .calls()
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no call"))?;
    assert!(dataplane.calls().len() > before);
    assert!(
        !last.full && last.changed == 1 && last.added == 0 && last.removed == 0,
        "{last:?}"
    );
    assert_eq!(
        proxy
            .table()
            .get_by_id(skiff_proxy::ServicePortId(1))
            .map(|e| e.internal.len()),
        Some(2)
    );
    assert!(proxy.metrics().programming_latency.count() >= 3);
    assert!(
        proxy
            .metrics()
            .render()
            .contains("skiff_proxy_backends 2\n")
    );

    // Deleting the Service removes its entry.
    services.delete("web", &Default::default()).await?;
    until("the service removed", || {
        !proxy.dump().contains("default/web")
    })
    .await?;
    let last = dataplane
        .calls()
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no call"))?;
    assert_eq!(last.removed, 1, "{last:?}");

    let _ = stop.send(());
    task.await?;
    assert!(
        *dataplane
            .shut_down
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
    );
    Ok(())
}
