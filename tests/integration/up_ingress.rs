//! The ingress of `skiff up` end to end, as a user reaches it: the real binary, echo and
//! grpc-echo pods behind Services, Ingresses applied with kubectl, a TLS Secret made with
//! `kubectl create secret tls` from an rcgen CA, and clients on the host loopback ports.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use skiff_node::sandbox::list_netns;
use skiff_tests::skiff_up::SkiffUp;
use tokio::net::TcpStream;

use crate::apiserver::Kubectl;
use crate::controllers::eventually;
use crate::privileged::privileged;

const NS: &str = "ing";
const SECURE_HOST: &str = "secure.e2e.test";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ing
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ing}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
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
metadata: {name: api, namespace: ing}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: skiff.dev/echo
          env:
            - {name: SERVICE_NAME, value: api}
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: grpc, namespace: ing}
spec:
  replicas: 10
  selector: {matchLabels: {app: grpc}}
  template:
    metadata: {labels: {app: grpc}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: grpc
          image: skiff.dev/grpc-echo
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
          readinessProbe:
            tcpSocket: {port: 50051}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ing}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: ing}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080, targetPort: 3000}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: ing}
spec:
  selector: {app: grpc}
  ports: [{name: grpc, port: 50051, targetPort: 50051}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: main, namespace: ing}
spec:
  ingressClassName: skiff
  tls:
    - hosts: [secure.e2e.test]
      secretName: secure-tls
  rules:
    - host: app.e2e.test
      http:
        paths:
          - {path: /api, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
    - host: secure.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grpc
  namespace: ing
  annotations: {skiff.dev/backend-protocol: GRPC}
spec:
  rules:
    - host: grpc.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: grpc, port: {number: 50051}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: foreign, namespace: ing}
spec:
  ingressClassName: other
  rules:
    - host: foreign.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: wild, namespace: ing}
