//! `skiff agent --components proxy` end to end: the real binary against a real API server
//! (`skiff up`'s), its data plane inside test namespaces (`--netns`), pins in a private BPF
//! file system (`--bpffs`):
//! - ClusterIPs programmed from Services and EndpointSlices at start and on change, the admin
//!   endpoint's dump; SIGTERM keeps the routes, `--cleanup` removes them. Both data planes.
//! - eBPF restart: a TCP connection through a NodePort from an "external" namespace and a
//!   connected UDP socket to a ClusterIP keep working across SIGTERM + start, with the API
//!   changed in between (a Service removed, one added, endpoints added): the programmed maps
//!   then equal the new table.
//! - eBPF `--pod-netns-prefix`: "pod" namespaces made outside skiff (before and after the
//!   start) reach a ClusterIP through the socket load balancer; others do not; deletion and
//!   re-creation are followed.
//! - eBPF SIGKILL: none of the agent's BPF programs is left in the kernel (so none is
//!   attached anywhere: not at the cgroup root, not on tc), the pins stay, `--cleanup`
//!   removes them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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

use crate::privileged::{
    Bpffs, bpf_program_ids, loaded_program_names, privileged, tcx_ingress_programs,
};

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

    /// A new namespace `name` (one left by an earlier run is replaced) with `lo` up.
    fn add(name: &str) -> Result<Netns> {
        let _ = ip(&["netns", "delete", name]);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
            stop: Arc::new(AtomicBool::new(false)),
            server: None,
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `name` with `lo` up and `bk0` holding the node's address 10.250.7.1 and a backend's,
    /// 10.250.7.2, where a TCP server on :8080 answers `backend` to every connection.
    fn start(name: &str) -> Result<Netns> {
        let mut ns = Netns::add(name)?;
        // A veth pair inside the namespace (no dummy driver on every kernel).
        ip(&[
            "-n", name, "link", "add", "bk0", "type", "veth", "peer", "name", "bk1",
        ])?;
        ip(&["-n", name, "addr", "add", "10.250.7.1/24", "dev", "bk0"])?;
        ip(&["-n", name, "addr", "add", "10.250.7.2/24", "dev", "bk0"])?;
        ip(&["-n", name, "link", "set", "bk1", "up"])?;
        ip(&["-n", name, "link", "set", "bk0", "up"])?;
        ns.serve("10.250.7.2:8080", "backend")?;
        Ok(ns)
    }

    /// A TCP server at `addr` inside the namespace writing `answer` to every connection,
    /// until drop.
    fn serve(&mut self, addr: &str, answer: &'static str) -> Result<()> {
        let addr: SocketAddr = addr.parse()?;
        let listener = run_in_netns(Some(&self.path()), move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = self.stop.clone();
        self.server = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(answer.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        Ok(())
    }

    /// A "pod" namespace: `lo` up holding 10.250.9.1, where a server on :8080 answers
    /// `answer`; no other interface, so nothing but the socket load balancer can take a
    /// connection to a service address anywhere.
    fn pod(name: &str, answer: &'static str) -> Result<Netns> {
        let mut ns = Netns::add(name)?;
        ip(&["-n", name, "addr", "add", "10.250.9.1/32", "dev", "lo"])?;
        ns.serve("10.250.9.1:8080", answer)?;
        Ok(ns)
    }

    /// Waits until `addr` answers `want` from inside the namespace.
    fn until_answers(&self, addr: SocketAddr, want: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.get(addr) {
                Ok(answer) if answer == want => return Ok(()),
                result if Instant::now() > deadline => {
                    bail!("{addr} never answered {want}: {result:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
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
        self.until_answers(addr, "backend")
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
    fn start(kubeconfig: &std::path::Path, netns: &str, mode: &str, bpffs: &Path) -> Result<Agent> {
        Self::start_with(kubeconfig, netns, mode, bpffs, "10.250.7.1")
    }

    fn start_with(
        kubeconfig: &std::path::Path,
        netns: &str,
        mode: &str,
        bpffs: &Path,
        node_ip: &str,
    ) -> Result<Agent> {
        Self::start_args(kubeconfig, netns, mode, bpffs, node_ip, &[])
    }

    fn start_args(
        kubeconfig: &std::path::Path,
        netns: &str,
        mode: &str,
        bpffs: &Path,
        node_ip: &str,
        extra: &[&str],
    ) -> Result<Agent> {
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
                node_ip,
                "--proxy-mode",
                mode,
                "--admin-addr",
                "127.0.0.1:0",
                "--bpffs",
            ])
            .arg(bpffs)
            .args(extra)
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

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (by PID) and reap: what a crash looks like.
    fn kill(&mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-KILL", &pid]).status()?;
        Ok(self.child.wait()?)
    }
}

/// `skiff agent --cleanup` for the test's node; its stdout.
fn cleanup(netns: &str, bpffs: &Path) -> Result<String> {
    let out = Command::new(skiff_exe()?)
        .args([
            "agent",
            "--cleanup",
            "--netns",
            netns,
            "--node-name",
            "agent-node",
            "--bpffs",
        ])
        .arg(bpffs)
        .output()?;
    ensure!(
        out.status.success(),
        "skiff agent --cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
    service_to(client, name, "10.250.7.2").await
}

/// A selector-less ClusterIP Service (port 80) with a hand-made EndpointSlice to
/// `backend`:8080.
async fn service_to(client: &kube::Client, name: &str, backend: &str) -> Result<SocketAddr> {
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
        "endpoints": [{"addresses": [backend], "conditions": {"ready": true}}],
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
    let bpffs = Bpffs::new(&format!("agent-{mode}"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let first = rt.block_on(service(&client, "agent-first"))?;

    let mut agent = Agent::start(&up.kubeconfig, &ns.name, mode, &bpffs.dir)?;
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
    // eBPF hands its programs over to the next start (pinned links): the ClusterIP keeps
    // answering while no agent runs. The userspace listeners go with the process.
    if mode == "ebpf" {
        ensure!(
            ns.get(first)? == "backend",
            "the handed-over programs do not serve"
        );
    } else {
        ensure!(
            ns.get(first).is_err(),
            "the ClusterIP still answers after the agent stopped"
        );
    }
    // A stop is half a restart: the routes stay (the reject route keeps unknown service
    // addresses inside the node meanwhile); --cleanup removes them.
    let routes = ip(&["-n", &ns.name, "route", "show", "table", "all"])?;
    ensure!(
        routes.contains("10.96.0.0/12") && routes.contains("172.18.255.0/24"),
        "the agent removed its routes on SIGTERM:\n{routes}"
    );
    let pins = bpffs.dir.join("skiff/agent-node");
    ensure!(
        pins.exists() == (mode == "ebpf"),
        "pins at {} after a {mode} agent: {}",
        pins.display(),
        pins.exists()
    );
    let said = cleanup(&ns.name, &bpffs.dir)?;
    ensure!(said.contains("skiff agent cleaned up"), "{said}");
    let routes = ip(&["-n", &ns.name, "route", "show", "table", "all"])?;
    ensure!(
        !routes.contains("10.96.0.0/12") && !routes.contains("172.18.255.0/24"),
        "--cleanup left the routes behind:\n{routes}"
    );
    ensure!(!pins.exists(), "--cleanup left {}", pins.display());
    ensure!(
        ns.get(first).is_err(),
        "the ClusterIP still answers after --cleanup"
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

/// `--pod-netns-prefix`: namespaces another runtime made (here: `ip netns add`) are load
/// balanced, those there at start and those made later; a namespace without the prefix is
/// left alone; a deleted one is forgotten, and a re-created one is served again.
#[test]
fn agent_ebpf_balances_pod_namespaces_it_follows() -> Result<()> {
    if !privileged("skiff agent") {
        return Ok(());
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir()?;
    let mut up = SkiffUp::start(&format!("agpod{pid}"), &dir.path().join("data"), &[])?;
    let ns = Netns::start(&format!("skagent{pid}-pods"))?;
    let prefix = format!("skpod{pid}-");
    let before = Netns::pod(&format!("{prefix}a"), "a")?;
    let other = Netns::pod(&format!("skother{pid}"), "other")?;
    let bpffs = Bpffs::new("agent-pods")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let svc = rt.block_on(service_to(&client, "agent-pods", "10.250.9.1"))?;
    let flag = format!("--pod-netns-prefix={prefix}");
    let agent = Agent::start_args(
        &up.kubeconfig,
        &ns.name,
        "ebpf",
        &bpffs.dir,
        "10.250.7.1",
        &[&flag],
    )?;
    before.until_answers(svc, "a")?;
    let after = Netns::pod(&format!("{prefix}b"), "b")?;
    after.until_answers(svc, "b")?;
    ensure!(
        other.get(svc).is_err(),
        "a namespace without the prefix was load balanced"
    );
    let allowed = |dump: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix("allowed_netns ("))
            .and_then(|l| l.split(')').next())
            .and_then(|n| n.parse::<usize>().ok())
    };
    // the node's namespace and both pods
    ensure!(allowed(&agent.dump()?) == Some(3), "{}", agent.dump()?);
    drop(after);
    until("the deleted pod namespace forgotten", || {
        let dump = agent.dump()?;
        ensure!(allowed(&dump) == Some(2), "{dump}");
        Ok(())
    })?;
    let again = Netns::pod(&format!("{prefix}b"), "b again")?;
    again.until_answers(svc, "b again")?;
    drop(agent);
    drop((before, again, other, ns));
    let _ = cleanup(&format!("skagent{pid}-pods"), &bpffs.dir);
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    Ok(())
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

#[test]
fn agent_refuses_ebpf_without_a_bpf_file_system() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = Command::new(skiff_exe()?)
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--components",
            "proxy",
            "--bpffs",
        ])
        .arg(dir.path())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "started without a bpffs: {err}");
    ensure!(
        err.contains("--bpffs")
            && err.contains("not on a BPF file system")
            && err.contains("Nothing was started"),
        "{err}"
    );
    Ok(())
}

/// Node N (`--netns`) between an "external" namespace E (10.250.9.2, on N's 10.250.9.1) and a
/// backend namespace B (10.250.10.2 and .3, default route via N's 10.250.10.1), forwarding on
/// in N and no route out of the three. B runs the servers: TCP :8080 on both addresses (each
/// accepted connection is handed to the test, which can write to it; every line read is
/// answered `echo:<line>`) and UDP :8053 per address (answers `<local address>|<datagram>`).
/// Drop stops the servers and deletes the namespaces.
struct Topology {
    node: String,
    external: String,
    backend: String,
    accepted: std::sync::mpsc::Receiver<TcpStream>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const NODE_IP: &str = "10.250.9.1";
const BACKEND_1: &str = "10.250.10.2";
const BACKEND_2: &str = "10.250.10.3";

impl Topology {
    fn start(tag: &str) -> Result<Topology> {
        let pid = std::process::id();
        let mut t = Topology {
            node: format!("skagr{pid}{tag}"),
            external: format!("skagr{pid}{tag}-e"),
            backend: format!("skagr{pid}{tag}-b"),
            accepted: std::sync::mpsc::channel().1,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for ns in [&t.node, &t.external, &t.backend] {
            let _ = ip(&["netns", "delete", ns]);
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "-n",
            &t.node,
            "link",
            "add",
            "ext0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &t.external,
        ])?;
        ip(&[
            "-n", &t.node, "link", "add", "bk0", "type", "veth", "peer", "name", "eth0", "netns",
            &t.backend,
        ])?;
        for (ns, dev, addrs) in [
            (&t.node, "ext0", &["10.250.9.1/24"][..]),
            (&t.external, "eth0", &["10.250.9.2/24"][..]),
            (&t.node, "bk0", &["10.250.10.1/24"][..]),
            (
                &t.backend,
                "eth0",
                &["10.250.10.2/24", "10.250.10.3/24"][..],
            ),
        ] {
            for a in addrs {
                ip(&["-n", ns, "addr", "add", a, "dev", dev])?;
            }
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            &t.backend,
            "route",
            "add",
            "default",
            "via",
            "10.250.10.1",
        ])?;
        // the tc program forwards with a FIB lookup: N routes, as any node does
        run_in_netns(Some(&t.path(&t.node)), || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        })??;

        let (tx, rx) = std::sync::mpsc::channel();
        t.accepted = rx;
        let listener = run_in_netns(Some(&t.path(&t.backend)), || {
            TcpListener::bind("0.0.0.0:8080")
        })??;
        listener.set_nonblocking(true)?;
        let stop = t.stop.clone();
        t.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        if let Ok(handle) = s.try_clone() {
                            let _ = tx.send(handle);
                        }
                        let stop = stop.clone();
                        std::thread::spawn(move || echo_lines(s, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
        for addr in [BACKEND_1, BACKEND_2] {
            let bind: SocketAddr = format!("{addr}:8053").parse()?;
            let udp = run_in_netns(Some(&t.path(&t.backend)), move || {
                std::net::UdpSocket::bind(bind)
            })??;
            udp.set_read_timeout(Some(Duration::from_millis(20)))?;
            let stop = t.stop.clone();
            t.threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                        let mut reply = format!("{bind}|").into_bytes();
                        reply.extend_from_slice(&buf[..n]);
                        let _ = udp.send_to(&reply, peer);
                    }
                }
            }));
        }
        Ok(t)
    }

    fn path(&self, ns: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(ns)
    }

    /// A TCP connection from E.
    fn connect_external(&self, addr: SocketAddr) -> Result<TcpStream> {
        let s = run_in_netns(Some(&self.path(&self.external)), move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        })?
        .with_context(|| format!("tcp {addr} from the external namespace"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    }

    /// The server side of the connection B accepted last.
    fn accepted(&self) -> Result<TcpStream> {
        self.accepted
            .recv_timeout(Duration::from_secs(3))
            .context("the backend accepted no connection")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in [&self.external, &self.backend, &self.node] {
            let _ = ip(&["netns", "delete", ns]);
        }
    }
}

/// Answers every line read with `echo:<line>`, until EOF or `stop`.
fn echo_lines(s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut out) = s.try_clone() else { return };
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                if out.write_all(format!("echo:{line}").as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Sends `line` and reads one line back.
fn chat(s: &mut TcpStream, line: &str) -> Result<String> {
    s.write_all(format!("{line}\n").as_bytes())?;
    read_line(s)
}

fn read_line(s: &mut TcpStream) -> Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\n") {
        let n = s.read(&mut byte).context("reading a line")?;
        ensure!(n == 1, "connection closed after {out:?}");
        out.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
}

/// A selector-less Service (`spec` merged into the base) with one EndpointSlice
/// `<name>-manual` to `addresses`, port `target`/`protocol`. Returns the created Service.
async fn make_service(
    client: &kube::Client,
    name: &str,
    spec: serde_json::Value,
    protocol: &str,
    target: u16,
    addresses: &[&str],
) -> Result<Service> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let mut body = json!({
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "p", "port": 80, "targetPort": target, "protocol": protocol}]}
    });
    if let (Some(base), Some(extra)) = (body["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    let svc = services
        .create(&PostParams::default(), &serde_json::from_value(body)?)
        .await?;
    set_endpoints(client, name, protocol, target, addresses).await?;
    Ok(svc)
}

/// Creates or replaces the EndpointSlice `<name>-manual` of Service `name`.
async fn set_endpoints(
    client: &kube::Client,
    name: &str,
    protocol: &str,
    target: u16,
    addresses: &[&str],
) -> Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice_name = format!("{name}-manual");
    let endpoints: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    let mut slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": slice_name, "labels": {
            "kubernetes.io/service-name": name,
            "endpointslice.kubernetes.io/managed-by": "agent-test.skiff.dev"
        }},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "p", "port": target, "protocol": protocol}]
    }))?;
    match slices.get_opt(&slice_name).await? {
        Some(old) => {
            slice.metadata.resource_version = old.metadata.resource_version;
            slices
                .replace(&slice_name, &PostParams::default(), &slice)
                .await?;
        }
        None => {
            slices.create(&PostParams::default(), &slice).await?;
        }
    }
    Ok(())
}

