//! The proxy end to end on loopback: hyper test backends behind Services, pingora listeners
//! started by `IngressServer`, hyper clients over HTTP/1.1, HTTP/2 over TLS and raw TLS.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use skiff_ingress::compile::our_ingresses;
use skiff_ingress::server::{IngressServer, Listeners, SharedState};
use skiff_ingress::tls::CertSnapshot;
use skiff_ingress::{Limits, Model, RoutingConfig, compile};
use tokio::net::TcpStream;

/// A backend answering JSON: its name, the path and query it got, and its request headers.
async fn backend(name: &'static str) -> Result<SocketAddr> {
    http1_backend(move |req| {
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = json!({
            "name": name,
            "path": req.uri().path_and_query().map(|p| p.as_str()),
            "headers": headers,
        });
        async move { Bytes::from(body.to_string()) }
    })
    .await
}

/// A plain HTTP/1.1 backend on a free loopback port: every request is answered 200 with the
/// body `answer` makes of it.
async fn http1_backend<F, Fut>(answer: F) -> Result<SocketAddr>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Bytes> + Send + 'static,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = answer(req);
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body.await))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("test object")
}

/// A Service `name` whose one slice lists `addrs` (all on one port: loopback backends).
fn add_service(m: &mut Model, name: &str, addrs: &[SocketAddr]) {
    let svc: Service = obj(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    m.add_service(&svc);
    for (i, a) in addrs.iter().enumerate() {
        let s: EndpointSlice = obj(json!({
            "metadata": {"name": format!("{name}-{i}"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": a.port()}],
            "endpoints": [{"addresses": [a.ip().to_string()]}],
        }));
        m.add_slice(&s);
    }
}

fn cert(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

fn add_tls_secret(m: &mut Model, name: &str, crt: &str, key: &str) {
    let mut s: Secret = obj(json!({
        "metadata": {"name": name, "namespace": "default"}, "type": "kubernetes.io/tls"
    }));
    s.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ]
        .into(),
    );
    m.add_secret(&s);
}

struct Env {
    model: Model,
    state: SharedState,
    server: IngressServer,
    secure_der: CertificateDer<'static>,
}

impl Env {
    fn http(&self) -> SocketAddr {
        self.server.http_addr.expect("http listener")
    }
    fn https(&self) -> SocketAddr {
        self.server.https_addr.expect("https listener")
    }
    /// Compiles the model into the running proxy (what the watch loop does).
    fn apply(&self) {
        let cfg = RoutingConfig::default();
        let prev = self.state.routes.load();
        let c = compile(&self.model, &cfg, Some(&prev));
        self.state.routes.store(Arc::new(c.table));
        let ours = our_ingresses(&self.model, &cfg);
        let (certs, _) = CertSnapshot::build(
            &self.model,
            &ours,
            self.state.certs.load().default_cert().clone(),
        );
        self.state.certs.store(Arc::new(certs));
    }
}

async fn env() -> Result<Env> {
    env_with(Limits::default()).await
}

async fn env_with(limits: Limits) -> Result<Env> {
    let a = backend("a").await?;
    let b = backend("b").await?;
    let pool = [
        backend("p0").await?,
        backend("p1").await?,
        backend("p2").await?,
    ];
    let mut m = Model::default();
    m.add_class(&obj::<IngressClass>(json!({
        "metadata": {"name": "skiff", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "skiff.dev/ingress-controller"}
    })));
    add_service(&mut m, "a", &[a]);
    add_service(&mut m, "b", &[b]);
    add_service(&mut m, "pool", &pool);
    add_service(&mut m, "empty", &[]);
    let (crt, key, secure_der) = cert(&["secure.test"]);
    add_tls_secret(&mut m, "secure-cert", &crt, &key);
    let p = |path: &str, ty: &str, svc: &str| json!({"path": path, "pathType": ty, "backend": {"service": {"name": svc, "port": {"number": 80}}}});
    m.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "main", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "tls": [{"hosts": ["secure.test"], "secretName": "secure-cert"}],
            "rules": [
                {"host": "foo.test", "http": {"paths": [p("/a", "Prefix", "a"), p("/b", "Exact", "b")]}},
                {"host": "*.wild.test", "http": {"paths": [p("/", "Prefix", "b")]}},
                {"host": "pool.test", "http": {"paths": [p("/", "Prefix", "pool")]}},
                {"host": "empty.test", "http": {"paths": [p("/", "Prefix", "empty")]}},
                {"host": "secure.test", "http": {"paths": [p("/", "Prefix", "a")]}},
            ]
        }
    })));
    m.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "noredirect", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/ssl-redirect": "false"}},
        "spec": {
            "tls": [{"hosts": ["plain-ok.test"], "secretName": "secure-cert"}],
            "rules": [{"host": "plain-ok.test", "http": {"paths": [p("/", "Prefix", "b")]}}]
        }
    })));
    let state = SharedState::new()?;
    let server = IngressServer::start(
        Listeners {
            http: Some(std::net::TcpListener::bind("127.0.0.1:0")?),
            https: Some(std::net::TcpListener::bind("127.0.0.1:0")?),
            limits,
            ..Default::default()
        },
        &state,
    )?;
    let e = Env {
        model: m,
        state,
        server,
        secure_der,
    };
    e.apply();
    Ok(e)
}

/// One HTTP/1.1 connection for several requests.
struct H1 {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl H1 {
    async fn connect(addr: SocketAddr) -> Result<H1> {
        let s = TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(conn);
        Ok(H1 { send })
    }
    async fn get(&mut self, host: &str, path: &str) -> Result<(u16, hyper::HeaderMap, String)> {
        let req = Request::get(path).header("host", host).body(Empty::new())?;
        let resp = self.send.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, headers, String::from_utf8(body.to_vec())?))
    }
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, hyper::HeaderMap, String)> {
    H1::connect(addr).await?.get(host, path).await
}

fn json_of(body: &str) -> Result<Value> {
    serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))
}

