//! `skiff up` end to end, as a user runs it: the real binary, `-f` manifests, the real kubectl
//! (get, exec, logs -f, port-forward), SIGTERM teardown that leaves no namespace or cgroup
//! behind, and a restart on the same data dir that keeps every object.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use skiff_node::sandbox::list_netns;
use skiff_tests::skiff_up::SkiffUp;

use crate::apiserver::Kubectl;
use crate::controllers::eventually;
use crate::kubelet::port_forward_get;
use crate::privileged::privileged;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: e2e
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: e2e
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: echo
          image: skiff.dev/echo
          readinessProbe:
            httpGet: {path: /health, port: 3000}
            periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: e2e
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 3000}
---
apiVersion: v1
kind: Service
metadata:
  name: web-lb
  namespace: e2e
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: 3000}
---
apiVersion: v1
kind: Pod
metadata:
  name: ticker
  namespace: e2e
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: busybox
      command: ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"]
"#;

/// `skiff up` for this test: its image map and manifests folder from `dir`, DNS on
/// `dns_port`, forwarding to `upstream` (a test server on loopback, never the network).
fn start_up(
    name: &str,
    dir: &Path,
    dns_port: u16,
    upstream: SocketAddr,
    admin: SocketAddr,
) -> Result<SkiffUp> {
    let (map, manifests) = (dir.join("images.yaml"), dir.join("manifests"));
    let (port, upstream, admin) = (
        dns_port.to_string(),
        upstream.to_string(),
        admin.to_string(),
    );
    SkiffUp::start(
        name,
        &dir.join("data"),
        &[
            "--image-map".as_ref(),
            map.as_os_str(),
            "-f".as_ref(),
            manifests.as_os_str(),
            "--dns-port".as_ref(),
            port.as_ref(),
            "--dns-upstream".as_ref(),
            upstream.as_ref(),
            "--admin-addr".as_ref(),
            admin.as_ref(),
        ],
    )
}

/// A DNS upstream on loopback that answers every A question with 192.0.2.77 (TTL 30) and
/// anything else with an empty NOERROR; Drop stops it.
struct TestUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestUpstream {
    fn start() -> Result<TestUpstream> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = upstream_answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        Ok(TestUpstream {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query: the header with QR/RA set, its question, and for type A one answer.
fn upstream_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += 1 + usize::from(*query.get(i)?);
    }
    let question_end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let mut out = query.get(..question_end)?.to_vec();
    out[2] = 0x81; // QR, RD
    out[3] = 0x80; // RA, NOERROR
    out[6..12].copy_from_slice(&[0, u8::from(qtype == 1), 0, 0, 0, 0]);
    if qtype == 1 {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 77]);
    }
    Some(out)
}

/// A loopback address free for TCP right now.
fn free_admin_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `GET http://<addr><path>` on the host loopback: the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-m", "5", "--fail"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A loopback port free for UDP and TCP right now.
fn free_dns_port() -> Result<u16> {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = udp.local_addr()?.port();
    std::net::TcpListener::bind(("127.0.0.1", port))?;
    Ok(port)
}

/// Cgroup directories named `cgroup` directly under any hierarchy of this host.
fn cgroups_named(cgroup: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    if root.join(cgroup).exists() {
        found.push(root.join(cgroup));
    }
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = entry.path().join(cgroup);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

fn pod_ips(pod: &Pod) -> Vec<String> {
    pod.status
        .iter()
        .flat_map(|s| s.pod_ips.iter().flatten())
        .map(|ip| ip.ip.clone())
        .collect()
}

async fn get_pods(k: &Kubectl) -> Result<Vec<Pod>> {
    let out = k.ok(&["get", "pods", "-n", "e2e", "-o", "json"]).await?;
    let list: serde_json::Value = serde_json::from_str(&out)?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .into_iter()
        .filter_map(|i| serde_json::from_value(i).ok())
        .collect())
}

fn running_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.container_statuses.iter().flatten().all(|c| c.ready)
    })
}

/// Waits until the two web replicas and the ticker run Ready with dual-stack pod IPs.
async fn wait_all_ready(k: &Kubectl) -> Result<Vec<Pod>> {
    eventually(
        "3 pods Running and Ready with IPv4 and IPv6 IPs",
        || async {
            let pods = get_pods(k).await?;
            let done = pods.len() == 3
                && pods
                    .iter()
                    .all(|p| running_ready(p) && pod_ips(p).len() == 2);
            Ok(done.then_some(pods))
        },
    )
    .await
}

