//! Shared by the integration tests: loopback servers (Debian's nginx, small tokio ones), CPU
//! pinning, and running the load generator in-process.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use skiff_loadgen::{Config, Report};

/// A port free on loopback a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Pin the calling thread (and the threads it starts from now on) to `cpu`.
pub fn pin_self(cpu: usize) -> anyhow::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).context("sched_setaffinity")
}

/// Debian's nginx, one process (no master), on loopback: `http` serves HTTP/1.1, `h2c`
/// prior-knowledge HTTP/2; both answer every request with 200 "hello\n". Killed on drop.
pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
    pub http: u16,
    pub h2c: u16,
}

impl Nginx {
    pub fn start(cpu: usize) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let (http, h2c) = (free_port()?, free_port()?);
        let d = dir.path().display();
        let conf = format!(
            "master_process off;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
events {{ worker_connections 4096; }}\n\
http {{\n access_log off;\n keepalive_requests 100000000;\n\
 client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
 server {{ listen 127.0.0.1:{http}; location / {{ return 200 \"hello\\n\"; }} }}\n\
 server {{ listen 127.0.0.1:{h2c} http2; http2_max_requests 100000000; location / {{ return 200 \"hello\\n\"; }} }}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("taskset")
            .args(["-c", &cpu.to_string(), "nginx", "-c"])
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nginx (scripts/bootstrap installs it)")?;
        let nginx = Nginx {
            child,
            _dir: dir,
            http,
            h2c,
        };
        wait_listening(http)?;
        wait_listening(h2c)?;
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `config` in-process on a runtime of `threads` workers.
pub fn run(config: Config, threads: usize) -> anyhow::Result<Report> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(skiff_loadgen::run(
        config,
        std::future::pending::<()>(),
        |_| {},
    ))?;
    Ok(report)
}

/// CPU seconds of this process's waited-for children (`cutime + cstime` of /proc/self/stat).
pub fn children_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = text.rfind(')').map_or("", |i| &text[i + 1..]);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(13) + get(14)) / ticks
}

/// Run a peer tool to completion; its stdout, and the CPU seconds it used.
pub fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<(String, f64)> {
    let before = children_cpu_s();
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (scripts/bootstrap installs it)"))?;
    let cpu = children_cpu_s() - before;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), cpu))
}

/// The number after `label` in `text`, e.g. "Requests/sec:" → 27226.7.
pub fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

/// Start `serve` on its own thread and single-threaded runtime, so the server does not share the
/// client's runtime. The thread lives until the test process ends.
pub fn spawn_server<F, Fut>(serve: F) -> anyhow::Result<u16>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve(listener).await,
                Err(e) => eprintln!("test server: {e}"),
            }
        });
    });
    Ok(port)
}

pub mod http {
    //! A hyper server for HTTP/1.1, h2c and (with a TLS config) HTTPS with ALPN h2/http1.1, that
    //! also plays a gRPC echo service: `/skiff.echo.v1.Echo/Echo` answers, other methods get
    //! UNIMPLEMENTED.

    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::stream;
    use http::{HeaderMap, HeaderValue, Request, Response};
    use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
    use hyper::body::{Frame, Incoming};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    type Body = BoxBody<Bytes, Infallible>;

    pub fn spawn(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<u16> {
        super::spawn_server(move |listener| async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let service = service_fn(handle);
                    let _ = match tls {
                        None => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                    };
                });
            }
        })
    }

    async fn handle(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let grpc = request
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let path = request.uri().path().to_owned();
        let _ = request.into_body().collect().await;
        if !grpc {
            return Ok(Response::new(
                http_body_util::Full::new(Bytes::from_static(b"hello\n")).boxed(),
            ));
        }
        let mut response = Response::builder()
            .header("content-type", "application/grpc")
            .body(http_body_util::Empty::new().boxed())
            .unwrap_or_default();
        if path != skiff_loadgen::GRPC_ECHO_METHOD {
            // Trailers-only.
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from_static("12"));
            headers.insert("grpc-message", HeaderValue::from_static("unknown method"));
            return Ok(response);
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(
                b"\x00\x00\x00\x00\x04\x0a\x02hi",
            ))),
            Ok(Frame::trailers(trailers)),
        ];
        *response.body_mut() = StreamBody::new(stream::iter(frames)).boxed();
        Ok(response)
    }

    /// A self-signed certificate for `localhost`: the server config and the CA PEM to trust.
    pub fn tls_config() -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(anyhow::Error::msg)?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok((Arc::new(config), certified.cert.pem()))
    }
}

