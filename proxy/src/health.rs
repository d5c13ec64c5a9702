//! The `healthCheckNodePort` server: for each Service with `externalTrafficPolicy: Local`, HTTP
//! on its health-check port at every node address, answering 200 when this node has a ready
//! local endpoint and 503 otherwise, so an external load balancer only sends to nodes that
//! can serve without a second hop (kube-proxy's `healthcheck` package, same JSON body).
//!
//! Listeners follow the published table: ports appear and disappear with it, and each request
//! reads the current table snapshot, so counts are never stale by more than one sync.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::state::Proxy;

/// Serves the health checks of `proxy`'s table on `addresses` until `shutdown` resolves.
pub async fn serve(proxy: Arc<Proxy>, addresses: Vec<IpAddr>, shutdown: impl Future<Output = ()>) {
    let mut versions = proxy.subscribe();
    let mut listeners: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    let mut shutdown = pin!(shutdown);
    loop {
        reconcile(&proxy, &addresses, &mut listeners);
        tokio::select! {
            () = &mut shutdown => break,
            changed = versions.changed() => if changed.is_err() { break },
        }
    }
    for (_, task) in listeners.drain() {
        task.abort();
    }
}

/// Starts listeners for new health-check ports, stops those of removed ones, and retries
/// listeners that failed to bind.
fn reconcile(
    proxy: &Arc<Proxy>,
    addresses: &[IpAddr],
    listeners: &mut HashMap<SocketAddr, JoinHandle<()>>,
) {
    let table = proxy.table();
    let wanted: Vec<SocketAddr> = table
        .health_checks()
        .keys()
        .flat_map(|port| addresses.iter().map(move |ip| SocketAddr::new(*ip, *port)))
        .collect();
    listeners.retain(|addr, task| {
        let keep = wanted.contains(addr) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for addr in wanted {
        listeners
            .entry(addr)
            .or_insert_with(|| tokio::spawn(listen(Arc::clone(proxy), addr)));
    }
}

async fn listen(proxy: Arc<Proxy>, addr: SocketAddr) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(error) => {
            tracing::warn!(%addr, %error, "health check port cannot be bound (retried on the next table)");
            return;
        }
    };
    let port = addr.port();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(error) => {
                tracing::debug!(%addr, %error, "health check accept");
                continue;
            }
        };
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let response = answer(&proxy, port);
                    async move { Ok::<_, Infallible>(response) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer for `port` from the current table: 200 with local endpoints, else 503.
pub fn answer(proxy: &Proxy, port: u16) -> Response<Full<Bytes>> {
    let table = proxy.table();
    let (status, body, count) = match table.health_checks().get(&port) {
        Some(hc) => {
            let body = serde_json::json!({
                "service": {"namespace": hc.service.namespace, "name": hc.service.name},
                "localEndpoints": hc.local_endpoints,
                "serviceProxyHealthy": true,
            });
            let status = if hc.local_endpoints > 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body.to_string(), hc.local_endpoints)
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned(), 0),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "X-Content-Type-Options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "X-Load-Balancing-Endpoint-Weight",
        hyper::header::HeaderValue::from(count),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceKey;
    use crate::table::{NodeInfo, ServiceTable};
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn objects(hc_port: u16, local: bool) -> (Service, EndpointSlice) {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge", "namespace": "ns"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5",
                     "externalTrafficPolicy": "Local", "healthCheckNodePort": hc_port,
                     "ports": [{"port": 80, "nodePort": 30080}]}
        }))
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "edge-1", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "edge"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.244.0.5"],
                           "nodeName": if local { "node-a" } else { "node-b" }}]
        }))
        .expect("slice");
        (svc, slice)
    }

    async fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn answers_by_local_endpoint_count() -> Result<(), Box<dyn std::error::Error>> {
        // A free port for the health check.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let node = NodeInfo {
            name: "node-a".into(),
            zone: None,
            addresses: vec!["127.0.0.1".parse()?],
        };
        let proxy = Proxy::new(node.clone());
        let publish = |local: bool| {
            let (svc, slice) = objects(port, local);
            let table = ServiceTable::build(&node, [&svc], [&slice], Some(&proxy.table()));
            proxy.publish(Arc::new(table));
        };
        publish(true);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(Arc::clone(&proxy), node.addresses.clone(), async {
            let _ = stopped.await;
        }));
        let addr = SocketAddr::new(node.addresses[0], port);
        let mut response = String::new();
        for _ in 0..100 {
            match get(addr).await {
                Ok(r) => {
                    response = r;
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""localEndpoints":1"#), "{response}");
        assert!(response.contains(r#""namespace":"ns""#), "{response}");

        publish(false);
        let response = get(addr).await?;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(response.contains(r#""localEndpoints":0"#), "{response}");
        assert_eq!(
            proxy
                .table()
                .health_checks()
                .get(&port)
                .map(|h| h.service.clone()),
            Some(ServiceKey::new("ns", "edge"))
        );

        let _ = stop.send(());
        server.await?;
        Ok(())
    }
}
