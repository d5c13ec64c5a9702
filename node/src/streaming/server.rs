//! The kubelet's HTTPS listener: TLS with a required client certificate from the cluster CA,
//! the upstream kubelet routes, and protocol negotiation for the upgrades.
//!
//! Routes: `GET /healthz`, `GET /containerLogs/{ns}/{pod}/{container}`,
//! `GET|POST /exec|attach/{ns}/{pod}[/{uid}]/{container}`, `GET|POST /portForward/{ns}/{pod}[/{uid}]`.
//! Errors are Kubernetes `Status` JSON. HTTP/2 is offered by ALPN for plain requests; upgrades
//! are HTTP/1.1 (what the API server uses).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::remotecommand::{self, Mode};
use super::{ExecRequest, PodStreams, StreamError, portforward, status, ws};
use crate::logs::{self, LogError, LogOptions};

/// The kubelet's default port.
pub const DEFAULT_PORT: u16 = 10250;
const WS_EXEC_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const SPDY_EXEC_PROTOCOL: &str = "v4.channel.k8s.io";
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
const WS_PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

type Body = BoxBody<Bytes, Infallible>;

/// Where and how the server listens.
#[derive(Clone)]
pub struct StreamingConfig {
    /// Default `0.0.0.0:10250`.
    pub addr: SocketAddr,
    /// The kubelet serving certificate chain (PEM), e.g. from
    /// `skiff_apiserver::server::node_proxy::issue_kubelet_serving_cert`.
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// The cluster CA (PEM): clients must present a client certificate it signed (the API
    /// server's `kubelet-client.crt`).
    pub client_ca_pem: String,
}

impl std::fmt::Debug for StreamingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingConfig")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl StreamingConfig {
    /// On `0.0.0.0:10250`.
    pub fn new(cert_pem: String, key_pem: String, client_ca_pem: String) -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            cert_pem,
            key_pem,
            client_ca_pem,
        }
    }
}

/// A running streaming server.
#[derive(Debug)]
pub struct StreamingServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

fn tls_err(what: &'static str) -> impl FnOnce(String) -> StreamError {
    move |message| StreamError::Tls { what, message }
}

