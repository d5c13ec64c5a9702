//! `skiff.dev/echo`: answers every request with a JSON description of it (HTTP/1.1 and HTTP/2 cleartext on one port).
//!
//! The JSON is the one of the Kubernetes ingress conformance echo server: `path`, `host`,
//! `method`, `proto`, `headers` (Go's canonical names → values, keys sorted as Go's encoder
//! sorts them), `namespace`, `ingress`, `service`, `pod`. `/health` answers an empty 200.
//! A WebSocket handshake on `/ws` is upgraded and every message echoed back (`echo_ws`).

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::echo_ws;
use super::listen::{ServeError, accept_loop, serve_until_signal};

/// The port when neither `--port` nor `PORT` is given.
pub const DEFAULT_PORT: u16 = 3000;

/// Request log lines waiting for stdout; beyond this they are counted and dropped, so a slow
/// log reader never slows the server.
const LOG_QUEUE: usize = 8192;

/// What the echo server reports about where it runs (from the pod's env).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoIdentity {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

impl EchoIdentity {
    /// From `NAMESPACE`, `INGRESS_NAME`, `SERVICE_NAME`, `POD_NAME` (unset = empty).
    pub fn from_env() -> EchoIdentity {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        EchoIdentity {
            namespace: var("NAMESPACE"),
            ingress: var("INGRESS_NAME"),
            service: var("SERVICE_NAME"),
            pod: var("POD_NAME"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub port: u16,
    /// `None`: `[::]` dual-stack (else `0.0.0.0`).
    pub host: Option<IpAddr>,
    pub identity: EchoIdentity,
    /// One line per request on stdout: `METHOD PATH STATUS REMOTE PROTO`.
    pub log_requests: bool,
}

impl EchoConfig {
    /// `port` on every address, identity from the env, request logging on.
    pub fn new(port: u16) -> EchoConfig {
        EchoConfig {
            port,
            host: None,
            identity: EchoIdentity::from_env(),
            log_requests: true,
        }
    }
}

/// Why the echo server could not start.
pub type EchoError = ServeError;

/// Run the echo server until SIGTERM/SIGINT, then finish open requests and return. Prints
/// `skiff echo listening on ADDR` on stdout once it accepts connections.
pub async fn serve(config: EchoConfig) -> Result<(), EchoError> {
    let (host, port) = (config.host, config.port);
    serve_until_signal(
        "echo",
        "HTTP/1.1 and HTTP/2 cleartext",
        host,
        port,
        |listener, shutdown| serve_on(listener, config, shutdown),
    )
    .await
}

/// Serve on an existing listener until `shutdown` resolves (for embedding and tests).
pub async fn serve_on(
    listener: TcpListener,
    config: EchoConfig,
    shutdown: impl Future<Output = ()>,
) {
    let logger = config.log_requests.then(RequestLog::start);
    let state = Arc::new(State {
        identity: config.identity,
        log: logger.as_ref().map(|(log, _)| log.clone()),
    });
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    accept_loop(listener, shutdown, |stream, remote, watcher| {
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(state.answer(req, remote).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
        });
    })
    .await;
    drop(state);
    if let Some((log, thread)) = logger {
        drop(log);
        // The thread drains what is queued once every sender is gone.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

struct State {
    identity: EchoIdentity,
    log: Option<RequestLog>,
}

impl State {
    async fn answer(
        &self,
        mut req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Full<Bytes>> {
        if let Some(key) = echo_ws::upgrade_key(&req) {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let result = match upgrade.await {
                    Ok(io) => echo_ws::echo(TokioIo::new(io)).await,
                    Err(e) => Err(std::io::Error::other(e)),
                };
                if let Err(e) = result {
                    tracing::debug!(%remote, error = %e, "websocket echo ended");
                }
            });
            if let Some(log) = &self.log {
                let status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
                log.line(format!("GET {} {status} {remote} HTTP/1.1", req.uri()));
            }
            return echo_ws::switching_protocols(&key);
        }
        let (parts, mut body) = req.into_parts();
        let path = request_uri(&parts.uri, parts.version);
        let health = parts.uri.path() == "/health";
        let response = if health {
            Response::new(Full::new(Bytes::new()))
        } else {
            let json = describe(&parts, &path, &self.identity);
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        };
        // Read what the client sent, so an HTTP/1.1 connection stays reusable.
        while !body.is_end_stream() {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        if let Some(log) = &self.log {
            log.line(format!(
                "{} {} {} {} {}",
                parts.method,
                path,
                StatusCode::OK.as_u16(),
                remote,
                proto(parts.version)
            ));
        }
        response
    }
}

/// Go's `r.RequestURI`: the request target as received (HTTP/2: `:path`).
fn request_uri(uri: &http::Uri, version: Version) -> String {
    if version == Version::HTTP_2 {
        uri.path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    } else {
        uri.to_string()
    }
}

/// Go's `r.Proto`.
fn proto(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Go's `r.Host`: the URI's authority (HTTP/2 `:authority`, HTTP/1 absolute form), else `Host`.
fn host(parts: &http::request::Parts) -> String {
    match parts.uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => parts
            .headers
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .unwrap_or_default(),
    }
}

/// The JSON answer, written straight into one buffer.
fn describe(parts: &http::request::Parts, path: &str, id: &EchoIdentity) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"path\":");
    string(&mut out, path);
    out.extend_from_slice(b",\"host\":");
    string(&mut out, &host(parts));
    out.extend_from_slice(b",\"method\":");
    string(&mut out, parts.method.as_str());
    out.extend_from_slice(b",\"proto\":");
    string(&mut out, proto(parts.version));
    out.extend_from_slice(b",\"headers\":{");
    // Go keeps Host out of r.Header; the keys are sorted as encoding/json sorts map keys.
    let mut names: Vec<(String, &http::HeaderName)> = parts
        .headers
        .keys()
        .filter(|name| *name != header::HOST)
        .map(|name| (canonical_header_key(name.as_str()), name))
        .collect();
    names.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (i, (key, name)) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(&mut out, key);
        out.extend_from_slice(b":[");
        for (j, value) in parts.headers.get_all(*name).iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            string(&mut out, &String::from_utf8_lossy(value.as_bytes()));
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"namespace\":");
    string(&mut out, &id.namespace);
    out.extend_from_slice(b",\"ingress\":");
    string(&mut out, &id.ingress);
    out.extend_from_slice(b",\"service\":");
    string(&mut out, &id.service);
    out.extend_from_slice(b",\"pod\":");
    string(&mut out, &id.pod);
    out.extend_from_slice(b"}\n");
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: `x-forwarded-for` → `X-Forwarded-For`. A name with
/// a byte that is not a token character is returned as is, as Go does.
pub fn canonical_header_key(name: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return name.to_owned();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// Request log lines go through a bounded queue to one writer thread, which batches them into
/// few `write`s; the request path never blocks on stdout.
#[derive(Clone)]
struct RequestLog {
    queue: mpsc::SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl RequestLog {
    fn start() -> (RequestLog, std::thread::JoinHandle<()>) {
        let (queue, lines) = mpsc::sync_channel::<String>(LOG_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let thread = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            while let Ok(line) = lines.recv() {
                let _ = writeln!(out, "{line}");
                while let Ok(line) = lines.try_recv() {
                    let _ = writeln!(out, "{line}");
                }
                let lost = counter.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        out,
                        "({lost} request log lines dropped: stdout is too slow)"
                    );
                }
                let _ = out.flush();
            }
        });
        (RequestLog { queue, dropped }, thread)
    }

    fn line(&self, line: String) {
        if self.queue.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_are_canonical_as_go_writes_them() {
        assert_eq!(canonical_header_key("user-agent"), "User-Agent");
        assert_eq!(canonical_header_key("x-forwarded-for"), "X-Forwarded-For");
        assert_eq!(canonical_header_key("X-REQUEST-ID"), "X-Request-Id");
        assert_eq!(canonical_header_key("accept"), "Accept");
        assert_eq!(canonical_header_key("te"), "Te");
        assert_eq!(canonical_header_key("x--y"), "X--Y");
        assert_eq!(canonical_header_key("x_y-z"), "X_y-Z");
        assert_eq!(canonical_header_key("bad name"), "bad name");
    }

    #[test]
    fn describes_a_request_as_json() {
        let req = Request::builder()
            .method("POST")
            .uri("/a/b?c=d&e")
            .header("host", "example.com:8080")
            .header("x-multi", "one")
            .header("x-multi", "two \"quoted\"")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let id = EchoIdentity {
            namespace: "ns".into(),
            ingress: "ing".into(),
            service: "svc".into(),
            pod: "pod-1".into(),
        };
        let path = request_uri(&parts.uri, parts.version);
        let json: serde_json::Value =
            serde_json::from_slice(&describe(&parts, &path, &id)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "path": "/a/b?c=d&e",
                "host": "example.com:8080",
                "method": "POST",
                "proto": "HTTP/1.1",
                "headers": {"Accept": ["*/*"], "X-Multi": ["one", "two \"quoted\""]},
                "namespace": "ns", "ingress": "ing", "service": "svc", "pod": "pod-1",
            })
        );
    }