spec:
  rules:
    - host: "*.wild.e2e.test"
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: paths, namespace: ing}
spec:
  rules:
    - host: paths.e2e.test
      http:
        paths:
          - {path: /foo, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /foo/bar, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
          - {path: /foo/bar, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /Foo, pathType: Exact, backend: {service: {name: api, port: {number: 8080}}}}
          - {path: /exact, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
          - {path: /dir/, pathType: Prefix, backend: {service: {name: api, port: {number: 8080}}}}
          - {path: /impl, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 8080}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: defaults, namespace: ing}
spec:
  defaultBackend: {service: {name: api, port: {name: http}}}
  rules:
    - host: def.e2e.test
      http:
        paths:
          - {path: /only, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// A CA and a certificate for `SECURE_HOST` it signed.
pub(crate) struct Pki {
    pub(crate) ca: CertificateDer<'static>,
    pub(crate) leaf: CertificateDer<'static>,
    pub(crate) leaf_pem: String,
    pub(crate) key_pem: String,
}

/// A new CA named `ca_name` and a certificate for `SECURE_HOST` it signed.
fn test_pki(ca_name: &str) -> Result<Pki> {
    test_pki_for(ca_name, SECURE_HOST)
}

/// A new CA named `ca_name` and a certificate for `host` it signed.
pub(crate) fn test_pki_for(ca_name: &str, host: &str) -> Result<Pki> {
    let ca_params = || -> Result<rcgen::CertificateParams> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        Ok(p)
    };
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params()?, &ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec![host.to_owned()])?.signed_by(&key, &issuer)?;
    Ok(Pki {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        leaf_pem: leaf.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    client_config_trusting(std::slice::from_ref(ca), alpn)
}

pub(crate) fn client_config_trusting(
    cas: &[CertificateDer<'static>],
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(skiff_ingress::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

pub(crate) async fn tls_connect(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?)
}

/// One HTTP/1.1 connection to the plain listener; each request names its Host.
pub(crate) struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    pub(crate) async fn connect(addr: SocketAddr) -> Result<H1> {
        let tcp = TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(H1(send))
    }

    /// Status, `Location` and body.
    pub(crate) async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String, String)> {
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())?;
        // Until the connection task has taken in the last response, a send fails with
        // "connection was not ready" (a race a busy machine loses).
        self.0.ready().await?;
        let resp = self.0.send_request(req).await?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((
            status,
            location,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }
}

pub(crate) fn json(body: &str) -> Result<Value> {
    serde_json::from_str(body).with_context(|| format!("not the echo's JSON: {body:?}"))
}

/// A gRPC `skiff.echo.v1.Echo/Echo` request body: one uncompressed message `{message}`.
fn echo_request(message: &str) -> Bytes {
    let mut msg = vec![0x0a, message.len() as u8];
    msg.extend_from_slice(message.as_bytes());
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    Bytes::from(out)
}

/// The string fields of one gRPC-framed protobuf message, by field number.
fn proto_strings(frame: &[u8]) -> Result<Vec<(u64, String)>> {
    let msg = frame.get(5..).context("short gRPC frame")?;
    let varint = |b: &[u8], i: &mut usize| -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i).context("truncated varint")?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        anyhow::bail!("varint too long")
    };
    let (mut i, mut out) = (0, Vec::new());
    while i < msg.len() {
        let tag = varint(msg, &mut i)?;
        ensure!(tag & 7 == 2, "unexpected wire type in {msg:?}");
        let len = usize::try_from(varint(msg, &mut i)?)?;
        let s = msg.get(i..i + len).context("truncated field")?;
        out.push((tag >> 3, String::from_utf8_lossy(s).into_owned()));
        i += len;
    }
    Ok(out)
}

/// A loopback TCP port free right now.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The addresses in an Ingress's `status.loadBalancer.ingress`, space-separated.
async fn ingress_status(k: &Kubectl, name: &str) -> Result<String> {
    let jsonpath = "jsonpath={.status.loadBalancer.ingress[*].ip}";
    Ok(k.ok(&["get", "ingress", "-n", NS, name, "-o", jsonpath])
        .await?
        .trim()
        .to_owned())
}

/// The `service` an answer came from (empty unless a 200 with the echo's JSON).
async fn service_of(c: &mut H1, host: &str, path: &str) -> Result<(u16, String)> {
    let (status, _, body) = c.get(host, path).await?;
    if status != 200 {
        return Ok((status, String::new()));
    }
    let v = json(&body)?;
    ensure!(v["path"] == path, "{host}{path} reached the backend as {v}");
    Ok((status, v["service"].as_str().unwrap_or_default().to_owned()))
}

/// A running `skiff up` with its ingress on known loopback ports.
pub(crate) struct Up {
    pub(crate) up: SkiffUp,
    name: String,
    pub(crate) http: SocketAddr,
    pub(crate) https: SocketAddr,
    https_port: u16,
    pub(crate) k: Kubectl,
}

impl Up {
    /// `skiff up` named `prefix` + this process's id, data under `dir`, plus `extra` args.
    pub(crate) fn start(prefix: &str, dir: &std::path::Path, extra: &[&str]) -> Result<Up> {
        let name = format!("{prefix}{}", std::process::id());
        let (http_port, https_port) = (free_port()?, free_port()?);
        let (hp, sp) = (http_port.to_string(), https_port.to_string());
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--http-port".as_ref(),
            hp.as_ref(),
            "--https-port".as_ref(),
            sp.as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        let up = SkiffUp::start(&name, &dir.join("data"), &args)?;
        let k = Kubectl::default_binary(&up.kubeconfig);
        Ok(Up {
            up,
            name,
            http: ([127, 0, 0, 1], http_port).into(),
            https: ([127, 0, 0, 1], https_port).into(),
            https_port,
            k,
        })
    }

    /// SIGTERM: exit 0, the node namespace and the ingress ports gone.
    pub(crate) async fn stop(mut self) -> Result<()> {
        let status = self.up.stop()?;
        ensure!(status.success(), "skiff up exited with {status}");
        let netns = format!("skiff-{}", self.name);
        let left = list_netns(&netns);
        ensure!(left.is_empty(), "namespaces left after teardown: {left:?}");
        for addr in [self.http, self.https] {
            ensure!(
                TcpStream::connect(addr).await.is_err(),
                "{addr} still accepts after teardown"
            );
        }
        Ok(())
    }
}

/// A masked (client) WebSocket frame with FIN set.
pub(crate) fn ws_frame(opcode: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let mask = [0x5a, 0x17, 0xc3, 0x08];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n)?.to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    Ok(out)
}