#[tokio::test]
async fn routes_by_host_and_path_with_forwarding_headers() -> Result<()> {
    let e = env().await?;
    let (status, headers, body) = get(e.http(), "FOO.test:8080", "/a/deep/path?q=1&r=%20").await?;
    assert_eq!(status, 200, "{body}");
    let v = json_of(&body)?;
    assert_eq!(v["name"], "a");
    // Paths and queries are passed unchanged; Host is preserved.
    assert_eq!(v["path"], "/a/deep/path?q=1&r=%20");
    let h = &v["headers"];
    assert_eq!(h["host"], "FOO.test:8080");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "FOO.test:8080");
    assert_eq!(h["x-forwarded-port"], e.http().port().to_string());
    let rid = h["x-request-id"].as_str().context("request id")?;
    assert_eq!(rid.len(), 32);
    assert_eq!(headers["server"], "skiff-ingress");
    assert_eq!(headers["x-request-id"], rid);

    assert_eq!(
        json_of(&get(e.http(), "foo.test", "/b").await?.2)?["name"],
        "b"
    );
    // Counted in the logging phase, which may finish just after the client has the response.
    let want = [
        "skiff_ingress_route_requests_total{ingress=\"default/main\",service=\"default/a:80\",code=\"2xx\"} 1",
        "skiff_ingress_route_requests_total{ingress=\"default/main\",service=\"default/b:80\",code=\"2xx\"} 1",
        "skiff_ingress_route_duration_seconds_count{ingress=\"default/main\",service=\"default/a:80\"} 1",
    ];
    let mut text = String::new();
    for _ in 0..100 {
        text = e.state.metrics.render_with(&e.state.routes.load());
        if want.iter().all(|l| text.contains(l)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for line in want {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // Exact: no trailing slash variant.
    assert_eq!(get(e.http(), "foo.test", "/b/").await?.0, 404);
    assert_eq!(
        json_of(&get(e.http(), "x.wild.test", "/z").await?.2)?["name"],
        "b"
    );
    // The wildcard covers one label only.
    assert_eq!(get(e.http(), "y.x.wild.test", "/z").await?.0, 404);
    Ok(())
}

#[tokio::test]
async fn not_found_and_no_endpoints_have_clear_bodies() -> Result<()> {
    let e = env().await?;
    let (status, headers, body) = get(e.http(), "nothing.test", "/x").await?;
    assert_eq!(status, 404);
    assert_eq!(headers["server"], "skiff-ingress");
    assert!(
        body.contains("no Ingress rule matches host \"nothing.test\" path \"/x\""),
        "{body}"
    );
    let (status, _, body) = get(e.http(), "empty.test", "/").await?;
    assert_eq!(status, 503);
    assert!(
        body.contains("service default/empty port 80 has no ready endpoints"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn keepalive_requests_spread_over_every_endpoint() -> Result<()> {
    let e = env().await?;
    let mut c = H1::connect(e.http()).await?;
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let (status, _, body) = c.get("pool.test", "/").await?;
        assert_eq!(status, 200);
        seen.insert(json_of(&body)?["name"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(seen, HashSet::from(["p0".into(), "p1".into(), "p2".into()]));
    Ok(())
}

#[tokio::test]
async fn http_redirects_tls_hosts_unless_disabled() -> Result<()> {
    let e = env().await?;
    let (status, headers, body) = get(e.http(), "secure.test", "/x?y=1").await?;
    assert_eq!(status, 308, "{body}");
    assert_eq!(
        headers["location"],
        format!("https://secure.test:{}/x?y=1", e.https().port())
    );
    let (status, _, body) = get(e.http(), "plain-ok.test", "/").await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(skiff_ingress::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(Arc::new(cfg))
}

async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, s)
        .await?)
}

#[tokio::test]
async fn https_with_sni_verified_h2_and_rotation() -> Result<()> {
    let mut e = env().await?;
    // HTTP/1.1 over TLS, the certificate verified against the Secret's.
    let cfg = client_config(&[e.secure_der.clone()], &[b"http/1.1"])?;
    let tls = tls_connect(e.https(), "secure.test", cfg).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/p")
                .header("host", "secure.test")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    assert_eq!(resp.status(), 200);
    let v = json_of(std::str::from_utf8(
        &resp.into_body().collect().await?.to_bytes(),
    )?)?;
    assert_eq!(v["name"], "a");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // HTTP/2 over TLS (ALPN h2), several requests on one connection.
    let cfg = client_config(&[e.secure_der.clone()], &[b"h2", b"http/1.1"])?;
    let tls = tls_connect(e.https(), "secure.test", cfg).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    for i in 0..5 {
        let req = Request::get(format!("https://secure.test/h2/{i}")).body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let v = json_of(std::str::from_utf8(
            &resp.into_body().collect().await?.to_bytes(),
        )?)?;
        assert_eq!(v["path"], format!("/h2/{i}"));
        assert_eq!(v["headers"]["host"], "secure.test");
    }

    // An unknown name gets the default certificate, which the Secret's root does not verify.
    let cfg = client_config(&[e.secure_der.clone()], &[b"http/1.1"])?;
    if tls_connect(e.https(), "unknown.test", cfg).await.is_ok() {
        bail!("unknown SNI must not be served the Secret's certificate");
    }

    // Rotation: a new certificate in the Secret is served on the next handshake.
    let (crt, key, new_der) = cert(&["secure.test"]);
    add_tls_secret(&mut e.model, "secure-cert", &crt, &key);
    e.apply();
    let old = client_config(&[e.secure_der.clone()], &[b"http/1.1"])?;
    assert!(tls_connect(e.https(), "secure.test", old).await.is_err());
    let new = client_config(&[new_der], &[b"http/1.1"])?;
    tls_connect(e.https(), "secure.test", new).await?;
    Ok(())
}

#[tokio::test]
async fn route_changes_apply_without_restarting_listeners() -> Result<()> {
    let mut e = env().await?;
    let mut c = H1::connect(e.http()).await?;
    assert_eq!(c.get("new.test", "/").await?.0, 404);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "later", "namespace": "default", "creationTimestamp": "2024-02-01T00:00:00Z"},
        "spec": {"rules": [{"host": "new.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "b", "port": {"name": "http"}}}}
        ]}}]}
    })));
    e.apply();
    // Same keep-alive connection: the next request sees the new table.
    let (status, _, body) = c.get("new.test", "/").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)?["name"], "b");
    e.server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn steady_traffic_survives_route_endpoint_and_certificate_swaps() -> Result<()> {
    let e = Arc::new(env().await?);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Swap a rebuilt table and certificate snapshot every 2 ms, alternating an unrelated
    // Ingress and the pool's endpoint set, while requests flow.
    let swapper = {
        let (e, stop) = (e.clone(), stop.clone());
        let extra = [backend("x0").await?, backend("x1").await?];
        tokio::spawn(async move {
            let mut model = e.model.clone();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                add_service(&mut model, "churn", &extra[..(i % 2 + 1) as usize]);
                let cfg = RoutingConfig::default();
                let prev = e.state.routes.load();
                e.state
                    .routes
                    .store(Arc::new(compile(&model, &cfg, Some(&prev)).table));
                let ours = our_ingresses(&model, &cfg);
                let default = e.state.certs.load().default_cert().clone();
                e.state
                    .certs
                    .store(Arc::new(CertSnapshot::build(&model, &ours, default).0));
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            i
        })
    };
    let mut keepalive = H1::connect(e.http()).await?;
    let cfg = client_config(std::slice::from_ref(&e.secure_der), &[b"h2"])?;
    let tls = tls_connect(e.https(), "secure.test", cfg).await?;
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut failures = Vec::new();
    for i in 0..300 {
        let (status, _, body) = keepalive.get("pool.test", "/").await?;
        if status != 200 {
            failures.push(format!("h1 keep-alive {i}: {status} {body}"));
        }
        let (status, _, body) = get(e.http(), "foo.test", "/a").await?;
        if status != 200 {
            failures.push(format!("h1 new connection {i}: {status} {body}"));
        }
        let resp = h2
            .send_request(Request::get("https://secure.test/").body(Empty::<Bytes>::new())?)
            .await?;
        if resp.status() != 200 {
            failures.push(format!("h2 {i}: {}", resp.status()));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.await?;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(swaps > 10, "only {swaps} swaps happened during the traffic");
    Ok(())
}

/// An h2c backend (gRPC-like): answers with its name, the HTTP version and `grpc-timeout` it
/// saw, and a `grpc-status` trailer.
async fn h2c_backend(name: &'static str) -> Result<SocketAddr> {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = json!({
                        "name": name,
                        "version": format!("{:?}", req.version()),
                        "grpc-timeout": req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()),
                    })
                    .to_string();
                    async move {
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        let frames = futures::stream::iter(vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from(body))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn grpc_over_one_h2c_connection_reaches_every_pod_with_trailers() -> Result<()> {
    let mut e = env().await?;
    let pods = [
        h2c_backend("g0").await?,
        h2c_backend("g1").await?,
        h2c_backend("g2").await?,
    ];
    add_service(&mut e.model, "grpc", &pods);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "grpc", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/backend-protocol": "GRPC"}},
        "spec": {"rules": [{"host": "grpc.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "grpc", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    // One client connection, HTTP/2 with prior knowledge (h2c) on the plain listener.
    let s = TcpStream::connect(e.http()).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let mut seen = HashSet::new();
    for i in 0..60 {
        let req = Request::post(format!("http://grpc.test/echo.Echo/Say{i}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "5S")
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        let collected = resp.into_body().collect().await?;
        let trailers = collected.trailers().cloned().context("no trailers")?;
        assert_eq!(trailers["grpc-status"], "0");
        let v = json_of(std::str::from_utf8(&collected.to_bytes())?)?;
        assert_eq!(
            v["version"], "HTTP/2.0",
            "upstream must be HTTP/2 end to end"
        );
        assert_eq!(v["grpc-timeout"], "5S");
        seen.insert(v["name"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(seen, HashSet::from(["g0".into(), "g1".into(), "g2".into()]));
    Ok(())
}

/// An h2c gRPC-like backend that answers after `delay` (status 0 in trailers).
async fn slow_h2c_backend(delay: std::time::Duration) -> Result<SocketAddr> {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let mut trailers = hyper::HeaderMap::new();
                        trailers
                            .insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        let frames = futures::stream::iter(vec![
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                            Ok(Frame::trailers(trailers)),
                        ]);
                        Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn grpc_timeout_is_the_upstream_deadline() -> Result<()> {
    let mut e = env().await?;
    let delay = std::time::Duration::from_secs(3);
    add_service(&mut e.model, "slow", &[slow_h2c_backend(delay).await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "slow", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/backend-protocol": "GRPC"}},
        "spec": {"rules": [{"host": "slow.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "slow", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let s = TcpStream::connect(e.http()).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let call = |timeout: &str| {
        Request::post("http://slow.test/echo.Echo/Slow")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", timeout)
            .body(Empty::<Bytes>::new())
    };
    // 300 ms to answer, the backend takes 3 s: DEADLINE_EXCEEDED as a trailers-only response.
    let start = std::time::Instant::now();
    let resp = send.send_request(call("300m")?).await?;
    let took = start.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4", "{:?}", resp.headers());
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["server"], "skiff-ingress");
    assert!(
        resp.headers()["grpc-message"]
            .to_str()?
            .contains("deadline exceeded"),
        "{:?}",
        resp.headers()
    );
    let got = resp
        .into_body()
        .collect()
        .await
        .context("the deadline answer's body")?;
    assert!(got.trailers().is_none(), "trailers-only: no second HEADERS");
    assert!(got.to_bytes().is_empty());
    assert!(
        took < delay,
        "answered after {took:?}: the backend's own answer"
    );
    // With time enough, the backend's answer comes through, on the same client connection.
    let resp = send.send_request(call("10S")?).await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("grpc-status").is_none());
    let got = resp.into_body().collect().await?;
    assert_eq!(got.trailers().context("trailers")?["grpc-status"], "0");
    Ok(())
}

/// A backend that accepts any `Upgrade` as fast as it can (its 101 is on the wire before the
/// request has even arrived), reads the request head and then echoes bytes (WebSocket
/// framing is opaque to the proxy after the 101).
async fn upgrade_backend() -> Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\
                      Upgrade: websocket\r\n\r\n",
                )
                .await?;
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(s.read_u8().await?);
                }
                let (mut r, mut w) = s.split();
                tokio::io::copy(&mut r, &mut w).await?;
                w.shutdown().await
            });
        }
    });
    Ok(addr)
}

/// Opens a WebSocket to `host` on `s` (a connection to the proxy): the 101's head.
async fn websocket_on<S>(s: &mut S, host: &str) -> Result<String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            bail!("closed during the 101: {}", String::from_utf8_lossy(&head));
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    Ok(head)
}

/// Sends `msg` on an upgraded connection to the byte-echo backend and reads it back.
async fn echo_round<S>(s: &mut S, msg: &[u8]) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    s.read_exact(&mut buf).await?;
    ensure!(buf == msg, "echoed {:?}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// Ingress `name`: `host` and `path` (prefix) to the Service `ws`.
fn ws_ingress(e: &mut Env, name: &str, host: &str, path: &str) {
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": host, "http": {"paths": [
            {"path": path, "pathType": "Prefix", "backend": {"service": {"name": "ws", "port": {"number": 80}}}}
        ]}}]}
    })));
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_and_survives_route_swaps() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut e = env().await?;
    add_service(&mut e.model, "ws", &[upgrade_backend().await?]);
    ws_ingress(&mut e, "ws", "ws.test", "/");
    e.apply();
    let mut s = TcpStream::connect(e.http()).await?;
    let head = websocket_on(&mut s, "ws.test").await?;
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nconnection: upgrade\r\n")
            && lower.contains("\r\nupgrade: websocket\r\n"),
        "{head}"
    );
    assert!(lower.contains("\r\nx-request-id: "), "{head}");
    for round in 0..5 {
        // An unrelated configuration change must not touch the established tunnel.
        e.model.add_ingress(&obj::<Ingress>(json!({
            "metadata": {"name": format!("other{round}"), "namespace": "default"},
            "spec": {"defaultBackend": {"service": {"name": "b", "port": {"number": 80}}}}
        })));
        e.apply();
        echo_round(&mut s, format!("frame {round}").as_bytes()).await?;
    }
    // The client's close ends the tunnel both ways: the backend sees the end and closes too.
    s.shutdown().await?;
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await??;
    assert!(rest.is_empty());
    Ok(())
}