    #[test]
    fn http2_uses_path_and_authority() {
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://h2.example/x?y=1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(request_uri(&parts.uri, parts.version), "/x?y=1");
        assert_eq!(host(&parts), "h2.example");
        assert_eq!(proto(parts.version), "HTTP/2.0");
    }

    /// The server on a loopback listener, its identity `pod-1`, no request log.
    async fn running() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = EchoConfig {
            port: 0,
            host: None,
            identity: EchoIdentity {
                pod: "pod-1".into(),
                ..EchoIdentity::default()
            },
            log_requests: false,
        };
        tokio::spawn(serve_on(listener, config, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn websocket_on_ws_echoes_and_plain_ws_still_answers_json() {
        use crate::streaming::ws::{encode_frame, read_frame};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (addr, _stop) = running().await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            b"GET /ws HTTP/1.1\r\nHost: e.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
        // The response head, byte by byte so no frame byte is consumed with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        let mut out = bytes::BytesMut::new();
        encode_frame(&mut out, 0x1, b"hi there", Some([9, 8, 7, 6]));
        encode_frame(&mut out, 0x2, &[1, 2, 3], Some([9, 8, 7, 6]));
        tcp.write_all(&out).await.unwrap();
        let text = read_frame(&mut tcp).await.unwrap().unwrap();
        assert_eq!(
            (text.opcode, text.payload.as_slice()),
            (0x1, &b"hi there"[..])
        );
        let bin = read_frame(&mut tcp).await.unwrap().unwrap();
        assert_eq!(
            (bin.opcode, bin.payload.as_slice()),
            (0x2, &[1u8, 2, 3][..])
        );

        // Without the handshake headers, /ws is an ordinary path.
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: e.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut all = String::new();
        tcp.read_to_string(&mut all).await.unwrap();
        assert!(all.starts_with("HTTP/1.1 200"), "{all}");
        assert!(
            all.contains(r#""path":"/ws""#) && all.contains(r#""pod":"pod-1""#),
            "{all}"
        );
    }
}
