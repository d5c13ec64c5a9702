//! EndpointSlice and Endpoints controller: conditions, named ports per pod, zones, churn, selector-less Services, publishNotReadyAddresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{eventually, set_pod_status};
use crate::apiserver::TestServer;

fn pod(name: &str, app: &str, port: i32, extra_meta: serde_json::Value) -> anyhow::Result<Pod> {
    let mut meta = json!({"name": name, "labels": {"app": app}});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    Ok(serde_json::from_value(json!({
        "metadata": meta,
        "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "skiff.dev/echo",
                 "ports": [{"name": "http", "containerPort": port}]}]}
    }))?)
}

fn service(name: &str, spec: serde_json::Value) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"team": "blue"}}, "spec": spec}),
    )?)
}

async fn managed_slices(
    slices: &Api<EndpointSlice>,
    service: &str,
) -> anyhow::Result<Vec<EndpointSlice>> {
    Ok(slices
        .list(&ListParams::default().labels(&format!(
            "kubernetes.io/service-name={service},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io"
        )))
        .await?
        .items)
}

/// address → (port, ready, serving, terminating) across all slices.
type Flat = BTreeMap<String, (i32, bool, bool, bool)>;

fn flatten(slices: &[EndpointSlice]) -> Flat {
    let mut out = BTreeMap::new();
    for s in slices {
        let port = s
            .ports
            .iter()
            .flatten()
            .next()
            .and_then(|p| p.port)
            .unwrap_or(0);
        for e in &s.endpoints {
            let c = e.conditions.clone().unwrap_or_default();
            out.insert(
                e.addresses.join(","),
                (
                    port,
                    c.ready == Some(true),
                    c.serving == Some(true),
                    c.terminating == Some(true),
                ),
            );
        }
    }
    out
}

