//! The scheduler against several registered Node objects: every filter and score, the `FailedScheduling` message and condition, retry when the cluster changes, and binding.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{bound_node, events_for, eventually, pod, register_node};
use crate::apiserver::TestServer;

fn small() -> serde_json::Value {
    json!({"cpu": "1", "memory": "2Gi", "pods": "110"})
}

fn big() -> serde_json::Value {
    json!({"cpu": "4", "memory": "8Gi", "pods": "110"})
}

#[tokio::test]
async fn filters_reject_nodes_with_upstreams_reasons_and_retry_on_node_changes()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let taint = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
    let exec_taint = json!({"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]});
    register_node(
        &client,
        "n1",
        json!({"disk": "ssd"}),
        json!({}),
        small(),
        "True",
    )
    .await?;
    register_node(&client, "n2", json!({}), taint, big(), "True").await?;
    register_node(&client, "n3", json!({}), exec_taint, big(), "True").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let cpu = |n: &str| {
        json!({"containers": [{"name": "c", "image": "skiff.dev/pause",
        "resources": {"requests": {"cpu": n}}}]})
    };

    // Too big for n1, untolerated taints on n2 and n3.
    pods.create(&PostParams::default(), &pod("big", cpu("2"))?)
        .await?;
    let expected = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated \
                    taint {k: v}. preemption: 0/3 nodes are available: 1 No preemption victims \
                    found for incoming pod, 2 Preemption is not helpful for scheduling.";
    let event = eventually("a FailedScheduling event for big", || async {
        Ok(events_for(&client, "default", "big", "FailedScheduling")
            .await?
            .pop())
    })
    .await?;
    assert_eq!(event.message.as_deref(), Some(expected));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    let condition = eventually("big has PodScheduled=False", || async {
        Ok(pods
            .get("big")
            .await?
            .status
            .and_then(|s| s.conditions)
            .and_then(|cs| cs.into_iter().find(|c| c.type_ == "PodScheduled")))
    })
    .await?;
    assert_eq!(condition.status, "False");
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(condition.message.as_deref(), Some(expected));
    assert_eq!(pods.get("big").await?.spec.and_then(|s| s.node_name), None);

    // A new node that fits: the pending pod is retried and bound there.
    register_node(&client, "n4", json!({}), json!({}), big(), "True").await?;
    assert_eq!(bound_node(&pods, "big").await?, "n4");
    let scheduled = eventually("a Scheduled event for big", || async {
        Ok(events_for(&client, "default", "big", "Scheduled")
            .await?
            .pop())
    })
    .await?;
    assert_eq!(
        scheduled.message.as_deref(),
        Some("Successfully assigned default/big to n4")
    );

    // Tolerations let a pod onto tainted nodes; n4 is the emptiest otherwise... so fill n4.
    let tolerating = json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v",
        "effect": "NoSchedule"}], "nodeSelector": {"kubernetes.io/hostname": "n2"}});
    pods.create(&PostParams::default(), &pod("tolerating", tolerating)?)
        .await?;
    assert_eq!(bound_node(&pods, "tolerating").await?, "n2");

    // nodeSelector and required node affinity (matchExpressions, matchFields).
    pods.create(
        &PostParams::default(),
        &pod("selector", json!({"nodeSelector": {"disk": "ssd"}}))?,
    )
    .await?;
    assert_eq!(bound_node(&pods, "selector").await?, "n1");
    let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
    {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["nvme"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n4"]}]}
    ]}}}});
    pods.create(&PostParams::default(), &pod("affinity", affinity)?)
        .await?;
    assert_eq!(bound_node(&pods, "affinity").await?, "n4");

    // Host ports: one pod per node and port; n1 and n4 are the untainted nodes.
    let port = || {
        json!({"containers": [{"name": "c", "image": "skiff.dev/pause",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}]})
    };
    pods.create(&PostParams::default(), &pod("port-a", port())?)
        .await?;
    pods.create(&PostParams::default(), &pod("port-b", port())?)
        .await?;
    let a = bound_node(&pods, "port-a").await?;
    let b = bound_node(&pods, "port-b").await?;
    assert_ne!(a, b, "two pods with hostPort 8080 never share a node");
    pods.create(&PostParams::default(), &pod("port-c", port())?)
        .await?;
    let event = eventually("a FailedScheduling event for port-c", || async {
        Ok(events_for(&client, "default", "port-c", "FailedScheduling")
            .await?
            .pop())
    })
    .await?;
    assert_eq!(
        event.message.as_deref(),
        Some(
            "0/4 nodes are available: 2 node(s) didn't have free ports for the requested pod \
              ports, 2 node(s) had untolerated taint {k: v}. preemption: 0/4 nodes are \
              available: 2 No preemption victims found for incoming pod, 2 Preemption is not \
              helpful for scheduling."
        )
    );

    // Freeing the port (deleting the pod holding it on n4 or n1) lets port-c in.
    pods.delete("port-a", &Default::default()).await?;
    assert_eq!(bound_node(&pods, "port-c").await?, a);

    // Unschedulable and not-ready nodes are filtered with their own reasons.
    register_node(
        &client,
        "n5",
        json!({}),
        json!({"unschedulable": true}),
        big(),
        "True",
    )
    .await?;
    register_node(&client, "n6", json!({}), json!({}), big(), "False").await?;
    let only = |n: &str| json!({"nodeSelector": {"kubernetes.io/hostname": n}});
    pods.create(&PostParams::default(), &pod("cordoned", only("n5"))?)
        .await?;
    pods.create(&PostParams::default(), &pod("notready", only("n6"))?)
        .await?;
    let messages = eventually("FailedScheduling for cordoned and notready", || async {
        let c = events_for(&client, "default", "cordoned", "FailedScheduling")
            .await?
            .pop();
        let n = events_for(&client, "default", "notready", "FailedScheduling")
            .await?
            .pop();
        Ok(c.zip(n).map(|(c, n)| (c.message, n.message)))
    })
    .await?;
    let cordoned = messages.0.unwrap_or_default();
    let notready = messages.1.unwrap_or_default();
    assert!(
        cordoned.contains("1 node(s) were unschedulable"),
        "{cordoned}"
    );
    assert!(
        cordoned.starts_with("0/6 nodes are available: "),
        "{cordoned}"
    );
    assert!(
        notready.contains("1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
        "{notready}"
    );
    // Nothing was bound while they were unschedulable.
    for name in ["cordoned", "notready"] {
        assert_eq!(pods.get(name).await?.spec.and_then(|s| s.node_name), None);
    }
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn scores_spread_replicas_prefer_affinity_and_least_allocated_nodes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    for (name, zone) in [("a", "east"), ("b", "west"), ("c", "west")] {
        register_node(
            &client,
            name,
            json!({"zone": zone}),
            json!({}),
            big(),
            "True",
        )
        .await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Least allocated: a pod already running on `a` (bound directly) makes it the busiest.
    let heavy = json!({"nodeName": "a", "containers": [{"name": "c", "image": "skiff.dev/pause",
        "resources": {"requests": {"cpu": "3", "memory": "6Gi"}}}]});
    pods.create(&PostParams::default(), &pod("heavy", heavy)?)
        .await?;
    pods.create(&PostParams::default(), &pod("light", json!({}))?)
        .await?;
    assert_ne!(bound_node(&pods, "light").await?, "a");

    // Preferred node affinity wins over a slightly emptier node.
    let prefers = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["east"]}]}}
    ]}}});
    pods.create(&PostParams::default(), &pod("prefers-east", prefers)?)
        .await?;
    assert_eq!(bound_node(&pods, "prefers-east").await?, "a");

    // Replicas of one owner spread over the nodes (owner: a ConfigMap, so the garbage collector
    // keeps them; requests small enough that all three nodes stay feasible).
    let owner: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "owner"}}))?;
    let owner = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &owner)
        .await?;
    let uid = owner.metadata.uid.unwrap_or_default();
    let mut placed = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..3 {
        let name = format!("replica-{i}");
        let mut p = pod(
            &name,
            json!({"containers": [{"name": "c", "image": "skiff.dev/pause",
            "resources": {"requests": {"cpu": "10m", "memory": "10Mi"}}}]}),
        )?;
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid, "controller": true
        }))?]);
        pods.create(&PostParams::default(), &p).await?;
        // One at a time, so each decision sees its siblings.
        *placed.entry(bound_node(&pods, &name).await?).or_default() += 1;
    }
    assert_eq!(
        placed.len(),
        3,
        "replicas of one owner spread over every node: {placed:?}"
    );
    ts.stop().await;
    Ok(())
}
