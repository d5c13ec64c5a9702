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
  replicas: 2
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
  replicas: 3
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
"#;

/// A CA and a certificate for `SECURE_HOST` it signed: (CA DER, leaf PEM, leaf key PEM).
fn test_pki() -> Result<(CertificateDer<'static>, String, String)> {
    let ca_params = || -> Result<rcgen::CertificateParams> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "skiff e2e test CA");
        Ok(p)
    };
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params()?.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params()?, &ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf =
        rcgen::CertificateParams::new(vec![SECURE_HOST.to_owned()])?.signed_by(&key, &issuer)?;
    Ok((ca.der().clone(), leaf.pem(), key.serialize_pem()))
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(skiff_ingress::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

async fn tls_connect(
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
struct H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl H1 {
    async fn connect(addr: SocketAddr) -> Result<H1> {
        let tcp = TcpStream::connect(addr).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(H1(send))
    }

    /// Status, `Location` and body.
    async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String, String)> {
        let req = hyper::Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())?;
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

fn json(body: &str) -> Result<Value> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_ingress_routes_hosts_paths_tls_and_grpc_from_the_host() -> Result<()> {
    if !privileged("skiff up ingress") {
        return Ok(());
    }
    let name = format!("ing{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let (http_port, https_port) = (free_port()?, free_port()?);
    let (hp, sp) = (http_port.to_string(), https_port.to_string());
    let mut up = SkiffUp::start(
        &name,
        &dir.path().join("data"),
        &[
            "--http-port".as_ref(),
            hp.as_ref(),
            "--https-port".as_ref(),
            sp.as_ref(),
        ],
    )?;
    let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
    let https: SocketAddr = ([127, 0, 0, 1], https_port).into();
    let k = Kubectl::default_binary(&up.kubeconfig);

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

    let (ca, crt, key) = test_pki()?;
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS)?;
    std::fs::write(dir.path().join("tls.crt"), crt)?;
    std::fs::write(dir.path().join("tls.key"), key)?;
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

    // Host + path rules, to the right Service, over one keep-alive connection that reaches
    // both web pods (balancing is per request).
    let web_pods = eventually("app.e2e.test reaches both web pods", || async {
        let mut c = H1::connect(http).await?;
        let mut pods = HashSet::new();
        for _ in 0..20 {
            let (status, _, body) = c.get("app.e2e.test", "/hello").await?;
            if status != 200 {
                return Ok(None);
            }
            let v = json(&body)?;
            ensure!(v["service"] == "web" && v["path"] == "/hello", "{v}");
            pods.insert(v["pod"].as_str().unwrap_or_default().to_owned());
        }
        Ok((pods.len() == 2).then_some(pods))
    })
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
        Ok((ingress_status(&k, "main").await? == "127.0.0.1").then_some(()))
    })
    .await?;
    let foreign = ingress_status(&k, "foreign").await?;
    ensure!(
        foreign.is_empty(),
        "the foreign Ingress got status {foreign:?}"
    );

    // gRPC (backend-protocol GRPC): h2c from the client, HTTP/2 to the pods, balanced per
    // request so one client connection reaches every pod of the Deployment.
    let grpc_pods = eventually("gRPC over one connection reaches the 3 pods", || async {
        let tcp = TcpStream::connect(http).await?;
        // HEADERS and DATA are separate writes: without this, Nagle holds DATA back for the
        // server's delayed ACK (40 ms a call).
        tcp.set_nodelay(true)?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let mut pods = HashSet::new();
        for i in 0..30 {
            let req = hyper::Request::post("http://grpc.e2e.test/skiff.echo.v1.Echo/Echo")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(echo_request(&format!("hi{i}"))))?;
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
        Ok((pods.len() == 3).then_some(pods))
    })
    .await?;
    ensure!(
        grpc_pods.iter().all(|p| p.starts_with("grpc-")),
        "gRPC pods: {grpc_pods:?}"
    );

    // SIGTERM: exit 0, the node namespace and the ingress ports gone.
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    let netns = format!("skiff-{name}");
    let left = list_netns(&netns);
    ensure!(left.is_empty(), "namespaces left after teardown: {left:?}");
    for addr in [http, https] {
        ensure!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts after teardown"
        );
    }
    Ok(())
}
