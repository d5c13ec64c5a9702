//! StatefulSet controller: ordinal pods, OrderedReady and Parallel, scale down, rolling update with a partition, status, events.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{eventually, set_pod_status};
use crate::apiserver::{TestServer, kubectl};

fn statefulset(name: &str, replicas: i32, policy: &str) -> anyhow::Result<StatefulSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "skiff.dev/echo",
                                          "ports": [{"name": "http", "containerPort": 3000}]}]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))?)
}

async fn pod_names(pods: &Api<Pod>, app: &str) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    Ok(names)
}

fn revision(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("controller-revision-hash"))
        .cloned()
        .unwrap_or_default()
}

/// Waits until pod `name` exists, then reports it Running and Ready.
async fn start(pods: &Api<Pod>, name: &str, ip: &str) -> anyhow::Result<Pod> {
    let pod = eventually(&format!("pod {name} to be created"), || async {
        Ok(pods.get_opt(name).await?)
    })
    .await?;
    set_pod_status(pods, name, ip, true).await?;
    Ok(pod)
}

#[tokio::test]
async fn ordered_ready_scale_and_rolling_update_with_partition() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"clusterIP": "None", "selector": {"app": "web"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
            }))?,
        )
        .await?;
    sets.create(
        &PostParams::default(),
        &statefulset("web", 3, "OrderedReady")?,
    )
    .await?;

    // OrderedReady: web-0 alone until it is Running and Ready.
    let web0 = eventually("web-0", || async { Ok(pods.get_opt("web-0").await?) }).await?;
    eventually("status.replicas = 1", || async {
        let s = sets.get("web").await?;
        Ok((s.status.map(|s| s.replicas) == Some(1)).then_some(()))
    })
    .await?;
    assert_eq!(pod_names(&pods, "web").await?, ["web-0"]);

    // Identity: hostname, subdomain, labels, owner, per-replica volume.
    let spec = web0.spec.clone().unwrap_or_default();
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let labels = web0.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    let volume = spec.volumes.unwrap_or_default();
    assert!(
        volume
            .iter()
            .any(|v| v.name == "data" && v.empty_dir.is_some()),
        "{volume:?}"
    );
    assert_eq!(
        web0.metadata.annotations.clone().unwrap_or_default()["skiff.dev/persistent-volumes"],
        "data=data-web-0"
    );
    let owner = web0.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].controller),
        ("StatefulSet", Some(true))
    );

    set_pod_status(&pods, "web-0", "10.244.0.10", true).await?;
    start(&pods, "web-1", "10.244.0.11").await?;
    start(&pods, "web-2", "10.244.0.12").await?;
    let status = eventually("3 ready replicas", || async {
        let s = sets.get("web").await?.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(3)).then_some(s))
    })
    .await?;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(status.current_replicas, Some(3));
    assert_eq!(status.current_revision, status.update_revision);
    let first_revision = status.update_revision.clone().unwrap_or_default();
    assert!(first_revision.starts_with("web-"), "{first_revision}");

    // The headless service's slice names every replica by hostname.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let hostnames = eventually("hostnames in the headless service's slice", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        let mut names: Vec<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|e| e.hostname.clone())
            .collect();
        names.sort();
        Ok((names.len() == 3).then_some(names))
    })
    .await?;
    assert_eq!(hostnames, ["web-0", "web-1", "web-2"]);

    // Scale down with kubectl: the highest ordinals go.
    kubectl(&kc, &["scale", "statefulset", "web", "--replicas=1"]).await?;
    eventually("scale down to web-0", || async {
        Ok((pod_names(&pods, "web").await? == ["web-0"]).then_some(()))
    })
    .await?;

    // Back to 3, then a new template with partition 1: web-2, then web-1 are replaced; web-0 stays.
    kubectl(&kc, &["scale", "statefulset", "web", "--replicas=3"]).await?;
    start(&pods, "web-1", "10.244.0.11").await?;
    start(&pods, "web-2", "10.244.0.12").await?;
    eventually("3 ready replicas again", || async {
        let s = sets.get("web").await?.status.unwrap_or_default();
        Ok((s.ready_replicas == Some(3)).then_some(()))
    })
    .await?;
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
            "template": {"metadata": {"labels": {"app": "web", "version": "2"}}}
        }})),
    )
    .await?;
    let new_revision = eventually("a new update revision", || async {
        let s = sets.get("web").await?.status.unwrap_or_default();
        Ok(s.update_revision.filter(|r| *r != first_revision))
    })
    .await?;
    for (name, ip) in [("web-2", "10.244.0.22"), ("web-1", "10.244.0.21")] {
        let pod = eventually(&format!("{name} at the new revision"), || async {
            Ok(pods
                .get_opt(name)
                .await?
                .filter(|p| revision(p) == new_revision))
        })
        .await?;
        assert_eq!(
            pod.metadata
                .labels
                .unwrap_or_default()
                .get("version")
                .map(String::as_str),
            Some("2")
        );
        set_pod_status(&pods, name, ip, true).await?;
    }
    let status = eventually("updatedReplicas = 2, ready 3", || async {
        let s = sets.get("web").await?.status.unwrap_or_default();
        Ok((s.updated_replicas == Some(2) && s.ready_replicas == Some(3)).then_some(s))
    })
    .await?;
    assert_eq!(
        status.current_revision.as_deref(),
        Some(first_revision.as_str())
    );
    assert_eq!(status.current_replicas, Some(1));
    assert_eq!(
        revision(&pods.get("web-0").await?),
        first_revision,
        "below the partition"
    );

    // Events as upstream words them.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let all = events.list(&ListParams::default()).await?.items;
    let messages: BTreeMap<String, String> = all
        .into_iter()
        .filter(|e| {
            e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("statefulset-controller")
        })
        .map(|e| (e.message.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect();
    assert_eq!(
        messages
            .get("create Pod web-0 in StatefulSet web successful")
            .map(String::as_str),
        Some("SuccessfulCreate"),
        "{messages:?}"
    );
    assert_eq!(
        messages
            .get("delete Pod web-2 in StatefulSet web successful")
            .map(String::as_str),
        Some("SuccessfulDelete"),
        "{messages:?}"
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn parallel_creates_every_replica_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    sets.create(&PostParams::default(), &statefulset("db", 3, "Parallel")?)
        .await?;
    // None is ready, yet all three exist.
    eventually("db-0..2 without readiness", || async {
        Ok((pod_names(&pods, "db").await? == ["db-0", "db-1", "db-2"]).then_some(()))
    })
    .await?;
    let status = eventually("status of 3 unready replicas", || async {
        let s = sets.get("db").await?.status.unwrap_or_default();
        Ok((s.replicas == 3).then_some(s))
    })
    .await?;
    assert_eq!(status.ready_replicas, Some(0));
    // A deleted replica comes back under the same name.
    let uid = pods.get("db-1").await?.metadata.uid;
    pods.delete("db-1", &Default::default()).await?;
    eventually("db-1 recreated", || async {
        Ok(pods
            .get_opt("db-1")
            .await?
            .filter(|p| p.metadata.uid != uid)
            .map(|_| ()))
    })
    .await?;
    ts.stop().await;
    Ok(())
}
