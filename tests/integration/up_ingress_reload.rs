//! The ingress of `skiff up` under reloads: a steady load of HTTP/1.1 keep-alive, new
//! connections, HTTPS (keep-alive and new handshakes) and HTTP/2 over TLS while, every 100 ms,
//! an Ingress is added or removed, a served Ingress's paths change, the Deployment behind the
//! load is scaled or loses a pod, and the TLS Secret is rotated. Zero failed requests, and a
//! WebSocket on an unrelated route keeps echoing throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::net::TcpStream;

use crate::controllers::eventually;
use crate::privileged::privileged;
use crate::up_ingress::{
    H1, Pki, Up, client_config_trusting, json, read_ws_frame, test_pki_for, tls_connect, ws_frame,
};

const NS: &str = "reload";
const HOST: &str = "load.e2e.test";
/// How many changes are made: ~10 s of churn.
const CHANGES: u32 = 100;
/// One change every this often (or as soon as the last one is done, on a busy machine).
const CHANGE_EVERY: Duration = Duration::from_millis(100);

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: reload
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: reload}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, set: stable}}
  template:
    metadata: {labels: {app: web, set: stable}}
    spec:
      containers:
        - name: echo
          image: skiff.dev/echo
          env:
            - {name: SERVICE_NAME, value: web}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-churn, namespace: reload}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, set: churn}}
  template:
    metadata: {labels: {app: web, set: churn}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: skiff.dev/echo
          env:
            - {name: SERVICE_NAME, value: web}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ws, namespace: reload}
spec:
  replicas: 1
  selector: {matchLabels: {app: ws}}
  template:
    metadata: {labels: {app: ws}}
    spec:
      containers:
        - name: echo
          image: skiff.dev/echo
          env:
            - {name: SERVICE_NAME, value: ws}
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: reload}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: ws, namespace: reload}
spec:
  selector: {app: ws}
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: main
  namespace: reload
  annotations: {skiff.dev/ssl-redirect: "false"}
spec:
  tls:
    - hosts: [load.e2e.test]
      secretName: load-tls
  rules:
    - host: load.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ws, namespace: reload}
spec:
  rules:
    - host: ws.e2e.test
      http:
        paths:
          - {path: /ws, pathType: Exact, backend: {service: {name: ws, port: {number: 80}}}}
"#;

/// Requests made and failures seen by the load clients.
#[derive(Default)]
struct Tally {
    ok: AtomicU32,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }
}

/// `Ok(())` for a 200 from a web pod with the echo's JSON for `path`, else what was wrong.
fn check_answer(status: u16, body: &[u8], path: &str) -> Result<()> {
    let body = String::from_utf8_lossy(body);
    ensure!(status == 200, "status {status}: {body}");
    let v = json(&body)?;
    ensure!(
        v["service"] == "web"
            && v["path"] == path
            && v["pod"].as_str().is_some_and(|p| p.starts_with("web-")),
        "not from a web pod: {v}"
    );
    Ok(())
}

fn get_req(path: &str) -> Result<hyper::Request<Empty<Bytes>>> {
    Ok(hyper::Request::get(path)
        .header("host", HOST)
        .body(Empty::<Bytes>::new())?)
}

/// HTTP/1.1 keep-alive on the plain listener: one connection for as long as it lasts.
async fn h1_keepalive(up: std::net::SocketAddr, id: usize, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let mut c: Option<H1> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/ka{id}/{n}");
        let r = async {
            if c.is_none() {
                c = Some(H1::connect(up).await?);
            }
            let conn = c.as_mut().context("connection")?;
            let (status, _, body) = conn.get(HOST, &path).await?;
            check_answer(status, body.as_bytes(), &path)
        }
        .await;
        match r {
            Ok(()) => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                t.fail(format!("h1 keep-alive {id} {path}: {e:#}"));
                c = None;
            }
        }
    }
}

/// HTTP/1.1, a new connection per request.
async fn h1_new_conns(up: std::net::SocketAddr, stop: Arc<AtomicBool>, t: Arc<Tally>) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/new/{n}");
        let r = async {
            let (status, _, body) = H1::connect(up).await?.get(HOST, &path).await?;
            check_answer(status, body.as_bytes(), &path)
        }
        .await;
        match r {
            Ok(()) => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => t.fail(format!("h1 new connection {path}: {e:#}")),
        }
    }
}