fn tls_config(config: &StreamingConfig) -> Result<rustls::ServerConfig, StreamError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls_err("client_ca_pem")(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| tls_err("client_ca_pem")(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(tls_err("client_ca_pem")(
            "no certificate in it: give the cluster CA (ca.crt)".into(),
        ));
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls_err("client_ca_pem")(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(config.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err("cert_pem")(e.to_string()))?;
    if chain.is_empty() {
        return Err(tls_err("cert_pem")("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(config.key_pem.as_bytes())
        .map_err(|e| tls_err("key_pem")(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("protocol versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("cert_pem/key_pem")(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

impl StreamingServer {
    /// Listens on `config.addr` and serves until `shutdown` resolves (open streams finish on
    /// their own).
    pub async fn start(
        config: StreamingConfig,
        streams: Arc<dyn PodStreams>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Self, StreamError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&config)?));
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| StreamError::Listen {
                    addr: config.addr,
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StreamError::Listen {
                addr: config.addr,
                source,
            })?;
        tracing::info!(%local_addr, "kubelet streaming server listening");
        let task = tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "kubelet server accept failed");
                            continue;
                        }
                    },
                };
                let acceptor = acceptor.clone();
                let streams = streams.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "kubelet TLS handshake refused");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let streams = streams.clone();
                        async move { Ok::<_, Infallible>(handle(req, streams).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if let Err(e) = builder
                        .serve_connection_with_upgrades(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "kubelet connection ended");
                    }
                });
            }
        });
        Ok(Self { local_addr, task })
    }

    /// The address actually bound (port 0 picks one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the accept loop has stopped.
    pub async fn wait(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn status_response(err: &StreamError) -> Response<Body> {
    let (code, _) = status::code_and_reason(err);
    let mut resp = Response::new(full(status::of_error(err).to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Decodes one query component (`+` is a space, `%XX` a byte).
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `key=value` pairs of a query string, in order.
pub(crate) fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn flag(query: &[(String, String)], name: &str) -> bool {
    query
        .iter()
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| matches!(v.as_str(), "" | "1" | "true" | "True"))
}

/// All values of a header, split on commas.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn handle(req: Request<Incoming>, streams: Arc<dyn PodStreams>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    tracing::debug!(method = %req.method(), path, "kubelet request");
    let result = match segments.as_slice() {
        ["healthz"] => Ok(Response::new(full("ok"))),
        ["containerLogs", ns, pod, container] => {
            container_logs(&req, streams.as_ref(), ns, pod, container).await
        }
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(req, streams, &ns, &pod, &container, Mode::Exec)
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(req, streams, &ns, &pod, &container, Mode::Attach)
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(req, streams, &ns, &pod)
        }
        _ => Err(StreamError::NotFound(format!(
            "the kubelet serves no {path} (try /containerLogs, /exec, /attach, /portForward)"
        ))),
    };
    result.unwrap_or_else(|e| status_response(&e))
}

async fn container_logs(
    req: &Request<Incoming>,
    streams: &dyn PodStreams,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<Response<Body>, StreamError> {
    if req.method() != Method::GET {
        return Err(StreamError::BadRequest(format!(
            "{} is not allowed on container logs: use GET",
            req.method()
        )));
    }
    let target = streams.container(ns, pod, container)?;
    let query = parse_query(req.uri().query());
    let opts = LogOptions::from_query(
        query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        jiff::Timestamp::now(),
    )
    .map_err(|e| StreamError::BadRequest(e.to_string()))?;
    let path = logs::select_instance(&target.log_dir, target.restart_count, opts.previous)
        .map_err(|e| match e {
            LogError::NoPrevious { .. } => StreamError::BadRequest(format!(
                "previous terminated container \"{container}\" in pod \"{pod}\" not found"
            )),
            other => StreamError::Internal(other.to_string()),
        })?;
    if !opts.follow && !path.exists() {
        return Err(StreamError::BadRequest(format!(
            "container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet"
        )));
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let log_path = path.clone();
    tokio::spawn(async move {
        if let Err(e) = logs::stream_logs(&log_path, &opts, tx).await {
            tracing::info!(path = %log_path.display(), error = %e, "reading container log");
        }
    });
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|b| b.map(|b| Ok::<_, Infallible>(Frame::data(b))))
    });
    let mut resp = Response::new(StreamBody::new(body).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

/// The upgrade the client asks for.
enum Upgrade {
    /// Websocket with the chosen subprotocol and the accept key.
    Ws {
        protocol: &'static str,
        accept: String,
    },
    /// SPDY/3.1 with the chosen `X-Stream-Protocol-Version`.
    Spdy { protocol: &'static str },
}

/// Picks the transport and subprotocol, or says why none fits.
fn negotiate(
    headers: &HeaderMap,
    ws_protocols: &[&'static str],
    spdy_protocol: &'static str,
) -> Result<Upgrade, StreamError> {
    let upgrade = headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if upgrade.eq_ignore_ascii_case("websocket") {
        let offered = header_values(headers, "sec-websocket-protocol");
        let protocol = offered
            .iter()
            .find_map(|o| ws_protocols.iter().find(|p| **p == o.as_str()))
            .ok_or_else(|| {
                StreamError::BadRequest(format!(
                    "no supported websocket subprotocol in {offered:?}: this kubelet speaks \
                     {ws_protocols:?}"
                ))
            })?;
        let key = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| StreamError::BadRequest("Sec-WebSocket-Key is missing".into()))?;
        return Ok(Upgrade::Ws {
            protocol,
            accept: ws::accept_key(key),
        });
    }
    if upgrade.to_ascii_lowercase().starts_with("spdy/3.1") {
        let offered = header_values(headers, "x-stream-protocol-version");
        if !offered.iter().any(|o| o == spdy_protocol) {
            return Err(StreamError::BadRequest(format!(
                "no supported X-Stream-Protocol-Version in {offered:?}: this kubelet speaks \
                 {spdy_protocol:?}"
            )));
        }
        return Ok(Upgrade::Spdy {
            protocol: spdy_protocol,
        });
    }
    Err(StreamError::BadRequest(
        "Upgrade request required: use SPDY/3.1 or websocket".into(),
    ))
}

fn switching(upgrade: &Upgrade) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::Ws { protocol, accept } => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert("sec-websocket-accept", v);
            }
        }
        Upgrade::Spdy { protocol } => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            h.insert(
                "x-stream-protocol-version",
                HeaderValue::from_static(protocol),
            );
        }
    }
    resp
}

