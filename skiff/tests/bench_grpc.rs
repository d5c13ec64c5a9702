//! `skiff bench grpc` (the real binary) against `skiff grpc-echo` on loopback:
//! any unary method by server reflection (v1, and v1alpha behind a front that refuses v1) or
//! by a descriptor set file, with the JSON request encoded; streaming and unknown methods,
//! mistyped JSON and a server without reflection refused before the run, with their messages.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use skiff_node::images::grpc_echo::{DESCRIPTOR_SET, PROTO};
use tokio::net::TcpListener;

mod support;

use support::{GrpcEcho, SKIFF};

/// `skiff grpc-echo` on a free loopback port (killed when the guard drops) and its address.
fn grpc_echo() -> Result<(GrpcEcho, SocketAddr)> {
    let echo = GrpcEcho::start()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], echo.port));
    Ok((echo, addr))
}

/// A gRPC front for `backend` that answers the paths in `refuse` with UNIMPLEMENTED (as a
/// server without that service does) and passes every other call through.
async fn front(backend: SocketAddr, refuse: &'static [&'static str]) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |request| pass(request, backend, refuse));
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(addr)
}

async fn pass(
    mut request: Request<Incoming>,
    backend: SocketAddr,
    refuse: &'static [&'static str],
) -> Result<Response<BoxBody<Bytes, hyper::Error>>> {
    let path = request.uri().path().to_owned();
    if refuse.contains(&path.as_str()) {
        // Trailers-only: the status in the head, no body.
        let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static("12"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&format!("unknown method {path}"))?,
        );
        return Ok(response);
    }
    let stream = tokio::net::TcpStream::connect(backend).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    *request.uri_mut() = format!("http://{backend}{path}").parse::<Uri>()?;
    let response = sender.send_request(request).await?;
    Ok(response.map(|body| body.boxed()))
}

struct Outcome {
    success: bool,
    stderr: String,
    report: Value,
}

