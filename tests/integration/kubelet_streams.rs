//! skiff-node's kubelet streaming server behind the real API server, driven by the real kubectl
//! (1.29 speaks SPDY/3.1, 1.33 websocket): logs (plain, -f, --tail, --timestamps, --previous),
//! exec with exit codes and stdin, and port-forward to a loopback echo listener. The pod's
//! processes are plain host processes and its ports loopback ports (`HostStreams`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use skiff_apiserver::server::node_proxy::issue_kubelet_serving_cert;
use skiff_node::logs::{self, LogWriter, RotationPolicy};
use skiff_node::streaming::{
    ContainerTarget, ExecChild, ExecRequest, PodStreams, PodTarget, StreamError, StreamingConfig,
    StreamingServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::apiserver::{Kubectl, TestServer, raw};

const NODE: &str = "kubelet-streams-node";
const UID: &str = "0f0f0f0f-1111-2222-3333-444444444444";

/// One pod `default/web` with one container `app`, run as host processes.
struct HostStreams {
    log_root: PathBuf,
}

#[async_trait::async_trait]
impl PodStreams for HostStreams {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerTarget, StreamError> {
        let target = self.pod(namespace, pod)?;
        if container != "app" {
            return Err(StreamError::NotFound(format!(
                "container {container} not found in pod {namespace}/{pod}"
            )));
        }
        Ok(ContainerTarget {
            log_dir: logs::container_log_dir(&self.log_root, namespace, pod, UID, container),
            namespace: target.namespace,
            pod: target.pod,
            uid: target.uid,
            container: container.to_owned(),
            restart_count: 0,
        })
    }

    fn pod(&self, namespace: &str, pod: &str) -> Result<PodTarget, StreamError> {
        if (namespace, pod) != ("default", "web") {
            return Err(StreamError::NotFound(format!(
                "pod {namespace}/{pod} is not on this node"
            )));
        }
        Ok(PodTarget {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: UID.to_owned(),
        })
    }

    async fn exec(
        &self,
        _target: &ContainerTarget,
        request: ExecRequest,
    ) -> Result<ExecChild, StreamError> {
        let (program, args) = request
            .command
            .split_first()
            .ok_or_else(|| StreamError::BadRequest("no command".into()))?;
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(pipe(request.stdin))
            .stdout(pipe(request.stdout))
            .stderr(pipe(request.stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StreamError::Internal(format!("starting {program}: {e}")))?;
        Ok(ExecChild {
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s) as skiff_node::streaming::BoxWrite),
            stdout: child
                .stdout
                .take()
                .map(|s| Box::new(s) as skiff_node::streaming::BoxRead),
            stderr: child
                .stderr
                .take()
                .map(|s| Box::new(s) as skiff_node::streaming::BoxRead),
            resize: None,
            exit: Box::pin(async move {
                let status = child
                    .wait()
                    .await
                    .map_err(|e| StreamError::Internal(e.to_string()))?;
                Ok(status.code().unwrap_or(128))
            }),
        })
    }

    async fn port_forward(&self, _target: &PodTarget, port: u16) -> Result<TcpStream, StreamError> {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| StreamError::Internal(format!("connecting to 127.0.0.1:{port}: {e}")))
    }
}

/// A kubectl process killed (by its PID, through `Child`) when the test ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the tests need: API server, kubelet server, the pod, a loopback echo port.
struct Cluster {
    ts: TestServer,
    kubeconfig: PathBuf,
    log_dir: PathBuf,
    _kubelet: StreamingServer,
    echo_port: u16,
    _dir: tempfile::TempDir,
}

