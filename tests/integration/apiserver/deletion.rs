//! Deletion semantics end to end: finalizers, propagation policies, namespace termination and
//! the garbage collector, driven by the real kubectl and kube-rs against a server running
//! skiff-controller.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

use super::{TestServer, api_code, kubectl, kubectl_run, raw};

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

async fn gone<K>(api: &Api<K>, name: &str) -> anyhow::Result<bool>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?.is_none())
}

fn config_map(name: &str, extra_meta: Value) -> anyhow::Result<ConfigMap> {
    let mut meta = json!({"name": name});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v"}}),
    )?)
}

fn owner_ref(kind: &str, api_version: &str, name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": block})
}

fn uid_of<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

fn describe(ev: &WatchEvent<ConfigMap>) -> Option<String> {
    match ev {
        WatchEvent::Added(o) => Some(format!(
            "ADDED {}",
            o.metadata.name.clone().unwrap_or_default()
        )),
        WatchEvent::Modified(o) => Some(format!(
            "MODIFIED {}",
            o.metadata.name.clone().unwrap_or_default()
        )),
        WatchEvent::Deleted(o) => Some(format!(
            "DELETED {}",
            o.metadata.name.clone().unwrap_or_default()
        )),
        WatchEvent::Bookmark(_) => None,
        WatchEvent::Error(e) => Some(format!("ERROR {}", e.code)),
    }
}

