//! `skiff up` with the eBPF data plane serves NodePorts and LoadBalancer IPs to a client
//! outside the node namespace, through the tc north-south balancer it attaches to the pod
//! bridge (the node's addresses are the bridge's), and leaves no program behind on exit.
//!
//! `skiff up`'s node namespace has no uplink: its only interface with the node's addresses is
//! the pod bridge. The test plugs an "outside" namespace into that bridge (a veth it owns,
//! gone with the node namespace), as a machine on the node's network would be: its packets
//! reach the node's addresses through the bridge, where the tc program runs. (The host
//! loopback ports `skiff up` publishes are sockets proxied in userspace; they never pass
//! the bridge and are not what this tests.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use skiff_node::sandbox::run_in_netns;
use skiff_tests::skiff_up::SkiffUp;

use crate::privileged::{bpf_program_ids, ip, loaded_program_names, privileged};

const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: echo
          image: skiff.dev/echo
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 3000, nodePort: 30555}
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 3000}
"#;

/// The outside client: a namespace on a veth whose other end is a port of the node's bridge,
/// with an address outside the pod subnet (10.250.11.2) routed through the node, as a client
/// on another network is: replies of pods then go back through the node (a client on the
/// pods' own subnet would get `externalTrafficPolicy: Local` replies straight from the pod,
/// untranslated, as on any cluster).
struct Outside {
    name: String,
    node_ns: String,
}

const OUTSIDE_IP: &str = "10.250.11.2";

impl Outside {
    fn plug(node_ns: &str, tag: &str) -> Result<Outside> {
        let o = Outside {
            name: format!("sknpx{}{tag}", std::process::id()),
            node_ns: node_ns.to_owned(),
        };
        let _ = ip(&["netns", "delete", &o.name]);
        ip(&["netns", "add", &o.name])?;
        let port = format!("sknpx{}", std::process::id() % 100_000);
        ip(&[
            "-n", node_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &o.name,
        ])?;
        ip(&[
            "-n", node_ns, "link", "set", &port, "master", "skiff0", "up",
        ])?;
        ip(&[
            "-n",
            node_ns,
            "route",
            "add",
            &format!("{OUTSIDE_IP}/32"),
            "dev",
            "skiff0",
        ])?;
        ip(&[
            "-n",
            &o.name,
            "addr",
            "add",
            &format!("{OUTSIDE_IP}/32"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &o.name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &o.name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &o.name,
            "route",
            "add",
            "10.244.0.1/32",
            "dev",
            "eth0",
        ])?;
        for net in ["10.244.0.0/24", "172.18.255.0/24"] {
            ip(&["-n", &o.name, "route", "add", net, "via", "10.244.0.1"])?;
        }
        Ok(o)
    }

    /// One HTTP/1.1 GET from outside: the response.
    fn get(&self, addr: SocketAddr, path: &str) -> Result<String> {
        let netns = PathBuf::from("/run/netns").join(&self.name);
        let request = format!("GET {path} HTTP/1.1\r\nHost: outside\r\nConnection: close\r\n\r\n");
        run_in_netns(Some(&netns), move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(request.as_bytes())?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })?
        .with_context(|| format!("GET http://{addr}{path} from outside"))
    }

    /// Waits until `addr` answers 200 from a web pod (the echo server names the path).
    fn until_served(&self, addr: SocketAddr, path: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.get(addr, path) {
                Ok(r)
                    if r.starts_with("HTTP/1.1 200")
                        && r.contains(&format!("\"path\":\"{path}\"")) =>
                {
                    return Ok(r);
                }
                r if Instant::now() > deadline => bail!("{addr} never served from outside: {r:?}"),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        // the veth goes with it (and its bridge port with it)
        let _ = ip(&["netns", "delete", &self.name]);
        let route = format!("{OUTSIDE_IP}/32");
        let _ = ip(&["-n", &self.node_ns, "route", "del", &route]);
    }
}

fn free_admin_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn admin_dump(admin: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect(admin)?;
    write!(s, "GET /proxy/dump HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn skiff_up_ebpf_serves_node_ports_and_load_balancers_to_outside_clients() -> Result<()> {
    if !privileged("skiff up") {
        return Ok(());
    }
    let name = format!("np{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let manifests = dir.path().join("web.yaml");
    std::fs::write(&manifests, MANIFESTS)?;
    let admin = free_admin_addr()?;
    let admin_arg = admin.to_string();
    let mut up = SkiffUp::start(
        &name,
        &dir.path().join("data"),
        &[
            "-f".as_ref(),
            manifests.as_os_str(),
            "--admin-addr".as_ref(),
            admin_arg.as_ref(),
            "--proxy-mode".as_ref(),
            "ebpf".as_ref(),
        ],
    )?;
    let node_ns = format!("skiff-{name}");
    let outside = Outside::plug(&node_ns, "o")?;

    let np: SocketAddr = "10.244.0.1:30555".parse()?;
    outside.until_served(np, "/via-node-port")?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(up.client())?;
    let services: Api<Service> = Api::namespaced(client, "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lb_ip = loop {
        let svc = rt.block_on(services.get("web-lb"))?;
        let ip = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .and_then(|i| i.into_iter().next())
            .and_then(|i| i.ip);
        if let Some(ip) = ip {
            break ip;
        }
        ensure!(
            Instant::now() < deadline,
            "web-lb got no LoadBalancer address"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let lb: SocketAddr = format!("{lb_ip}:80").parse()?;
    outside.until_served(lb, "/via-load-balancer")?;

    // It is the tc program that served them, on the bridge.
    let dump = admin_dump(admin)?;
    ensure!(
        dump.contains("attached ingress skiff0"),
        "the tc program is not on the bridge:\n{dump}"
    );
    let line = dump
        .lines()
        .find(|l| l.contains(&format!("tcp {np} ")) && l.contains("packets="))
        .with_context(|| format!("no tc frontend {np}:\n{dump}"))?;
    ensure!(!line.contains(" flows=0 "), "no flow through {np}: {line}");

    // `up` leaves nothing: every program it held is gone once it exited.
    let ids = bpf_program_ids(up.pid())?;
    let names = loaded_program_names(&ids);
    ensure!(
        names.iter().any(|n| n == "skiff_nodeport") && names.iter().any(|n| n == "skiff_connect4"),
        "skiff up holds {names:?}"
    );
    drop(outside);
    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = loaded_program_names(&ids);
        if left.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "programs left after skiff up: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