/// `skiff bench grpc TARGET ARGS... --json FILE`, briefly.
async fn bench(dir: &Path, target: SocketAddr, args: &[&str]) -> Result<Outcome> {
    let json = dir.join("report.json");
    let _ = std::fs::remove_file(&json);
    let out = tokio::process::Command::new(SKIFF)
        .args(["bench", "grpc", &target.to_string(), "-q"])
        .args([
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--connections",
            "1",
        ])
        .arg("--json")
        .arg(&json)
        .args(args)
        .output()
        .await
        .context("cannot run skiff bench")?;
    let report = std::fs::read(&json).with_context(|| {
        format!(
            "no --json report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(Outcome {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        report: serde_json::from_slice(&report)?,
    })
}

/// A run that went its whole duration with answers and no errors.
fn ran(outcome: &Outcome) -> Result<()> {
    ensure!(outcome.success, "failed: {}", outcome.stderr);
    let r = &outcome.report;
    ensure!(r["completed"] == true, "{r}");
    ensure!(r["requests"].as_u64().unwrap_or(0) > 0, "{r}");
    ensure!(r["errors"]["total"] == 0, "{r}");
    Ok(())
}

/// A run refused before it started: exit status, the message on stderr and in the report.
fn refused(outcome: &Outcome, message: &str) -> Result<()> {
    ensure!(!outcome.success, "accepted; wanted {message:?}");
    ensure!(
        outcome.stderr.contains(message),
        "stderr lacks {message:?}: {}",
        outcome.stderr
    );
    let error = outcome.report["error"].as_str().unwrap_or_default();
    ensure!(
        error.contains(message),
        "report error lacks {message:?}: {error}"
    );
    ensure!(outcome.report["requests"] == 0, "{}", outcome.report);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_grpc_by_reflection_calls_any_unary_method() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_server, echo) = grpc_echo()?;
    ran(&bench(
        dir.path(),
        echo,
        &["--grpc-reflection", "--data", r#"{"message": "hi"}"#],
    )
    .await?)?;
    // The JSON reaches the server encoded: a known service answers SERVING ...
    let health = [
        "--grpc-reflection",
        "--method",
        "/grpc.health.v1.Health/Check",
    ];
    let known = [
        &health[..],
        &["--data", r#"{"service": "skiff.echo.v1.Echo"}"#],
    ]
    .concat();
    ran(&bench(dir.path(), echo, &known).await?)?;
    // ... and the server's NOT_FOUND for an unknown one names the service we encoded.
    let unknown = [
        &health[..],
        &["--data", r#"{"service": "no.such.Service"}"#],
    ]
    .concat();
    let outcome = bench(dir.path(), echo, &unknown).await?;
    let error = outcome.report["error"].as_str().unwrap_or_default();
    ensure!(
        error.contains("gRPC status 5 NOT_FOUND") && error.contains("no.such.Service"),
        "{error}"
    );

    // Refused before the run, each with its reason.
    let reflect = |method: &'static str| ["--grpc-reflection", "--method", method];
    refused(
        &bench(
            dir.path(),
            echo,
            &reflect("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
        )
        .await?,
        "--method: /grpc.reflection.v1.ServerReflection/ServerReflectionInfo is a bidirectional \
         streaming method: skiff bench calls unary methods only",
    )?;
    refused(
        &bench(dir.path(), echo, &reflect("/skiff.echo.v1.Echo/Shout")).await?,
        &format!(
            "--method: service skiff.echo.v1.Echo has no method \"Shout\" served by {echo} \
             (server reflection); its methods: Echo"
        ),
    )?;
    refused(
        &bench(dir.path(), echo, &reflect("/skiff.echo.v2.Echo/Echo")).await?,
        &format!(
            "--grpc-reflection: {echo}: the server does not serve skiff.echo.v2.Echo (unknown \
             symbol \"skiff.echo.v2.Echo\"); it serves: skiff.echo.v1.Echo, grpc.health.v1.Health, \
             grpc.reflection.v1.ServerReflection, grpc.reflection.v1alpha.ServerReflection"
        ),
    )?;
    refused(
        &bench(
            dir.path(),
            echo,
            &["--grpc-reflection", "--data", r#"{"message": 5}"#],
        )
        .await?,
        "--payload: skiff.echo.v1.EchoRequest: field message: expected a JSON string (string), got 5",
    )?;
    refused(
        &bench(
            dir.path(),
            echo,
            &["--grpc-reflection", "--data", r#"{"mesage": "x"}"#],
        )
        .await?,
        "--payload: skiff.echo.v1.EchoRequest: field mesage: no such field in \
         skiff.echo.v1.EchoRequest; its fields: message",
    )?;
    refused(
        &bench(
            dir.path(),
            echo,
            &["--grpc-reflection", "--data", "message=hi"],
        )
        .await?,
        "--payload: the request message skiff.echo.v1.EchoRequest is given as JSON, and this is \
         not JSON: expected value at line 1 column 1",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_grpc_falls_back_to_v1alpha_reflection_and_names_a_server_without_any() -> Result<()>
{
    const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
    let dir = tempfile::tempdir()?;
    let (_server, echo) = grpc_echo()?;
    // The front itself passes calls through: the plain echo run works through it.
    let old_server = front(echo, &[V1]).await?;
    ran(&bench(dir.path(), old_server, &[]).await?)?;
    ran(&bench(
        dir.path(),
        old_server,
        &["--grpc-reflection", "--data", r#"{"message": "v1alpha"}"#],
    )
    .await?)?;
    let no_reflection = front(echo, &[V1, V1ALPHA]).await?;
    refused(
        &bench(dir.path(), no_reflection, &["--grpc-reflection"]).await?,
        &format!(
            "--grpc-reflection: {no_reflection}: the server does not serve gRPC server reflection \
             (grpc.reflection.v1 and v1alpha both answered UNIMPLEMENTED: {V1}: gRPC status 12 \
             UNIMPLEMENTED unknown method {V1}; {V1ALPHA}: gRPC status 12 UNIMPLEMENTED unknown \
             method {V1ALPHA}); give the descriptors with --proto-set instead"
        ),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_grpc_with_a_descriptor_set_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_server, echo) = grpc_echo()?;
    // The descriptor set grpc-echo embeds, as `protoc -o` would write it for its protos.
    let set = dir.path().join("grpc-echo.pb");
    std::fs::write(&set, DESCRIPTOR_SET)?;
    let set_arg = set.display().to_string();
    let with_set = |extra: &[&'static str]| -> Vec<String> {
        let mut args = vec!["--proto-set".to_owned(), set_arg.clone()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&dir, echo, &args).await
        }
    };
    ran(&run(with_set(&["--data", r#"{"message": "from a file"}"#])).await?)?;
    ran(&run(with_set(&["--method", "/grpc.health.v1.Health/Check"])).await?)?;
    refused(
        &run(with_set(&[
            "--method",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]))
        .await?,
        "is a bidirectional streaming method: skiff bench calls unary methods only",
    )?;
    refused(
        &run(with_set(&["--method", "/skiff.echo.v1.Echoes/Echo"])).await?,
        &format!(
            "--method: no service skiff.echo.v1.Echoes in {set_arg}; there are: \
             grpc.health.v1.Health, grpc.reflection.v1.ServerReflection, \
             grpc.reflection.v1alpha.ServerReflection, skiff.echo.v1.Echo"
        ),
    )?;
    refused(
        &run(with_set(&["--data", r#"{"message": ["a"]}"#])).await?,
        "--payload: skiff.echo.v1.EchoRequest: field message: expected a JSON string (string), got an array",
    )?;
    // A .proto file given where the compiled set belongs.
    let source = dir.path().join("echo.proto");
    std::fs::write(&source, PROTO)?;
    refused(
        &bench(
            dir.path(),
            echo,
            &["--proto-set", &source.display().to_string()],
        )
        .await?,
        "it looks like .proto source: compile it first with `protoc --include_imports -o FILE.pb FILE.proto`",
    )?;
    Ok(())
}
