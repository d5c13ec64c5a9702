//! Unit tests: each handler against loopback listeners, and threshold semantics with a fake target.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Connects to loopback whatever the host; exec answers from a script of exit codes
/// (the last one repeats), `None` = time out.
#[derive(Default)]
struct Fake {
    codes: Mutex<VecDeque<Option<i32>>>,
    last: Mutex<Option<i32>>,
    execs: Mutex<u32>,
    /// When set, each exec waits for a permit: the test steps the prober one run at a time.
    gate: Option<tokio::sync::Semaphore>,
}

impl Fake {
    fn with_codes(codes: &[Option<i32>]) -> Arc<Fake> {
        Arc::new(Fake {
            codes: Mutex::new(codes.iter().copied().collect()),
            ..Fake::default()
        })
    }
    fn gated(codes: &[Option<i32>]) -> Arc<Fake> {
        Arc::new(Fake {
            codes: Mutex::new(codes.iter().copied().collect()),
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Fake::default()
        })
    }
    fn execs(&self) -> u32 {
        *self.execs.lock().unwrap()
    }
    /// Lets run number `n` (1-based) finish and waits until its result was handled, i.e.
    /// the next run started (or, with `last`, just that it was let through).
    async fn step(&self, n: u32) {
        assert_eq!(self.execs(), n, "run {n} should be waiting");
        if let Some(g) = &self.gate {
            g.add_permits(1);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.execs() < n + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "run {} never started",
                n + 1
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    async fn step_last(&self) {
        if let Some(g) = &self.gate {
            g.add_permits(1);
        }
    }
}

#[async_trait::async_trait]
impl ProbeTarget for Fake {
    fn pod_ip(&self) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
    async fn connect_tcp(&self, host: IpAddr, port: u16) -> std::io::Result<TcpStream> {
        TcpStream::connect(SocketAddr::new(host, port)).await
    }
    async fn exec(&self, _command: &[String], timeout: Duration) -> std::io::Result<ExecResult> {
        *self.execs.lock().unwrap() += 1;
        if let Some(g) = &self.gate {
            g.acquire().await.unwrap().forget();
        }
        let code = {
            let mut codes = self.codes.lock().unwrap();
            let mut last = self.last.lock().unwrap();
            if let Some(c) = codes.pop_front() {
                *last = c;
            }
            *last
        };
        match code {
            Some(code) => Ok(ExecResult::Exited {
                code,
                output: if code == 0 {
                    String::new()
                } else {
                    format!("exit {code}")
                },
            }),
            None => {
                tokio::time::sleep(timeout).await;
                Ok(ExecResult::TimedOut)
            }
        }
    }
}

fn container() -> Container {
    Container {
        name: "app".into(),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 1,
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn exec_probe() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["check".into()]),
        }),
        period_seconds: Some(1),
        ..Default::default()
    }
}

/// An HTTP server answering `status` to every request; it sends back each request head.
async fn http_server(status: u16) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

fn http_probe(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some(path.into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn http_get_success_sends_path_and_headers() {
    let (port, mut heads) = http_server(204).await;
    let fake = Fake::with_codes(&[]);
    let probe = http_probe(IntOrString::Int(i32::from(port)), "healthz");
    run_handler(&probe, &container(), fake.as_ref(), T)
        .await
        .unwrap();
    let head = heads.recv().await.unwrap().to_lowercase();
    assert!(head.starts_with("get /healthz http/1.1"), "{head}");
    assert!(head.contains("x-probe: yes"), "{head}");
    assert!(head.contains("user-agent: kube-probe/"), "{head}");
}

#[tokio::test]
async fn http_get_named_port_and_error_status() {
    let (port, _heads) = http_server(500).await;
    let fake = Fake::with_codes(&[]);
    let mut c = container();
    c.ports.as_mut().unwrap()[0].container_port = i32::from(port);
    let probe = http_probe(IntOrString::String("http".into()), "/");
    let err = run_handler(&probe, &c, fake.as_ref(), T).await.unwrap_err();
    assert_eq!(err, "HTTP probe failed with statuscode: 500");
    let probe = http_probe(IntOrString::String("nope".into()), "/");
    let err = run_handler(&probe, &c, fake.as_ref(), T).await.unwrap_err();
    assert!(err.contains("couldn't find port \"nope\""), "{err}");
    // 3xx counts as success, as upstream.
    let (port, _heads) = http_server(302).await;
    let probe = http_probe(IntOrString::Int(i32::from(port)), "/");
    run_handler(&probe, &c, fake.as_ref(), T).await.unwrap();
}

#[tokio::test]
async fn https_get_skips_certificate_verification() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
                let _ = tls.flush().await;
            });
        }
    });
    let mut probe = http_probe(IntOrString::Int(i32::from(port)), "/");
    probe.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
    let fake = Fake::with_codes(&[]);
    run_handler(&probe, &container(), fake.as_ref(), T)
        .await
        .unwrap();
}

