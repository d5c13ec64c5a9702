//! Pod subresources proxied to the kubelet (`log`, `exec`, `attach`, `portforward`), against a
//! fake kubelet: HTTPS on loopback with a serving certificate from the test server's CA, which
//! requires the API server's client certificate, serves logs and echoes upgraded bytes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use skiff_apiserver::server::node_proxy::issue_kubelet_serving_cert;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::{TestServer, kubectl, kubectl_run, raw, tls_connect};

/// What the fake kubelet saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    authorization: bool,
}

struct FakeKubelet {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    async fn start(data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let issued = issue_kubelet_serving_cert(data_dir, "node-1", &["127.0.0.1".to_owned()])?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(data_dir.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Only clients with a certificate from the cluster CA: the API server's identity.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req| kubelet(req, recorded.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Self { addr, seen, task })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type FakeBody = BoxBody<Bytes, Infallible>;

async fn kubelet(
    mut req: hyper::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<FakeBody>, Infallible> {
    let uri = req.uri().to_string();
    if let Ok(mut s) = seen.lock() {
        s.push(Seen {
            method: req.method().to_string(),
            uri: uri.clone(),
            authorization: req.headers().contains_key("authorization"),
        });
    }
    let mut resp = hyper::Response::new(Full::new(Bytes::new()).boxed());
    if uri.starts_with("/containerLogs/") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"line 1\n")).await;
            // A pause between lines: the second must still arrive through the proxy.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(Bytes::from_static(b"line 2\n")).await;
        });
        let stream = futures::StreamExt::map(tokio_stream_compat(rx), |b| {
            Ok::<_, Infallible>(Frame::data(b))
        });
        *resp.body_mut() = StreamBody::new(stream).boxed();
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/plain"),
        );
        return Ok(resp);
    }
    let Some(upgrade) = req.headers().get("upgrade").cloned() else {
        *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
        *resp.body_mut() = Full::new(Bytes::from_static(b"Upgrade request required")).boxed();
        return Ok(resp);
    };
    *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut().insert("upgrade", upgrade);
    resp.headers_mut().insert(
        "connection",
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    for h in ["sec-websocket-protocol", "x-stream-protocol-version"] {
        if let Some(first) = req.headers().get(h).and_then(|v| v.to_str().ok()) {
            let first = first.split(',').next().unwrap_or("").trim().to_owned();
            if let Ok(v) = first.parse() {
                resp.headers_mut().insert(h, v);
            }
        }
    }
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on.await else { return };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    Ok(resp)
}

/// An mpsc receiver as a stream (tokio-stream is not a test dependency).
fn tokio_stream_compat(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

fn node(name: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "Hostname", "address": name},
                                    {"type": "InternalIP", "address": "127.0.0.1"}],
                      "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

fn pod(name: &str, node: Option<&str>, containers: &[&str]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "nginx:1"}))
        .collect();
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"containers": containers}});
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

/// Sends a request head over a fresh HTTP/1.1 TLS connection; returns the connection, the
/// status code and the response head.
async fn send_head(
    ts: &TestServer,
    head: &str,
) -> anyhow::Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    u16,
    String,
)> {
    let mut tls = tls_connect(ts, &[b"http/1.1"]).await?;
    tls.write_all(head.as_bytes()).await?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tls.read(&mut byte).await?;
        anyhow::ensure!(
            n == 1,
            "connection closed inside the response head: {got:?}"
        );
        got.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok((tls, code, head))
}