/// One unmasked (server) frame: (FIN, opcode, payload).
pub(crate) async fn read_ws_frame(r: &mut TcpStream) -> Result<(bool, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    ensure!(head[1] & 0x80 == 0, "the server masked its frame");
    let len = match head[1] & 0x7f {
        126 => usize::from(r.read_u16().await?),
        127 => usize::try_from(r.read_u64().await?)?,
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok((head[0] & 0x80 != 0, head[0] & 0x0f, payload))
}

/// A WebSocket through the ingress to the echo's `/ws`: the handshake answered 101 with the
/// right accept key, a text and a binary message echoed with their types, a close echoed.
async fn websocket_echo(http: SocketAddr) -> Result<Option<()>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(http).await?;
    tcp.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.e2e.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await?;
    // The head byte by byte, so no frame byte is read with it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await?);
        ensure!(head.len() < 16 << 10, "endless response head");
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") {
        return Ok(None);
    }
    // RFC 6455 §1.3: the accept key of this Sec-WebSocket-Key.
    ensure!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "WebSocket handshake answer: {head}"
    );
    let big = vec![7u8; 1000];
    tcp.write_all(&ws_frame(0x1, "hello through the ingress".as_bytes())?)
        .await?;
    tcp.write_all(&ws_frame(0x2, &big)?).await?;
    let text = read_ws_frame(&mut tcp).await?;
    ensure!(
        text == (true, 0x1, b"hello through the ingress".to_vec()),
        "text echo: {text:?}"
    );
    let bin = read_ws_frame(&mut tcp).await?;
    ensure!(
        bin == (true, 0x2, big),
        "binary echo: {:?}",
        (bin.0, bin.1, bin.2.len())
    );
    tcp.write_all(&ws_frame(0x8, &1000u16.to_be_bytes())?)
        .await?;
    let close = read_ws_frame(&mut tcp).await?;
    ensure!(
        close == (true, 0x8, 1000u16.to_be_bytes().to_vec()),
        "close: {close:?}"
    );
    Ok(Some(()))
}