/// The first message right after a fast backend's 101 (pingora 0.9 can end such a tunnel as
/// it starts, cloudflare/pingora#946): every one of many fresh WebSockets, in plain HTTP and
/// over TLS, carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_websocket_carries_its_first_message_after_a_fast_101() -> Result<()> {
    let mut e = env().await?;
    add_service(&mut e.model, "ws", &[upgrade_backend().await?]);
    ws_ingress(&mut e, "ws", "ws.test", "/");
    // `/chat` on the TLS host goes to the same backend.
    ws_ingress(&mut e, "wss", "secure.test", "/chat");
    e.apply();
    let cfg = client_config(&[e.secure_der.clone()], &[b"http/1.1"])?;
    let (http, https) = (e.http(), e.https());
    // Several at once, as many as the machine's threads can race.
    let lanes = (0..8).map(|lane| {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            for i in 0..25 {
                let msg = format!("first message of {lane}/{i}");
                let mut s = TcpStream::connect(http).await?;
                websocket_on(&mut s, "ws.test").await?;
                echo_round(&mut s, msg.as_bytes())
                    .await
                    .with_context(|| format!("WebSocket {lane}/{i}"))?;
                let mut tls = tls_connect(https, "secure.test", cfg.clone()).await?;
                websocket_on(&mut tls, "secure.test").await?;
                echo_round(&mut tls, msg.as_bytes())
                    .await
                    .with_context(|| format!("WebSocket {lane}/{i} over TLS"))?;
            }
            anyhow::Ok(())
        })
    });
    for lane in futures::future::join_all(lanes).await {
        lane??;
    }
    Ok(())
}