#[tokio::test]
async fn logs_exec_and_port_forward_through_the_kubelet() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client_without_retries().await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let token = ts.server.admin_token().to_owned();
    let fake = FakeKubelet::start(dir.path()).await?;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    for n in [
        node("node-1", fake.addr.port()),
        node("node-2", closed_port),
    ] {
        let (code, body) = raw(
            &client,
            "POST",
            "/api/v1/nodes",
            Some("application/json"),
            n.to_string().into_bytes(),
        )
        .await?;
        anyhow::ensure!(code == 201, "{body}");
    }
    for p in [
        pod("web", Some("node-1"), &["app"]),
        pod("multi", Some("node-1"), &["a", "b"]),
        pod("unbound", None, &["app"]),
        pod("lost", Some("node-2"), &["app"]),
    ] {
        let (code, body) = raw(
            &client,
            "POST",
            "/api/v1/namespaces/default/pods",
            Some("application/json"),
            p.to_string().into_bytes(),
        )
        .await?;
        anyhow::ensure!(code == 201, "{body}");
    }

    // kubectl logs, plain and following.
    let out = kubectl(&kc, &["logs", "web"]).await?;
    assert_eq!(out, "line 1\nline 2\n");
    let out = kubectl(&kc, &["logs", "-f", "web", "--tail=5", "--timestamps"]).await?;
    assert_eq!(out, "line 1\nline 2\n");
    let seen = fake.seen();
    assert!(
        seen.iter()
            .any(|s| s.uri == "/containerLogs/default/web/app"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.uri.starts_with("/containerLogs/default/web/app?")
                && s.uri.contains("follow=true")
                && s.uri.contains("tailLines=5")
                && s.uri.contains("timestamps=true")),
        "{seen:?}"
    );

    // Errors: several containers, no node, an unreachable kubelet, a bad container.
    let log = |pod: &str| format!("/api/v1/namespaces/default/pods/{pod}/log");
    let (code, status) = raw(&client, "GET", &log("multi"), None, Vec::new()).await?;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "a container name must be specified for pod multi, choose one of: [a b]"
    );
    let (code, status) = raw(
        &client,
        "GET",
        &format!("{}?container=zz", log("web")),
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(
        (code, status["message"].as_str()),
        (400, Some("container zz is not valid for pod web"))
    );
    let (code, status) = raw(&client, "GET", &log("unbound"), None, Vec::new()).await?;
    assert_eq!(
        (code, status["message"].as_str()),
        (400, Some("pod unbound does not have a host assigned"))
    );
    let (code, status) = raw(&client, "GET", &log("lost"), None, Vec::new()).await?;
    assert_eq!(code, 503, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"node-2\"") && message.contains(&format!("127.0.0.1:{closed_port}")),
        "{message}"
    );
    let run = kubectl_run(&kc, &["logs", "multi", "-c", "b"]).await?;
    assert!(run.ok, "{}", run.stderr);

    // exec over SPDY (kubectl <= 1.30): the 101 is relayed and bytes go both ways.
    let auth = format!("Authorization: Bearer {token}\r\n");
    let (mut stream, code, head) = send_head(&ts, &format!(
        "POST /api/v1/namespaces/default/pods/web/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
         Host: localhost\r\n{auth}Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n")).await?;
    assert_eq!(code, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    stream.write_all(b"ping from the client").await?;
    let mut echoed = [0u8; 20];
    stream.read_exact(&mut echoed).await?;
    assert_eq!(&echoed, b"ping from the client");
    drop(stream);

    // port-forward over websocket (kubectl >= 1.31).
    let (mut stream, code, head) = send_head(
        &ts,
        &format!(
            "GET /api/v1/namespaces/default/pods/web/portforward?ports=8080 HTTP/1.1\r\n\
         Host: localhost\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(code, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: spdy/3.1+portforward.k8s.io"),
        "{head}"
    );
    stream.write_all(&[0x82, 0x01, 0x2a]).await?;
    let mut echoed = [0u8; 3];
    stream.read_exact(&mut echoed).await?;
    assert_eq!(echoed, [0x82, 0x01, 0x2a]);
    drop(stream);

    // A kubelet answer other than 101 is relayed with its status.
    let (mut stream, code, _) = send_head(
        &ts,
        &format!(
            "POST /api/v1/namespaces/default/pods/web/attach?stdout=true HTTP/1.1\r\n\
         Host: localhost\r\n{auth}Connection: close\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(code, 400);
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body).await;
    assert!(String::from_utf8_lossy(&body).contains("Upgrade request required"));

    let seen = fake.seen();
    assert!(
        seen.iter().any(|s| s.method == "POST"
            && s.uri == "/exec/default/web/app?command=cat&stdin=true&stdout=true"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.uri == "/portForward/default/web?ports=8080"),
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|s| !s.authorization),
        "the client's token reached the kubelet"
    );
    drop(fake);
    ts.stop().await;
    Ok(())
}