fn remote_command(
    mut req: Request<Incoming>,
    streams: Arc<dyn PodStreams>,
    ns: &str,
    pod: &str,
    container: &str,
    mode: Mode,
) -> Result<Response<Body>, StreamError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(StreamError::BadRequest(format!(
            "{} is not allowed here: use GET or POST",
            req.method()
        )));
    }
    let target = streams.container(ns, pod, container)?;
    if mode == Mode::Attach && !streams.supports_attach() {
        return Err(StreamError::Unsupported(format!(
            "attach is not supported by this kubelet's runtime (container {container} of pod \
             {ns}/{pod}): use kubectl exec"
        )));
    }
    let query = parse_query(req.uri().query());
    let request = ExecRequest {
        command: remotecommand::commands(query.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        tty: flag(&query, "tty"),
        stdin: flag(&query, "stdin"),
        stdout: flag(&query, "stdout"),
        stderr: flag(&query, "stderr"),
    };
    if mode == Mode::Exec && request.command.is_empty() {
        return Err(StreamError::BadRequest(
            "you must specify at least one command for the container".into(),
        ));
    }
    if !(request.stdin || request.stdout || request.stderr) {
        return Err(StreamError::BadRequest(
            "you must specify at least 1 of stdin, stdout, stderr".into(),
        ));
    }
    let upgrade = negotiate(req.headers(), WS_EXEC_PROTOCOLS, SPDY_EXEC_PROTOCOL)?;
    let resp = switching(&upgrade);
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::info!(error = %e, "exec upgrade failed");
                return;
            }
        };
        match upgrade {
            Upgrade::Ws { protocol, .. } => {
                let v5 = protocol == WS_EXEC_PROTOCOLS[0];
                remotecommand::serve_ws(io, streams, target, request, mode, v5).await;
            }
            Upgrade::Spdy { .. } => {
                remotecommand::serve_spdy(io, streams, target, request, mode).await;
            }
        }
    });
    Ok(resp)
}

fn port_forward(
    mut req: Request<Incoming>,
    streams: Arc<dyn PodStreams>,
    ns: &str,
    pod: &str,
) -> Result<Response<Body>, StreamError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(StreamError::BadRequest(format!(
            "{} is not allowed here: use GET or POST",
            req.method()
        )));
    }
    let target = streams.pod(ns, pod)?;
    let upgrade = negotiate(
        req.headers(),
        &[WS_PORT_FORWARD_TUNNEL],
        PORT_FORWARD_PROTOCOL,
    )?;
    let resp = switching(&upgrade);
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::info!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        match upgrade {
            Upgrade::Ws { .. } => {
                portforward::serve_spdy(ws::byte_tunnel(io), streams, target).await;
            }
            Upgrade::Spdy { .. } => portforward::serve_spdy(io, streams, target).await,
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        let q = parse_query(Some(
            "command=sh&command=-c&command=echo+hi%3B+exit+3&stdin=true&tty",
        ));
        assert_eq!(
            q,
            vec![
                ("command".into(), "sh".into()),
                ("command".into(), "-c".into()),
                ("command".into(), "echo hi; exit 3".into()),
                ("stdin".into(), "true".into()),
                ("tty".into(), String::new()),
            ]
        );
        assert!(flag(&q, "stdin") && flag(&q, "tty") && !flag(&q, "stdout"));
        assert_eq!(decode_component("100%"), "100%");
    }

    #[test]
    fn negotiation_prefers_the_clients_order_and_explains_refusals() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        match negotiate(&h, WS_EXEC_PROTOCOLS, SPDY_EXEC_PROTOCOL) {
            Ok(Upgrade::Ws { protocol, .. }) => assert_eq!(protocol, "v5.channel.k8s.io"),
            _ => panic!("websocket v5 expected"),
        }
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("base64.channel.k8s.io"),
        );
        assert!(negotiate(&h, WS_EXEC_PROTOCOLS, SPDY_EXEC_PROTOCOL).is_err());

        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        h.append(
            "x-stream-protocol-version",
            HeaderValue::from_static("v3.channel.k8s.io"),
        );
        assert!(matches!(
            negotiate(&h, WS_EXEC_PROTOCOLS, SPDY_EXEC_PROTOCOL),
            Ok(Upgrade::Spdy {
                protocol: "v4.channel.k8s.io"
            })
        ));
        let err = negotiate(&HeaderMap::new(), WS_EXEC_PROTOCOLS, SPDY_EXEC_PROTOCOL);
        assert!(
            matches!(err, Err(StreamError::BadRequest(m)) if m.contains("Upgrade request required"))
        );
    }
}