#[tokio::test]
async fn finalizers_keep_an_object_until_the_last_one_is_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let held = cms
        .create(
            &PostParams::default(),
            &config_map("held", json!({"finalizers": ["example.com/hold"]}))?,
        )
        .await?;
    let rv = held.metadata.resource_version.clone().unwrap_or_default();
    let mut events = cms
        .watch(
            &WatchParams::default()
                .fields("metadata.name=held")
                .timeout(60),
            &rv,
        )
        .await?
        .boxed();

    // kubectl's DELETE (propagationPolicy Background) keeps it: deletionTimestamp, grace 0.
    let out = kubectl(&kc, &["delete", "cm", "held", "--wait=false"]).await?;
    assert!(out.contains("configmap \"held\" deleted"), "{out}");
    let marked = cms.get("held").await?;
    let stamp = marked.metadata.deletion_timestamp.clone();
    assert!(stamp.is_some(), "{marked:?}");
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        marked.metadata.finalizers.as_deref(),
        Some(&["example.com/hold".to_owned()][..])
    );

    // A repeated DELETE answers 200 with the object and changes nothing.
    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/held",
        Some("application/json"),
        br#"{"propagationPolicy":"Background"}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["resourceVersion"],
        json!(marked.metadata.resource_version)
    );

    // No new finalizer once deleting; deletionTimestamp cannot be cleared.
    let add = json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}});
    let err = cms
        .patch("held", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(422), "{err:?}");
    assert!(format!("{err:?}").contains("example.com/more"), "{err:?}");
    let clear = json!({"metadata": {"deletionTimestamp": null}});
    let kept = cms
        .patch("held", &PatchParams::default(), &Patch::Merge(&clear))
        .await?;
    assert_eq!(kept.metadata.deletion_timestamp, stamp);

    // A client cannot start a deletion by writing deletionTimestamp.
    cms.create(&PostParams::default(), &config_map("live", json!({}))?)
        .await?;
    let forge = json!({"metadata": {"deletionTimestamp": "2030-01-01T00:00:00Z"}});
    let err = cms
        .patch("live", &PatchParams::default(), &Patch::Merge(&forge))
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(422), "{err:?}");
    assert!(cms.get("live").await?.metadata.deletion_timestamp.is_none());

    // Removing the last finalizer deletes it.
    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    assert!(gone(&cms, "held").await?);

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("DELETED held") {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.try_next())
            .await??
            .ok_or_else(|| anyhow::anyhow!("watch ended early; saw {seen:?}"))?;
        if let Some(text) = describe(&ev) {
            seen.push(text);
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("MODIFIED held"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|e| e.starts_with("MODIFIED") || e == "DELETED held"),
        "{seen:?}"
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn propagation_policies_are_parsed_and_checked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &config_map("a", json!({}))?)
        .await?;
    let path = "/api/v1/namespaces/default/configmaps/a";

    let (code, body) = raw(
        &client,
        "DELETE",
        path,
        Some("application/json"),
        br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"Sideways\"")),
        "{body}"
    );
    let (code, body) = raw(
        &client,
        "DELETE",
        &format!("{path}?propagationPolicy=Nope"),
        None,
        vec![],
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    assert!(
        cms.get_opt("a").await?.is_some(),
        "a refused DELETE stores nothing"
    );

    // Orphan (query form) and Foreground (body) add their finalizers and keep the object.
    let (code, body) = raw(
        &client,
        "DELETE",
        &format!("{path}?propagationPolicy=Orphan"),
        None,
        vec![],
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["finalizers"], json!(["orphan"]));
    let (code, body) = raw(
        &client,
        "DELETE",
        path,
        Some("application/json"),
        br#"{"propagationPolicy":"Foreground"}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let stored = cms.get("a").await?;
    assert_eq!(
        stored.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_owned()])
    );
    // Background drops the GC finalizer: nothing holds it any more.
    cms.delete("a", &DeleteParams::background()).await?;
    assert!(gone(&cms, "a").await?);

    // The deprecated orphanDependents=false on an object that stays answers 202, as upstream.
    cms.create(
        &PostParams::default(),
        &config_map("b", json!({"finalizers": ["example.com/x"]}))?,
    )
    .await?;
    let (code, body) = raw(
        &client,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/b",
        Some("application/json"),
        br#"{"orphanDependents":false}"#.to_vec(),
    )
    .await?;
    assert_eq!(code, 202, "{body}");
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_empties_it_then_removes_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let manifest = dir.path().join("team.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: one, namespace: team}\n---\n\
         apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: two, namespace: team}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: team, \
         finalizers: [example.com/hold]}\n",
    )?;
    kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap_or_default()]).await?;
    let nss: Api<Namespace> = Api::all(client.clone());
    let created = nss.get("team").await?;
    assert_eq!(
        created.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_owned()])
    );

    // Creating in a namespace that does not exist is 404.
    let ghost: Api<ConfigMap> = Api::namespaced(client.clone(), "ghost");
    let err = ghost
        .create(&PostParams::default(), &config_map("x", json!({}))?)
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404), "{err:?}");

    let out = kubectl(&kc, &["delete", "ns", "team", "--wait=false"]).await?;
    assert!(out.contains("namespace \"team\" deleted"), "{out}");
    let ns = nss.get("team").await?;
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // Nothing new may be created in it.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let err = cms
        .create(&PostParams::default(), &config_map("late", json!({}))?)
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(403), "{err:?}");
    let text = format!("{err:?}");
    assert!(
        text.contains(
            "unable to create new content in namespace team because it is being terminated"
        ),
        "{text}"
    );

    // The controller deletes the contents; the held ConfigMap waits for its finalizer.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "team");
    eventually("the namespace's unheld contents are gone", || async {
        Ok(gone(&cms, "one").await? && gone(&leases, "two").await?)
    })
    .await?;
    eventually("the namespace reports the remaining finalizer", || async {
        let ns = nss.get("team").await?;
        let conditions = ns.status.and_then(|s| s.conditions).unwrap_or_default();
        Ok(conditions.iter().any(|c| {
            c.type_ == "NamespaceFinalizersRemaining"
                && c.status == "True"
                && c.message
                    .as_deref()
                    .unwrap_or("")
                    .contains("example.com/hold")
        }))
    })
    .await?;
    let held = cms.get("held").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        nss.get_opt("team").await?.is_some(),
        "a held object keeps the namespace"
    );

    let release = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    eventually("the namespace is gone", || async {
        gone(&nss, "team").await
    })
    .await?;
    let run = kubectl_run(&kc, &["get", "ns", "team"]).await?;
    assert!(!run.ok && run.stderr.contains("NotFound"), "{}", run.stderr);

    // kubectl delete ns waits for the whole termination and returns once it is gone.
    let quick = dir.path().join("quick.yaml");
    std::fs::write(
        &quick,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: quick}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: quick}\n",
    )?;
    kubectl(&kc, &["apply", "-f", quick.to_str().unwrap_or_default()]).await?;
    kubectl(&kc, &["delete", "ns", "quick", "--timeout=60s"]).await?;
    assert!(gone(&nss, "quick").await?);
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn background_and_orphan_cascades_between_config_maps() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // Background (kubectl's default): the owner goes at once, the collector takes dependents.
    let owner = cms.create(&pp, &config_map("bg-owner", json!({}))?).await?;
    let r = owner_ref("ConfigMap", "v1", "bg-owner", &uid_of(&owner), false);
    for name in ["bg-dep1", "bg-dep2"] {
        cms.create(
            &pp,
            &config_map(name, json!({"ownerReferences": [r.clone()]}))?,
        )
        .await?;
    }
    kubectl(&kc, &["delete", "cm", "bg-owner"]).await?;
    assert!(gone(&cms, "bg-owner").await?);
    eventually("background dependents are collected", || async {
        Ok(gone(&cms, "bg-dep1").await? && gone(&cms, "bg-dep2").await?)
    })
    .await?;

    // Orphan: dependents stay, without the owner's reference; then the owner goes.
    let owner = cms.create(&pp, &config_map("or-owner", json!({}))?).await?;
    let r = owner_ref("ConfigMap", "v1", "or-owner", &uid_of(&owner), true);
    cms.create(&pp, &config_map("or-dep", json!({"ownerReferences": [r]}))?)
        .await?;
    kubectl(&kc, &["delete", "cm", "or-owner", "--cascade=orphan"]).await?;
    eventually("the orphaning owner is gone", || async {
        gone(&cms, "or-owner").await
    })
    .await?;
    let dep = cms.get("or-dep").await?;
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
    assert!(dep.metadata.deletion_timestamp.is_none());
    ts.stop().await;
    Ok(())
}