async fn start_cluster() -> anyhow::Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let issued = issue_kubelet_serving_cert(dir.path(), NODE, &["127.0.0.1".to_owned()])?;
    let log_root = dir.path().join("pod-logs");
    let mut config = StreamingConfig::new(
        issued.cert_pem,
        issued.key_pem,
        ts.server.ca_pem().to_owned(),
    );
    config.addr = "127.0.0.1:0".parse()?;
    let kubelet = StreamingServer::start(
        config,
        Arc::new(HostStreams {
            log_root: log_root.clone(),
        }),
        std::future::pending(),
    )
    .await?;

    let client = ts.client().await?;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.local_addr().port()}}}});
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/nodes",
        Some("application/json"),
        node.to_string().into_bytes(),
    )
    .await?;
    anyhow::ensure!(code == 201, "{body}");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "skiff.dev/echo"}]}});
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some("application/json"),
        pod.to_string().into_bytes(),
    )
    .await?;
    anyhow::ensure!(code == 201, "{body}");
    // kubectl port-forward refuses a pod that is not Running.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await?;

    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    Ok(Cluster {
        kubeconfig: ts.server.kubeconfig_path().to_path_buf(),
        log_dir: logs::container_log_dir(&log_root, "default", "web", UID, "app"),
        ts,
        _kubelet: kubelet,
        echo_port,
        _dir: dir,
    })
}

/// Runs kubectl with `stdin` fed; returns (exit code, stdout, stderr).
async fn run_with_stdin(
    kubectl: &Kubectl,
    args: &[&str],
    stdin: Option<&'static [u8]>,
) -> anyhow::Result<(Option<i32>, String, String)> {
    let mut cmd = kubectl.command(args)?;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut child = cmd.spawn()?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)?;
        }
        Ok(child.wait_with_output()?)
    })
    .await??;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn exec_checks(c: &Cluster, minor: u32) -> anyhow::Result<()> {
    let k = Kubectl::version(minor, &c.kubeconfig);
    let (code, out, err) = run_with_stdin(
        &k,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; exit 3",
        ],
        None,
    )
    .await?;
    assert_eq!(code, Some(3), "kubectl 1.{minor}: {err}");
    assert_eq!(out, "hi\n", "kubectl 1.{minor}: {err}");
    assert!(err.contains("oops"), "kubectl 1.{minor}: {err}");

    let (code, out, err) = run_with_stdin(&k, &["exec", "web", "--", "echo", "fine"], None).await?;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "fine\n"),
        "kubectl 1.{minor}: {err}"
    );

    let (code, out, err) = run_with_stdin(
        &k,
        &["exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z"],
        Some(b"piped through stdin\n"),
    )
    .await?;
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "PIPED THROUGH STDIN\n"),
        "kubectl 1.{minor}: {err}"
    );

    // An unknown container is the kubelet's 404, relayed.
    let (code, _, err) =
        run_with_stdin(&k, &["exec", "web", "-c", "nope", "--", "true"], None).await?;
    assert_ne!(code, Some(0));
    assert!(err.contains("nope"), "kubectl 1.{minor}: {err}");
    Ok(())
}