#[tokio::test]
async fn body_size_limit_from_the_annotation() -> Result<()> {
    let mut e = env().await?;
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "small", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/proxy-body-size": "1k"}},
        "spec": {"rules": [{"host": "small.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "a", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    async fn post(addr: SocketAddr, body: Vec<u8>, chunked: bool) -> Result<(u16, String)> {
        let s = TcpStream::connect(addr).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(conn);
        let req = Request::post("/upload").header("host", "small.test");
        let resp = if chunked {
            // A streamed body of unknown length goes out chunked.
            let frames = futures::stream::iter(
                body.chunks(256)
                    .map(|c| {
                        Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(c)))
                    })
                    .collect::<Vec<_>>(),
            );
            send.send_request(req.body(http_body_util::StreamBody::new(frames).boxed())?)
                .await?
        } else {
            send.send_request(req.body(Full::new(Bytes::from(body)).boxed())?)
                .await?
        };
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
    assert_eq!(post(e.http(), vec![b'x'; 1000], false).await?.0, 200);
    let (status, body) = post(e.http(), vec![b'x'; 2000], false).await?;
    assert_eq!(status, 413);
    assert!(body.contains("limit of this route is 1024 bytes"), "{body}");
    assert_eq!(post(e.http(), vec![b'x'; 1000], true).await?.0, 200);
    assert_eq!(post(e.http(), vec![b'x'; 4000], true).await?.0, 413);
    // Other routes have no limit.
    let s = TcpStream::connect(e.http()).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::post("/a")
                .header("host", "foo.test")
                .body(Full::new(Bytes::from(vec![b'x'; 100_000])))?,
        )
        .await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn connect_failures_are_retried_elsewhere_and_the_dead_pod_avoided() -> Result<()> {
    let mut e = env().await?;
    // A port nobody listens on: connections are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let live = backend("live").await?;
    add_service(&mut e.model, "flaky", &[dead, live]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "flaky", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "flaky.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "flaky", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    // Make the live endpoint look busy so the first pick is the dead one, deterministically.
    let live_ep = e
        .state
        .routes
        .load()
        .endpoints()
        .find(|ep| ep.addr == live)
        .cloned()
        .context("live endpoint")?;
    for _ in 0..50 {
        live_ep.start();
    }
    let mut c = H1::connect(e.http()).await?;
    let (status, _, body) = c.get("flaky.test", "/").await?;
    assert_eq!(status, 200, "retried on the live endpoint: {body}");
    for _ in 0..50 {
        live_ep.finish();
    }
    for i in 0..30 {
        let (status, _, body) = c.get("flaky.test", "/").await?;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(json_of(&body)?["name"], "live");
    }
    // The refused connects made the dead endpoint the expensive one, so P2C stops trying it
    // (ejection after repeated failures is unit-tested in `balance`).
    let table = e.state.routes.load();
    let cost = |addr: SocketAddr| {
        table
            .endpoints()
            .find(|ep| ep.addr == addr)
            .map(|ep| ep.cost())
            .context("endpoint in the table")
    };
    assert!(
        cost(dead)? > 10.0 * cost(live)?,
        "{} vs {}",
        cost(dead)?,
        cost(live)?
    );
    Ok(())
}

#[tokio::test]
async fn canary_takes_its_share_per_request() -> Result<()> {
    let mut e = env().await?;
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "canary", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/canary-weight": "50"}},
        "spec": {"rules": [{"host": "foo.test", "http": {"paths": [
            {"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "b", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let mut c = H1::connect(e.http()).await?;
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let (status, _, body) = c.get("foo.test", "/a").await?;
        assert_eq!(status, 200);
        seen.insert(json_of(&body)?["name"].as_str().unwrap_or("").to_owned());
    }
    // Per request, over one connection: both backends (probability of a miss: 2^-99).
    assert_eq!(seen, HashSet::from(["a".into(), "b".into()]));
    Ok(())
}

/// A backend serving HTTP/1.1 over TLS with a self-signed certificate (pods rarely have
/// certificates anything trusts).
async fn tls_backend(name: &'static str) -> Result<SocketAddr> {
    let c = rcgen::generate_simple_self_signed(vec!["pod.internal".to_owned()])?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(c.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(skiff_ingress::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = json!({"name": name, "path": req.uri().path()}).to_string();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn https_upstreams_by_annotation() -> Result<()> {
    let mut e = env().await?;
    add_service(&mut e.model, "tlspod", &[tls_backend("tls-pod").await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "tlsup", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/backend-protocol": "HTTPS"}},
        "spec": {"rules": [{"host": "tlsup.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "tlspod", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let mut c = H1::connect(e.http()).await?;
    for i in 0..3 {
        let (status, _, body) = c.get("tlsup.test", &format!("/s/{i}")).await?;
        assert_eq!(status, 200, "{body}");
        let v = json_of(&body)?;
        assert_eq!(v["name"], "tls-pod");
        assert_eq!(v["path"], format!("/s/{i}"));
    }
    Ok(())
}

/// Sends raw bytes and returns what comes back until the server closes or 5 s pass.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await?;
    // The server may answer and close before reading everything: write errors are expected.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_4xx_and_harm_nothing() -> Result<()> {
    let e = env().await?;
    // Every refusal names us and says why.
    let refused = |answer: &str, status: &str, why: &str| {
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "want {status}: {answer:?}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nserver: skiff-ingress\r\n"),
            "{answer:?}"
        );
        assert!(lower.contains("\r\nconnection: close\r\n"), "{answer:?}");
        assert!(answer.contains(why), "want {why:?} in {answer:?}");
    };
    let garbage = raw(e.http(), b"THIS IS NOT HTTP\r\n\r\n").await?;
    refused(&garbage, "400", "malformed request head");
    let bad_field = raw(
        e.http(),
        b"GET /a HTTP/1.1\r\nHost: foo.test\r\nBad Name: x\r\n\r\n",
    )
    .await?;
    refused(&bad_field, "400", "malformed request head");
    // The same over TLS.
    let cfg = client_config(std::slice::from_ref(&e.secure_der), &[b"http/1.1"])?;
    let mut tls = tls_connect(e.https(), "secure.test", cfg).await?;
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"NOT HTTP AT ALL\r\n\r\n").await?;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_to_end(&mut out))
            .await;
        refused(
            &String::from_utf8_lossy(&out),
            "400",
            "malformed request head",
        );
    }
    // Oversized: a header field, too many fields, a request line (the default limit: 32 KiB).
    let mut huge = b"GET /a HTTP/1.1\r\nHost: foo.test\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 2 << 20));
    huge.extend(b"\r\n\r\n");
    refused(
        &raw(e.http(), &huge).await?,
        "431",
        "larger than 32768 bytes",
    );
    let mut many = b"GET /a HTTP/1.1\r\nHost: foo.test\r\n".to_vec();
    for i in 0..300 {
        many.extend(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    refused(
        &raw(e.http(), &many).await?,
        "431",
        "more than 256 header fields",
    );
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 40 << 10));
    long.extend(b" HTTP/1.1\r\nHost: foo.test\r\n\r\n");
    refused(
        &raw(e.http(), &long).await?,
        "414",
        "request line is longer",
    );
    // A target with characters httparse refuses is still served (pingora encodes them).
    let odd = raw(
        e.http(),
        b"GET /a/x|y HTTP/1.1\r\nHost: foo.test\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(odd.starts_with("HTTP/1.1 200"), "{odd:?}");
    let bad_host = raw(
        e.http(),
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(bad_host.starts_with("HTTP/1.1 400"), "{bad_host:?}");
    assert!(bad_host.contains("invalid Host header"), "{bad_host:?}");
    // A request shorter than the HTTP/2 preface is answered, not left waiting for more bytes.
    let short = raw(e.http(), b"GET / HTTP/1.0\r\n\r\n").await?;
    assert!(short.contains(" 404 "), "{short:?}");
    // The proxy still serves.
    assert_eq!(get(e.http(), "foo.test", "/a").await?.0, 200);
    Ok(())
}

/// Writes `head` one byte every `every` until the server closes; returns what it answered
/// and how long the connection lasted.
async fn trickle(
    addr: SocketAddr,
    head: &[u8],
    every: std::time::Duration,
) -> Result<(String, std::time::Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = std::time::Instant::now();
    let s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out).await;
        (out, start.elapsed())
    });
    for b in head {
        if reader.is_finished() || w.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    let (out, lasted) = reader.await?;
    Ok((String::from_utf8_lossy(&out).into_owned(), lasted))
}

#[tokio::test]
async fn slowloris_heads_are_cut_at_the_header_deadline() -> Result<()> {
    let header_timeout = std::time::Duration::from_secs(1);
    let e = env_with(Limits {
        header_timeout,
        ..Limits::default()
    })
    .await?;
    // 200 ms per byte: the head would take ~13 s; each read alone is quick, so only a total
    // deadline stops it.
    let head = b"GET /a HTTP/1.1\r\nHost: foo.test\r\nX-Slow: abcdefghij\r\n\r\n";
    let per_byte = std::time::Duration::from_millis(200);
    let slow = tokio::spawn(trickle(e.http(), head, per_byte));
    // Meanwhile others are served.
    for _ in 0..5 {
        assert_eq!(get(e.http(), "foo.test", "/a").await?.0, 200);
    }
    let (answer, lasted) = slow.await??;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(answer.contains("not complete within 1s"), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("server: skiff-ingress"),
        "{answer:?}"
    );
    assert!(lasted >= header_timeout, "closed after {lasted:?}");
    assert!(
        lasted < per_byte * head.len() as u32,
        "the whole head got through in {lasted:?}"
    );
    // Over TLS too: the handshake done, then the head trickled.
    let cfg = client_config(std::slice::from_ref(&e.secure_der), &[b"http/1.1"])?;
    let mut tls = tls_connect(e.https(), "secure.test", cfg).await?;
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for b in head {
            if tls.write_all(&[*b]).await.is_err() {
                break;
            }
            tls.flush().await?;
            let mut buf = [0u8; 512];
            match tokio::time::timeout(per_byte, tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "TLS: {answer:?}");
    assert!(
        start.elapsed() < per_byte * head.len() as u32,
        "TLS: the whole head got through"
    );
    Ok(())
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle_timeout = std::time::Duration::from_secs(1);
    let e = env_with(Limits {
        idle_timeout,
        ..Limits::default()
    })
    .await?;
    let mut s = TcpStream::connect(e.http()).await?;
    let req = b"GET /a HTTP/1.1\r\nHost: foo.test\r\n\r\n";
    // Two requests back to back on one connection (it is kept alive)...
    let mut seen = Vec::new();
    for i in 0..2 {
        s.write_all(req).await?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await?;
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "request {i}: {answer:?}"
        );
        seen.push(answer);
    }
    // ... then nothing: closed by the server after the idle timeout, without an answer.
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(idle_timeout * 10, s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "still open after {:?}", idle_timeout * 10);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        start.elapsed() >= idle_timeout / 2,
        "closed after {:?}",
        start.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn pingora_generated_errors_carry_our_server_header() -> Result<()> {
    let mut e = env().await?;
    // One endpoint that refuses connections: 502 after the retries.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    add_service(&mut e.model, "dead", &[dead]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "dead", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "dead.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "dead", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let (status, headers, body) = get(e.http(), "dead.test", "/").await?;
    assert_eq!(status, 502, "{body}");
    assert_eq!(headers["server"], "skiff-ingress");
    assert!(
        body.contains("the backend failed (ConnectRefused)"),
        "{body}"
    );
    Ok(())
}

/// A backend answering by path with hand-written framings: `/chunked` (chunks and a trailer),
/// `/close` (no length: the body ends when the backend closes), `/early` (a 103 before the
/// answer, in one write), anything else `Content-Length`.
async fn framing_backend() -> Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let reply: &[u8] = if head.contains(" /chunked ") {
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nServer: pod\r\n\r\n\
                              5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n"
                        } else if head.contains(" /early ") {
                            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                        } else if head.contains(" /close ") {
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"
                        } else {
                            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nKeep-Alive: timeout=5\r\n\r\nfour"
                        };
                        if s.write_all(reply).await.is_err() || head.contains(" /close ") {
                            return;
                        }
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The lean HTTP/1.1 path (bodyless GET/HEAD to a plain-HTTP backend) passes chunked bodies
/// with trailers, length-delimited and close-delimited bodies, HEAD answers, and keeps the
/// client connection where it can.
#[tokio::test]
async fn response_framings_pass_through_on_one_connection() -> Result<()> {
    let mut e = env().await?;
    let be = framing_backend().await?;
    add_service(&mut e.model, "framing", &[be]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "framing", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "framing.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "framing", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let mut c = H1::connect(e.http()).await?;
    for _ in 0..3 {
        let (status, headers, body) = c.get("framing.test", "/chunked").await?;
        assert_eq!((status, body.as_str()), (200, "hello, world"));
        assert_eq!(headers["server"], "skiff-ingress");
        assert!(headers.contains_key("x-request-id"));
        let (status, headers, body) = c.get("framing.test", "/len").await?;
        assert_eq!((status, body.as_str()), (200, "four"));
        assert!(
            !headers.contains_key("keep-alive"),
            "hop-by-hop field passed: {headers:?}"
        );
        // An interim answer and the final one in the same read: the final one is served.
        let early = c.get("framing.test", "/early");
        let (status, _, body) = tokio::time::timeout(std::time::Duration::from_secs(10), early)
            .await
            .context("no answer after the 103")??;
        assert_eq!((status, body.as_str()), (200, "final"));
    }
    // HEAD: the length is announced and no body follows.
    let answer = raw(
        e.http(),
        b"HEAD /len HTTP/1.1\r\nHost: framing.test\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Length: 4\r\n"), "{answer}");
    assert!(
        answer.ends_with("Connection: close\r\n\r\n"),
        "HEAD with a body: {answer}"
    );
    let answer = raw(
        e.http(),
        b"GET /chunked HTTP/1.1\r\nHost: framing.test\r\nConnection: close\r\n\r\n",
    )
    .await?;
    assert!(
        answer.ends_with("\r\n\r\n5\r\nhello\r\n7;x=y\r\n, world\r\n0\r\nX-Sum: 12\r\n\r\n"),
        "{answer}"
    );
    // A body that ends with the backend's connection ends the client's too.
    let answer = raw(
        e.http(),
        b"GET /close HTTP/1.1\r\nHost: framing.test\r\n\r\n",
    )
    .await?;
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nuntil the end"), "{answer}");
    Ok(())
}

/// A backend answering JSON with the method, the headers and the body it got.
async fn body_backend() -> Result<SocketAddr> {
    http1_backend(|req| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers: BTreeMap<String, String> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let v = json!({
            "method": parts.method.as_str(),
            "headers": headers,
            "len": body.len(),
            "body": String::from_utf8_lossy(&body),
        });
        Bytes::from(v.to_string())
    })
    .await
}

type H2Send = hyper::client::conn::http2::SendRequest<
    http_body_util::combinators::BoxBody<Bytes, Infallible>,
>;

/// An HTTP/2 connection over TLS (SNI secure.test, ALPN h2).
async fn h2_tls(e: &Env) -> Result<H2Send> {
    let cfg = client_config(std::slice::from_ref(&e.secure_der), &[b"h2"])?;
    let tls = tls_connect(e.https(), "secure.test", cfg).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn h2_call(
    send: &mut H2Send,
    req: Request<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
) -> Result<(u16, hyper::HeaderMap, String)> {
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

fn empty() -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Empty::new().boxed()
}

/// A body of unknown length (no content-length: HTTP/1.1 upstreams get it chunked).
fn streamed(body: &[u8]) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let frames = futures::stream::iter(
        body.chunks(1000)
            .map(|c| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<_>>(),
    );
    http_body_util::StreamBody::new(frames).boxed()
}

/// A backend that answers `/hold` only once `open` turns true (saying so on `arrived` when the
/// request is in), and every other path at once.
async fn gated_backend(
    open: tokio::sync::watch::Receiver<bool>,
    arrived: Arc<tokio::sync::Notify>,
) -> Result<SocketAddr> {
    http1_backend(move |req| {
        let (mut open, arrived) = (open.clone(), arrived.clone());
        async move {
            if req.uri().path() == "/hold" {
                arrived.notify_one();
                let _ = open.wait_for(|o| *o).await;
                Bytes::from_static(b"held")
            } else {
                Bytes::from_static(b"now")
            }
        }
    })
    .await
}

#[tokio::test]
async fn h2_stream_waiting_on_its_backend_does_not_hold_up_the_others() -> Result<()> {
    let mut e = env().await?;
    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(tokio::sync::Notify::new());
    add_service(
        &mut e.model,
        "gated",
        &[gated_backend(open_rx, arrived.clone()).await?],
    );
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "gated", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "gated.test", "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "gated", "port": {"number": 80}}}}]}}]}
    })));
    e.apply();
    let send = h2_tls(&e).await?;
    let mut held_send = send.clone();
    let held = tokio::spawn(async move {
        h2_call(
            &mut held_send,
            Request::get("https://gated.test/hold").body(empty())?,
        )
        .await
    });
    arrived.notified().await;
    // The same connection serves another stream while the first still waits on its backend.
    let mut now_send = send.clone();
    let req = Request::get("https://gated.test/now").body(empty())?;
    let (status, _, body) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        h2_call(&mut now_send, req),
    )
    .await
    .context("a stream waited for another stream of its connection")??;
    assert_eq!((status, body.as_str()), (200, "now"));
    assert!(
        !held.is_finished(),
        "the held stream answered before its backend did"
    );
    open_tx.send(true)?;
    let (status, _, body) = held.await??;
    assert_eq!((status, body.as_str()), (200, "held"));
    Ok(())
}

#[tokio::test]
async fn h2_streams_to_http_backends_carry_bodies_headers_and_local_answers() -> Result<()> {
    let mut e = env().await?;
    add_service(&mut e.model, "echo", &[body_backend().await?]);
    let p = |svc: &str| json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": svc, "port": {"number": 80}}}}]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "echo", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "echo.test", "http": {"paths": p("echo")}}]}
    })));
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "small", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/proxy-body-size": "1k"}},
        "spec": {"rules": [{"host": "small.test", "http": {"paths": p("echo")}}]}
    })));
    e.apply();
    let mut send = h2_tls(&e).await?;

    // Forwarding headers, split cookies joined, our Server and X-Request-ID.
    let req = Request::get("https://echo.test/x?y=1")
        .header("x-forwarded-for", "192.0.2.7")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(empty())?;
    let (status, headers, body) = h2_call(&mut send, req).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["server"], "skiff-ingress");
    let v = json_of(&body)?;
    let h = &v["headers"];
    assert_eq!(h["host"], "echo.test");
    assert_eq!(h["cookie"], "a=1; b=2");
    assert_eq!(h["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "echo.test");
    assert_eq!(h["x-forwarded-port"], e.https().port().to_string());
    assert_eq!(h["x-request-id"], headers["x-request-id"].to_str()?);
    assert_eq!(v["method"], "GET");
    // Request ids go out never-indexed (HPACK): the next message on the same connection still
    // carries its own, the one its backend saw.
    let req = Request::get("https://echo.test/again").body(empty())?;
    let (status, again, body) = h2_call(&mut send, req).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)?["headers"]["x-request-id"],
        again["x-request-id"].to_str()?
    );
    assert_ne!(again["x-request-id"], headers["x-request-id"]);

    // Bodies: with a length as is, without one chunked; both whole at the backend.
    let big = vec![b'z'; 100_000];
    let req = Request::post("https://echo.test/up")
        .header("content-length", big.len().to_string())
        .body(Full::new(Bytes::from(big.clone())).boxed())?;
    let (status, _, body) = h2_call(&mut send, req).await?;
    assert_eq!(status, 200);
    let v = json_of(&body)?;
    assert_eq!(
        (v["len"].as_u64(), v["method"].as_str()),
        (Some(100_000), Some("POST"))
    );
    assert_eq!(v["headers"]["content-length"], "100000");
    let req = Request::put("https://echo.test/up").body(streamed(&big))?;
    let (status, _, body) = h2_call(&mut send, req).await?;
    assert_eq!(status, 200);
    let v = json_of(&body)?;
    assert_eq!(v["len"].as_u64(), Some(100_000));
    assert_eq!(v["headers"]["transfer-encoding"], "chunked");

    // Local answers on the same connection.
    let (status, headers, body) =
        h2_call(&mut send, Request::get("https://nope.test/").body(empty())?).await?;
    assert_eq!(status, 404);
    assert!(
        body.contains("no Ingress rule matches host \"nope.test\""),
        "{body}"
    );
    assert_eq!(headers["server"], "skiff-ingress");
    let (status, _, body) = h2_call(
        &mut send,
        Request::get("https://empty.test/").body(empty())?,
    )
    .await?;
    assert_eq!(status, 503);
    assert!(
        body.contains("empty port 80 has no ready endpoints"),
        "{body}"
    );
    let req = Request::post("https://small.test/")
        .header("content-length", "2000")
        .body(Full::new(Bytes::from(vec![b'x'; 2000])).boxed())?;
    let (status, _, body) = h2_call(&mut send, req).await?;
    assert_eq!(status, 413);
    assert!(body.contains("limit of this route is 1024 bytes"), "{body}");
    let req = Request::post("https://small.test/").body(streamed(&[b'x'; 4000]))?;
    assert_eq!(h2_call(&mut send, req).await?.0, 413);
    let req = Request::post("https://small.test/").body(streamed(&[b'x'; 1000]))?;
    assert_eq!(h2_call(&mut send, req).await?.0, 200);

    // Concurrent streams of one connection, balanced per request over every pod.
    let calls = (0..30).map(|i| {
        let mut send = send.clone();
        async move {
            let req = Request::get(format!("https://pool.test/c/{i}")).body(empty())?;
            let (status, _, body) = h2_call(&mut send, req).await?;
            anyhow::ensure!(status == 200, "{status} {body}");
            Ok(json_of(&body)?["name"].as_str().unwrap_or("").to_owned())
        }
    });
    let names: HashSet<String> = futures::future::try_join_all(calls)
        .await?
        .into_iter()
        .collect();
    assert_eq!(
        names,
        HashSet::from(["p0".into(), "p1".into(), "p2".into()])
    );
    Ok(())
}

