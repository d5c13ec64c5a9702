//! One test battery, run against both service data planes (eBPF and userspace), inside
//! namespaces each test makes (as root): a node namespace with the pod bridge, real pod
//! sandboxes with servers in them, an "external" namespace on a veth (IPv4 and IPv6). Tables
//! are built from Service/EndpointSlice YAML and applied as the proxy's watcher would. The
//! eBPF data plane gets its tc north-south program attached to the node side of that veth
//! and to the pod bridge (only interfaces inside the test's node namespace).
//!
//! Known deviation: the userspace data plane proxies external traffic through a socket of
//! its own, so with `externalTrafficPolicy: Local` a backend sees the node's address, not the
//! client's; only the eBPF data plane preserves it (asserted below for eBPF only).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_ebpf::{NodePortLb, NodePortOptions, SockLb, SockLbOptions};
use skiff_node::sandbox::{
    IpCidr, NetnsObserver, PodSandboxSpec, Sandbox, SandboxManager, run_in_netns,
};
use skiff_proxy::conntrack::{self, Conntrack};
use skiff_proxy::ebpf::{EbpfDataplane, set_netns_allowed};
use skiff_proxy::routes::{self, Cidr, ServiceRoute};
use skiff_proxy::userspace::UserspaceDataplane;
use skiff_proxy::{Dataplane, NodeInfo, ServiceTable, TableDiff};

use crate::privileged::{NodeFixture, ip};

const NODE: &str = "node-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ebpf,
    Userspace,
}

/// Allows pod namespaces on the socket load balancer, as `skiff up` does.
#[derive(Debug)]
struct Allow(Arc<Mutex<SockLb>>);

impl NetnsObserver for Allow {
    fn created(&self, netns: &Path) {
        let _ = set_netns_allowed(&self.0, netns, true);
    }
    fn removed(&self, netns: &Path) {
        let _ = set_netns_allowed(&self.0, netns, false);
    }
}