fn pod_template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "skiff.dev/echo"}]}})
}

#[tokio::test]
async fn foreground_cascade_through_deployment_replicaset_and_pod() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let kc = ts.server.kubeconfig_path().to_owned();
    let pp = PostParams::default();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = json!({"matchLabels": {"app": "web"}});

    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": selector, "template": pod_template()},
    }))?;
    let deploy = deploys.create(&pp, &deploy).await?;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "labels": {"app": "web"}, "ownerReferences": [
            owner_ref("Deployment", "apps/v1", "web", &uid_of(&deploy), true)]},
        "spec": {"replicas": 1, "selector": selector, "template": pod_template()},
    }))?;
    let rs = rss.create(&pp, &rs).await?;
    // The pod holds a finalizer, so the foreground chain can be seen waiting for it.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1-a", "labels": {"app": "web"},
                     "finalizers": ["example.com/hold"],
                     "ownerReferences": [owner_ref("ReplicaSet", "apps/v1", "web-1", &uid_of(&rs), true)]},
        "spec": pod_template()["spec"].clone(),
    }))?;
    pods.create(&pp, &pod).await?;

    kubectl(
        &kc,
        &[
            "delete",
            "deploy",
            "web",
            "--cascade=foreground",
            "--wait=false",
        ],
    )
    .await?;
    eventually("the pod is being deleted", || async {
        Ok(pods
            .get("web-1-a")
            .await?
            .metadata
            .deletion_timestamp
            .is_some())
    })
    .await?;
    // Blocked by the pod: the ReplicaSet and the Deployment wait in the foreground. The
    // collector may reach the pod before it marks the ReplicaSet, so wait for both marks.
    let foreground = Some(vec!["foregroundDeletion".to_owned()]);
    eventually(
        "the Deployment and ReplicaSet wait in the foreground",
        || async {
            let d = deploys.get("web").await?;
            let r = rss.get("web-1").await?;
            Ok(d.metadata.deletion_timestamp.is_some()
                && d.metadata.finalizers == foreground
                && r.metadata.deletion_timestamp.is_some()
                && r.metadata.finalizers == foreground)
        },
    )
    .await?;

    let release = json!({"metadata": {"finalizers": null}});
    pods.patch("web-1-a", &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    eventually("pod, ReplicaSet and Deployment are gone", || async {
        Ok(gone(&pods, "web-1-a").await?
            && gone(&rss, "web-1").await?
            && gone(&deploys, "web").await?)
    })
    .await?;
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn dangling_owner_references_found_at_start_up_are_collected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    let owner = cms.create(&pp, &config_map("owner", json!({}))?).await?;
    let r = owner_ref("ConfigMap", "v1", "owner", &uid_of(&owner), false);
    cms.create(&pp, &config_map("dep", json!({"ownerReferences": [r]}))?)
        .await?;
    let gone_owner = owner_ref(
        "ConfigMap",
        "v1",
        "never",
        "00000000-0000-0000-0000-000000000000",
        false,
    );
    let live_owner = owner_ref("ConfigMap", "v1", "keeper", "", false);
    let keeper = cms.create(&pp, &config_map("keeper", json!({}))?).await?;
    let mut live_owner = live_owner;
    live_owner["uid"] = json!(uid_of(&keeper));
    // Only one reference may be the controller.
    live_owner["controller"] = json!(false);
    cms.create(
        &pp,
        &config_map(
            "shared",
            json!({"ownerReferences": [gone_owner, live_owner]}),
        )?,
    )
    .await?;
    // No collector runs yet: the owner's removal leaves a dangling reference.
    cms.delete("owner", &DeleteParams::default()).await?;
    assert!(cms.get_opt("dep").await?.is_some());
    ts.stop().await;

    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    eventually("the dependent of a vanished owner is collected", || async {
        gone(&cms, "dep").await
    })
    .await?;
    eventually(
        "the dangling reference is dropped from an object with a live owner",
        || async {
            let refs = cms
                .get("shared")
                .await?
                .metadata
                .owner_references
                .unwrap_or_default();
            Ok(refs.len() == 1 && refs[0].name == "keeper")
        },
    )
    .await?;
    ts.stop().await;
    Ok(())
}