/// Replaces the Secret `secure-tls` with a certificate from a new CA while a loop makes one
/// HTTPS request per new connection (trusting both CAs): every request must succeed, and new
/// handshakes must come to present the new certificate (and only it, once they do).
async fn rotate_secret_mid_traffic(up: &Up, dir: &std::path::Path, old: &Pki) -> Result<()> {
    let new = test_pki("skiff e2e rotated CA")?;
    std::fs::write(dir.join("tls2.crt"), &new.leaf_pem)?;
    std::fs::write(dir.join("tls2.key"), &new.key_pem)?;
    let mut cfg = client_config_trusting(&[old.ca.clone(), new.ca.clone()], b"http/1.1")?;
    // Every handshake a full one: a resumed session keeps the certificate it was made with.
    Arc::make_mut(&mut cfg).resumption = rustls::client::Resumption::disabled();
    let https = up.https;
    let new_leaf = new.leaf.clone();
    let old_leaf = old.leaf.clone();
    // A keep-alive connection made on the old certificate, used again after the rotation.
    let kept = tls_connect(https, SECURE_HOST, cfg.clone()).await?;
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(kept)).await?;
    tokio::spawn(conn);
    let kept_get = || {
        hyper::Request::get("/kept")
            .header("host", SECURE_HOST)
            .body(Empty::<Bytes>::new())
    };
    let resp = kept.send_request(kept_get()?).await?;
    ensure!(resp.status() == 200, "kept connection: {}", resp.status());
    resp.into_body().collect().await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let traffic = tokio::spawn(async move {
        // (requests, served by the old cert, served by the new one, new after old seen again)
        let (mut n, mut olds, mut news) = (0u32, 0u32, 0u32);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) || news < 20 {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "after {n} requests ({olds} old cert, {news} new) the new cert is not served"
            );
            let tls = tls_connect(https, SECURE_HOST, cfg.clone())
                .await
                .with_context(|| format!("handshake {n}"))?;
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .cloned()
                .context("no peer certificate")?;
            if presented == new_leaf {
                news += 1;
            } else {
                ensure!(
                    presented == old_leaf,
                    "handshake {n}: an unknown certificate"
                );
                ensure!(
                    news == 0,
                    "handshake {n}: the old cert again after the new one"
                );
                olds += 1;
            }
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let req = hyper::Request::get("/rotating")
                .header("host", SECURE_HOST)
                .body(Empty::<Bytes>::new())?;
            let resp = send
                .send_request(req)
                .await
                .with_context(|| format!("request {n}"))?;
            ensure!(resp.status() == 200, "request {n}: {}", resp.status());
            resp.into_body().collect().await?;
            n += 1;
        }
        Ok((n, olds, news))
    });
    // Some traffic on the old certificate first, then the replacement.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let path = |f: &str| dir.join(f).display().to_string();
    let manifest =
        up.k.ok(&[
            "create",
            "secret",
            "tls",
            "secure-tls",
            "-n",
            NS,
            "--cert",
            &path("tls2.crt"),
            "--key",
            &path("tls2.key"),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await?;
    std::fs::write(dir.join("tls2.yaml"), manifest)?;
    up.k.ok(&["replace", "-f", &path("tls2.yaml")]).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (n, olds, news) = traffic.await??;
    ensure!(
        olds > 0,
        "no request was served by the old certificate ({n} requests)"
    );
    kept.ready().await?;
    let resp = kept
        .send_request(kept_get()?)
        .await
        .context("the connection made before the rotation")?;
    ensure!(
        resp.status() == 200,
        "kept connection after the rotation: {}",
        resp.status()
    );
    eprintln!(
        "TLS rotation: {n} HTTPS requests, {olds} on the old cert, {news} on the new, 0 failed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_ingress_routes_hosts_paths_tls_and_grpc_from_the_host() -> Result<()> {
    if !privileged("skiff up ingress") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let up = Up::start("ing", dir.path(), &[])?;
    let (http, https, https_port) = (up.http, up.https, up.https_port);
    let k = &up.k;

    // The IngressClass `skiff` exists, ours and default, before anything is applied.
    let class = k
        .ok(&["get", "ingressclass", "skiff", "-o", "json"])
        .await?;
    let class = json(&class)?;
    ensure!(
        class["spec"]["controller"] == "skiff.dev/ingress-controller"
            && class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
                == "true",
        "IngressClass skiff: {class}"
    );

    let pki = test_pki("skiff e2e test CA")?;
    let ca = pki.ca.clone();
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS)?;
    std::fs::write(dir.path().join("tls.crt"), &pki.leaf_pem)?;
    std::fs::write(dir.path().join("tls.key"), &pki.key_pem)?;
    let path = |f: &str| dir.path().join(f).display().to_string();
    k.ok(&["apply", "-f", &path("app.yaml")]).await?;
    k.ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "-n",
        NS,
        "--cert",
        &path("tls.crt"),
        "--key",
        &path("tls.key"),
    ])
    .await?;

    // Host + path rules, to the right Service: 100 requests over one keep-alive connection
    // reach all 10 web pods (balancing is per request).
    let web_pods = eventually(
        "100 requests on one connection reach the 10 web pods",
        || async {
            let mut c = H1::connect(http).await?;
            let mut pods = HashSet::new();
            for _ in 0..100 {
                let (status, _, body) = c.get("app.e2e.test", "/hello").await?;
                if status != 200 {
                    return Ok(None);
                }
                let v = json(&body)?;
                ensure!(v["service"] == "web" && v["path"] == "/hello", "{v}");
                pods.insert(v["pod"].as_str().unwrap_or_default().to_owned());
            }
            Ok((pods.len() == 10).then_some(pods))
        },
    )
    .await?;
    ensure!(
        web_pods.iter().all(|p| p.starts_with("web-")),
        "web pods: {web_pods:?}"
    );
    let mut c = H1::connect(http).await?;
    let api = eventually("/api goes to the api Service", || async {
        let (status, _, body) = H1::connect(http)
            .await?
            .get("app.e2e.test", "/api/v1/items?x=1")
            .await?;
        Ok((status == 200).then_some(body))
    })
    .await?;
    let api = json(&api)?;
    ensure!(
        api["service"] == "api"
            && api["path"] == "/api/v1/items?x=1"
            && api["pod"].as_str().is_some_and(|p| p.starts_with("api-"))
            && api["host"] == "app.e2e.test",
        "/api answer: {api}"
    );
    // Prefix is element-wise: /apix is not under /api.
    let (status, _, body) = c.get("app.e2e.test", "/apix").await?;
    ensure!(status == 200 && json(&body)?["service"] == "web", "{body}");

    // Wildcard hosts match exactly one label.
    eventually("the wildcard rule is served", || async {
        let mut c = H1::connect(http).await?;
        Ok(
            (service_of(&mut c, "a.wild.e2e.test", "/w").await? == (200, "api".into()))
                .then_some(()),
        )
    })
    .await?;
    for host in ["a.b.wild.e2e.test", "wild.e2e.test", "a.wild.e2e.test.x"] {
        ensure!(
            service_of(&mut c, host, "/w").await?.0 == 404,
            "{host} matched *.wild.e2e.test"
        );
    }

    // Path types: Prefix element-wise with trailing slashes ignored, Exact exact, case
    // sensitive, longest match wins, Exact beats Prefix, ImplementationSpecific as Prefix.
    eventually("the paths Ingress is served", || async {
        let mut c = H1::connect(http).await?;
        Ok((service_of(&mut c, "paths.e2e.test", "/foo").await?.0 == 200).then_some(()))
    })
    .await?;
    let (web, api) = ((200, "web".to_owned()), (200, "api".to_owned()));
    let not_found = (404, String::new());
    for (path, want) in [
        ("/foo", &web),
        ("/foo/", &web),
        ("/foo/baz", &web),
        ("/foo/baz/", &web),
        ("/foo?q=1", &web),
        ("/foobar", &not_found),
        ("/fo", &not_found),
        ("/foo/bar", &web),
        ("/foo/bar/", &api),
        ("/foo/bar/x", &api),
        ("/foo/barx", &web),
        ("/Foo", &api),
        ("/Foo/", &not_found),
        ("/FOO", &not_found),
        ("/fOo/baz", &not_found),
        ("/exact", &web),
        ("/exact?x=1", &web),
        ("/exact/", &not_found),
        ("/exact/x", &not_found),
        ("/Exact", &not_found),
        ("/dir", &api),
        ("/dir/", &api),
        ("/dir/x", &api),
        ("/dirx", &not_found),
        ("/impl/a", &api),
        ("/implx", &not_found),
        ("/", &not_found),
    ] {
        let got = service_of(&mut c, "paths.e2e.test", path).await?;
        ensure!(
            &got == want,
            "paths.e2e.test{path}: got {got:?}, want {want:?}"
        );
    }

    // A per-Ingress defaultBackend takes its hosts' unmatched paths, and only those.
    eventually("the defaults Ingress is served", || async {
        let mut c = H1::connect(http).await?;
        Ok(
            (service_of(&mut c, "def.e2e.test", "/only").await? == (200, "web".into()))
                .then_some(()),
        )
    })
    .await?;
    for (path, want) in [("/other", &api), ("/only/more", &api), ("/", &api)] {
        let got = service_of(&mut c, "def.e2e.test", path).await?;
        ensure!(
            &got == want,
            "def.e2e.test{path}: got {got:?}, want {want:?}"
        );
    }

    // WebSocket upgrade through the ingress to the echo's /ws.
    eventually("a WebSocket echo through the ingress", || {
        websocket_echo(http)
    })
    .await?;

    // Unmatched host: 404; a foreign class's host: no traffic either.
    let (status, _, _) = c.get("nothing.e2e.test", "/").await?;
    ensure!(status == 404, "unmatched host: {status}");
    let (status, _, _) = c.get("foreign.e2e.test", "/").await?;
    ensure!(status == 404, "foreign class host: {status}");

    // The TLS host over plain HTTP: 308 to the HTTPS port.
    let (status, location, _) = eventually("the TLS host redirects", || async {
        let r = H1::connect(http).await?.get(SECURE_HOST, "/x?y=1").await?;
        Ok((r.0 == 308).then_some(r))
    })
    .await?;
    ensure!(
        status == 308 && location == format!("https://{SECURE_HOST}:{https_port}/x?y=1"),
        "redirect to {location:?}"
    );

    // HTTPS with SNI, the certificate verified against the Secret's CA; HTTP/1.1 and h2.
    let body = eventually("HTTPS on the secret's certificate", || async {
        let tls = tls_connect(https, SECURE_HOST, client_config(&ca, b"http/1.1")?).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/secure")
            .header("host", SECURE_HOST)
            .body(Empty::<Bytes>::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status == 200).then(|| String::from_utf8_lossy(&body).into_owned()))
    })
    .await?;
    let v = json(&body)?;
    ensure!(
        v["service"] == "web" && v["headers"]["X-Forwarded-Proto"][0] == "https",
        "HTTPS answer: {v}"
    );
    let tls = tls_connect(https, SECURE_HOST, client_config(&ca, b"h2")?).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            hyper::Request::get(format!("https://{SECURE_HOST}/over-h2"))
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    ensure!(
        resp.status() == 200 && resp.version() == hyper::Version::HTTP_2,
        "h2 over TLS: {:?} {:?}",
        resp.status(),
        resp.version()
    );
    // An unknown name gets the generated default certificate, which our CA did not sign.
    let other = tls_connect(https, "other.e2e.test", client_config(&ca, b"http/1.1")?).await;
    ensure!(
        other.is_err(),
        "a name without a Secret was served a certificate our CA signed"
    );

    // Status: ours gets the host loopback address, the foreign class's Ingress nothing.
    eventually("status of the Ingress main", || async {
        Ok((ingress_status(k, "main").await? == "127.0.0.1").then_some(()))
    })
    .await?;
    let foreign = ingress_status(k, "foreign").await?;
    ensure!(
        foreign.is_empty(),
        "the foreign Ingress got status {foreign:?}"
    );

    // gRPC (backend-protocol GRPC): h2c from the client, HTTP/2 to the pods, balanced per
    // request so one client connection reaches every pod of the Deployment.
    let grpc_pods = eventually("gRPC over one connection reaches the 10 pods", || async {
        let tcp = TcpStream::connect(http).await?;
        // HEADERS and DATA are separate writes: without this, Nagle holds DATA back for the
        // server's delayed ACK (40 ms a call).
        tcp.set_nodelay(true)?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut pods = HashSet::new();
        for i in 0..100 {
            let req = hyper::Request::post("http://grpc.e2e.test/skiff.echo.v1.Echo/Echo")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(echo_request(&format!("hi{i}"))))?;
            send.ready().await?;
            let resp = send.send_request(req).await?;
            if resp.status() != 200 {
                return Ok(None);
            }
            let got = resp.into_body().collect().await?;
            let grpc_status = got
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if grpc_status != "0" {
                return Ok(None);
            }
            let fields = proto_strings(&got.to_bytes())?;
            ensure!(
                fields.contains(&(1, format!("hi{i}"))),
                "echo reply {fields:?}"
            );
            if let Some((_, pod)) = fields.iter().find(|(n, _)| *n == 2) {
                pods.insert(pod.clone());
            }
        }
        Ok((pods.len() == 10).then_some(pods))
    })
    .await?;
    ensure!(
        grpc_pods.iter().all(|p| p.starts_with("grpc-")),
        "gRPC pods: {grpc_pods:?}"
    );

    // The Secret replaced by one from a new CA while HTTPS traffic runs.
    rotate_secret_mid_traffic(&up, dir.path(), &pki).await?;

    up.stop().await
}

