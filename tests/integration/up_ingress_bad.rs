//! Bad input to the ingress of `skiff up`, as a user sends it: malformed and oversized
//! requests get a clear 4xx from us; an Ingress with a bad path is refused by the API server
//! with the field named (what was stored stays served); an Ingress naming a missing TLS Secret
//! gets an Event naming the Secret, its host is served on the default certificate, and other
//! hosts keep theirs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::controllers::eventually;
use crate::privileged::privileged;
use crate::up_ingress::{H1, Up, client_config_trusting, json, test_pki_for, tls_connect};

const NS: &str = "bad";
const GOOD: &str = "good.e2e.test";
const NOSECRET: &str = "nosecret.e2e.test";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: bad
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: bad}
spec:
  replicas: 1
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
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: bad}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 3000}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: good
  namespace: bad
  annotations: {skiff.dev/proxy-body-size: 1k, skiff.dev/ssl-redirect: "false"}
spec:
  tls:
    - hosts: [good.e2e.test]
      secretName: good-tls
  rules:
    - host: good.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: nosecret
  namespace: bad
  annotations: {skiff.dev/ssl-redirect: "false"}
spec:
  tls:
    - hosts: [nosecret.e2e.test]
      secretName: missing-tls
  rules:
    - host: nosecret.e2e.test
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// `good` again with a relative path: refused by the API server.
const BAD_PATH: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: good
  namespace: bad
  annotations: {skiff.dev/proxy-body-size: 1k, skiff.dev/ssl-redirect: "false"}
spec:
  tls:
    - hosts: [good.e2e.test]
      secretName: good-tls
  rules:
    - host: good.e2e.test
      http:
        paths:
          - {path: api, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// Sends `bytes` on a new connection and returns everything answered until the server closes
/// (or 10 s pass).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    // The server may answer and close before reading everything: write errors are expected.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The answer is `status` from us (our `Server` header) and says `why`.
fn refused(answer: &str, status: u16, why: &str) -> Result<()> {
    ensure!(
        answer.starts_with(&format!("HTTP/1.1 {status} ")),
        "want {status}: {answer:?}"
    );
    ensure!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nserver: skiff-ingress\r\n"),
        "not our answer: {answer:?}"
    );
    ensure!(answer.contains(why), "want {why:?} in {answer:?}");
    Ok(())
}