/// A backend that reads requests and never answers.
async fn silent_backend() -> Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn a_silent_backend_gets_504_after_the_read_timeout() -> Result<()> {
    let timeout = std::time::Duration::from_millis(300);
    let mut e = env_with(Limits {
        upstream_read_timeout: timeout,
        ..Limits::default()
    })
    .await?;
    add_service(&mut e.model, "silent", &[silent_backend().await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "silent", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "silent.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "silent", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    // HTTP/1.1 (the lean path) and HTTP/2 alike; the wait is bounded by the test harness,
    // not asserted.
    let (status, headers, body) = get(e.http(), "silent.test", "/").await?;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("read timeout"), "{body}");
    assert_eq!(headers["server"], "skiff-ingress");
    let mut send = h2_tls(&e).await?;
    let (status, _, body) = h2_call(
        &mut send,
        Request::get("https://silent.test/").body(empty())?,
    )
    .await?;
    assert_eq!(status, 504, "{body}");
    // The connection still serves.
    let (status, _, _) =
        h2_call(&mut send, Request::get("https://foo.test/a").body(empty())?).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn h2_connections_go_to_pingora_while_an_https_backend_is_routed() -> Result<()> {
    let mut e = env().await?;
    add_service(&mut e.model, "tlspod", &[tls_backend("tls-pod").await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "tlsup", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/backend-protocol": "HTTPS"}},
        "spec": {"rules": [{"host": "tlsup.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "tlspod", "port": {"number": 80}}}}
        ]}}]}
    })));
    // Opened before the HTTPS route exists: our path, which answers 421 for it.
    let mut ours = h2_tls(&e).await?;
    // A first answer: the connection has been given to a path.
    let (status, _, _) =
        h2_call(&mut ours, Request::get("https://foo.test/a").body(empty())?).await?;
    assert_eq!(status, 200);
    e.apply();
    let (status, _, body) = h2_call(
        &mut ours,
        Request::get("https://tlsup.test/").body(empty())?,
    )
    .await?;
    assert_eq!(status, 421, "{body}");
    // A new connection goes to pingora, which speaks TLS upstream; other hosts work on both.
    let mut theirs = h2_tls(&e).await?;
    let (status, _, body) = h2_call(
        &mut theirs,
        Request::get("https://tlsup.test/s").body(empty())?,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)?["name"], "tls-pod");
    for send in [&mut ours, &mut theirs] {
        let (status, _, body) =
            h2_call(send, Request::get("https://foo.test/a").body(empty())?).await?;
        assert_eq!((status, json_of(&body)?["name"].clone()), (200, json!("a")));
    }
    Ok(())
}