#[tokio::test]
async fn tcp_socket_open_and_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let fake = Fake::with_codes(&[]);
    let probe = |port: u16| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        ..Default::default()
    };
    run_handler(&probe(open), &container(), fake.as_ref(), T)
        .await
        .unwrap();
    let err = run_handler(&probe(closed), &container(), fake.as_ref(), T)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
    );
}

#[tokio::test]
async fn exec_exit_codes_and_timeout() {
    let fake = Fake::with_codes(&[Some(0), Some(1), None]);
    let c = container();
    let p = exec_probe();
    run_handler(&p, &c, fake.as_ref(), T).await.unwrap();
    assert_eq!(
        run_handler(&p, &c, fake.as_ref(), T).await.unwrap_err(),
        "exit 1"
    );
    let err = run_handler(&p, &c, fake.as_ref(), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(err, "command \"check\" timed out");
}

#[tokio::test]
async fn grpc_health_check() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = crate::images::grpc_echo::GrpcEchoConfig {
        port,
        host: None,
        pod: "p".into(),
        namespace: "n".into(),
    };
    tokio::spawn(crate::images::grpc_echo::serve_on(
        listener,
        config,
        std::future::pending(),
    ));
    let probe = |service: Option<&str>| Probe {
        grpc: Some(GRPCAction {
            port: i32::from(port),
            service: service.map(str::to_owned),
        }),
        ..Default::default()
    };
    let fake = Fake::with_codes(&[]);
    run_handler(&probe(None), &container(), fake.as_ref(), T)
        .await
        .unwrap();
    run_handler(
        &probe(Some("skiff.echo.v1.Echo")),
        &container(),
        fake.as_ref(),
        T,
    )
    .await
    .unwrap();
    let err = run_handler(&probe(Some("other")), &container(), fake.as_ref(), T)
        .await
        .unwrap_err();
    assert!(err.contains("grpc status 5"), "{err}");
}

fn fast() -> ProberOptions {
    ProberOptions {
        second: Duration::from_millis(20),
    }
}

async fn wait_for<T: Clone>(rx: &mut tokio::sync::watch::Receiver<T>, f: impl Fn(&T) -> bool) -> T {
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|v| f(v)))
        .await
        .unwrap()
        .unwrap()
        .clone()
}

async fn wait_execs(fake: &Fake, n: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.execs() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "run {n} never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn readiness_thresholds() {
    let fake = Fake::gated(&[
        Some(1),
        Some(0),
        Some(0),
        Some(1),
        Some(1),
        Some(0),
        Some(0),
    ]);
    let mut c = container();
    c.readiness_probe = Some(Probe {
        success_threshold: Some(2),
        failure_threshold: Some(2),
        ..exec_probe()
    });
    let mut h = Prober::spawn_with(&c, fake.clone(), fast());
    assert!(*h.started.borrow());
    wait_execs(&fake, 1).await;
    assert!(!*h.ready.borrow(), "readiness defaults to failure");
    fake.step(1).await; // fail
    assert!(!*h.ready.borrow());
    fake.step(2).await; // ok (1 of 2)
    assert!(
        !*h.ready.borrow(),
        "one success is below successThreshold 2"
    );
    fake.step(3).await; // ok (2 of 2)
    assert!(*h.ready.borrow());
    fake.step(4).await; // fail (1 of 2)
    assert!(*h.ready.borrow(), "one failure is below failureThreshold 2");
    fake.step(5).await; // fail (2 of 2)
    assert!(!*h.ready.borrow());
    fake.step(6).await;
    fake.step(7).await;
    assert!(*h.ready.borrow());
    let first = h.events.recv().await.unwrap();
    assert_eq!(first.reason, "Unhealthy");
    assert_eq!(first.message, "Readiness probe failed: exit 1");
    assert!(h.restart.borrow().is_none());
}

