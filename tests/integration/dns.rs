//! Cluster DNS (skiff-dns) against a real in-process API server: the watch path from created,
//! changed and deleted Services and EndpointSlices to answers, and the first-sync signal.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use skiff_dns::{DnsConfig, DnsServer};
use tokio::net::UdpSocket;

use crate::apiserver::TestServer;
use crate::controllers::eventually;

async fn ask(addr: SocketAddr, name: &str, rtype: RecordType) -> anyhow::Result<Message> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name)?, rtype));
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.send_to(&m.to_vec()?, addr).await?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await??;
    Ok(Message::from_vec(&buf[..n])?)
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn dns_follows_services_and_endpoint_slices() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))?;
    let web = services.create(&PostParams::default(), &web).await?;
    let web_ip = web.spec.and_then(|s| s.cluster_ip).unwrap_or_default();

    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse()?],
        udp_sockets: 1,
        forward: skiff_dns::ForwardConfig::default(),
        ..DnsConfig::default()
    };
    let server = DnsServer::bind(config).await?;
    let addr = server.local_addrs()[0];
    let mut synced = server.synced();
    let metrics = server.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(client.clone(), async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), synced.wait()).await?;

    let m = ask(addr, "web.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(addresses(&m), [web_ip]);
    let m = ask(
        addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    assert_eq!(addresses(&m), ["0 100 80 web.default.svc.cluster.local."]);

    // A headless Service appears with its slice: per-endpoint names by hostname.
    let db: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    }))?;
    services.create(&PostParams::default(), &db).await?;
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.6"], "hostname": "db-1", "conditions": {"ready": false}}
        ],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    eventually("db-0 resolves", || async {
        let m = ask(addr, "db-0.db.default.svc.cluster.local.", RecordType::A).await?;
        Ok((addresses(&m) == ["10.244.0.5"]).then_some(()))
    })
    .await?;
    let m = ask(addr, "db-1.db.default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "not ready"
    );
    let m = ask(
        addr,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await?;
    assert_eq!(
        addresses(&m),
        ["0 100 5432 db-0.db.default.svc.cluster.local."]
    );

    // Deleting the Service removes its name; its namespace still exists (db is there).
    services.delete("web", &DeleteParams::default()).await?;
    eventually("web is gone", || async {
        let m = ask(addr, "web.default.svc.cluster.local.", RecordType::A).await?;
        Ok((m.metadata.response_code == ResponseCode::NXDomain).then_some(()))
    })
    .await?;
    let m = ask(addr, "default.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        metrics.programming_latency.count() >= 2,
        "{}",
        metrics.render()
    );

    let _ = stop.send(());
    running.await??;
    Ok(())
}
