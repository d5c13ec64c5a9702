//! Node registration against a real API server with the node lifecycle controller: the Node
//! gets its labels, capacity, addresses and nodeInfo, and the Lease heartbeat keeps it Ready.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_node::registration::{self, NodeConfig};

use crate::apiserver::TestServer;
use crate::controllers::eventually;

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn registration_heartbeat_keeps_the_node_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let controllers = skiff_controller::Config {
        node_lifecycle: skiff_controller::node_lifecycle::Config {
            grace_period: Duration::from_secs(3),
            monitor_period: Duration::from_millis(500),
        },
        ..skiff_controller::Config::default()
    };
    let ts = TestServer::start_with_controller_config(dir.path(), controllers).await?;
    let client = ts.client().await?;
    let mut config = NodeConfig::new("reg-node-1", 4242);
    config.pod_cidrs = vec!["10.244.0.0/24".into(), "fd00:10:244::/64".into()];
    config.internal_ips = vec!["127.0.0.1".parse()?];
    config.lease_interval = Duration::from_millis(500);
    config.status_interval = Duration::from_secs(2);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(registration::run(client.clone(), config, async move {
        let _ = stop_rx.await;
    }));

    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually("the node is registered Ready", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get_opt("reg-node-1").await?;
            Ok(node.filter(|n| ready_status(n).as_deref() == Some("True")))
        }
    })
    .await?;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], "reg-node-1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels.contains_key("kubernetes.io/arch"));
    let spec = node.spec.clone().unwrap_or_default();
    assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.0.0/24"));
    assert_eq!(spec.pod_cidrs.map(|c| c.len()), Some(2));
    let status = node.status.clone().unwrap_or_default();
    let allocatable = status.allocatable.unwrap_or_default();
    assert_eq!(allocatable["pods"].0, "110");
    assert!(allocatable.contains_key("cpu") && allocatable.contains_key("memory"));
    let info = status.node_info.unwrap_or_default();
    assert_eq!(info.kubelet_version, "v1.33.0-skiff");
    assert!(info.container_runtime_version.starts_with("skiff://"));
    assert_eq!(
        status
            .daemon_endpoints
            .and_then(|d| d.kubelet_endpoint)
            .map(|e| e.port),
        Some(4242)
    );
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // The Lease is the heartbeat's first write, which may land just after the Ready status.
    let lease = eventually("the node's Lease exists", || {
        let leases = leases.clone();
        async move { Ok(leases.get_opt("reg-node-1").await?) }
    })
    .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("reg-node-1")
    );

    // Well past the grace period the heartbeat still keeps it Ready.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let node = nodes.get("reg-node-1").await?;
    assert_eq!(ready_status(&node).as_deref(), Some("True"));

    // Once the heartbeat stops, the lifecycle controller notices: proof the Lease is what counts.
    let _ = stop_tx.send(());
    task.await??;
    eventually("the silent node turns Unknown", || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("reg-node-1").await?;
            Ok((ready_status(&node).as_deref() == Some("Unknown")).then_some(()))
        }
    })
    .await?;
    ts.stop().await;
    Ok(())
}