/// In-process servers in one pod: TCP `:8080` answers the pod's name, TCP `:8081` answers
/// `<name> <peer address>`, UDP `:8053` answers `<name>:<datagram>`, all dual-stack. Drop
/// stops them.
struct PodServers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl PodServers {
    fn start(netns: &Path, name: &'static str) -> Result<PodServers> {
        let (tcp, whoami, udp) = run_in_netns(Some(netns), || -> std::io::Result<_> {
            Ok((
                TcpListener::bind("[::]:8080")?,
                TcpListener::bind("[::]:8081")?,
                UdpSocket::bind("[::]:8053")?,
            ))
        })??;
        tcp.set_nonblocking(true)?;
        whoami.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(20)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s1 = stop.clone();
        let t1 = std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(name.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let s3 = stop.clone();
        let t3 = std::thread::spawn(move || {
            while !s3.load(Ordering::Relaxed) {
                match whoami.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        // v4 clients of a dual-stack socket show up v4-mapped
                        let ip = match peer.ip() {
                            IpAddr::V6(v6) => {
                                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
                            }
                            v4 => v4,
                        };
                        let _ = s.write_all(format!("{name} {ip}").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        let s2 = stop.clone();
        let t2 = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
        Ok(PodServers {
            stop,
            threads: vec![t1, t2, t3],
        })
    }
}

impl Drop for PodServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The environment of one battery test.
struct Env {
    rt: tokio::runtime::Runtime,
    node_rt: Option<tokio::runtime::Runtime>,
    dataplane: Option<Arc<dyn Dataplane>>,
    north_south: Option<Arc<Mutex<NodePortLb>>>,
    sandboxes: Option<SandboxManager>,
    pods: Vec<Sandbox>,
    _servers: Vec<PodServers>,
    external: String,
    fx: NodeFixture,
}

const NODE_ADDR: &str = "10.250.7.1";
const EXTERNAL_ADDR: &str = "10.250.7.2";
const NODE_ADDR6: &str = "fd00:250:7::1";
const EXTERNAL_ADDR6: &str = "fd00:250:7::2";

impl Env {
    /// Pods `a` and `b` (servers) and `client`, an external namespace, and the data plane.
    fn new(kind: Kind, tag: &str) -> Result<Env> {
        let fx = NodeFixture::new(tag)?;
        let n = std::process::id() % 200;
        let v4: IpCidr = format!("10.244.{n}.0/24").parse()?;
        let v6: IpCidr = format!("fd00:10:244:{n:x}::/64").parse()?;
        let mut config = fx.sandbox_config(vec![v4, v6], "nameserver 192.0.2.53\n", "")?;
        ip(&["-n", &fx.node_ns, "link", "set", "lo", "up"])?;
        let rt = tokio::runtime::Runtime::new()?;
        let node_rt = crate::privileged::netns_runtime(&fx.node_ns)?;
        let node_path = PathBuf::from(format!("/run/netns/{}", fx.node_ns));
        let services: Vec<Cidr> = vec!["10.96.0.0/12".parse()?, "fd00:10:96::/112".parse()?];
        routes::install(
            Some(&fx.node_ns),
            &["172.18.255.0/24".parse()?],
            ServiceRoute::Local,
        )?;
        let mut north_south = None;
        let dataplane: Arc<dyn Dataplane> = match kind {
            Kind::Ebpf => {
                routes::install(Some(&fx.node_ns), &services, ServiceRoute::Unreachable)?;
                let mut lb = SockLb::load(SockLbOptions::default())?;
                lb.allow_netns(skiff_ebpf::netns_cookie(&node_path)?)?;
                lb.attach_root()?;
                let lb = Arc::new(Mutex::new(lb));
                config.netns_observer = Some(Arc::new(Allow(lb.clone())));
                // attached below, once the interfaces exist
                let ns = Arc::new(Mutex::new(NodePortLb::load(NodePortOptions {
                    max_frontends: 1024,
                    max_backends: 4096,
                    maglev_size: 1021,
                    max_flows: 4096,
                    pin_dir: None,
                })?));
                north_south = Some(ns.clone());
                Arc::new(EbpfDataplane::new(lb, node_rt.handle().clone()).with_north_south(ns))
            }
            Kind::Userspace => {
                routes::install(Some(&fx.node_ns), &services, ServiceRoute::Local)?;
                Arc::new(UserspaceDataplane::new(node_rt.handle().clone()))
            }
        };
        let external = format!("{}-ext", fx.node_ns);
        let mut env = Env {
            rt,
            node_rt: Some(node_rt),
            dataplane: Some(dataplane),
            north_south,
            sandboxes: None,
            pods: Vec::new(),
            _servers: Vec::new(),
            external,
            fx,
        };
        // An external client: its own namespace on a veth to the node, no other route.
        ip(&["netns", "add", &env.external])?;
        // IPv6 link-local addresses usable at once on the new veth (neighbour discovery)
        for ns in [env.node_netns(), env.external_netns()] {
            run_in_netns(Some(&ns), || {
                std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0")
            })??;
        }
        let veth = format!("skx{}", std::process::id() % 100_000);
        ip(&[
            "-n",
            &env.fx.node_ns,
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &env.external,
        ])?;
        ip(&[
            "-n",
            &env.fx.node_ns,
            "addr",
            "add",
            &format!("{NODE_ADDR}/24"),
            "dev",
            &veth,
        ])?;
        ip(&[
            "-n",
            &env.fx.node_ns,
            "addr",
            "add",
            &format!("{NODE_ADDR6}/64"),
            "dev",
            &veth,
            "nodad",
        ])?;
        ip(&["-n", &env.fx.node_ns, "link", "set", &veth, "up"])?;
        ip(&[
            "-n",
            &env.external,
            "addr",
            "add",
            &format!("{EXTERNAL_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &env.external,
            "addr",
            "add",
            &format!("{EXTERNAL_ADDR6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &env.external, "link", "set", "eth0", "up"])?;
        ip(&["-n", &env.external, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &env.external,
            "route",
            "add",
            "172.18.255.0/24",
            "via",
            NODE_ADDR,
        ])?;

        let manager = env.rt.block_on(SandboxManager::new(config))?;
        for (uid, name) in [("a", "srv-a"), ("b", "srv-b"), ("c", "client")] {
            let spec = PodSandboxSpec {
                uid: format!("{uid}0000000-0000-4000-8000-{:012}", std::process::id()),
                namespace: "default".into(),
                name: name.into(),
                hostname: name.into(),
                ..Default::default()
            };
            env.pods.push(env.rt.block_on(manager.create(&spec))?);
        }
        env.sandboxes = Some(manager);
        if let Some(ns) = &env.north_south {
            // the external side and the pod bridge (replies from pods arrive there)
            let mut ns = ns.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            ns.attach(&env.node_netns(), &veth)?;
            ns.attach(&env.node_netns(), skiff_node::sandbox::DEFAULT_BRIDGE)?;
        }
        for (i, name) in [(0, "a"), (1, "b")] {
            let netns = env.pods[i].netns_path.clone().context("pod netns")?;
            env._servers.push(PodServers::start(&netns, name)?);
        }
        Ok(env)
    }

    fn pod_ip(&self, pod: usize, v6: bool) -> IpAddr {
        self.pods[pod]
            .ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == v6)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn pod_netns(&self, pod: usize) -> PathBuf {
        self.pods[pod].netns_path.clone().unwrap_or_default()
    }

    fn node_netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.fx.node_ns))
    }

    fn external_netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.external))
    }

    /// Applies the table of `yaml` (`{A4}` `{A6}` `{B4}` `{B6}` replaced by the pods' IPs)
    /// as a full resync.
    fn apply(&self, yaml: &str) -> Result<()> {
        let yaml = yaml
            .replace("{A4}", &self.pod_ip(0, false).to_string())
            .replace("{A6}", &self.pod_ip(0, true).to_string())
            .replace("{B4}", &self.pod_ip(1, false).to_string())
            .replace("{B6}", &self.pod_ip(1, true).to_string());
        let manifests =
            skiff_api::parse_manifests("battery.yaml", &yaml, skiff_api::Strictness::Strict)?;
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for m in manifests {
            match m.object {
                skiff_api::Object::Service(s) => services.push(*s),
                skiff_api::Object::EndpointSlice(s) => slices.push(*s),
                _ => {}
            }
        }
        let node = NodeInfo {
            name: NODE.into(),
            zone: None,
            addresses: vec![NODE_ADDR.parse()?, NODE_ADDR6.parse()?],
        };
        let table = Arc::new(ServiceTable::build(
            &node,
            services.iter(),
            slices.iter(),
            None,
        ));
        ensure!(
            table.problems().is_empty(),
            "table problems: {:?}",
            table.problems()
        );
        let dp = self.dataplane.as_ref().context("dataplane")?;
        self.rt
            .block_on(dp.apply(&table, &TableDiff::full(&table)))?;
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(dp) = self.dataplane.take() {
            let _ = self.rt.block_on(dp.shutdown());
        }
        if let Some(ns) = self.north_south.take()
            && let Ok(mut ns) = ns.lock()
        {
            ns.detach_all();
        }
        if let Some(rt) = self.node_rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self._servers.clear();
        if let Some(m) = self.sandboxes.take() {
            let _ = self.rt.block_on(m.teardown_all());
        }
        let _ = ip(&["netns", "delete", &self.external]);
        // The fixture removes the node namespace, pod leftovers and cgroups.
    }
}

/// Connects from `netns` to `addr` and reads the backend's name.
fn tcp_get(netns: &Path, addr: SocketAddr) -> Result<String> {
    let got = run_in_netns(Some(netns), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let out = got.with_context(|| format!("tcp {addr} from {}", netns.display()))?;
    ensure!(!out.is_empty(), "tcp {addr}: closed without an answer");
    Ok(out)
}

/// One datagram from `netns` to `addr`: the reply and where it came from.
fn udp_ask(netns: &Path, addr: SocketAddr) -> Result<(String, SocketAddr)> {
    let got = run_in_netns(
        Some(netns),
        move || -> std::io::Result<(String, SocketAddr)> {
            let s = UdpSocket::bind(if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            })?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.send_to(b"ping", addr)?;
            let mut buf = [0u8; 1500];
            let (n, from) = s.recv_from(&mut buf)?;
            Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
        },
    )?;
    got.with_context(|| format!("udp {addr} from {}", netns.display()))
}

fn names(netns: &Path, addr: SocketAddr, n: usize) -> Result<BTreeSet<String>> {
    (0..n).map(|_| tcp_get(netns, addr)).collect()
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.50
  clusterIPs: [10.96.0.50, "fd00:10:96::50"]
  SESSION_AFFINITY
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}
  - {name: dns, port: 53, targetPort: 8053, nodePort: 30053, protocol: UDP}
status:
  loadBalancer:
    ingress: [{ip: 172.18.255.5}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v4, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 8053, protocol: UDP}]
endpoints:
- {addresses: ["{A4}"], conditions: {ready: true}, nodeName: node-1}
- {addresses: ["{B4}"], conditions: {ready: true}, nodeName: node-1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v6, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 8053, protocol: UDP}]
endpoints:
- {addresses: ["{A6}"], conditions: {ready: true}, nodeName: node-1}
- {addresses: ["{B6}"], conditions: {ready: true}, nodeName: node-1}
"#;

fn web() -> String {
    WEB.replace("SESSION_AFFINITY", "sessionAffinity: None")
}

fn sa(s: &str) -> Result<SocketAddr> {
    Ok(s.parse()?)
}

/// ClusterIP TCP and UDP in both families, from the node and from a pod; replies come from
/// the service address.
fn clusterip_tcp_and_udp_from_node_and_pods(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbc")?;
    env.apply(&web())?;
    for from in [env.node_netns(), env.pod_netns(2)] {
        for vip in ["10.96.0.50", "[fd00:10:96::50]"] {
            let got = names(&from, sa(&format!("{vip}:80"))?, 16)?;
            ensure!(
                got == BTreeSet::from(["a".to_owned(), "b".to_owned()]),
                "{kind:?} {vip} from {}: {got:?}",
                from.display()
            );
            let addr = sa(&format!("{vip}:53"))?;
            let (reply, source) = udp_ask(&from, addr)?;
            ensure!(reply.ends_with(":ping"), "{kind:?} udp {vip}: {reply}");
            ensure!(
                source == addr,
                "{kind:?} udp reply from {source}, not {addr}"
            );
        }
    }
    // An unknown service address is refused inside the node, never routed on.
    ensure!(
        tcp_get(&env.pod_netns(2), sa("10.96.0.99:80")?).is_err(),
        "{kind:?}: an unprogrammed service address answered"
    );
    Ok(())
}

/// A pod reaches itself through its own service.
fn hairpin(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbh")?;
    let only_a = web()
        .replace(
            "- {addresses: [\"{B4}\"], conditions: {ready: true}, nodeName: node-1}\n",
            "",
        )
        .replace(
            "- {addresses: [\"{B6}\"], conditions: {ready: true}, nodeName: node-1}\n",
            "",
        );
    env.apply(&only_a)?;
    let got = names(&env.pod_netns(0), sa("10.96.0.50:80")?, 3)?;
    ensure!(
        got == BTreeSet::from(["a".to_owned()]),
        "{kind:?} hairpin: {got:?}"
    );
    Ok(())
}

/// NodePort and the LoadBalancer IP from a client outside the node.
fn nodeport_and_loadbalancer_from_outside(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbn")?;
    env.apply(&web())?;
    let ext = env.external_netns();
    for addr in [
        format!("{NODE_ADDR}:30080"),
        format!("[{NODE_ADDR6}]:30080"),
        "172.18.255.5:80".to_owned(),
    ] {
        let got = names(&ext, sa(&addr)?, 16)?;
        ensure!(
            got == BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            "{kind:?} {addr} from outside: {got:?}"
        );
    }
    for addr in [
        format!("{NODE_ADDR}:30053"),
        format!("[{NODE_ADDR6}]:30053"),
    ] {
        let addr = sa(&addr)?;
        let (reply, from) = udp_ask(&ext, addr)?;
        ensure!(reply.ends_with(":ping"), "{kind:?} udp {addr}: {reply}");
        ensure!(from == addr, "{kind:?} udp reply from {from}, not {addr}");
    }
    Ok(())
}

/// Who answers on the whoami port (8081) of `addr`, and the client address it saw.
fn whoami(netns: &Path, addr: SocketAddr) -> Result<(String, IpAddr)> {
    let got = run_in_netns(Some(netns), move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
    .with_context(|| format!("whoami {addr} from {}", netns.display()))?;
    let (name, ip) = got
        .split_once(' ')
        .with_context(|| format!("odd whoami reply {got:?}"))?;
    Ok((name.to_owned(), ip.parse()?))
}

const WHOAMI: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: who, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  type: LoadBalancer
  externalTrafficPolicy: POLICY
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.60
  clusterIPs: [10.96.0.60, "fd00:10:96::60"]
  ports:
  - {name: who, port: 81, targetPort: 8081, nodePort: 30081, protocol: TCP}
status:
  loadBalancer:
    ingress: [{ip: 172.18.255.6}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: who-v4, namespace: default, labels: {kubernetes.io/service-name: who}}
addressType: IPv4
ports: [{name: who, port: 8081, protocol: TCP}]
endpoints:
- {addresses: ["{A4}"], conditions: {ready: true}, nodeName: node-1}
- {addresses: ["{B4}"], conditions: {ready: true}, nodeName: node-2}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: who-v6, namespace: default, labels: {kubernetes.io/service-name: who}}
addressType: IPv6
ports: [{name: who, port: 8081, protocol: TCP}]
endpoints:
- {addresses: ["{A6}"], conditions: {ready: true}, nodeName: node-1}
- {addresses: ["{B6}"], conditions: {ready: true}, nodeName: node-2}
"#;

/// externalTrafficPolicy Local: traffic from outside reaches only this node's endpoint
/// (`a`; `b` is on node-2) and, on the eBPF data plane, the backend sees the client's own
/// address. Cluster: both endpoints, and the eBPF data plane SNATs to the node's address.
fn external_traffic_policy(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbx")?;
    let ext = env.external_netns();
    let frontends = [
        (format!("{NODE_ADDR}:30081"), EXTERNAL_ADDR, NODE_ADDR),
        (format!("[{NODE_ADDR6}]:30081"), EXTERNAL_ADDR6, NODE_ADDR6),
        ("172.18.255.6:81".to_owned(), EXTERNAL_ADDR, NODE_ADDR),
    ];
    env.apply(&WHOAMI.replace("POLICY", "Local"))?;
    for (addr, client, _) in &frontends {
        for _ in 0..6 {
            let (name, seen) = whoami(&ext, sa(addr)?)?;
            ensure!(name == "a", "{kind:?} Local {addr}: reached {name}");
            if kind == Kind::Ebpf {
                ensure!(
                    seen == client.parse::<IpAddr>()?,
                    "{kind:?} Local {addr}: the backend saw {seen}, not the client {client}"
                );
            }
        }
    }
    env.apply(&WHOAMI.replace("POLICY", "Cluster"))?;
    for (addr, _, node) in &frontends {
        let mut reached = BTreeSet::new();
        for _ in 0..16 {
            let (name, seen) = whoami(&ext, sa(addr)?)?;
            if kind == Kind::Ebpf {
                ensure!(
                    seen == node.parse::<IpAddr>()?,
                    "{kind:?} Cluster {addr}: the backend saw {seen}, not the node {node}"
                );
            }
            reached.insert(name);
        }
        ensure!(
            reached == BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            "{kind:?} Cluster {addr}: reached {reached:?}"
        );
    }
    Ok(())
}

/// A UDP client sending steadily from one socket, to a NodePort from outside and to the
/// ClusterIP from a pod, goes on working when its backend is removed: the next datagram is
/// answered by the surviving backend. On eBPF, kernel conntrack entries whose replies come
/// from the removed backend are deleted in the node namespace.
fn udp_backend_removed_under_steady_traffic(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbd")?;
    env.apply(&web())?;
    // (client, frontend, whether its datagrams stick to one backend): a flow through the tc
    // program or the userspace proxy does; the eBPF socket hooks balance each unconnected
    // sendto() on its own, so there the last answer names the backend to remove
    let cases = [
        (
            env.external_netns(),
            sa(&format!("{NODE_ADDR}:30053"))?,
            true,
        ),
        (
            env.pod_netns(2),
            sa("10.96.0.50:53")?,
            kind == Kind::Userspace,
        ),
    ];
    for (from, addr, sticky) in cases {
        env.apply(&web())?;
        let socket = run_in_netns(Some(&from), || UdpSocket::bind("0.0.0.0:0"))??;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        let ask = |n: usize| -> Result<String> {
            socket.send_to(format!("{n}").as_bytes(), addr)?;
            let mut buf = [0u8; 512];
            let (len, _) = socket
                .recv_from(&mut buf)
                .with_context(|| format!("{kind:?} udp {addr} datagram {n}"))?;
            let reply = String::from_utf8_lossy(&buf[..len]).into_owned();
            let (name, _) = reply
                .split_once(':')
                .with_context(|| format!("odd reply {reply:?}"))?;
            Ok(name.to_owned())
        };
        let mut first = ask(0)?;
        for n in 1..5 {
            let got = ask(n)?;
            ensure!(
                !sticky || got == first,
                "{kind:?} {addr}: a steady UDP client moved"
            );
            first = got;
        }
        let (gone, survivor, gone_pod) = match first.as_str() {
            "a" => ("{A4}", "b", 0),
            _ => ("{B4}", "a", 1),
        };
        // a conntrack entry as a NAT rule on the node would leave for this client: the
        // eBPF data plane must delete it with the backend
        let stale = conntrack::Entry {
            proto: conntrack::IPPROTO_UDP,
            orig: conntrack::Tuple {
                src: sa("10.250.7.2:5353")?,
                dst: addr,
            },
            reply: conntrack::Tuple {
                src: SocketAddr::new(env.pod_ip(gone_pod, false), 8053),
                dst: sa("10.250.7.2:5353")?,
            },
        };
        let node = env.node_netns();
        run_in_netns(Some(&node), || -> Result<()> {
            let mut ct = Conntrack::open()?;
            let _ = ct.delete(&stale);
            ct.insert(&stale, 120)?;
            Ok(())
        })??;
        let without = web().replace(
            &format!(
                "- {{addresses: [\"{gone}\"], conditions: {{ready: true}}, nodeName: node-1}}\n"
            ),
            "",
        );
        env.apply(&without)?;
        for n in 5..10 {
            let got = ask(n)?;
            ensure!(
                got == survivor,
                "{kind:?} {addr}: datagram {n} answered by {got}, not {survivor}"
            );
        }
        let left = run_in_netns(Some(&node), || -> Result<bool> {
            Ok(Conntrack::open()?.entries()?.contains(&stale))
        })??;
        if kind == Kind::Ebpf {
            ensure!(
                !left,
                "the stale conntrack entry survived the backend's removal"
            );
        } else if left {
            // the userspace data plane makes no NAT bindings: nothing to flush
            run_in_netns(Some(&node), || Conntrack::open()?.delete(&stale))??;
        }
    }
    Ok(())
}

/// sessionAffinity ClientIP keeps a client on one backend.
fn session_affinity(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pba")?;
    env.apply(&WEB.replace(
        "SESSION_AFFINITY",
        "sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
    ))?;
    let got = names(&env.pod_netns(2), sa("10.96.0.50:80")?, 12)?;
    ensure!(got.len() == 1, "{kind:?} affinity: {got:?}");
    Ok(())
}

/// internalTrafficPolicy Local sends ClusterIP traffic to this node's endpoints only.
fn internal_traffic_policy_local(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbl")?;
    let local = WEB
        .replace("SESSION_AFFINITY", "internalTrafficPolicy: Local")
        .replace(
            "- {addresses: [\"{B4}\"], conditions: {ready: true}, nodeName: node-1}",
            "- {addresses: [\"{B4}\"], conditions: {ready: true}, nodeName: node-2}",
        );
    env.apply(&local)?;
    let got = names(&env.pod_netns(2), sa("10.96.0.50:80")?, 8)?;
    ensure!(
        got == BTreeSet::from(["a".to_owned()]),
        "{kind:?} local: {got:?}"
    );
    Ok(())
}

/// Endpoints change under a steady stream of new connections: none fails.
fn endpoints_change_under_load(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbu")?;
    env.apply(&web())?;
    let done = Arc::new(AtomicBool::new(false));
    // a pod to the ClusterIP (socket hooks on eBPF) and an outside client to the NodePort
    // (the tc program on eBPF)
    let loads: Vec<_> = [
        (env.pod_netns(2), sa("10.96.0.50:80")?),
        (env.external_netns(), sa(&format!("{NODE_ADDR}:30080"))?),
    ]
    .into_iter()
    .map(|(client, vip)| {
        let d2 = done.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !d2.load(Ordering::Relaxed) {
                match tcp_get(&client, vip) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
            }
            (vip, ok, failed)
        })
    })
    .collect();
    let only_b = web().replace(
        "- {addresses: [\"{A4}\"], conditions: {ready: true}, nodeName: node-1}\n",
        "",
    );
    let only_a = web().replace(
        "- {addresses: [\"{B4}\"], conditions: {ready: true}, nodeName: node-1}\n",
        "",
    );
    let started = Instant::now();
    for table in [&only_b, &web(), &only_a, &web(), &only_b, &web()] {
        std::thread::sleep(Duration::from_millis(50));
        env.apply(table)?;
    }
    std::thread::sleep(Duration::from_millis(50));
    done.store(true, Ordering::Relaxed);
    for load in loads {
        let (vip, ok, failed) = load.join().map_err(|_| anyhow::anyhow!("load thread"))?;
        ensure!(
            failed.is_empty(),
            "{kind:?} {vip}: {} of {} connections failed while endpoints changed: {:?}",
            failed.len(),
            ok + failed.len(),
            &failed[..failed.len().min(3)]
        );
        ensure!(
            ok > 10,
            "{kind:?} {vip}: only {ok} connections in {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

/// 100 services × 10 endpoints programmed at once; one of them answers.
fn hundred_services_with_ten_endpoints(kind: Kind) -> Result<()> {
    let env = Env::new(kind, "pbs")?;
    let mut yaml = web();
    for i in 0..100 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\n\
             spec:\n  clusterIP: 10.96.{}.{}\n  clusterIPs: [10.96.{}.{}]\n  \
             ports: [{{port: 80, targetPort: 8080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: s{i}-1, namespace: default, labels: {{kubernetes.io/service-name: s{i}}}}}\n\
             addressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n",
            10 + i / 200,
            i % 200 + 1,
            10 + i / 200,
            i % 200 + 1
        ));
        for e in 0..10 {
            yaml.push_str(&format!(
                "- {{addresses: [\"10.244.250.{}\"], conditions: {{ready: true}}}}\n",
                e + 1
            ));
        }
    }
    let started = Instant::now();
    env.apply(&yaml)?;
    eprintln!(
        "{kind:?}: 101 services programmed in {:?}",
        started.elapsed()
    );
    let got = names(&env.pod_netns(2), sa("10.96.0.50:80")?, 4)?;
    ensure!(!got.is_empty());
    Ok(())
}