#[tokio::test]
async fn slices_and_endpoints_follow_pods() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-1"}}
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let svc = services
        .create(
            &pp,
            &service(
                "web",
                json!({
                    "selector": {"app": "web"}, "ipFamilies": ["IPv4"],
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]
                }),
            )?,
        )
        .await?;

    // No pods yet: one empty placeholder slice.
    eventually("a placeholder slice", || async {
        let s = managed_slices(&slices, "web").await?;
        Ok((s.len() == 1 && s[0].endpoints.is_empty()).then_some(()))
    })
    .await?;

    // a: ready on 8080; b: not ready on 9090 (same port name); c: terminating on 8080;
    // other: another app.
    pods.create(&pp, &pod("a", "web", 8080, json!({}))?).await?;
    pods.create(&pp, &pod("b", "web", 9090, json!({}))?).await?;
    pods.create(
        &pp,
        &pod(
            "c",
            "web",
            8080,
            json!({"finalizers": ["example.com/hold"]}),
        )?,
    )
    .await?;
    pods.create(&pp, &pod("other", "api", 8080, json!({}))?)
        .await?;
    set_pod_status(&pods, "a", "10.244.0.1", true).await?;
    set_pod_status(&pods, "b", "10.244.0.2", false).await?;
    set_pod_status(&pods, "c", "10.244.0.3", true).await?;
    set_pod_status(&pods, "other", "10.244.0.9", true).await?;
    pods.delete("c", &DeleteParams::default()).await?;

    let expected: Flat = [
        ("10.244.0.1".to_owned(), (8080, true, true, false)),
        ("10.244.0.2".to_owned(), (9090, false, false, false)),
        ("10.244.0.3".to_owned(), (8080, false, true, true)),
    ]
    .into();
    let found = eventually("slices for a, b and terminating c", || async {
        let s = managed_slices(&slices, "web").await?;
        Ok((flatten(&s) == expected).then_some(s))
    })
    .await?;
    assert_eq!(found.len(), 2, "one slice per resolved port: {found:?}");
    for s in &found {
        assert_eq!(s.address_type, "IPv4");
        let labels = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["team"], "blue", "service labels are copied");
        let owner = s.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owner[0].uid, svc.metadata.uid.clone().unwrap_or_default());
        for e in &s.endpoints {
            assert_eq!(e.node_name.as_deref(), Some("node-a"));
            assert_eq!(e.zone.as_deref(), Some("zone-1"));
            assert_eq!(
                e.target_ref.as_ref().and_then(|t| t.kind.as_deref()),
                Some("Pod")
            );
        }
    }

    // Legacy Endpoints: ready → addresses, not ready → notReadyAddresses, terminating left out.
    let ep = eventually("Endpoints web", || async {
        let e = endpoints.get_opt("web").await?;
        Ok(e.filter(|e| {
            let s = e.subsets.clone().unwrap_or_default();
            s.len() == 2
                && s[0].addresses.as_ref().map(Vec::len) == Some(1)
                && s[1].not_ready_addresses.as_ref().map(Vec::len) == Some(1)
        }))
    })
    .await?;
    let subsets = ep.subsets.unwrap_or_default();
    let ips = |a: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| {
        a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ips(&subsets[0].addresses), ["10.244.0.1"]);
    assert_eq!(subsets[0].ports.clone().unwrap_or_default()[0].port, 8080);
    assert_eq!(ips(&subsets[1].not_ready_addresses), ["10.244.0.2"]);
    assert_eq!(subsets[1].ports.clone().unwrap_or_default()[0].port, 9090);

    // Minimal churn: b turning ready rewrites only its own slice.
    let version = |s: &[EndpointSlice], port: i32| {
        s.iter()
            .find(|s| s.ports.iter().flatten().any(|p| p.port == Some(port)))
            .and_then(|s| s.metadata.resource_version.clone())
    };
    let before_8080 = version(&found, 8080);
    set_pod_status(&pods, "b", "10.244.0.2", true).await?;
    let after = eventually("b ready in its slice", || async {
        let s = managed_slices(&slices, "web").await?;
        Ok((flatten(&s).get("10.244.0.2") == Some(&(9090, true, true, false))).then_some(s))
    })
    .await?;
    assert_eq!(
        version(&after, 8080),
        before_8080,
        "the 8080 slice was not rewritten"
    );
    assert_eq!(after.len(), 2);

    // A pod whose labels stop matching leaves.
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await?;
    eventually("a removed from slices", || async {
        let s = managed_slices(&slices, "web").await?;
        Ok((!flatten(&s).contains_key("10.244.0.1")).then_some(()))
    })
    .await?;
    eventually("a removed from Endpoints", || async {
        let e = endpoints.get("web").await?;
        let all: Vec<String> = e
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.clone()))
            .collect();
        Ok(
            (!all.contains(&"10.244.0.1".to_owned()) && all.contains(&"10.244.0.2".to_owned()))
                .then_some(()),
        )
    })
    .await?;

    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn selectorless_services_keep_user_slices_and_publish_not_ready() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let client = ts.client().await?;
    let pp = PostParams::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

    // A selector-less Service with the user's own slice.
    services
        .create(
            &pp,
            &service("external", json!({"ports": [{"port": 443}]}))?,
        )
        .await?;
    let user_slice = slices
        .create(&pp, &serde_json::from_value(json!({
            "metadata": {"name": "external-1", "labels": {"kubernetes.io/service-name": "external"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.10"]}],
            "ports": [{"port": 443}]
        }))?)
        .await?;

    // publishNotReadyAddresses: a not-ready pod counts as ready.
    services
        .create(&pp, &service("peers", json!({
            "selector": {"app": "peers"}, "clusterIP": "None", "publishNotReadyAddresses": true,
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
        }))?)
        .await?;
    pods.create(&pp, &pod("p0", "peers", 8080, json!({}))?)
        .await?;
    set_pod_status(&pods, "p0", "10.244.1.1", false).await?;
    let s = eventually("the peers slice", || async {
        let s = managed_slices(&slices, "peers").await?;
        Ok((flatten(&s).get("10.244.1.1") == Some(&(8080, true, false, false))).then_some(s))
    })
    .await?;
    assert_eq!(
        s[0].metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    let ep = eventually("the peers Endpoints", || async {
        Ok(endpoints
            .get_opt("peers")
            .await?
            .filter(|e| e.subsets.is_some()))
    })
    .await?;
    let subset = ep.subsets.unwrap_or_default().remove(0);
    assert_eq!(subset.addresses.unwrap_or_default()[0].ip, "10.244.1.1");
    assert!(subset.not_ready_addresses.is_none());

    // The controller has reconciled since; the selector-less Service's slice is untouched and
    // it got no slice or Endpoints of ours.
    let again = slices.get("external-1").await?;
    assert_eq!(
        again.metadata.resource_version,
        user_slice.metadata.resource_version
    );
    assert!(managed_slices(&slices, "external").await?.is_empty());
    assert!(endpoints.get_opt("external").await?.is_none());
    ts.stop().await;
    Ok(())
}
