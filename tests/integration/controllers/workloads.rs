//! Deployment → ReplicaSet → Pod: the ReplicaSet and Deployment controllers driven by kube-rs
//! and the real kubectl (`rollout status/undo/history/pause/resume`, `scale`), with a fake
//! kubelet writing pod status through `/status`.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::oneshot;

use crate::apiserver::{TestServer, kubectl, kubectl_run};

/// Polls `check` until it holds ([`crate::controllers::eventually`] for a yes/no check).
async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    crate::controllers::eventually(what, || {
        let holds = check();
        async move { Ok(holds.await?.then_some(())) }
    })
    .await
}

/// The kubelet's part, faked: every pod in `ns` turns Running and Ready.
fn fake_kubelet(client: kube::Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                for (i, p) in list.items.iter().enumerate() {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    if ready || p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let now = jiff::Timestamp::now().to_string();
                    let status = json!({"status": {"phase": "Running", "podIP": format!("10.244.0.{}", i + 2),
                        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let _ = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn pods_of<'a>(pods: &'a [Pod], owner_uid: &str) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == owner_uid && r.controller == Some(true))
        })
        .collect()
}

fn replica_set(name: &str, replicas: i32) -> anyhow::Result<ReplicaSet> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_creates_adopts_scales_down_and_reports_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");

    let rs = rs_api
        .create(&PostParams::default(), &replica_set("web", 3)?)
        .await?;
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    eventually("the ReplicaSet has 3 pods", || async {
        Ok(pods_of(&pod_api.list(&ListParams::default()).await?.items, &uid).len() == 3)
    })
    .await?;
    let pods = pod_api.list(&ListParams::default()).await?.items;
    for p in pods_of(&pods, &uid) {
        assert!(p.metadata.name.as_deref().unwrap_or("").starts_with("web-"));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let r = &p.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (r.kind.as_str(), r.name.as_str(), r.block_owner_deletion),
            ("ReplicaSet", "web", Some(true))
        );
    }

    // An orphan the selector matches is adopted; the set is then one too many, and the
    // not-ready pod goes before the ready ones.
    let kubelet = fake_kubelet(client.clone(), "default");
    eventually("3 ready replicas in status", || async {
        let s = rs_api.get("web").await?.status.unwrap_or_default();
        Ok(s.ready_replicas == Some(3) && s.available_replicas == Some(3))
    })
    .await?;
    kubelet.abort();
    let _ = kubelet.await;
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
    }))?;
    pod_api.create(&PostParams::default(), &orphan).await?;
    eventually(
        "the orphan is adopted and then deleted as the not-ready extra",
        || async { Ok(pod_api.get_opt("stray").await?.is_none()) },
    )
    .await?;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("SuccessfulCreate and SuccessfulDelete events", || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("web"))
            .filter_map(|e| Some(format!("{} {}", e.reason.clone()?, e.message.clone()?)))
            .collect();
        Ok(reasons
            .iter()
            .any(|r| r == "SuccessfulDelete Deleted pod: stray")
            && reasons
                .iter()
                .any(|r| r.starts_with("SuccessfulCreate Created pod: web-")))
    })
    .await?;

    // Scale down through the scale subresource: the pods ready for the shortest time go first.
    // Distinct ready times (the API keeps seconds) make the expected survivor unambiguous.
    let before = pod_api.list(&ListParams::default()).await?.items;
    let owned: Vec<&Pod> = pods_of(&before, &uid);
    for (day, p) in owned.iter().enumerate() {
        let since = format!("2020-01-0{}T00:00:00Z", day + 1);
        let status = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": since}]}});
        let name = p.metadata.name.clone().unwrap_or_default();
        pod_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
    }
    let oldest = owned[0].metadata.name.clone().unwrap_or_default();
    kubectl(
        ts.server.kubeconfig_path(),
        &["scale", "rs/web", "--replicas=1"],
    )
    .await?;
    eventually("one pod left", || async {
        Ok(pods_of(&pod_api.list(&ListParams::default()).await?.items, &uid).len() == 1)
    })
    .await?;
    assert!(
        pod_api.get_opt(&oldest).await?.is_some(),
        "the pod ready the longest stays"
    );
    eventually("status says 1 replica for generation 2", || async {
        let rs = rs_api.get("web").await?;
        let s = rs.status.unwrap_or_default();
        Ok(s.replicas == 1
            && s.fully_labeled_replicas == Some(1)
            && s.observed_generation == Some(2)
            && rs.metadata.generation == Some(2))
    })
    .await?;
    ts.stop().await;
    Ok(())
}