async fn delete_service(client: &kube::Client, name: &str) -> Result<()> {
    let dp = kube::api::DeleteParams::default();
    Api::<Service>::namespaced(client.clone(), "default")
        .delete(name, &dp)
        .await?;
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .delete(&format!("{name}-manual"), &dp)
        .await?;
    Ok(())
}

fn cluster_ip(svc: &Service, port: u16) -> Result<SocketAddr> {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .context("no ClusterIP")?;
    Ok(SocketAddr::new(ip.parse()?, port))
}

fn node_port(svc: &Service) -> Result<SocketAddr> {
    let port = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| p.node_port)
        .context("no nodePort")?;
    Ok(SocketAddr::new(NODE_IP.parse()?, u16::try_from(port)?))
}

/// Retries `f` for up to 30 s.
fn until<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what}: gave up")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// From the admin dump: the frontends of the service table as (protocol, address), all and
/// external ones, and what the socket balancer's `services` and the tc `frontends` maps hold.
struct Programmed {
    table: BTreeSet<(String, String)>,
    table_external: BTreeSet<(String, String)>,
    sock: BTreeMap<(String, String), String>,
    tc: BTreeMap<(String, String), String>,
}

fn programmed(dump: &str) -> Programmed {
    let mut p = Programmed {
        table: BTreeSet::new(),
        table_external: BTreeSet::new(),
        sock: BTreeMap::new(),
        tc: BTreeMap::new(),
    };
    let mut section = "";
    let mut proto = String::new();
    for line in dump.lines() {
        if line.starts_with("# ") {
            section = line;
            continue;
        }
        if line.starts_with("services (") || line.starts_with("frontends (") {
            section = if line.starts_with("services") {
                "sock"
            } else {
                "tc"
            };
            continue;
        }
        if !line.starts_with("  ") && (section == "sock" || section == "tc") {
            section = "";
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match section {
            "# service table" => {
                if words.first() == Some(&"port") {
                    proto = words
                        .get(1)
                        .and_then(|k| k.rsplit('/').next())
                        .unwrap_or_default()
                        .to_lowercase();
                } else if words.first() == Some(&"frontend") && words.len() == 3 {
                    let key = (proto.clone(), words[2].to_owned());
                    if words[1] != "ClusterIP" {
                        p.table_external.insert(key.clone());
                    }
                    p.table.insert(key);
                }
            }
            "sock" | "tc" if words.len() >= 3 => {
                let backends = line
                    .split_once("->")
                    .map_or("", |(_, b)| b)
                    .trim()
                    .to_owned();
                let key = (words[0].to_owned(), words[1].to_owned());
                if section == "sock" {
                    p.sock.insert(key, backends);
                } else {
                    p.tc.insert(key, backends);
                }
            }
            _ => {}
        }
    }
    p
}

#[test]
fn agent_ebpf_restart_keeps_established_connections_and_reconciles() -> Result<()> {
    if !privileged("skiff agent") {
        return Ok(());
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir()?;
    let mut up = SkiffUp::start(&format!("agr{pid}"), &dir.path().join("data"), &[])?;
    let topo = Topology::start("r")?;
    let bpffs = Bpffs::new("agent-restart")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let web = rt.block_on(make_service(
        &client,
        "web",
        json!({"type": "NodePort"}),
        "TCP",
        8080,
        &[BACKEND_1],
    ))?;
    let dns = rt.block_on(make_service(
        &client,
        "dns",
        json!({}),
        "UDP",
        8053,
        &[BACKEND_1],
    ))?;
    rt.block_on(make_service(
        &client,
        "stale",
        json!({}),
        "TCP",
        8080,
        &[BACKEND_1],
    ))?;
    let web_np = node_port(&web)?;
    let dns_ip = cluster_ip(&dns, 80)?;

    let mut agent = Agent::start_with(&up.kubeconfig, &topo.node, "ebpf", &bpffs.dir, NODE_IP)?;
    // An established TCP connection from outside the node, through the NodePort...
    let mut conn = until("the NodePort from outside", || {
        let mut c = topo.connect_external(web_np)?;
        ensure!(chat(&mut c, "hello")? == "echo:hello");
        Ok(c)
    })?;
    let mut server_side = topo.accepted()?;
    // (the probe above may have left earlier accepted connections: take the last one)
    while let Ok(s) = topo.accepted.try_recv() {
        server_side = s;
    }
    ensure!(chat(&mut conn, "before")? == "echo:before");
    // ...and a connected UDP socket on the node to a ClusterIP, which shows the ClusterIP
    // as its peer (the socket balancer's reverse translation).
    let udp = run_in_netns(Some(&topo.path(&topo.node)), || -> std::io::Result<_> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dns_ip)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })??;
    let ask = |what: &str| -> Result<String> {
        udp.send(what.as_bytes())?;
        let mut buf = [0u8; 512];
        let n = udp.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    ensure!(ask("before")? == format!("{BACKEND_1}:8053|before"));
    ensure!(
        udp.peer_addr()? == dns_ip,
        "getpeername {:?}",
        udp.peer_addr()
    );

    // Stop: the pins stay, and the programs stay attached (handed over): the connections
    // keep working while no agent runs.
    let status = agent.stop()?;
    ensure!(status.success(), "skiff agent exited with {status}");
    ensure!(chat(&mut conn, "between")? == "echo:between");
    ensure!(ask("between")? == format!("{BACKEND_1}:8053|between"));
    let pins = bpffs.dir.join("skiff/agent-node");
    for map in [
        "services",
        "rev_nat",
        "ns_services",
        "ns_flows",
        "ns_replies",
    ] {
        ensure!(
            pins.join(map).exists(),
            "{map} is not pinned in {}",
            pins.display()
        );
    }
    let handed = |dir: &Path| -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
                    .count()
            })
            .unwrap_or(0)
    };
    ensure!(
        handed(&pins) > 0,
        "no link handed over in {}",
        pins.display()
    );
    // The cluster changes while the agent is down.
    rt.block_on(delete_service(&client, "stale"))?;
    let fresh = rt.block_on(make_service(
        &client,
        "fresh",
        json!({}),
        "TCP",
        8080,
        &[BACKEND_2],
    ))?;
    rt.block_on(set_endpoints(
        &client,
        "web",
        "TCP",
        8080,
        &[BACKEND_1, BACKEND_2],
    ))?;

    // Start again (ready = the new table is programmed).
    let agent = Agent::start_with(&up.kubeconfig, &topo.node, "ebpf", &bpffs.dir, NODE_IP)?;
    // The backend speaks first: its packet to the node's SNAT address must find the reply
    // translation the previous process made (pinned), or the node would reset it.
    server_side.write_all(b"push\n")?;
    ensure!(
        read_line(&mut conn)? == "push",
        "the backend's data did not cross the restarted node"
    );
    ensure!(chat(&mut conn, "after")? == "echo:after");
    ensure!(
        handed(&pins) == 0,
        "the new agent did not release the handed-over links"
    );
    ensure!(ask("after")? == format!("{BACKEND_1}:8053|after"));
    ensure!(
        udp.peer_addr()? == dns_ip,
        "getpeername after the restart: {:?}",
        udp.peer_addr()
    );
    // New connections see the new table.
    let fresh_ip = cluster_ip(&fresh, 80)?;
    let answer = run_in_netns(
        Some(&topo.path(&topo.node)),
        move || -> std::io::Result<_> {
            let mut s = TcpStream::connect_timeout(&fresh_ip, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"fresh\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        },
    )??;
    ensure!(answer == "echo:fresh\n", "{answer:?}");
    let mut again = topo.connect_external(web_np)?;
    ensure!(chat(&mut again, "new")? == "echo:new");

    // The maps hold exactly the new table: every frontend, with its backends, nothing else.
    let dump = agent.dump()?;
    let p = programmed(&dump);
    let sock_keys: BTreeSet<_> = p.sock.keys().cloned().collect();
    let tc_keys: BTreeSet<_> = p.tc.keys().cloned().collect();
    ensure!(
        !p.table.is_empty() && sock_keys == p.table,
        "socket balancer {sock_keys:?} != table {:?}\n{dump}",
        p.table
    );
    ensure!(
        tc_keys == p.table_external,
        "tc frontends {tc_keys:?} != external frontends {:?}\n{dump}",
        p.table_external
    );
    let stale_gone = !dump.contains("stale");
    ensure!(stale_gone, "{dump}");
    let np_key = ("tcp".to_owned(), web_np.to_string());
    let both = format!("{BACKEND_1}:8080 {BACKEND_2}:8080");
    ensure!(
        p.tc.get(&np_key).map(String::as_str) == Some(both.as_str())
            && p.sock.get(&np_key).map(String::as_str) == Some(both.as_str()),
        "the NodePort's backends are not the new ones:\n{dump}"
    );
    ensure!(
        dump.contains("attached ingress ext0") && dump.contains("attached ingress bk0"),
        "the tc program is not on the node's interfaces:\n{dump}"
    );

    drop(agent);
    cleanup(&topo.node, &bpffs.dir)?;
    ensure!(!pins.exists(), "--cleanup left {}", pins.display());
    drop(topo);
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    Ok(())
}

#[test]
fn agent_ebpf_killed_leaves_no_program_and_cleanup_removes_its_pins() -> Result<()> {
    if !privileged("skiff agent") {
        return Ok(());
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir()?;
    let mut up = SkiffUp::start(&format!("agk{pid}"), &dir.path().join("data"), &[])?;
    let topo = Topology::start("k")?;
    let bpffs = Bpffs::new("agent-kill")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let web = rt.block_on(make_service(
        &client,
        "web",
        json!({"type": "NodePort"}),
        "TCP",
        8080,
        &[BACKEND_1],
    ))?;
    let web_np = node_port(&web)?;
    let mut agent = Agent::start_with(&up.kubeconfig, &topo.node, "ebpf", &bpffs.dir, NODE_IP)?;
    until("the NodePort from outside", || {
        let mut c = topo.connect_external(web_np)?;
        ensure!(chat(&mut c, "hello")? == "echo:hello");
        Ok(())
    })?;
    for dev in ["ext0", "bk0"] {
        let on = tcx_ingress_programs(&topo.path(&topo.node), dev)?;
        ensure!(on == ["skiff_nodeport"], "{dev} carries {on:?}");
    }
    let ids = bpf_program_ids(agent.pid())?;
    let names = loaded_program_names(&ids);
    for want in ["skiff_connect4", "skiff_sendmsg6", "skiff_nodeport"] {
        ensure!(
            names.iter().any(|n| n == want),
            "the agent holds no {want}: {names:?}"
        );
    }

    agent.kill()?;
    // Its links were its own: the kernel detaches and frees every program with the process.
    let left = until("the killed agent's programs to go", || {
        let left = loaded_program_names(&ids);
        ensure!(left.is_empty(), "still loaded: {left:?}");
        Ok(left)
    });
    ensure!(left.is_ok(), "{left:?}");
    for dev in ["ext0", "bk0"] {
        let on = tcx_ingress_programs(&topo.path(&topo.node), dev)?;
        ensure!(on.is_empty(), "{dev} still carries {on:?}");
    }
    // Nothing translates any more: the NodePort is the node's closed port.
    ensure!(
        topo.connect_external(web_np)
            .and_then(|mut c| chat(&mut c, "x"))
            .is_err(),
        "the NodePort still answers after the agent died"
    );
    // The maps are pinned for a next start; --cleanup removes them.
    let pins = bpffs.dir.join("skiff/agent-node");
    ensure!(pins.join("ns_flows").exists(), "no pins after a crash");
    let said = cleanup(&topo.node, &bpffs.dir)?;
    ensure!(said.contains("agent-node (removed)"), "{said}");
    ensure!(!pins.exists(), "--cleanup left {}", pins.display());
    ensure!(
        !bpffs.dir.join("skiff").exists(),
        "--cleanup left the empty skiff directory"
    );
    drop(topo);
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    Ok(())
}