/// An h2c backend on the `h2` crate: `/echo` answers each request DATA frame with the same
/// bytes and ends with `grpc-status: 0` plus the request's `x-t` trailer; `/reset` resets the
/// stream with ENHANCE_YOUR_CALM.
async fn h2_echo_backend() -> Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        if req.uri().path() == "/reset" {
                            respond.send_reset(h2::Reason::ENHANCE_YOUR_CALM);
                            return;
                        }
                        let mut body = req.into_body();
                        let Ok(mut out) = respond.send_response(Response::new(()), false) else {
                            return;
                        };
                        while let Some(Ok(d)) = body.data().await {
                            let _ = body.flow_control().release_capacity(d.len());
                            let _ = out.send_data(d, false);
                        }
                        let mut t = hyper::HeaderMap::new();
                        t.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
                        if let Ok(Some(rt)) = body.trailers().await
                            && let Some(x) = rt.get("x-t")
                        {
                            t.insert("x-t", x.clone());
                        }
                        let _ = out.send_trailers(t);
                    });
                }
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn grpc_streams_flow_both_ways_and_resets_pass_through() -> Result<()> {
    let mut e = env().await?;
    add_service(&mut e.model, "h2echo", &[h2_echo_backend().await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "h2echo", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/backend-protocol": "GRPC"}},
        "spec": {"rules": [{"host": "h2echo.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "h2echo", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    let s = TcpStream::connect(e.http()).await?;
    let (client, conn) = h2::client::handshake(s).await?;
    tokio::spawn(conn);
    let mut client = client.ready().await?;
    // Bidirectional: each message comes back before the next is sent.
    let req = Request::post("http://h2echo.test/echo").body(())?;
    let (resp, mut up) = client.send_request(req, false)?;
    let resp = resp.await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["server"], "skiff-ingress");
    let mut down = resp.into_body();
    for i in 0..3 {
        let msg = Bytes::from(format!("message {i}"));
        up.send_data(msg.clone(), false)?;
        let got = down.data().await.context("echo")??;
        let _ = down.flow_control().release_capacity(got.len());
        assert_eq!(got, msg);
    }
    let mut t = hyper::HeaderMap::new();
    t.insert("x-t", hyper::header::HeaderValue::from_static("tail"));
    up.send_trailers(t)?;
    assert!(down.data().await.is_none());
    let trailers = down.trailers().await?.context("trailers")?;
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-t"], "tail");
    // A reset by the backend reaches the client with its reason.
    let mut client = client.ready().await?;
    let (resp, _up) =
        client.send_request(Request::post("http://h2echo.test/reset").body(())?, true)?;
    let err = resp.await.err().context("the reset stream answered")?;
    assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err}");
    // The connection carries on.
    let mut client = client.ready().await?;
    let (resp, mut up) =
        client.send_request(Request::post("http://h2echo.test/echo").body(())?, false)?;
    up.send_data(Bytes::from_static(b"again"), true)?;
    let resp = resp.await?;
    let mut down = resp.into_body();
    assert_eq!(
        down.data().await.context("echo")??,
        Bytes::from_static(b"again")
    );
    Ok(())
}

#[tokio::test]
async fn http11_request_bodies_take_the_lean_path_whole() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut e = env().await?;
    add_service(&mut e.model, "echo", &[body_backend().await?]);
    e.model.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "echo", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": "echo.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "echo", "port": {"number": 80}}}}
        ]}}]}
    })));
    e.apply();
    // Length and chunked bodies over one keep-alive connection.
    let s = TcpStream::connect(e.http()).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
    tokio::spawn(conn);
    let big = vec![b'q'; 200_000];
    for (i, chunked) in [false, true, false].into_iter().enumerate() {
        let req = Request::post(format!("/b/{i}")).header("host", "echo.test");
        let body = if chunked {
            streamed(&big)
        } else {
            Full::new(Bytes::from(big.clone())).boxed()
        };
        let resp = send.send_request(req.body(body)?).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["server"], "skiff-ingress");
        let v = json_of(&String::from_utf8(
            resp.into_body().collect().await?.to_bytes().to_vec(),
        )?)?;
        assert_eq!(
            (v["method"].as_str(), v["len"].as_u64()),
            (Some("POST"), Some(200_000))
        );
        let te = v["headers"]["transfer-encoding"].as_str();
        assert_eq!(te == Some("chunked"), chunked, "{v}");
    }
    // Expect: 100-continue is answered by the proxy, then the body goes on; a chunked body
    // with trailers reaches the backend intact; the next request follows on the connection.
    let mut s = TcpStream::connect(e.http()).await?;
    s.write_all(
        b"POST /c HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).await?;
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await?;
    let answer = read_response(&mut s).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""body":"hello""#), "{answer}");
    s.write_all(b"PUT /d HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n")
        .await?;
    let answer = read_response(&mut s).await?;
    assert!(answer.contains(r#""body":"abcde""#), "{answer}");
    assert!(answer.contains(r#""method":"PUT""#), "{answer}");
    Ok(())
}

/// Reads one response whose body has a Content-Length (the test backends' answers).
async fn read_response(s: &mut TcpStream) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            bail!("closed after {:?}", String::from_utf8_lossy(&got));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .context("content-length")?;
            if body.len() >= len {
                return Ok(text);
            }
        }
    }
}