macro_rules! battery {
    ($($case:ident),* $(,)?) => {
        mod ebpf {
            $(
                #[test]
                fn $case() -> anyhow::Result<()> {
                    if !crate::privileged::privileged("eBPF data plane") {
                        return Ok(());
                    }
                    super::$case(super::Kind::Ebpf)
                }
            )*
        }
        mod userspace {
            $(
                #[test]
                fn $case() -> anyhow::Result<()> {
                    if !crate::privileged::privileged("userspace data plane") {
                        return Ok(());
                    }
                    super::$case(super::Kind::Userspace)
                }
            )*
        }
    };
}

battery!(
    clusterip_tcp_and_udp_from_node_and_pods,
    hairpin,
    nodeport_and_loadbalancer_from_outside,
    external_traffic_policy,
    udp_backend_removed_under_steady_traffic,
    session_affinity,
    internal_traffic_policy_local,
    endpoints_change_under_load,
    hundred_services_with_ten_endpoints,
);

/// ctnetlink in a namespace of its own: entries inserted, listed, and only the UDP ones whose
/// reply comes from a removed backend deleted (other backends and TCP untouched).
#[test]
fn conntrack_flush_deletes_only_udp_entries_of_removed_backends() -> Result<()> {
    if !crate::privileged::privileged("conntrack") {
        return Ok(());
    }
    let fx = NodeFixture::new("pbk")?;
    let netns = PathBuf::from(format!("/run/netns/{}", fx.node_ns));
    let entry = |proto: u8, client: &str, backend: &str| -> Result<conntrack::Entry> {
        let (client, backend): (SocketAddr, SocketAddr) = (client.parse()?, backend.parse()?);
        let vip = if client.is_ipv4() {
            "10.96.0.53:53"
        } else {
            "[fd00:10:96::53]:53"
        };
        Ok(conntrack::Entry {
            proto,
            orig: conntrack::Tuple {
                src: client,
                dst: vip.parse()?,
            },
            reply: conntrack::Tuple {
                src: backend,
                dst: client,
            },
        })
    };
    let gone = "10.244.0.7:8053";
    let gone6 = "[fd00:10:244::7]:8053";
    let entries = [
        entry(17, "10.250.9.2:5000", gone)?,
        entry(17, "10.250.9.3:5000", gone)?,
        entry(17, "[fd00:250:9::2]:5000", gone6)?,
        entry(17, "10.250.9.2:5001", "10.244.0.8:8053")?,
        entry(6, "10.250.9.2:5002", gone)?,
    ];
    let (deleted, left) = run_in_netns(Some(&netns), || -> Result<_> {
        let mut ct = Conntrack::open()?;
        for e in &entries {
            ct.insert(e, 60)?;
        }
        let listed = ct.entries()?;
        ensure!(
            entries.iter().all(|e| listed.contains(e)),
            "inserted entries not listed: {listed:?}"
        );
        let deleted = ct.flush_udp_backends(&[gone.parse()?, gone6.parse()?])?;
        Ok((deleted, ct.entries()?))
    })??;
    ensure!(deleted == 3, "deleted {deleted}");
    let mut left: Vec<_> = left.into_iter().collect();
    left.sort();
    let mut want = vec![entries[3], entries[4]];
    want.sort();
    ensure!(left == want, "left {left:?}");
    Ok(())
}
