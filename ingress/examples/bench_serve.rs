//! The benchmark side of `benches/ingress/run.sh`: the skiff ingress proxy serving a route
//! table compiled from generated Ingresses, without an API server (the same path the watch
//! loop takes: `Model` → `watch::rebuild` → `ArcSwap` snapshots → `IngressServer`).
//!
//! ```text
//! bench_serve serve  --routes N --backend ADDR --http ADDR --https ADDR --cert PEM --key PEM
//!                    [--threads T] [--host NAME] [--grpc-backend ADDR]
//!     # N Ingress rules (hosts r-0.bench.test ...) plus NAME (default bench.test; path /
//!     # Prefix, TLS with the given certificate, also the default one for clients without SNI;
//!     # no HTTPS redirect), all to the one backend ADDR; with --grpc-backend also NAME path
//!     # /skiff.echo.v1.Echo (Prefix, `skiff.dev/backend-protocol: GRPC`) to that gRPC server
//! bench_serve update --routes N [--reps R]
//!     # with N rules served: add one Ingress, rebuild (compile + swap), request its host
//!     # once on a new connection (must be 200); p50/p99 of the rebuild and of change → 200
//! ```
//!
//! Built in release for the measurement only:
//! `cargo build --release -p skiff-ingress --example bench_serve`.

#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};
use skiff_ingress::server::{IngressServer, Listeners, SharedState};
use skiff_ingress::tls::{CertSnapshot, certified_key};
use skiff_ingress::watch::{WatchConfig, rebuild};
use skiff_ingress::{Model, RoutingConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The host every load generator asks for unless `--host` says otherwise.
const BENCH_HOST: &str = "bench.test";

/// The gRPC service of `skiff.dev/grpc-echo`: the path prefix routed to `--grpc-backend`.
const GRPC_ECHO_PREFIX: &str = "/skiff.echo.v1.Echo";

fn main() -> Result<()> {
    // Logging as `skiff` sets it up, minus the access log (nginx and haproxy run with theirs
    // off): a subscriber at warn. With none at all, every span inside h2 and hyper would go
    // through tracing's `log` fallback (kube-client turns that feature on), a cost `skiff`
    // never pays.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument {flag:?}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        opts.insert(name.to_string(), value);
    }
    let num = |name: &str, default: usize| -> Result<usize> {
        opts.get(name)
            .map(|s| s.parse())
            .transpose()
            .with_context(|| format!("--{name}"))
            .map(|v| v.unwrap_or(default))
    };
    let routes = num("routes", 10_000)?;
    let threads = num("threads", 1)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    match command.as_str() {
        "serve" => {
            let need = |name: &str| {
                opts.get(name)
                    .cloned()
                    .with_context(|| format!("serve needs --{name}"))
            };
            let backend: SocketAddr = need("backend")?.parse().context("--backend")?;
            let http: SocketAddr = need("http")?.parse().context("--http")?;
            let https: SocketAddr = need("https")?.parse().context("--https")?;
            let crt = std::fs::read_to_string(need("cert")?).context("--cert")?;
            let key = std::fs::read_to_string(need("key")?).context("--key")?;
            let grpc: Option<SocketAddr> = opts
                .get("grpc-backend")
                .map(|a| a.parse().context("--grpc-backend"))
                .transpose()?;
            let host = opts.get("host").map_or(BENCH_HOST, String::as_str);
            let listen = Listen { http, https };
            runtime.block_on(serve(routes, host, backend, grpc, listen, &crt, &key))
        }
        "update" => runtime.block_on(update(routes, num("reps", 50)?)),
        _ => bail!("usage: bench_serve serve|update [--flags] (see the source's header)"),
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).context("generated object")
}

/// Our default IngressClass, Service `backend` with one endpoint, and `routes` one-rule
/// Ingresses r-0 … to it.
fn model(routes: usize, backend: SocketAddr) -> Result<Model> {
    let mut m = Model::default();
    m.add_class(&obj::<IngressClass>(json!({
        "metadata": {"name": "skiff", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "skiff.dev/ingress-controller"}
    }))?);
    m.add_service(&obj::<Service>(json!({
        "metadata": {"name": "backend", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }))?);
    m.add_slice(&obj::<EndpointSlice>(json!({
        "metadata": {"name": "backend-0", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "backend"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": backend.port()}],
        "endpoints": [{"addresses": [backend.ip().to_string()]}],
    }))?);
    for i in 0..routes {
        m.add_ingress(&ingress(&format!("r-{i}"), &format!("r-{i}.bench.test"))?);
    }
    Ok(m)
}

fn ingress(name: &str, host: &str) -> Result<Ingress> {
    obj(json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "backend", "port": {"number": 80}}}}
        ]}}]}
    }))
}

fn watch_config() -> WatchConfig {
    WatchConfig {
        routing: RoutingConfig::default(),
        status_address: None,
        debounce: Duration::ZERO,
    }
}

/// The proxy's plain and TLS listen addresses.
struct Listen {
    http: SocketAddr,
    https: SocketAddr,
}