const FALLBACK_MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ing
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: fallback, namespace: ing}
spec:
  replicas: 1
  selector: {matchLabels: {app: fallback}}
  template:
    metadata: {labels: {app: fallback}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: skiff.dev/echo
          env:
            - {name: SERVICE_NAME, value: fallback}
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: fallback, namespace: ing}
spec:
  selector: {app: fallback}
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: only, namespace: ing}
spec:
  rules:
    - host: only.e2e.test
      http:
        paths:
          - {path: /x, pathType: Exact, backend: {service: {name: fallback, port: {number: 80}}}}
"#;

/// `skiff up --default-backend ing/fallback:http`: requests no rule matches (unknown host, or
/// a known host's unmatched path) go to that Service, unchanged, instead of a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_ingress_default_backend_flag_takes_unmatched_requests() -> Result<()> {
    if !privileged("skiff up ingress default backend") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let up = Up::start(
        "ingdb",
        dir.path(),
        &["--default-backend", "ing/fallback:http"],
    )?;
    let http = up.http;
    std::fs::write(dir.path().join("app.yaml"), FALLBACK_MANIFESTS)?;
    let path = dir.path().join("app.yaml").display().to_string();
    up.k.ok(&["apply", "-f", &path]).await?;
    eventually("an unknown host reaches the default backend", || async {
        let mut c = H1::connect(http).await?;
        Ok(
            (service_of(&mut c, "unknown.e2e.test", "/a/b?c=d").await? == (200, "fallback".into()))
                .then_some(()),
        )
    })
    .await?;
    let mut c = H1::connect(http).await?;
    let (status, _, body) = c.get("unknown.e2e.test", "/z").await?;
    let v = json(&body)?;
    ensure!(
        status == 200 && v["host"] == "unknown.e2e.test" && v["path"] == "/z",
        "default backend answer: {status} {v}"
    );
    // A host with rules: its matched path as routed, its unmatched ones to the default too.
    eventually("the only Ingress is served", || async {
        let mut c = H1::connect(http).await?;
        Ok((service_of(&mut c, "only.e2e.test", "/x").await?.0 == 200).then_some(()))
    })
    .await?;
    let got = service_of(&mut c, "only.e2e.test", "/y").await?;
    ensure!(got == (200, "fallback".into()), "only.e2e.test/y: {got:?}");
    up.stop().await
}