/// An HTTP/1.1 server answering `200 ok` that, once, holds the first request it reads after
/// `stall_at` for `stall` before answering.
pub fn spawn_stalling_server(stall_at: Instant, stall: Duration) -> anyhow::Result<u16> {
    Ok(spawn_counting_server(stall_at, stall)?.0)
}

/// [`spawn_stalling_server`], also counting the requests it answered.
pub fn spawn_counting_server(
    stall_at: Instant,
    stall: Duration,
) -> anyhow::Result<(u16, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let armed = Arc::new(AtomicBool::new(true));
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let port = spawn_server(move |listener| async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let armed = armed.clone();
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut have = 0;
                loop {
                    let Ok(n) = stream.read(&mut buf[have..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.copy_within(end + 4..have, 0);
                        have -= end + 4;
                        if Instant::now() >= stall_at && armed.swap(false, Ordering::SeqCst) {
                            tokio::time::sleep(stall).await;
                        }
                        if stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    })?;
    Ok((port, count))
}

/// TCP echo.
pub fn spawn_tcp_echo() -> anyhow::Result<u16> {
    spawn_server(|listener| async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// A UDP server on its own thread: echoes datagrams, or with `dns_rcode` answers each as a DNS
/// response (QR set) with that RCODE.
pub fn spawn_udp(dns_rcode: Option<u8>) -> anyhow::Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(rcode) = dns_rcode
                && n >= 12
            {
                buf[2] |= 0x80;
                buf[3] = (buf[3] & 0xf0) | rcode;
            }
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    Ok(port)
}

/// What the DNS-over-TCP test server saw.
#[derive(Debug, Default)]
pub struct DnsTcpSeen {
    /// Connections accepted.
    pub connections: std::sync::atomic::AtomicUsize,
    /// Queries answered.
    pub queries: std::sync::atomic::AtomicUsize,
    /// The most whole queries that one read brought in (pipelining shows as > 1).
    pub max_batch: std::sync::atomic::AtomicUsize,
}

/// DNS over TCP (RFC 7766 framing): answers each query as a response with `rcode`, the queries
/// of one read in reverse order (a server may reorder), and closes a connection after
/// `close_after` answers when given (a server limiting queries per connection).
pub fn spawn_dns_tcp(
    rcode: u8,
    close_after: Option<usize>,
) -> anyhow::Result<(u16, Arc<DnsTcpSeen>)> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let seen = Arc::new(DnsTcpSeen::default());
    let stats = seen.clone();
    let port = spawn_server(move |listener| async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            stats.connections.fetch_add(1, Ordering::Relaxed);
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut answered = 0;
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let mut messages = Vec::new();
                    while buf.len() >= 2 {
                        let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                        if buf.len() < 2 + len {
                            break;
                        }
                        let mut m: Vec<u8> = buf.drain(..2 + len).collect();
                        if m.len() >= 2 + 12 {
                            m[2 + 2] |= 0x80;
                            m[2 + 3] = (m[2 + 3] & 0xf0) | rcode;
                        }
                        messages.push(m);
                    }
                    stats.max_batch.fetch_max(messages.len(), Ordering::Relaxed);
                    let mut out = Vec::new();
                    let mut close = false;
                    for m in messages.iter().rev() {
                        if close_after.is_some_and(|limit| answered >= limit) {
                            close = true;
                            break;
                        }
                        out.extend_from_slice(m);
                        answered += 1;
                        stats.queries.fetch_add(1, Ordering::Relaxed);
                    }
                    if stream.write_all(&out).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    })?;
    Ok((port, seen))
}