type TlsSend = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// What HTTPS clients trust and count: both Secret versions' leaves, handshakes per leaf.
#[derive(Clone)]
struct TlsSetup {
    cfg: Arc<rustls::ClientConfig>,
    leaves: [CertificateDer<'static>; 2],
    seen: Arc<[AtomicU32; 2]>,
}

/// HTTPS: `keepalive` reuses one connection, else a full handshake per request whose
/// certificate must be one of `leaves`; counts which leaf each handshake got.
async fn https_client(
    addr: std::net::SocketAddr,
    id: usize,
    keepalive: bool,
    tls_setup: TlsSetup,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) {
    let TlsSetup { cfg, leaves, seen } = tls_setup;
    let mut conn: Option<TlsSend> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let path = format!("/tls{id}/{n}");
        let r = async {
            if conn.is_none() {
                let tls = tls_connect(addr, HOST, cfg.clone()).await?;
                let presented = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .cloned()
                    .context("no peer certificate")?;
                let which = leaves
                    .iter()
                    .position(|l| *l == presented)
                    .context("a certificate from neither Secret version")?;
                seen[which].fetch_add(1, Ordering::Relaxed);
                let (send, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(c);
                conn = Some(send);
            }
            let send = conn.as_mut().context("connection")?;
            send.ready().await?;
            let resp = send.send_request(get_req(&path)?).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            check_answer(status, &body, &path)
        }
        .await;
        match r {
            Ok(()) => {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                t.fail(format!("https {id} (keep-alive {keepalive}) {path}: {e:#}"));
                conn = None;
            }
        }
        if !keepalive {
            conn = None;
        }
    }
}

/// HTTP/2 over TLS: one connection, four streams at a time.
async fn h2_client(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    t: Arc<Tally>,
) {
    let mut send: Option<hyper::client::conn::http2::SendRequest<Empty<Bytes>>> = None;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if send.is_none() {
            let r = async {
                let tls = tls_connect(addr, HOST, cfg.clone()).await?;
                let (s, c) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await?;
                tokio::spawn(c);
                anyhow::Ok(s)
            }
            .await;
            match r {
                Ok(s) => send = Some(s),
                Err(e) => {
                    t.fail(format!("h2 connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = send.clone() else { continue };
        let batch = (0..4).map(|_| {
            n += 1;
            let path = format!("/h2/{n}");
            let mut s = s.clone();
            async move {
                let req = hyper::Request::get(format!("https://{HOST}{path}"))
                    .body(Empty::<Bytes>::new())?;
                let resp = s.send_request(req).await?;
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await?.to_bytes();
                check_answer(status, &body, &path).with_context(|| format!("h2 {path}"))
            }
        });
        for r in futures::future::join_all(batch).await {
            match r {
                Ok(()) => {
                    t.ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    t.fail(format!("{e:#}"));
                    send = None;
                }
            }
        }
    }
}

/// An established WebSocket to the echo's `/ws` on the unrelated host: one text message every
/// 250 ms, each echoed; returns how many round trips were made.
async fn websocket(http: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Result<u32> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = eventually("the WebSocket handshake is answered 101", || async {
        let mut tcp = TcpStream::connect(http).await?;
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: ws.e2e.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await?);
            ensure!(head.len() < 16 << 10, "endless response head");
        }
        Ok(head.starts_with(b"HTTP/1.1 101").then_some(tcp))
    })
    .await?;
    let mut rounds = 0u32;
    loop {
        let done = stop.load(Ordering::Relaxed);
        let msg = format!("message {rounds} across the reloads");
        tcp.write_all(&ws_frame(0x1, msg.as_bytes())?).await?;
        let got = tokio::time::timeout(Duration::from_secs(5), read_ws_frame(&mut tcp))
            .await
            .with_context(|| format!("no echo of message {rounds}"))?
            .with_context(|| format!("WebSocket broken at message {rounds}"))?;
        ensure!(got == (true, 0x1, msg.clone().into_bytes()), "echo {got:?}");
        rounds += 1;
        if done {
            return Ok(rounds);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Secret `load-tls` holding `pki`'s certificate and key.
fn tls_secret(pki: &Pki) -> Secret {
    let mut s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "load-tls", "namespace": NS},
        "type": "kubernetes.io/tls",
    }))
    .unwrap_or_default();
    s.data = Some(
        [
            (
                "tls.crt".to_owned(),
                ByteString(pki.leaf_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(pki.key_pem.clone().into_bytes()),
            ),
        ]
        .into(),
    );
    s
}

/// A pod whose Ready condition is true: deleting it removes an endpoint. (A pod deleted
/// before its ReplicaSet's cache saw it stalls that ReplicaSet for a minute — a controller
/// matter, kept out of this test by deleting only pods that became ready.)
fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What the churn changed, to check its end state is what is served.
#[derive(Debug, Default)]
struct Churned {
    changes: u32,
    /// The extra path of Ingress `main` last applied.
    last_extra: Option<String>,
    /// Whether Ingress `churn` exists at the end.
    churn_exists: bool,
    pods_deleted: u32,
    scales: u32,
    rotations: u32,
}

/// `CHANGES` times, one every `CHANGE_EVERY`, a change in turn: Ingress `churn` (another host)
/// created or deleted; Ingress `main` given a new extra path; `web-churn` (half of the
/// Service `web`) scaled 2 ↔ 4 or one of its pods deleted; Secret `load-tls` switched to the
/// other certificate. The Deployment `web` keeps two pods ready throughout, so the Service
/// always has endpoints (without any, 503 is the right answer).
async fn churn(client: kube::Client, pkis: [Pki; 2]) -> Result<Churned> {
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client, NS);
    let mut out = Churned::default();
    let mut tick = tokio::time::interval(CHANGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replicas = 2;
    for i in 0..CHANGES {
        tick.tick().await;
        match i % 4 {
            0 if !out.churn_exists => {
                let ing: Ingress = serde_json::from_value(json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": "churn", "namespace": NS},
                    "spec": {"rules": [
                        {"host": "churn.e2e.test", "http": {"paths": [
                            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}
                        ]}},
                        {"host": "*.churn.e2e.test", "http": {"paths": [
                            {"path": "/x", "pathType": "Exact", "backend": {"service": {"name": "ws", "port": {"name": "http"}}}}
                        ]}}
                    ]}
                }))?;
                ingresses
                    .create(&PostParams::default(), &ing)
                    .await
                    .context("create Ingress churn")?;
                out.churn_exists = true;
            }
            0 => {
                ingresses
                    .delete("churn", &DeleteParams::default())
                    .await
                    .context("delete Ingress churn")?;
                out.churn_exists = false;
            }
            1 => {
                let extra = format!("/extra-{i}");
                let patch = json!({"spec": {"rules": [{"host": HOST, "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": extra, "pathType": "Exact", "backend": {"service": {"name": "ws", "port": {"number": 80}}}}
                ]}}]}});
                ingresses
                    .patch("main", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("patch Ingress main")?;
                out.last_extra = Some(extra);
            }
            2 if (i / 4) % 2 == 0 => {
                replicas = if replicas == 2 { 4 } else { 2 };
                let patch = json!({"spec": {"replicas": replicas}});
                deployments
                    .patch("web-churn", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("scale web-churn")?;
                out.scales += 1;
            }
            2 => {
                let list = pods
                    .list(&ListParams::default().labels("app=web,set=churn"))
                    .await
                    .context("list web pods")?;
                let victim = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                    .filter_map(|p| p.metadata.name.clone())
                    .next();
                if let Some(name) = victim {
                    match pods.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => out.pods_deleted += 1,
                        // Scaled down by its ReplicaSet meanwhile.
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("delete pod {name}"));
                        }
                    }
                }
            }
            _ => {
                let pki = &pkis[(out.rotations as usize + 1) % 2];
                secrets
                    .patch(
                        "load-tls",
                        &PatchParams::default(),
                        &Patch::Merge(&tls_secret(pki)),
                    )
                    .await
                    .context("rotate Secret load-tls")?;
                out.rotations += 1;
            }
        }
        out.changes += 1;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_ingress_serves_every_request_while_everything_changes() -> Result<()> {
    if !privileged("skiff up ingress reload") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let up = Up::start("ingrl", dir.path(), &[])?;
    let (http, https) = (up.http, up.https);
    let pkis = [
        test_pki_for("skiff reload CA 1", HOST)?,
        test_pki_for("skiff reload CA 2", HOST)?,
    ];
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS)?;
    let path = dir.path().join("app.yaml").display().to_string();
    up.k.ok(&["apply", "-f", &path]).await?;
    let client = up.up.client().await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(&PostParams::default(), &tls_secret(&pkis[0]))
        .await?;

    // Everything served before the load starts: the 4 web pods and the HTTPS certificate.
    eventually("the 4 web pods answer", || async {
        let mut c = H1::connect(http).await?;
        let mut pods = std::collections::HashSet::new();
        for _ in 0..30 {
            let (status, _, body) = c.get(HOST, "/warm").await?;
            if status != 200 {
                return Ok(None);
            }
            pods.insert(json(&body)?["pod"].as_str().unwrap_or_default().to_owned());
        }
        Ok((pods.len() == 4).then_some(()))
    })
    .await?;
    let mut cfg = client_config_trusting(&[pkis[0].ca.clone(), pkis[1].ca.clone()], b"http/1.1")?;
    // Full handshakes only: a resumed session keeps the certificate it was made with.
    Arc::make_mut(&mut cfg).resumption = rustls::client::Resumption::disabled();
    let mut h2cfg = client_config_trusting(&[pkis[0].ca.clone(), pkis[1].ca.clone()], b"h2")?;
    Arc::make_mut(&mut h2cfg).resumption = rustls::client::Resumption::disabled();
    eventually("HTTPS on the Secret's certificate", || async {
        let tls = tls_connect(https, HOST, cfg.clone()).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = send.send_request(get_req("/warm")?).await?;
        Ok((resp.status() == 200).then_some(()))
    })
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let seen = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
    let leaves = [pkis[0].leaf.clone(), pkis[1].leaf.clone()];
    let ws = tokio::spawn(websocket(http, stop.clone()));
    let mut load = Vec::new();
    for id in 0..3 {
        load.push(tokio::spawn(h1_keepalive(
            http,
            id,
            stop.clone(),
            tally.clone(),
        )));
    }
    load.push(tokio::spawn(h1_new_conns(
        http,
        stop.clone(),
        tally.clone(),
    )));
    for (id, keepalive) in [(0, true), (1, true), (2, false)] {
        load.push(tokio::spawn(https_client(
            https,
            id,
            keepalive,
            TlsSetup {
                cfg: cfg.clone(),
                leaves: leaves.clone(),
                seen: seen.clone(),
            },
            stop.clone(),
            tally.clone(),
        )));
    }
    load.push(tokio::spawn(h2_client(
        https,
        h2cfg,
        stop.clone(),
        tally.clone(),
    )));

    // Some load before the first change, then the churn, then load on the settled state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let churn_start = std::time::Instant::now();
    let churned = churn(client, pkis).await;
    let churn_took = churn_start.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await?;
    }
    let ws_rounds = ws.await?.context("the WebSocket on the unrelated route")?;
    let churned = churned?;
    // For the log: whether the churned Deployment has caught up (a controller matter).
    if let Ok(d) = Api::<Deployment>::namespaced(up.up.client().await?, NS)
        .get("web-churn")
        .await
    {
        eprintln!(
            "web-churn: spec.replicas {:?}, status {:?}",
            d.spec.and_then(|s| s.replicas),
            d.status.map(|s| (s.replicas, s.ready_replicas))
        );
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failures = tally.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let handshakes = [
        seen[0].load(Ordering::Relaxed),
        seen[1].load(Ordering::Relaxed),
    ];
    eprintln!(
        "reload: {} changes in {churn_took:?} ({churned:?}), {ok} requests ok, {} failed, handshakes per cert \
         {handshakes:?}, {ws_rounds} WebSocket round trips",
        churned.changes,
        failures.len()
    );
    ensure!(
        failures.is_empty(),
        "{} of {} requests failed, first ones: {:#?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(20)]
    );
    ensure!(ok >= 1000, "only {ok} requests during the churn");
    ensure!(
        handshakes[0] > 0 && handshakes[1] > 0,
        "both certificates are served over the rotations: {handshakes:?}"
    );
    ensure!(ws_rounds >= 40, "only {ws_rounds} WebSocket round trips");

    // The churn's last state is what is served.
    let extra = churned.last_extra.context("no path change")?;
    eventually("the last path change is served", || async {
        let mut c = H1::connect(http).await?;
        let (status, _, body) = c.get(HOST, &extra).await?;
        Ok((status == 200 && json(&body)?["service"] == "ws").then_some(()))
    })
    .await?;
    let want = if churned.churn_exists { 200 } else { 404 };
    eventually("the churn Ingress's last state is served", || async {
        let mut c = H1::connect(http).await?;
        Ok((c.get("churn.e2e.test", "/").await?.0 == want).then_some(()))
    })
    .await?;
    up.stop().await
}