/// Trusts any certificate: to see which one the ingress presents.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate presented for `sni`, and a GET of `/` for that host over the connection.
async fn presented(https: SocketAddr, sni: &str) -> Result<(CertificateDer<'static>, u16)> {
    let provider = skiff_ingress::tls::provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tls_connect(https, sni, Arc::new(cfg)).await?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .context("no certificate")?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            hyper::Request::get("/")
                .header("host", sni)
                .body(http_body_util::Empty::<bytes::Bytes>::new())?,
        )
        .await?;
    Ok((cert, resp.status().as_u16()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_ingress_answers_bad_input_clearly_and_keeps_serving() -> Result<()> {
    if !privileged("skiff up ingress bad input") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let up = Up::start("ingbad", dir.path(), &[])?;
    let (http, https) = (up.http, up.https);
    let k = &up.k;
    let pki = test_pki_for("skiff bad-input CA", GOOD)?;
    let path = |f: &str| dir.path().join(f).display().to_string();
    std::fs::write(dir.path().join("app.yaml"), MANIFESTS)?;
    std::fs::write(dir.path().join("bad-path.yaml"), BAD_PATH)?;
    std::fs::write(dir.path().join("tls.crt"), &pki.leaf_pem)?;
    std::fs::write(dir.path().join("tls.key"), &pki.key_pem)?;
    k.ok(&["apply", "-f", &path("app.yaml")]).await?;
    k.ok(&[
        "create",
        "secret",
        "tls",
        "good-tls",
        "-n",
        NS,
        "--cert",
        &path("tls.crt"),
        "--key",
        &path("tls.key"),
    ])
    .await?;
    eventually("good.e2e.test is served", || async {
        let (status, _, body) = H1::connect(http).await?.get(GOOD, "/").await?;
        Ok((status == 200 && json(&body)?["service"] == "web").then_some(()))
    })
    .await?;

    // Malformed requests: 400 from us, with the reason.
    refused(
        &raw(http, b"GET / HTTP/1.1 extra\r\nHost: good.e2e.test\r\n\r\n").await?,
        400,
        "malformed request head",
    )?;
    refused(
        &raw(
            http,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        )
        .await?,
        400,
        "malformed request head",
    )?;
    refused(
        &raw(
            http,
            b"GET / HTTP/1.1\r\nHost: good.e2e.test\r\nNo Colon Here\r\n\r\n",
        )
        .await?,
        400,
        "malformed request head",
    )?;
    // Oversized head: 431.
    let mut big = format!("GET / HTTP/1.1\r\nHost: {GOOD}\r\nCookie: ").into_bytes();
    big.extend(std::iter::repeat_n(b'c', 64 << 10));
    big.extend(b"\r\n\r\n");
    refused(&raw(http, &big).await?, 431, "larger than 32768 bytes")?;
    // A body over the Ingress's proxy-body-size (1k): 413, declared or streamed.
    let mut post = format!(
        "POST /upload HTTP/1.1\r\nHost: {GOOD}\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    post.extend(std::iter::repeat_n(b'x', 2000));
    refused(
        &raw(http, &post).await?,
        413,
        "limit of this route is 1024 bytes",
    )?;
    let mut chunked = format!(
        "POST /upload HTTP/1.1\r\nHost: {GOOD}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend(b"200\r\n");
        chunked.extend(std::iter::repeat_n(b'x', 0x200));
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    refused(&raw(http, &chunked).await?, 413, "limit of 1024 bytes")?;
    let mut small = format!(
        "POST /upload HTTP/1.1\r\nHost: {GOOD}\r\nContent-Length: 500\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    small.extend(std::iter::repeat_n(b'x', 500));
    let answer = raw(http, &small).await?;
    ensure!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");

    // An Ingress with a relative path: refused by the API server with the field named, and
    // the stored `good` (path `/`) still there and served.
    let run = k.run(&["apply", "-f", &path("bad-path.yaml")]).await?;
    ensure!(!run.ok, "a relative path was accepted: {}", run.stdout);
    ensure!(
        run.stderr.contains("spec.rules[0].http.paths[0].path")
            && run.stderr.contains("must be an absolute path"),
        "kubectl said: {}",
        run.stderr
    );
    let stored = k
        .ok(&[
            "get",
            "ingress",
            "-n",
            NS,
            "good",
            "-o",
            "jsonpath={.spec.rules[0].http.paths[0].path}",
        ])
        .await?;
    ensure!(stored.trim() == "/", "stored path now {stored:?}");
    let (status, _, _) = H1::connect(http).await?.get(GOOD, "/after").await?;
    ensure!(
        status == 200,
        "good.e2e.test after the refused update: {status}"
    );

    // A missing TLS Secret: a Warning Event naming it, ...
    let events = eventually("an Event on Ingress nosecret", || async {
        let out = k
            .ok(&[
                "get",
                "events",
                "-n",
                NS,
                "--field-selector",
                "involvedObject.name=nosecret",
                "-o",
                "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
            ])
            .await?;
        Ok(out.contains("bad/missing-tls").then_some(out))
    })
    .await?;
    ensure!(events.contains("Warning"), "{events}");
    // ... its host served on the default certificate (the one an unknown name gets), ...
    let (default_cert, _) = presented(https, "unknown.e2e.test").await?;
    let (cert, status) = presented(https, NOSECRET).await?;
    ensure!(
        cert == default_cert,
        "nosecret.e2e.test was not given the default certificate"
    );
    ensure!(status == 200, "nosecret.e2e.test over HTTPS: {status}");
    ensure!(
        cert != pki.leaf,
        "the good Secret's certificate for another host"
    );
    // ... and the other host keeps its own, verified against its CA.
    let cfg = client_config_trusting(std::slice::from_ref(&pki.ca), b"http/1.1")?;
    let tls = tls_connect(https, GOOD, cfg).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .context("no certificate")?;
    ensure!(
        leaf == pki.leaf,
        "good.e2e.test is not on its Secret's certificate"
    );
    // Plain HTTP to the host without a Secret still works (no redirect asked for).
    let (status, _, _) = H1::connect(http).await?.get(NOSECRET, "/").await?;
    ensure!(status == 200, "nosecret.e2e.test over HTTP: {status}");
    up.stop().await
}
