//! The built-in images as processes: the `skiff-builtin` binary started on a free loopback
//! port, spoken to over HTTP/1.1, HTTP/2 and gRPC, and stopped with SIGTERM (exit 0).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use skiff_node::images::grpc_echo::{self, ECHO_SERVICE, GrpcClientError, ServingStatus};
use skiff_node::images::{ImageMap, ImageResolver};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Generous: a loaded CI machine may take a while to start a process.
const DEADLINE: Duration = Duration::from_secs(120);

fn builtin_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff-builtin"))
}

/// A built-in started by this test; killed (by its PID, via the handle) if still running on drop.
struct Running {
    child: Child,
    addr: Option<SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Copies a child's output lines into `sink`, as they come.
fn collect(stream: impl AsyncRead + Unpin + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
}

impl Running {
    /// Run `argv` with `env`, wait until it printed `listening on ADDR` (servers) or logged
    /// `ready_stderr` (pause).
    async fn start(
        argv: &[String],
        env: &[(&str, &str)],
        ready_stderr: Option<&str>,
    ) -> Result<Running> {
        let (program, args) = argv.split_first().context("empty argv")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_remove("PORT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {argv:?}"))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().context("stdout")?, stdout.clone());
        collect(child.stderr.take().context("stderr")?, stderr.clone());
        let mut running = Running {
            child,
            addr: None,
            stdout,
            stderr,
        };
        let start = Instant::now();
        loop {
            if let Some(wanted) = ready_stderr {
                if running
                    .stderr
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(wanted))
                {
                    return Ok(running);
                }
            } else {
                let addr = running.stdout.lock().unwrap().iter().find_map(|line| {
                    let rest = line.split_once(" listening on ")?.1;
                    rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
                });
                if let Some(addr) = addr {
                    running.addr = Some(addr);
                    return Ok(running);
                }
            }
            if let Some(status) = running.child.try_wait()? {
                bail!(
                    "{argv:?} exited with {status} before it was ready; stderr: {:?}",
                    running.stderr.lock().unwrap()
                );
            }
            ensure!(
                start.elapsed() < DEADLINE,
                "{argv:?} not ready after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn builtin(name: &str, env: &[(&str, &str)]) -> Result<Running> {
        let argv = [builtin_exe().display().to_string(), name.to_owned()]
            .into_iter()
            .chain(loopback_args())
            .collect::<Vec<_>>();
        Running::start(&argv, env, None).await
    }

    fn addr(&self) -> SocketAddr {
        self.addr.unwrap()
    }

    /// SIGTERM (by PID, through `kill`), then wait for the exit.
    async fn terminate(mut self) -> Result<ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        ensure!(sent.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .context("no exit after SIGTERM")??;
        Ok(status)
    }

    async fn stdout_line_containing(&self, wanted: &str) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(wanted))
            {
                return Ok(line.clone());
            }
            ensure!(
                start.elapsed() < DEADLINE,
                "no stdout line with {wanted:?}; got {:?}",
                self.stdout.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Loopback only, port 0: parallel tests never collide, and nothing listens beyond loopback.
fn loopback_args() -> Vec<String> {
    ["--listen", "127.0.0.1", "--port", "0"]
        .map(String::from)
        .to_vec()
}

const POD_ENV: &[(&str, &str)] = &[
    ("NAMESPACE", "images-ns"),
    ("INGRESS_NAME", "images-ingress"),
    ("SERVICE_NAME", "images-svc"),
    ("POD_NAME", "images-pod-0"),
];

async fn json_body(
    response: http::Response<hyper::body::Incoming>,
) -> Result<(http::response::Parts, Value)> {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes)
        .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&bytes)))?;
    Ok((parts, value))
}

#[tokio::test]
async fn echo_describes_http1_requests_on_a_kept_alive_connection() -> Result<()> {
    let echo = Running::builtin("echo", POD_ENV).await?;
    let stream = tokio::net::TcpStream::connect(echo.addr()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);

    let request = Request::get("/some/path?q=1&r=%20x")
        .header("host", "example.test:8080")
        .header("user-agent", "skiff-images-test")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-for", "10.0.0.2")
        .header("X-CUSTOM-header", "A")
        .body(Full::new(Bytes::new()))?;
    let (parts, body) = json_body(sender.send_request(request).await?).await?;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(
        body,
        json!({
            "path": "/some/path?q=1&r=%20x",
            "host": "example.test:8080",
            "method": "GET",
            "proto": "HTTP/1.1",
            "headers": {
                "User-Agent": ["skiff-images-test"],
                "X-Forwarded-For": ["10.0.0.1", "10.0.0.2"],
                "X-Custom-Header": ["A"],
            },
            "namespace": "images-ns",
            "ingress": "images-ingress",
            "service": "images-svc",
            "pod": "images-pod-0",
        })
    );

    // Same connection: a POST with a body, then /health.
    let request = Request::post("/submit")
        .header("host", "example.test")
        .body(Full::new(Bytes::from_static(b"{\"some\":\"payload\"}")))?;
    let (parts, body) = json_body(sender.send_request(request).await?).await?;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/submit");
    assert_eq!(body["headers"]["Content-Length"], json!(["18"]));

    let request = Request::get("/health")
        .header("host", "example.test")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await?.to_bytes().is_empty());

    // One log line per request on stdout: method, path, status, remote.
    let line = echo.stdout_line_containing("GET /some/path").await?;
    assert!(line.contains(" 200 127.0.0.1:"), "{line}");
    echo.stdout_line_containing("POST /submit 200").await?;
    echo.stdout_line_containing("GET /health 200").await?;

    let status = echo.terminate().await?;
    assert!(status.success(), "echo after SIGTERM: {status}");
    Ok(())
}