/// Follows `kubectl logs -f` until it has printed `lines` lines, then ends it by PID.
async fn follow_logs(k: &Kubectl, pod: &str, lines: usize) -> Result<Vec<String>> {
    let mut cmd = k.command(&["logs", "-f", "-n", "e2e", pod])?;
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn()?;
    let stdout = child.stdout.take().context("kubectl stdout")?;
    let read = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(lines)
            .collect::<std::io::Result<Vec<String>>>()
    });
    let got = tokio::time::timeout(Duration::from_secs(30), read).await;
    let _ = child.kill();
    let _ = child.wait();
    Ok(got.context("kubectl logs -f printed too little in 30 s")???)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skiff_up_runs_manifests_serves_kubectl_and_leaves_nothing_behind() -> Result<()> {
    if !privileged("skiff up") {
        return Ok(());
    }
    let name = format!("e2e{}", std::process::id());
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("manifests"))?;
    std::fs::write(dir.path().join("manifests/app.yaml"), MANIFESTS)?;
    // A bad object is logged and skipped; the others are still applied.
    std::fs::create_dir(dir.path().join("manifests/more"))?;
    std::fs::write(
        dir.path().join("manifests/more/bad.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: e2e}\nspec:\n  ports: [{port: 70000}]\n",
    )?;
    std::fs::write(
        dir.path().join("images.yaml"),
        "\"busybox*\": [\"/bin/sh\"]\n",
    )?;
    let netns = format!("skiff-{name}");

    let upstream = TestUpstream::start()?;
    let dns_port = free_dns_port()?;
    let admin = free_admin_addr()?;
    let mut up = start_up(&name, dir.path(), dns_port, upstream.addr, admin)?;
    ensure!(
        list_netns(&netns).contains(&netns),
        "no node namespace {netns}"
    );
    let k = Kubectl::default_binary(&up.kubeconfig);
    let pods = wait_all_ready(&k).await?;
    let bad = k.run(&["get", "service", "-n", "e2e", "bad"]).await?;
    ensure!(!bad.ok, "the invalid Service was applied");
    for p in &pods {
        let ips = pod_ips(p);
        ensure!(
            ips[0].starts_with("10.244.0.") && ips[1].starts_with("fd00:10:244::"),
            "pod IPs {ips:?} are not from the node's pod CIDRs"
        );
    }
    let web: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some("ticker"))
        .collect();
    let web_name = web[0].metadata.name.clone().unwrap_or_default();
    // Pod to pod across the bridge, both families: the ticker curls a web replica.
    for ip in pod_ips(web[1]) {
        let url = if ip.contains(':') {
            format!("http://[{ip}]:3000/from-ticker")
        } else {
            format!("http://{ip}:3000/from-ticker")
        };
        let out = k
            .ok(&[
                "exec", "-n", "e2e", "ticker", "--", "curl", "-sS", "-g", &url,
            ])
            .await?;
        ensure!(
            out.contains("\"path\":\"/from-ticker\""),
            "{url} from the ticker: {out}"
        );
    }
    // Pod to Service: the ClusterIPs of both families reach the replicas.
    let ips = k
        .ok(&[
            "get",
            "service",
            "-n",
            "e2e",
            "web",
            "-o",
            "jsonpath={.spec.clusterIPs[*]}",
        ])
        .await?;
    let cluster_ips: Vec<&str> = ips.split_whitespace().collect();
    ensure!(cluster_ips.len() == 2, "clusterIPs {ips:?}");
    for ip in cluster_ips {
        let url = if ip.contains(':') {
            format!("http://[{ip}]/via-service")
        } else {
            format!("http://{ip}/via-service")
        };
        let out = eventually(&format!("{url} answers from the ticker"), || {
            let k = &k;
            let url = url.clone();
            async move {
                let run = k
                    .run(&[
                        "exec", "-n", "e2e", "ticker", "--", "curl", "-sS", "-g", "-m", "5", &url,
                    ])
                    .await?;
                Ok((run.ok && run.stdout.contains("/via-service")).then_some(run.stdout))
            }
        })
        .await?;
        ensure!(
            out.contains("\"pod\":") || out.contains("via-service"),
            "{out}"
        );
    }
    // The LoadBalancer address from the node, and its healthCheckNodePort on the node's
    // bridge address (200 while a local endpoint exists).
    let lb = eventually("web-lb gets a LoadBalancer address", || async {
        let out = k
            .ok(&[
                "get",
                "service",
                "-n",
                "e2e",
                "web-lb",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip} {.spec.healthCheckNodePort}",
            ])
            .await?;
        let mut parts = out.split_whitespace().map(str::to_owned);
        Ok(match (parts.next(), parts.next()) {
            (Some(ip), Some(port)) => Some((ip, port)),
            _ => None,
        })
    })
    .await?;
    let node_curl = |url: String| {
        let netns = netns.clone();
        async move {
            let out = tokio::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns,
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "-w",
                    " %{http_code}",
                ])
                .arg(&url)
                .output()
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let via_lb = eventually("the LoadBalancer address answers from the node", || {
        let url = format!("http://{}/via-lb", lb.0);
        let node_curl = &node_curl;
        async move { Ok(Some(node_curl(url).await?).filter(|o| o.ends_with(" 200"))) }
    })
    .await?;
    ensure!(via_lb.contains("/via-lb"), "LoadBalancer answer: {via_lb}");
    let health = eventually("the healthCheckNodePort answers 200", || {
        let url = format!("http://10.244.0.1:{}/", lb.1);
        let node_curl = &node_curl;
        async move { Ok(Some(node_curl(url).await?).filter(|o| o.ends_with(" 200"))) }
    })
    .await?;
    ensure!(
        health.contains("localEndpoints"),
        "health check answer: {health}"
    );
    // The admin endpoint: the programmed table, the data plane's state, metrics.
    let dump = http_get(admin, "/proxy/dump").await?;
    ensure!(
        dump.contains("e2e/web") && dump.contains("# data plane:"),
        "/proxy/dump: {dump}"
    );
    let cli = tokio::process::Command::new(skiff_tests::skiff_up::skiff_exe()?)
        .args(["proxy", "dump", "--admin-addr", &admin.to_string()])
        .output()
        .await?;
    let printed = String::from_utf8_lossy(&cli.stdout);
    ensure!(
        cli.status.success() && printed.contains("e2e/web"),
        "skiff proxy dump: {printed}"
    );
    let metrics = http_get(admin, "/metrics").await?;
    ensure!(
        metrics.contains("skiff_proxy_network_programming_duration_seconds")
            && metrics.contains("skiff_dns_queries_total"),
        "/metrics lacks the proxy or DNS series"
    );
    // Cluster DNS from a pod, through the search path and kube-dns; other names through the
    // forwarder to the test upstream; and the same records on the host loopback port.
    let v4 = ips.split_whitespace().next().unwrap_or_default().to_owned();
    for name in ["web", "web.e2e", "web.e2e.svc.cluster.local"] {
        let out = k
            .ok(&[
                "exec", "-n", "e2e", "ticker", "--", "getent", "ahostsv4", name,
            ])
            .await?;
        ensure!(
            out.contains(&v4),
            "{name} from the pod: {out:?} (want {v4})"
        );
    }
    let out = k
        .ok(&[
            "exec",
            "-n",
            "e2e",
            "ticker",
            "--",
            "getent",
            "ahostsv4",
            "example.test",
        ])
        .await?;
    ensure!(
        out.contains("192.0.2.77"),
        "example.test from the pod: {out:?}"
    );
    let dig = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &dns_port.to_string(), "+short"])
        .arg("web.e2e.svc.cluster.local")
        .output()
        .await
        .context("run dig (dnsutils)")?;
    let answer = String::from_utf8_lossy(&dig.stdout);
    ensure!(answer.trim() == v4, "dig on the host loopback: {answer:?}");
    let out = k
        .ok(&["exec", "-n", "e2e", &web_name, "--", "hostname"])
        .await?;
    ensure!(out.trim() == web_name, "exec hostname: {out:?}");
    let lines = follow_logs(&k, "ticker", 3).await?;
    ensure!(
        lines.iter().all(|l| l.starts_with("tick-")),
        "kubectl logs -f: {lines:?}"
    );
    port_forward_get_ns(&up.kubeconfig, &web_name).await?;

    let status = up.stop()?;
    ensure!(status.success(), "skiff up exited with {status}");
    let left = list_netns(&netns);
    ensure!(left.is_empty(), "namespaces left after teardown: {left:?}");
    let cgroups = cgroups_named(&netns);
    ensure!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let mounts = mounts_under(dir.path())?;
    ensure!(mounts.is_empty(), "mounts left: {mounts:?}");

    // The same data dir again: the objects are kept and the pods run again.
    let up = start_up(
        &name,
        dir.path(),
        free_dns_port()?,
        upstream.addr,
        free_admin_addr()?,
    )?;
    let k = Kubectl::default_binary(&up.kubeconfig);
    let again = wait_all_ready(&k).await?;
    ensure!(
        again
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("ticker")),
        "the ticker pod did not survive the restart"
    );
    drop(up);
    let left = list_netns(&netns);
    ensure!(
        left.is_empty(),
        "namespaces left after the second teardown: {left:?}"
    );
    let mounts = mounts_under(dir.path())?;
    ensure!(
        mounts.is_empty(),
        "mounts left after the second teardown: {mounts:?}"
    );
    Ok(())
}

/// Mount points under `dir` (the sandbox state tmpfs, pod volumes), from mountinfo.
fn mounts_under(dir: &Path) -> Result<Vec<String>> {
    let dir = dir.to_string_lossy();
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(dir.as_ref()))
        .map(str::to_owned)
        .collect())
}

/// `kubectl port-forward` into a pod of namespace `e2e` (the kubelet tests' helper uses the
/// default namespace, so point a kubeconfig context at `e2e`).
async fn port_forward_get_ns(kubeconfig: &Path, pod: &str) -> Result<()> {
    let copy = kubeconfig.with_extension("e2e");
    std::fs::copy(kubeconfig, &copy)?;
    Kubectl::default_binary(&copy)
        .ok(&["config", "set-context", "--current", "--namespace", "e2e"])
        .await?;
    port_forward_get(&copy, pod, 3000).await
}
