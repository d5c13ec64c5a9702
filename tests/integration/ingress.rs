//! The ingress controller (skiff-ingress) against a real in-process API server: IngressClass
//! creation, routing from watched Ingresses, Services and EndpointSlices to a loopback backend,
//! endpoint and Ingress changes applied live, status written for our Ingresses only.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::apiserver::TestServer;
use crate::controllers::eventually;

async fn backend() -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("hello"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn get(addr: SocketAddr, host: &str) -> anyhow::Result<(u16, String)> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn lb_status(i: &Ingress) -> Vec<String> {
    i.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ip.clone())
        .collect()
}

#[tokio::test]
async fn ingress_follows_the_api() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let be = backend().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    services
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": be.port()}]}
            }))?,
        )
        .await?;
    let slice = |ready: bool| -> anyhow::Result<EndpointSlice> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": be.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        }))?)
    };
    slices.create(&pp, &slice(true)?).await?;
    let ing = |name: &str, class: &str, host: &str| -> anyhow::Result<Ingress> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]}
        }))?)
    };
    ingresses
        .create(&pp, &ing("mine", "skiff", "mine.test")?)
        .await?;
    ingresses
        .create(&pp, &ing("foreign", "other", "foreign.test")?)
        .await?;
    // A bad annotation and a missing Secret (the API server itself rejects bad paths):
    // reported as Events, the Ingress still served.
    let broken: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "broken", "annotations": {"skiff.dev/backend-protocol": "SPDY"}},
        "spec": {
            "tls": [{"hosts": ["broken.test"], "secretName": "no-such-secret"}],
            "rules": [{"host": "broken.test", "http": {"paths": [
                {"path": "/ok", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}
            ]}}]}
    }))?;
    ingresses.create(&pp, &broken).await?;

    let config = skiff_ingress::IngressConfig {
        status_address: Some("127.0.0.1".into()),
        ..Default::default()
    };
    let listeners = skiff_ingress::Listeners {
        http: Some(std::net::TcpListener::bind("127.0.0.1:0")?),
        ..Default::default()
    };
    // The data plane on a runtime of its own (as `skiff up` runs it in the node netns).
    let data_plane = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let running =
        skiff_ingress::start_on(client.clone(), config, listeners, data_plane.handle()).await?;
    let http = running
        .http_addr()
        .ok_or_else(|| anyhow::anyhow!("no http"))?;

    // The class was created, ours and default.
    let class = Api::<IngressClass>::all(client.clone())
        .get("skiff")
        .await?;
    assert_eq!(
        class.spec.and_then(|s| s.controller).as_deref(),
        Some(skiff_ingress::CONTROLLER_NAME)
    );
    running.synced().await;
    eventually("mine.test is routed", || async {
        Ok(get(http, "mine.test").await?.0.eq(&200).then_some(()))
    })
    .await?;
    assert_eq!(get(http, "mine.test").await?, (200, "hello".into()));
    assert_eq!(get(http, "foreign.test").await?.0, 404);
    assert_eq!(get(http, "broken.test").await?.0, 404);
    let okreq = tokio::net::TcpStream::connect(http).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(okreq)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            hyper::Request::get("/ok")
                .header("host", "broken.test")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    // Served (a TLS host, so plain HTTP is redirected to HTTPS).
    assert_eq!(resp.status(), 308);
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let messages = eventually("Events on the broken Ingress", || async {
        let list = events.list(&Default::default()).await?;
        let msgs: Vec<String> = list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("broken"))
            .filter_map(|e| e.message)
            .collect();
        Ok((msgs.len() >= 2).then_some(msgs))
    })
    .await?;
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown backend protocol \"SPDY\"")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("default/no-such-secret")),
        "{messages:?}"
    );

    eventually("status of ours is written", || async {
        Ok((lb_status(&ingresses.get("mine").await?) == ["127.0.0.1"]).then_some(()))
    })
    .await?;
    assert!(lb_status(&ingresses.get("foreign").await?).is_empty());

    // Moved to a foreign class: no traffic, and the status we wrote is taken back.
    let to_class = |class: &str| Patch::Merge(json!({"spec": {"ingressClassName": class}}));
    ingresses
        .patch("mine", &PatchParams::default(), &to_class("other"))
        .await?;
    eventually("status of a no longer ours Ingress cleared", || async {
        Ok(lb_status(&ingresses.get("mine").await?)
            .is_empty()
            .then_some(()))
    })
    .await?;
    assert_eq!(get(http, "mine.test").await?.0, 404);
    ingresses
        .patch("mine", &PatchParams::default(), &to_class("skiff"))
        .await?;
    eventually("mine.test is routed again", || async {
        Ok((get(http, "mine.test").await?.0 == 200).then_some(()))
    })
    .await?;

    // The endpoint goes unready: 503 naming the Service.
    slices
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": false}}]})),
        )
        .await?;
    let body = eventually("503 without endpoints", || async {
        let (s, b) = get(http, "mine.test").await?;
        Ok((s == 503).then_some(b))
    })
    .await?;
    assert!(
        body.contains("service default/web port 80 has no ready endpoints"),
        "{body}"
    );

    // The Ingress goes away: 404.
    ingresses.delete("mine", &DeleteParams::default()).await?;
    eventually("404 after delete", || async {
        Ok((get(http, "mine.test").await?.0 == 404).then_some(()))
    })
    .await?;
    assert!(
        running
            .metrics()
            .render()
            .contains("skiff_ingress_requests_total")
    );
    running.shutdown().await;
    data_plane.shutdown_background();
    Ok(())
}