#[tokio::test]
async fn startup_gates_liveness_and_liveness_failure_restarts() {
    // startup: fail, ok; then liveness: ok, fail, fail, fail -> restart
    let fake = Fake::gated(&[Some(1), Some(0), Some(0), Some(1)]);
    let mut c = container();
    c.startup_probe = Some(Probe {
        failure_threshold: Some(5),
        ..exec_probe()
    });
    c.liveness_probe = Some(exec_probe());
    let mut h = Prober::spawn_with(&c, fake.clone(), fast());
    wait_execs(&fake, 1).await;
    assert!(!*h.started.borrow());
    assert!(!*h.ready.borrow());
    fake.step(1).await; // startup fail
    assert!(!*h.started.borrow());
    fake.step(2).await; // startup ok; run 3 is the first liveness run
    assert!(*h.started.borrow());
    // No readiness probe: ready once started.
    assert!(*h.ready.borrow());
    fake.step(3).await; // liveness ok
    fake.step(4).await; // fail 1
    fake.step(5).await; // fail 2
    assert!(h.restart.borrow().is_none());
    fake.step_last().await; // fail 3
    let restart = wait_for(&mut h.restart, Option::is_some).await.unwrap();
    assert_eq!(restart.kind, ProbeKind::Liveness);
    assert_eq!(
        restart.message,
        "Container app failed liveness probe, will be restarted"
    );
    assert!(!*h.ready.borrow());
}

#[tokio::test]
async fn startup_failure_restarts() {
    let fake = Fake::with_codes(&[Some(1)]);
    let mut c = container();
    c.startup_probe = Some(Probe {
        failure_threshold: Some(2),
        ..exec_probe()
    });
    c.readiness_probe = Some(exec_probe());
    let mut h = Prober::spawn_with(&c, fake.clone(), fast());
    let restart = wait_for(&mut h.restart, Option::is_some).await.unwrap();
    assert_eq!(restart.kind, ProbeKind::Startup);
    assert_eq!(
        fake.execs(),
        2,
        "readiness must not run before startup succeeded"
    );
    assert!(!*h.started.borrow());
    assert!(!*h.ready.borrow());
    let e = h.events.recv().await.unwrap();
    assert_eq!(e.message, "Startup probe failed: exit 1");
}

#[tokio::test]
async fn initial_delay_and_timeout_failures() {
    let fake = Fake::with_codes(&[None]);
    let mut c = container();
    c.liveness_probe = Some(Probe {
        initial_delay_seconds: Some(5),
        failure_threshold: Some(1),
        timeout_seconds: Some(1),
        ..exec_probe()
    });
    let start = std::time::Instant::now();
    let mut h = Prober::spawn_with(&c, fake.clone(), fast());
    wait_for(&mut h.restart, Option::is_some).await;
    // 5 "seconds" of delay then a 1 "second" timeout, 20ms each.
    assert!(start.elapsed() >= Duration::from_millis(120));
    let e = h.events.recv().await.unwrap();
    assert_eq!(
        e.message,
        "Liveness probe failed: command \"check\" timed out"
    );
}

#[tokio::test]
async fn a_network_readiness_probe_sees_a_late_listener_within_its_first_period() {
    // The port is closed when the container starts and opens a moment later; the period is an
    // hour, so only the first period's quick retries can make the container ready.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = container();
    c.readiness_probe = Some(Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(port)),
            host: None,
        }),
        period_seconds: Some(1),
        ..Default::default()
    });
    let options = ProberOptions {
        second: Duration::from_secs(3600),
    };
    let mut h = Prober::spawn_with(&c, Fake::with_codes(&[]), options);
    // The probe at the first tick fails (and is reported, as upstream does).
    let first = tokio::time::timeout(Duration::from_secs(60), h.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.message,
        format!("Readiness probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
    let _listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    wait_for(&mut h.ready, |r| *r).await;
    // The quick retries that failed were neither counted nor reported.
    assert!(h.events.try_recv().is_err(), "a quick retry was reported");
}

#[tokio::test]
async fn exec_probes_wait_for_their_period() {
    // An exec readiness probe is not retried early: with an hour's period, one run only.
    let fake = Fake::with_codes(&[Some(1), Some(0)]);
    let mut c = container();
    c.readiness_probe = Some(exec_probe());
    let options = ProberOptions {
        second: Duration::from_secs(3600),
    };
    let h = Prober::spawn_with(&c, fake.clone(), options);
    wait_execs(&fake, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.execs(), 1, "an exec probe ran again before its period");
    assert!(!*h.ready.borrow());
}