#[tokio::test]
async fn echo_speaks_http2_with_prior_knowledge() -> Result<()> {
    let echo = Running::builtin("echo", &[("POD_NAME", "h2-pod")]).await?;
    let stream = tokio::net::TcpStream::connect(echo.addr()).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);

    for i in 0..3 {
        let request = Request::get(format!("http://h2.example.test/h2/{i}?x=y"))
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("accept", "*/*")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        assert_eq!(response.version(), Version::HTTP_2);
        let (parts, body) = json_body(response).await?;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(body["proto"], "HTTP/2.0");
        assert_eq!(body["path"], format!("/h2/{i}?x=y"));
        assert_eq!(body["host"], "h2.example.test");
        assert_eq!(body["headers"]["X-Multi"], json!(["one", "two"]));
        assert_eq!(body["headers"]["Accept"], json!(["*/*"]));
        assert_eq!(body["pod"], "h2-pod");
        assert_eq!(body["namespace"], "");
    }
    let line = echo.stdout_line_containing("GET /h2/2?x=y 200").await?;
    assert!(line.ends_with("HTTP/2.0"), "{line}");
    Ok(())
}

#[tokio::test]
async fn echo_listens_on_ipv6() -> Result<()> {
    let argv = [builtin_exe().display().to_string(), "echo".into()]
        .into_iter()
        .chain(["--listen", "::1", "--port", "0"].map(String::from))
        .collect::<Vec<_>>();
    let echo = Running::start(&argv, &[], None).await?;
    assert!(echo.addr().is_ipv6(), "{}", echo.addr());
    let stream = tokio::net::TcpStream::connect(echo.addr()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get("/v6")
        .header("host", "[::1]")
        .body(Full::new(Bytes::new()))?;
    let (_, body) = json_body(sender.send_request(request).await?).await?;
    assert_eq!(body["host"], "[::1]");
    let line = echo.stdout_line_containing("GET /v6 200").await?;
    assert!(line.contains("[::1]:"), "{line}");
    Ok(())
}

#[tokio::test]
async fn grpc_echo_serves_health_and_echo() -> Result<()> {
    let server = Running::builtin(
        "grpc-echo",
        &[("POD_NAME", "grpc-pod-1"), ("NAMESPACE", "grpc-ns")],
    )
    .await?;
    let addr = server.addr();
    assert_eq!(
        grpc_echo::health_check(addr, "").await?,
        ServingStatus::Serving
    );
    assert_eq!(
        grpc_echo::health_check(addr, ECHO_SERVICE).await?,
        ServingStatus::Serving
    );
    match grpc_echo::health_check(addr, "no.such.Service").await {
        Err(GrpcClientError::Status { code, message, .. }) => {
            assert_eq!(code, 5, "NOT_FOUND");
            assert!(message.contains("no.such.Service"), "{message}");
        }
        other => panic!("unknown service: {other:?}"),
    }

    let response = grpc_echo::call(addr, "hello, gRPC").await?;
    assert_eq!(response.message, "hello, gRPC");
    assert_eq!(response.pod, "grpc-pod-1");
    assert_eq!(response.namespace, "grpc-ns");

    // Many calls on one connection, some at once.
    let client = grpc_echo::GrpcEchoClient::connect(addr).await?;
    let calls = (0..20).map(|i| {
        let mut client = client.clone();
        async move { client.echo(&format!("message {i}")).await }
    });
    for (i, result) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(result?.message, format!("message {i}"));
    }

    let status = server.terminate().await?;
    assert!(status.success(), "grpc-echo after SIGTERM: {status}");
    Ok(())
}

#[tokio::test]
async fn pause_exits_zero_on_sigterm() -> Result<()> {
    let argv = [builtin_exe().display().to_string(), "pause".into()];
    let pause = Running::start(&argv, &[], Some("waiting for SIGTERM")).await?;
    // Still running until told otherwise.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut pause = pause;
    assert!(pause.child.try_wait()?.is_none(), "pause exited by itself");
    let status = pause.terminate().await?;
    assert!(status.success(), "pause after SIGTERM: {status}");
    Ok(())
}

#[tokio::test]
async fn resolved_images_run_with_the_argv_the_resolver_builds() -> Result<()> {
    let map = ImageMap::parse(
        "images-test.yaml",
        "\"registry.example/grpc-app:*\": builtin:grpc-echo\n",
    )?;
    let resolver = ImageResolver::new(Some(map), builtin_exe());

    // A built-in by reference, with the container's args appended to its entrypoint.
    let echo = resolver.resolve("skiff.dev/echo:latest")?;
    let echo = Running::start(&echo.argv(&[], &loopback_args()), POD_ENV, None).await?;
    let stream = tokio::net::TcpStream::connect(echo.addr()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::get("/resolved")
        .header("host", "resolved.test")
        .body(Full::new(Bytes::new()))?;
    let (_, body) = json_body(sender.send_request(request).await?).await?;
    assert_eq!(body["pod"], "images-pod-0");

    // An image-map entry naming a built-in.
    let grpc = resolver.resolve("registry.example/grpc-app:v2")?;
    let grpc = Running::start(
        &grpc.argv(&[], &loopback_args()),
        &[("POD_NAME", "mapped")],
        None,
    )
    .await?;
    assert_eq!(grpc_echo::call(grpc.addr(), "via map").await?.pod, "mapped");

    // Anything else cannot be pulled, and says why.
    let err = resolver.resolve("nginx:1.25").unwrap_err();
    assert_eq!(err.reason(), "ErrImagePull");
    assert!(
        err.to_string().contains("no registry is reachable"),
        "{err}"
    );
    Ok(())
}