async fn deployment_status(api: &Api<Deployment>, name: &str) -> anyhow::Result<(i32, i32, i32)> {
    let s = api.get(name).await?.status.unwrap_or_default();
    Ok((
        s.replicas.unwrap_or(0),
        s.updated_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    ))
}

fn revision(rs: &ReplicaSet) -> String {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
        .unwrap_or_default()
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_undoes_pauses_and_scales_with_kubectl() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let client = ts.client().await?;
    let kubelet = fake_kubelet(client.clone(), "default");
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "default");

    kubectl(
        &kc,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1",
            "--replicas=3",
        ],
    )
    .await?;
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = d_api.get("web").await?;
    let hash_rs = rs_api.list(&ListParams::default()).await?.items;
    assert_eq!(hash_rs.len(), 1);
    let hash = hash_rs[0]
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        hash_rs[0].metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(revision(&hash_rs[0]), "1");
    let conds: Vec<(String, String, String)> = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status, c.reason.unwrap_or_default()))
        .collect();
    assert!(
        conds.contains(&(
            "Available".into(),
            "True".into(),
            "MinimumReplicasAvailable".into()
        )),
        "{conds:?}"
    );
    assert!(
        conds.contains(&(
            "Progressing".into(),
            "True".into(),
            "NewReplicaSetAvailable".into()
        )),
        "{conds:?}"
    );
    let pods = pod_api.list(&ListParams::default()).await?.items;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            == Some(&hash)
    }));

    // A rolling update to a new image, then back with `rollout undo`.
    kubectl(&kc, &["set", "image", "deployment/web", "nginx=nginx:2"]).await?;
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(deployment_status(&d_api, "web").await?, (3, 3, 3));
    let sets = rs_api.list(&ListParams::default()).await?.items;
    assert_eq!(sets.len(), 2);
    let history = kubectl(&kc, &["rollout", "history", "deployment/web"]).await?;
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let scaling: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(
        scaling
            .iter()
            .any(|m| m.starts_with("Scaled down replica set web-") && m.ends_with("to 0")),
        "{scaling:?}"
    );

    kubectl(&kc, &["rollout", "undo", "deployment/web"]).await?;
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(image(&d_api.get("web").await?), "nginx:1");
    let first = rs_api.get(&format!("web-{hash}")).await?;
    assert_eq!(revision(&first), "3");
    assert_eq!(rollout_replicas(&first), 3);
    let pods = pod_api.list(&ListParams::default()).await?.items;
    eventually("only revision-3 pods remain", || async {
        let pods = pod_api.list(&ListParams::default()).await?.items;
        Ok(pods.len() == 3
            && pods.iter().all(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("pod-template-hash"))
                    == Some(&hash)
            }))
    })
    .await?;
    drop(pods);

    // Paused: a template change makes no new ReplicaSet; resumed, it rolls out.
    kubectl(&kc, &["rollout", "pause", "deployment/web"]).await?;
    kubectl(&kc, &["set", "image", "deployment/web", "nginx=nginx:3"]).await?;
    eventually("the paused condition", || async {
        let d = d_api.get("web").await?;
        Ok(d.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.reason.as_deref() == Some("DeploymentPaused")))
    })
    .await?;
    assert_eq!(rs_api.list(&ListParams::default()).await?.items.len(), 2);
    let undo = kubectl_run(&kc, &["rollout", "undo", "deployment/web"]).await?;
    assert!(
        !undo.ok && undo.stderr.contains("paused"),
        "{}",
        undo.stderr
    );
    // Scale while paused takes effect.
    kubectl(&kc, &["scale", "deployment/web", "--replicas=4"]).await?;
    eventually("4 pods while paused", || async {
        Ok(pod_api.list(&ListParams::default()).await?.items.len() == 4)
    })
    .await?;
    kubectl(&kc, &["rollout", "resume", "deployment/web"]).await?;
    let out = kubectl(
        &kc,
        &["rollout", "status", "deployment/web", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(deployment_status(&d_api, "web").await?, (4, 4, 4));
    assert_eq!(rs_api.list(&ListParams::default()).await?.items.len(), 3);

    kubelet.abort();
    let _ = kubelet.await;
    ts.stop().await;
    Ok(())
}

fn rollout_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn deployment(name: &str, extra_spec: serde_json::Value) -> anyhow::Result<Deployment> {
    let mut spec = json!({"replicas": 3, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    Ok(serde_json::from_value(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}),
    )?)
}

fn start_controllers(client: kube::Client) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(skiff_controller::run(client, async move {
        let _ = rx.await;
    }));
    (tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_survives_a_controller_restart_and_recreate_and_deadline_work() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc: &Path = ts.server.kubeconfig_path();
    let client = ts.client().await?;
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let mut controllers = start_controllers(client.clone());

    // maxSurge 1, maxUnavailable 0, and no kubelet yet: the new ReplicaSet surges by one pod
    // and the rollout stalls there.
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
    d_api
        .create(&PostParams::default(), &deployment("api", strategy)?)
        .await?;
    let kubelet = fake_kubelet(client.clone(), "default");
    let out = kubectl(
        kc,
        &["rollout", "status", "deployment/api", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    kubelet.abort();
    let _ = kubelet.await;
    kubectl(kc, &["set", "image", "deployment/api", "c=nginx:2"]).await?;
    eventually("the rollout surged one new pod", || async {
        let sets = rs_api.list(&ListParams::default()).await?.items;
        Ok(sets.len() == 2
            && sets
                .iter()
                .any(|rs| revision(rs) == "2" && rollout_replicas(rs) == 1))
    })
    .await?;
    // Stop the controllers mid-rollout, let pods become ready, start them again.
    let _ = controllers.0.send(());
    let _ = controllers.1.await;
    let kubelet = fake_kubelet(client.clone(), "default");
    controllers = start_controllers(client.clone());
    let out = kubectl(
        kc,
        &["rollout", "status", "deployment/api", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets = rs_api.list(&ListParams::default()).await?.items;
    let sizes: Vec<(String, i32)> = sets
        .iter()
        .map(|rs| (revision(rs), rollout_replicas(rs)))
        .collect();
    assert!(
        sizes.contains(&("2".into(), 3)) && sizes.contains(&("1".into(), 0)),
        "{sizes:?}"
    );
    kubelet.abort();
    let _ = kubelet.await;

    // Recreate: all old pods go before any new one; revisionHistoryLimit 0 removes old sets.
    d_api
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
        "strategy": {"type": "Recreate", "rollingUpdate": null}, "revisionHistoryLimit": 0}})),
        )
        .await?;
    kubectl(kc, &["set", "image", "deployment/api", "c=nginx:3"]).await?;
    let kubelet = fake_kubelet(client.clone(), "default");
    let out = kubectl(
        kc,
        &["rollout", "status", "deployment/api", "--timeout=90s"],
    )
    .await?;
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("only the current ReplicaSet is kept", || async {
        Ok(rs_api.list(&ListParams::default()).await?.items.len() == 1)
    })
    .await?;
    // Recreate scales the new ReplicaSet straight to the full size (a rolling update with
    // maxSurge 1 would go 0 → 1), and only after the old one went to 0.
    let current = rs_api.list(&ListParams::default()).await?.items;
    let current = current[0].metadata.name.clone().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let scaling: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ScalingReplicaSet"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(
        scaling.contains(&format!("Scaled up replica set {current} from 0 to 3")),
        "{scaling:?}"
    );
    kubelet.abort();
    let _ = kubelet.await;

    // progressDeadlineSeconds: a rollout without ready pods times out, and rollout status says so.
    d_api
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"progressDeadlineSeconds": 2}})),
        )
        .await?;
    kubectl(kc, &["set", "image", "deployment/api", "c=nginx:4"]).await?;
    eventually("Progressing=False ProgressDeadlineExceeded", || async {
        let d = d_api.get("api").await?;
        Ok(d.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }))
    })
    .await?;
    let run = kubectl_run(
        kc,
        &["rollout", "status", "deployment/api", "--timeout=30s"],
    )
    .await?;
    assert!(
        !run.ok && run.stderr.contains("exceeded its progress deadline"),
        "{}",
        run.stderr
    );

    let _ = controllers.0.send(());
    let _ = controllers.1.await;
    ts.stop().await;
    Ok(())
}
