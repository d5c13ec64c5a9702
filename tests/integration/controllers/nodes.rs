//! The node lifecycle controller: a node whose Lease stops being renewed becomes Ready=Unknown with the unreachable taints, its pods are evicted when their tolerations run out, and a renewed Lease clears the taints.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{bound_node, events_for, eventually, pod, register_node, set_node_status};
use crate::apiserver::TestServer;

const GRACE: Duration = Duration::from_secs(2);

async fn renew(leases: &Api<Lease>, node: &str) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    leases
        .patch(
            node,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

fn unreachable_taints(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.key == "node.kubernetes.io/unreachable")
        .map(|t| t.effect.clone())
        .collect()
}

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
async fn a_silent_node_is_tainted_its_pods_evicted_and_it_recovers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = skiff_controller::Config::default();
    config.node_lifecycle.grace_period = GRACE;
    config.node_lifecycle.monitor_period = Duration::from_millis(300);
    let ts = TestServer::start_with_controller_config(dir.path(), config).await?;
    let client = ts.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt("kube-node-lease").await?.is_none() {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "kube-node-lease"}}))?;
        namespaces.create(&PostParams::default(), &ns).await?;
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client.clone());
    let alloc = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
    for name in ["lost", "alive"] {
        register_node(&client, name, json!({}), json!({}), alloc.clone(), "True").await?;
        renew(&leases, name).await?;
    }
    // The kubelet of `alive` keeps renewing its Lease; the one of `lost` is gone.
    let keep_alive = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                let _ = renew(&leases, "alive").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let on_lost = |extra: serde_json::Value| {
        let mut spec = json!({"nodeName": "lost"});
        super::merge(&mut spec, extra);
        spec
    };
    let short = json!({"tolerations": [{"key": "node.kubernetes.io/unreachable",
        "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}]});
    let forever = json!({"tolerations": [{"operator": "Exists"}]});
    pods.create(&PostParams::default(), &pod("short", on_lost(short))?)
        .await?;
    pods.create(&PostParams::default(), &pod("default", on_lost(json!({})))?)
        .await?;
    pods.create(&PostParams::default(), &pod("forever", on_lost(forever))?)
        .await?;

    // DefaultTolerationSeconds: 300 s for not-ready and unreachable, added on create.
    let defaulted = pods
        .get("default")
        .await?
        .spec
        .and_then(|s| s.tolerations)
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            defaulted.iter().any(|t| t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some("NoExecute")
                && t.toleration_seconds == Some(300)),
            "{key} toleration missing: {defaulted:?}"
        );
    }

    // `lost` goes Unknown and gets both unreachable taints; `alive` stays as it is.
    let lost = eventually("lost is Ready=Unknown and tainted", || async {
        let n = nodes.get("lost").await?;
        let done =
            ready_status(&n).as_deref() == Some("Unknown") && unreachable_taints(&n).len() == 2;
        Ok(done.then_some(n))
    })
    .await?;
    let mut effects = unreachable_taints(&lost);
    effects.sort();
    assert_eq!(effects, ["NoExecute", "NoSchedule"]);
    let reason = lost
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.reason.clone())
        });
    assert_eq!(reason.as_deref(), Some("NodeStatusUnknown"));
    let alive = nodes.get("alive").await?;
    assert_eq!(ready_status(&alive).as_deref(), Some("True"));
    assert!(unreachable_taints(&alive).is_empty());
    let not_ready = eventually("a NodeNotReady event", || async {
        Ok(events_for(&client, "default", "lost", "NodeNotReady")
            .await?
            .pop())
    })
    .await?;
    assert_eq!(
        not_ready.message.as_deref(),
        Some("Node lost status is now: NodeNotReady")
    );

    // The pod tolerating 1 s is evicted; the 300 s and forever ones stay.
    eventually("short is evicted", || async {
        Ok(pods.get_opt("short").await?.is_none().then_some(()))
    })
    .await?;
    let evicted = events_for(&client, "default", "short", "TaintManagerEviction").await?;
    assert_eq!(
        evicted.first().and_then(|e| e.message.as_deref()),
        Some("Marking for deletion Pod default/short")
    );
    assert!(pods.get_opt("default").await?.is_some());
    assert!(pods.get_opt("forever").await?.is_some());

    // New pods avoid the tainted node.
    pods.create(&PostParams::default(), &pod("new", json!({}))?)
        .await?;
    assert_eq!(bound_node(&pods, "new").await?, "alive");

    // The kubelet comes back: Lease renewed and Ready posted; the taints go away.
    renew(&leases, "lost").await?;
    set_node_status(&client, "lost", alloc.clone(), "True").await?;
    eventually("lost is untainted", || async {
        let n = nodes.get("lost").await?;
        Ok(unreachable_taints(&n).is_empty().then_some(()))
    })
    .await?;
    assert!(
        pods.get_opt("default").await?.is_some(),
        "a 300 s toleration was not used up"
    );
    keep_alive.abort();
    ts.stop().await;
    Ok(())
}
