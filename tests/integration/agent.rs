//! `skiff agent --components proxy` end to end: the real binary against a real API server
//! (`skiff up`'s), its data plane inside a test namespace (`--netns`) that holds a backend on a
//! veth: ClusterIPs programmed from Services and EndpointSlices at start and on change,
//! the admin endpoint's dump, and on SIGTERM its routes removed. Both data planes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_node::sandbox::run_in_netns;
use skiff_tests::skiff_up::{SkiffUp, skiff_exe};

use crate::privileged::privileged;

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output()?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The test's node namespace with a backend address on a veth; removed on drop.
struct Netns {
    name: String,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Netns {
    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `name` with `lo` up and `bk0` holding the node's address 10.250.7.1 and a backend's,
    /// 10.250.7.2, where a TCP server on :8080 answers `backend` to every connection.
    fn start(name: &str) -> Result<Netns> {
        let _ = ip(&["netns", "delete", name]);
        ip(&["netns", "add", name])?;
        let mut ns = Netns {
            name: name.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        // A veth pair inside the namespace (no dummy driver on every kernel).
        ip(&[
            "-n", name, "link", "add", "bk0", "type", "veth", "peer", "name", "bk1",
        ])?;
        ip(&["-n", name, "addr", "add", "10.250.7.1/24", "dev", "bk0"])?;
        ip(&["-n", name, "addr", "add", "10.250.7.2/24", "dev", "bk0"])?;
        ip(&["-n", name, "link", "set", "bk1", "up"])?;
        ip(&["-n", name, "link", "set", "bk0", "up"])?;
        let listener = run_in_netns(Some(&ns.path()), || TcpListener::bind("10.250.7.2:8080"))??;
        listener.set_nonblocking(true)?;
        let stop = ns.stop.clone();
        ns.server = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(b"backend");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        Ok(ns)
    }

    /// Connects from inside the namespace and reads the answer.
    fn get(&self, addr: SocketAddr) -> Result<String> {
        run_in_netns(Some(&self.path()), move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?
        .with_context(|| format!("tcp {addr} from netns {}", self.name))
    }

    /// Waits until `addr` answers `backend` from inside the namespace.
    fn until_served(&self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.get(addr) {
                Ok(answer) if answer == "backend" => return Ok(()),
                result if Instant::now() > deadline => bail!("{addr} never served: {result:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// A `skiff agent` process, SIGTERMed (by PID) and reaped on drop.
struct Agent {
    child: Child,
    admin: SocketAddr,
}

impl Agent {
    fn start(kubeconfig: &std::path::Path, netns: &str, mode: &str) -> Result<Agent> {
        let mut child = Command::new(skiff_exe()?)
            .args(["agent", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--components",
                "proxy",
                "--netns",
                netns,
                "--node-name",
                "agent-node",
                "--node-ip",
                "10.250.7.1",
                "--proxy-mode",
                mode,
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut agent = Agent {
            child,
            admin: "127.0.0.1:0".parse()?,
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .context("skiff agent printed no ready line within 60 s")?;
        let admin = line
            .strip_prefix("skiff agent is ready: components=proxy node=agent-node admin=")
            .with_context(|| format!("unexpected first line: {line}"))?;
        agent.admin = admin.parse()?;
        Ok(agent)
    }

    fn dump(&self) -> Result<String> {
        let mut s = TcpStream::connect(self.admin)?;
        write!(s, "GET /proxy/dump HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(Instant::now() < deadline, "skiff agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// A selector-less ClusterIP Service with a hand-made EndpointSlice to the test's backend.
async fn service(client: &kube::Client, name: &str) -> Result<SocketAddr> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "web", "port": 80, "targetPort": 8080}]}
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    let ip = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no ClusterIP allocated")?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-manual"), "labels": {
            "kubernetes.io/service-name": name,
            "endpointslice.kubernetes.io/managed-by": "agent-test.skiff.dev"
        }},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.250.7.2"], "conditions": {"ready": true}}],
        "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]
    }))?;
    slices.create(&PostParams::default(), &slice).await?;
    Ok(SocketAddr::new(ip.parse()?, 80))
}

fn agent_serves_cluster_ips(mode: &str) -> Result<()> {
    if !privileged("skiff agent") {
        return Ok(());
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir()?;
    let mut up = SkiffUp::start(&format!("ag{mode}{pid}"), &dir.path().join("data"), &[])?;
    let ns = Netns::start(&format!("skagent{pid}-{mode}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let first = rt.block_on(service(&client, "agent-first"))?;

    let mut agent = Agent::start(&up.kubeconfig, &ns.name, mode)?;
    ns.until_served(first)?;
    // A Service made while the agent runs is programmed too.
    let second = rt.block_on(service(&client, "agent-second"))?;
    ns.until_served(second)?;
    let dump = agent.dump()?;
    ensure!(
        dump.contains(&first.ip().to_string()) && dump.contains(&second.ip().to_string()),
        "the dump does not show both ClusterIPs:\n{dump}"
    );
    // eBPF must not have fallen back to userspace.
    ensure!(
        dump.contains(&format!("# data plane: {mode}\n")),
        "the dump does not name the {mode} data plane:\n{dump}"
    );

    let status = agent.stop()?;
    ensure!(status.success(), "skiff agent exited with {status}");
    let routes = ip(&["-n", &ns.name, "route", "show", "table", "all"])?;
    ensure!(
        !routes.contains("10.96.0.0/12") && !routes.contains("172.18.255.0/24"),
        "the agent left its routes behind:\n{routes}"
    );
    ensure!(
        ns.get(first).is_err(),
        "the ClusterIP still answers after the agent stopped"
    );
    drop(ns);
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    Ok(())
}

#[test]
fn agent_proxy_ebpf_serves_cluster_ips_in_its_namespace() -> Result<()> {
    agent_serves_cluster_ips("ebpf")
}

#[test]
fn agent_proxy_userspace_serves_cluster_ips_in_its_namespace() -> Result<()> {
    agent_serves_cluster_ips("userspace")
}

#[test]
fn agent_refuses_components_it_cannot_run_and_a_missing_netns() -> Result<()> {
    let out = Command::new(skiff_exe()?)
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--components",
            "proxy,dns",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "accepted dns: {err}");
    ensure!(
        err.contains("dns") && err.contains("Nothing was started"),
        "{err}"
    );
    let out = Command::new(skiff_exe()?)
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--components",
            "proxy",
            "--netns",
            "skiff-no-such-netns",
        ])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success());
    ensure!(err.contains("--netns skiff-no-such-netns"), "{err}");
    Ok(())
}