async fn serve(
    routes: usize,
    host: &str,
    backend: SocketAddr,
    grpc: Option<SocketAddr>,
    Listen { http, https }: Listen,
    crt: &str,
    key: &str,
) -> Result<()> {
    let mut m = model(routes, backend)?;
    if let Some(grpc) = grpc {
        add_grpc_route(&mut m, host, grpc)?;
    }
    let mut secret: Secret = obj(json!({
        "metadata": {"name": "bench-cert", "namespace": "default"}, "type": "kubernetes.io/tls"
    }))?;
    secret.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ]
        .into(),
    );
    m.add_secret(&secret);
    // Plain HTTP and HTTPS both served on the bench host, as nginx and haproxy are configured.
    m.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "bench", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/ssl-redirect": "false"}},
        "spec": {
            "tls": [{"hosts": [host], "secretName": "bench-cert"}],
            "rules": [{"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "backend", "port": {"number": 80}}}}
            ]}}]
        }
    }))?);
    let state = SharedState::new()?;
    // The bench certificate is also the default: wrk and h2load send no SNI when connecting to
    // an IP address, and nginx and haproxy answer those with the same certificate.
    let bench_cert = certified_key(crt.as_bytes(), key.as_bytes())
        .map_err(|e| anyhow::anyhow!("--cert/--key: {e}"))?;
    state
        .certs
        .store(Arc::new(CertSnapshot::empty(Arc::new(bench_cert))));
    let problems = rebuild(&m, &watch_config(), &state, &mut HashMap::new());
    if !problems.is_empty() {
        bail!("generated Ingresses have problems: {problems:?}");
    }
    let server = IngressServer::start(
        Listeners {
            http: Some(std::net::TcpListener::bind(http).context("--http")?),
            https: Some(std::net::TcpListener::bind(https).context("--https")?),
            ..Default::default()
        },
        &state,
    )?;
    println!(
        "serving {} rules on http {http} https {https}",
        state.routes.load().rule_count()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

/// Service `grpc-echo` with the one endpoint `grpc`, and Ingress `bench-grpc` routing the
/// echo service's path on `host` to it over HTTP/2 (TLS from the `bench` Ingress's secret).
fn add_grpc_route(m: &mut Model, host: &str, grpc: SocketAddr) -> Result<()> {
    m.add_service(&obj::<Service>(json!({
        "metadata": {"name": "grpc-echo", "namespace": "default"},
        "spec": {"ports": [{"name": "grpc", "port": 50051}]}
    }))?);
    m.add_slice(&obj::<EndpointSlice>(json!({
        "metadata": {"name": "grpc-echo-0", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "grpc-echo"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": grpc.port()}],
        "endpoints": [{"addresses": [grpc.ip().to_string()]}],
    }))?);
    m.add_ingress(&obj::<Ingress>(json!({
        "metadata": {"name": "bench-grpc", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "annotations": {"skiff.dev/ssl-redirect": "false",
                                     "skiff.dev/backend-protocol": "GRPC"}},
        "spec": {
            "tls": [{"hosts": [host], "secretName": "bench-cert"}],
            "rules": [{"host": host, "http": {"paths": [
                {"path": GRPC_ECHO_PREFIX, "pathType": "Prefix",
                 "backend": {"service": {"name": "grpc-echo", "port": {"number": 50051}}}}
            ]}}]
        }
    }))?);
    Ok(())
}

/// A keep-alive HTTP/1.1 backend answering every request `200 ok`.
async fn tiny_backend() -> Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request per header block: the benchmark's requests carry no body.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(reply).await.is_err() {
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

/// One `GET /` for `host` on a fresh connection; the status code.
async fn status(proxy: SocketAddr, host: &str) -> Result<u16> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let line = String::from_utf8_lossy(&resp[..resp.len().min(12)]).into_owned();
    line.get(9..12)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status line in {line:?}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or_default()
}

async fn update(routes: usize, reps: usize) -> Result<()> {
    let backend = tiny_backend().await?;
    let mut m = model(routes, backend)?;
    let state = SharedState::new()?;
    let cfg = watch_config();
    let mut reported = HashMap::new();
    rebuild(&m, &cfg, &state, &mut reported);
    let server = IngressServer::start(
        Listeners {
            http: Some(std::net::TcpListener::bind("127.0.0.1:0")?),
            ..Default::default()
        },
        &state,
    )?;
    let proxy = server.http_addr.context("http listener")?;
    if status(proxy, "r-0.bench.test").await? != 200 {
        bail!("r-0.bench.test is not served");
    }
    let (mut swaps, mut served) = (Vec::new(), Vec::new());
    for i in 0..reps {
        let host = format!("new-{i}.bench.test");
        // The change as the watch loop sees it: the object is in the model, rebuild follows.
        let t0 = Instant::now();
        m.add_ingress(&ingress(&format!("new-{i}"), &host)?);
        rebuild(&m, &cfg, &state, &mut reported);
        swaps.push(t0.elapsed());
        let code = status(proxy, &host).await?;
        if code != 200 {
            bail!("{host} answered {code} after the swap");
        }
        served.push(t0.elapsed());
    }
    swaps.sort();
    served.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{} rules: rebuild (compile + swap) p50 {:.1} ms p99 {:.1} ms; change → first 200 p50 {:.1} ms p99 {:.1} ms ({reps} changes)",
        state.routes.load().rule_count(),
        ms(percentile(&swaps, 0.5)),
        ms(percentile(&swaps, 0.99)),
        ms(percentile(&served, 0.5)),
        ms(percentile(&served, 0.99)),
    );
    server.shutdown().await;
    Ok(())
}