async fn port_forward_checks(c: &Cluster, minor: u32) -> anyhow::Result<()> {
    let k = Kubectl::version(minor, &c.kubeconfig);
    let target = format!(":{}", c.echo_port);
    let mut cmd = k.command(&["port-forward", "pod/web", &target])?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn()?);
    let stdout = child.0.stdout.take().context("kubectl stdout")?;
    // "Forwarding from 127.0.0.1:LOCAL -> PORT". The reader keeps draining stdout after it:
    // kubectl dies of SIGPIPE when it writes "Handling connection" to a closed pipe.
    let (port_tx, port_rx) = tokio::sync::oneshot::channel::<u16>();
    std::thread::spawn(move || {
        let mut port_tx = Some(port_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
                && let Some(port) = rest.split(' ').next().and_then(|p| p.parse().ok())
                && let Some(tx) = port_tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    let local = port_rx
        .await
        .context("kubectl port-forward ended without forwarding")?;
    let rounds = async {
        for round in 0..2 {
            let mut conn = TcpStream::connect(("127.0.0.1", local)).await?;
            let payload = format!("kubectl 1.{minor} round {round}: {}", "x".repeat(50_000));
            conn.write_all(payload.as_bytes()).await?;
            let mut back = vec![0u8; payload.len()];
            conn.read_exact(&mut back).await?;
            anyhow::ensure!(
                back == payload.as_bytes(),
                "kubectl 1.{minor}: echo differs"
            );
        }
        anyhow::Ok(())
    };
    if let Err(e) = rounds.await {
        let _ = child.0.kill();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        anyhow::bail!("port-forward with kubectl 1.{minor}: {e}; kubectl said: {stderr}");
    }
    drop(child);
    Ok(())
}

async fn logs_checks(c: &Cluster) -> anyhow::Result<()> {
    let k = Kubectl::version(33, &c.kubeconfig);
    let path = logs::instance_log_path(&c.log_dir, 0);
    let (mut child_out, writer_in) = tokio::io::duplex(1024);
    let writer = LogWriter::spawn(
        path.clone(),
        RotationPolicy::default(),
        Some(writer_in),
        None::<tokio::io::DuplexStream>,
    );
    child_out.write_all(b"hello\nworld\n").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 2
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "log never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(k.ok(&["logs", "web"]).await?, "hello\nworld\n");
    assert_eq!(k.ok(&["logs", "web", "--tail=1"]).await?, "world\n");
    assert_eq!(k.ok(&["logs", "web", "--limit-bytes=3"]).await?, "hel");
    let stamped = k.ok(&["logs", "web", "--timestamps"]).await?;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped}");
    for (line, text) in lines.iter().zip(["hello", "world"]) {
        let (time, rest) = line.split_once(' ').context("no timestamp")?;
        assert!(time.parse::<jiff::Timestamp>().is_ok(), "{line}");
        assert_eq!(rest, text);
    }
    let run = k.run(&["logs", "web", "--previous"]).await?;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("previous terminated container \"app\" in pod \"web\" not found"),
        "{}",
        run.stderr
    );

    // -f: the existing lines, then one written while following, then the end of the instance.
    let mut cmd = k.command(&["logs", "-f", "web"])?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut follower = KillOnDrop(cmd.spawn()?);
    let stdout = follower.0.stdout.take().context("kubectl stdout")?;
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(
            line_rx
                .recv()
                .await
                .context("kubectl logs -f ended early")??,
        );
    }
    child_out.write_all(b"later\n").await?;
    seen.push(line_rx.recv().await.context("no followed line")??);
    assert_eq!(seen, ["hello", "world", "later"]);
    drop(child_out);
    writer.await??;
    logs::mark_finished(&path)?;
    // The instance ended: kubectl's stream ends on its own.
    assert!(line_rx.recv().await.is_none());
    let status = tokio::task::spawn_blocking(move || follower.0.wait()).await??;
    assert!(status.success());
    Ok(())
}

#[tokio::test]
async fn kubectl_logs_exec_and_port_forward_reach_the_kubelet_server() -> anyhow::Result<()> {
    let c = start_cluster().await?;
    logs_checks(&c).await?;
    for minor in [29, 31, 33] {
        exec_checks(&c, minor).await?;
        port_forward_checks(&c, minor).await?;
    }
    let Cluster { ts, .. } = c;
    ts.stop().await;
    Ok(())
}

/// Only clients with a certificate from the cluster CA get in; unknown pods are 404 Status.
#[tokio::test]
async fn the_kubelet_server_requires_a_client_certificate() -> anyhow::Result<()> {
    let c = start_cluster().await?;
    let port = c._kubelet.local_addr().port();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(c.ts.server.ca_pem().as_bytes()) {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let refused = match connector
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await
    {
        Err(_) => true,
        // TLS 1.3: the refusal arrives with the first read.
        Ok(mut tls) => {
            let _ = tls
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate was served");

    // Through the API server (which presents its kubelet client certificate): 404 Status.
    let client = c.ts.client_without_retries().await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost"},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "skiff.dev/echo"}]}});
    let (code, body) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some("application/json"),
        pod.to_string().into_bytes(),
    )
    .await?;
    anyhow::ensure!(code == 201, "{body}");
    let (code, status) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/pods/ghost/log",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["reason"], "NotFound");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("default/ghost")),
        "{status}"
    );
    let Cluster { ts, .. } = c;
    ts.stop().await;
    Ok(())
}
