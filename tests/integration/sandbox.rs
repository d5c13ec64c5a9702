//! Pod sandboxes (skiff-node::sandbox) in real namespaces, as root.
//!
//! Every test makes its own node network namespace (no uplink: no route out of the machine),
//! a manager with a unique netns prefix and cgroup parent, and a Drop guard that removes every
//! namespace, cgroup and process it made, even when the test fails.

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use skiff_node::sandbox::{
    CgroupLayout, DnsPolicy, HostAlias, IpCidr, PodResources, PodSandboxSpec, Sandbox,
    SandboxConfig, SandboxManager, list_netns, netns_path, run_in_netns,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::privileged::{NodeFixture, ip, privileged};

/// What only the sandbox tests ask of their node fixture.
impl NodeFixture {
    fn config(&self) -> SandboxConfig {
        let cidrs: Vec<IpCidr> = vec![
            "10.244.7.0/24".parse().expect("v4 cidr"),
            "fd00:10:244:7::/64".parse().expect("v6 cidr"),
        ];
        let mut c = self
            .sandbox_config(
                cidrs,
                "nameserver 192.0.2.53\nsearch example.test\n",
                "127.0.0.1 localhost testnode\n",
            )
            .expect("sandbox config");
        c.cluster_dns = vec!["10.96.0.10".parse().expect("ip")];
        c
    }

    fn node_path(&self) -> PathBuf {
        netns_path(&self.node_ns)
    }

    /// Pod cgroup directories of this fixture that exist, in any hierarchy.
    fn pod_cgroups(&self) -> Vec<PathBuf> {
        let Ok(layout) = CgroupLayout::detect() else {
            return Vec::new();
        };
        layout
            .children(&self.cgroup_parent, "pod")
            .iter()
            .flat_map(|leaf| layout.pod(&self.cgroup_parent, leaf).paths())
            .filter(|p| p.exists())
            .collect()
    }

    /// Whether the cgroup parent directory exists in any hierarchy.
    fn cgroup_parent_exists(&self) -> bool {
        let Ok(layout) = CgroupLayout::detect() else {
            return false;
        };
        layout
            .pod(&self.cgroup_parent, "x")
            .paths()
            .iter()
            .any(|p| p.parent().is_some_and(|d| d.exists()))
    }
}

fn pod(uid: &str, name: &str) -> PodSandboxSpec {
    PodSandboxSpec {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        hostname: name.into(),
        ..Default::default()
    }
}

/// Runs `script` with `sh -c` inside the sandbox and returns its stdout.
async fn sh(sb: &Sandbox, script: &str) -> Result<String> {
    let out = sb
        .command("sh")?
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .await
        .context("spawn sh in the sandbox")?;
    ensure!(
        out.status.success(),
        "sh -c {script:?} in {}: {}; stderr: {}",
        sb.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netns_inode(path: &std::path::Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}

async fn wait_gone(pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie child of ours still has /proc/<pid>; it is dead if its state is Z.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("process {pid} still alive");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_pods_talk_over_the_bridge_in_both_families() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let a = mgr.create(&pod("aaaa-0001", "a")).await?;
    let b = mgr.create(&pod("bbbb-0002", "b")).await?;
    let cidrs = &mgr.config().pod_cidrs;
    for sb in [&a, &b] {
        ensure!(sb.ips.len() == 2, "{} has ips {:?}", sb.name, sb.ips);
        ensure!(
            sb.ips[0].is_ipv4() && cidrs[0].contains(&sb.ips[0]),
            "{:?}",
            sb.ips
        );
        ensure!(
            sb.ips[1].is_ipv6() && cidrs[1].contains(&sb.ips[1]),
            "{:?}",
            sb.ips
        );
    }
    ensure!(
        a.ips != b.ips,
        "two pods got the same addresses {:?}",
        a.ips
    );

    // The host-side veth is a hairpin port of the bridge.
    let veth = a.veth.clone().context("pod a has a veth")?;
    let details = ip(&["-n", &fx.node_ns, "-d", "link", "show", &veth])?;
    ensure!(
        details.contains("master skiff0") && details.contains("hairpin on"),
        "{details}"
    );

    // No IPv6 multicast chatter per pod: the bridge port has no link-local address, and the
    // pod's addresses skip duplicate address detection (none is tentative right after
    // creation) and it sends no router solicitations.
    let port_v6 = ip(&["-n", &fx.node_ns, "-6", "addr", "show", "dev", &veth])?;
    ensure!(
        port_v6.trim().is_empty(),
        "bridge port {veth} has IPv6 addresses: {port_v6}"
    );
    let pod_v6 = sh(
        &b,
        "cat /proc/sys/net/ipv6/conf/eth0/accept_dad /proc/sys/net/ipv6/conf/eth0/router_solicitations; ip -6 addr show dev eth0 tentative",
    )
    .await?;
    ensure!(
        pod_v6.split_whitespace().collect::<Vec<_>>() == ["0", "0"],
        "pod eth0: accept_dad, router_solicitations and tentative addresses: {pod_v6:?}"
    );
    let link_local = sh(&b, "ip -6 addr show dev eth0 scope link").await?;
    ensure!(
        link_local.contains("fe80::"),
        "pod eth0 keeps its link-local address: {link_local:?}"
    );

    for (family, (a_ip, b_ip)) in ["v4", "v6"].iter().zip(a.ips.iter().zip(b.ips.iter())) {
        // Listener socket made inside pod b's namespace, on b's address.
        let bind = std::net::SocketAddr::new(*b_ip, 0);
        let listener = run_in_netns(b.netns_path.as_deref(), move || {
            std::net::TcpListener::bind(bind)
        })??;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let port = listener.local_addr()?.port();
        let target = match b_ip {
            IpAddr::V6(v6) => v6.to_string(),
            IpAddr::V4(v4) => v4.to_string(),
        };
        // Pod a connects with bash's /dev/tcp from a process inside its sandbox.
        let script = format!(
            "exec 3<>/dev/tcp/{target}/{port}; echo ping-{family} >&3; read -r line <&3; echo \"$line\""
        );
        let client = a
            .command("bash")?
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (mut conn, peer) = listener.accept().await?;
        ensure!(
            peer.ip() == *a_ip,
            "{family}: connection came from {peer}, expected pod a {a_ip}"
        );
        let (rd, mut wr) = conn.split();
        let mut line = String::new();
        BufReader::new(rd).read_line(&mut line).await?;
        ensure!(
            line.trim() == format!("ping-{family}"),
            "{family}: got {line:?}"
        );
        wr.write_all(b"pong\n").await?;
        let out = client.wait_with_output().await?;
        ensure!(
            String::from_utf8_lossy(&out.stdout).trim() == "pong",
            "{family}: client said {:?} / {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The node namespace reaches the pod over the bridge too (probes).
        let probe = std::net::SocketAddr::new(*b_ip, port);
        let accept = tokio::spawn(async move { listener.accept().await.map(|(_, p)| p) });
        let _stream = mgr.connect_from_node(probe).await?;
        let from = accept.await??;
        ensure!(
            cidrs.iter().any(|c| c.gateway() == Some(from.ip())),
            "node connected from {from}"
        );
    }

    // Port-forward style: connect to the pod's loopback.
    let lo = run_in_netns(b.netns_path.as_deref(), || {
        std::net::TcpListener::bind("127.0.0.1:0")
    })??;
    let lo_port = lo.local_addr()?.port();
    let _s = b.connect_tcp(lo_port).await?;
    let (_, peer) = lo.accept()?;
    ensure!(
        peer.ip().is_loopback(),
        "loopback connection came from {peer}"
    );

    mgr.teardown_all().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_process_sees_its_dns_files_netns_hostname_and_cgroup() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let host_resolv_before = std::fs::read("/etc/resolv.conf")?;
    let mut spec = pod("cccc-0003", "web-0");
    spec.subdomain = Some("web".into());
    spec.host_aliases = vec![HostAlias {
        ip: "10.1.2.3".into(),
        hostnames: vec!["db.local".into()],
    }];
    spec.resources = PodResources {
        cpu_limit_millis: Some(500),
        cpu_request_millis: Some(250),
        memory_limit_bytes: Some(64 << 20),
    };
    let sb = mgr.create(&spec).await?;

    let out = sh(
        &sb,
        "cat /etc/resolv.conf; echo ---; cat /etc/hosts; echo ---; hostname; echo ---; \
         readlink /proc/self/ns/net; echo ---; cat /proc/self/cgroup",
    )
    .await?;
    let parts: Vec<&str> = out.split("---\n").collect();
    ensure!(parts.len() == 5, "unexpected output {out:?}");
    ensure!(
        parts[0]
            == "search shop.svc.cluster.local svc.cluster.local cluster.local example.test\n\
                nameserver 10.96.0.10\noptions ndots:5\n",
        "resolv.conf in the pod: {:?}",
        parts[0]
    );
    ensure!(
        parts[0] == std::fs::read_to_string(&sb.resolv_conf)?,
        "not the pod's resolv.conf"
    );
    let fqdn_line = format!("{}\tweb-0.web.shop.svc.cluster.local\tweb-0\n", sb.ips[0]);
    ensure!(
        parts[1].contains(&fqdn_line),
        "hosts in the pod: {:?}",
        parts[1]
    );
    ensure!(
        parts[1].contains("10.1.2.3\tdb.local\n"),
        "hosts in the pod: {:?}",
        parts[1]
    );
    ensure!(
        parts[2].trim() == "web-0",
        "hostname in the pod: {:?}",
        parts[2]
    );
    let ino = netns_inode(sb.netns_path.as_deref().context("netns path")?)?;
    ensure!(
        parts[3].trim() == format!("net:[{ino}]"),
        "netns {:?}, want inode {ino}",
        parts[3]
    );
    ensure!(
        parts[4].contains("/podcccc-0003"),
        "cgroups of the pod process: {:?}",
        parts[4]
    );
    // The bind mounts stayed inside the process's own mount namespace.
    ensure!(
        std::fs::read("/etc/resolv.conf")? == host_resolv_before,
        "host /etc/resolv.conf changed"
    );

    // Limits: 500m = 50 ms per 100 ms; 64 MiB.
    ensure!(
        sb.cgroup().cpu_quota()? == Some((50_000, 100_000)),
        "cpu quota {:?}",
        sb.cgroup().cpu_quota()
    );
    ensure!(
        sb.cgroup().memory_limit()? == Some(64 << 20),
        "memory limit {:?}",
        sb.cgroup().memory_limit()
    );
    ensure!(sb.oom_kills()? == 0, "no OOM kill yet");

    // Going over the memory limit gets a process OOM-killed, and the count says so.
    let _ = sh(
        &sb,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sb.oom_kills()? == 0 {
        ensure!(
            Instant::now() < deadline,
            "no OOM kill counted after exceeding the memory limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A hostNetwork pod runs in the node namespace and gets the node's hosts file.
    let mut host = pod("dddd-0004", "hostnet");
    host.host_network = true;
    host.dns_policy = DnsPolicy::ClusterFirstWithHostNet;
    let hs = mgr.create(&host).await?;
    ensure!(hs.ips.is_empty(), "hostNetwork pod got ips {:?}", hs.ips);
    let out = sh(
        &hs,
        "readlink /proc/self/ns/net; cat /etc/hosts; grep nameserver /etc/resolv.conf",
    )
    .await?;
    ensure!(
        out.contains(&format!("net:[{}]", netns_inode(&fx.node_path())?)),
        "{out}"
    );
    ensure!(
        out.contains("(host network)") && out.contains("testnode"),
        "{out}"
    );
    ensure!(out.contains("nameserver 10.96.0.10"), "{out}");

    mgr.teardown_all().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_ipam_persists_across_restart_and_is_released_on_remove() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let first = SandboxManager::new(fx.config()).await?;
    let a = first.create(&pod("eeee-0005", "a")).await?;
    let mut sleeper = a.command("sleep")?.arg("300").kill_on_drop(true).spawn()?;
    drop(first); // a kubelet restart: no teardown

    let second = SandboxManager::new(fx.config()).await?;
    let listed: Vec<String> = second.list().await.into_iter().map(|s| s.uid).collect();
    ensure!(
        listed == ["eeee-0005"],
        "after restart the manager lists {listed:?}"
    );
    let again = second.create(&pod("eeee-0005", "a")).await?;
    ensure!(
        again.ips == a.ips,
        "same uid got {:?}, first {:?}",
        again.ips,
        a.ips
    );
    ensure!(
        sleeper.try_wait()?.is_none(),
        "re-adopting the sandbox killed its process"
    );
    let holds =
        |all: Vec<(String, Vec<std::net::IpAddr>)>, uid: &str| all.iter().any(|(u, _)| u == uid);
    ensure!(
        second.allocations().await == [("eeee-0005".to_owned(), a.ips.clone())],
        "re-adopted addresses: {:?}",
        second.allocations().await
    );

    ensure!(
        second.remove("eeee-0005").await?,
        "remove says there was no sandbox"
    );
    ensure!(
        !second.remove("eeee-0005").await?,
        "second remove found one"
    );
    let pid = sleeper.id().context("pid")?;
    wait_gone(pid).await?;
    let _ = sleeper.wait().await;
    ensure!(
        !holds(second.allocations().await, "eeee-0005"),
        "addresses not released"
    );
    ensure!(
        list_netns(&fx.prefix).is_empty(),
        "netns left: {:?}",
        list_netns(&fx.prefix)
    );
    ensure!(
        fx.pod_cgroups().is_empty(),
        "cgroups left: {:?}",
        fx.pod_cgroups()
    );
    ensure!(second.get("eeee-0005").await.is_none());

    // `retain` removes the pods the kubelet no longer knows.
    second.create(&pod("ffff-0006", "keep")).await?;
    second.create(&pod("ffff-0007", "drop")).await?;
    let keep: HashSet<String> = ["ffff-0006".to_string()].into();
    ensure!(second.retain(&keep).await? == ["ffff-0007"]);
    ensure!(second.list().await.len() == 1);

    // A sandbox whose record was lost is still removed by its uid.
    second.create(&pod("ffff-0008", "lost")).await?;
    std::fs::remove_dir_all(fx.dir.path().join("state/pods/ffff-0008"))?;
    ensure!(
        second.remove("ffff-0008").await?,
        "remove found nothing of a pod without record"
    );
    ensure!(
        !list_netns(&fx.prefix)
            .iter()
            .any(|n| n.ends_with("ffff-0008")),
        "netns left"
    );
    ensure!(
        !holds(second.allocations().await, "ffff-0008"),
        "addresses not released"
    );
    ensure!(
        !second.remove("ffff-0008").await?,
        "a second remove found something"
    );
    second.teardown_all().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_crash_leftovers_are_cleaned_by_the_next_manager() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let first = SandboxManager::new(fx.config()).await?;
    let whole = first.create(&pod("1111-0001", "whole")).await?;
    let half = first.create(&pod("2222-0002", "half")).await?;
    let mut orphan_proc = half
        .command("sleep")?
        .arg("300")
        .kill_on_drop(true)
        .spawn()?;
    let orphan_pid = orphan_proc.id().context("pid")?;
    drop(first);
    // Simulate a crash in the middle of creating "half": its record is not complete.
    let rec_path = fx.dir.path().join("state/pods/2222-0002/sandbox.json");
    let rec =
        std::fs::read_to_string(&rec_path)?.replace("\"complete\": true", "\"complete\": false");
    std::fs::write(&rec_path, rec)?;
    // ... a namespace with our prefix that no record knows, and the record of a vanished pod
    // (its namespace and cgroup gone): its addresses must not stay taken.
    let stray_ns = format!("{}3333-0003", fx.prefix);
    ip(&["netns", "add", &stray_ns])?;
    // ... and a namespace that shares the prefix but is not a pod's (it has a bridge).
    let foreign_ns = format!("{}9999-0009", fx.prefix);
    ip(&["netns", "add", &foreign_ns])?;
    ip(&["-n", &foreign_ns, "link", "add", "br9", "type", "bridge"])?;
    let vanished =
        std::fs::read_to_string(fx.dir.path().join("state/pods/1111-0001/sandbox.json"))?
            .replace("1111-0001", "4444-0004")
            .replace(&whole.ips[0].to_string(), "10.244.7.200");
    std::fs::create_dir_all(fx.dir.path().join("state/pods/4444-0004"))?;
    std::fs::write(
        fx.dir.path().join("state/pods/4444-0004/sandbox.json"),
        vanished,
    )?;

    let second = SandboxManager::new(fx.config()).await?;
    wait_gone(orphan_pid).await?;
    let _ = orphan_proc.wait().await;
    let left = list_netns(&fx.prefix);
    ensure!(
        left == [format!("{}1111-0001", fx.prefix), foreign_ns.clone()],
        "netns after restart: {left:?}"
    );
    ip(&["netns", "delete", &foreign_ns])?;
    let ipam = second.allocations().await;
    ensure!(
        ipam == [("1111-0001".to_owned(), whole.ips.clone())],
        "after recovery IPAM holds {ipam:?}: only the whole pod's addresses may stay"
    );
    ensure!(
        !fx.dir.path().join("state/pods/4444-0004").exists(),
        "the vanished pod's record was kept"
    );
    let cgroups = fx.pod_cgroups();
    ensure!(
        cgroups.iter().all(|p| !p.ends_with("pod2222-0002")),
        "half pod's cgroup left: {cgroups:?}"
    );
    let listed: Vec<String> = second.list().await.into_iter().map(|s| s.uid).collect();
    ensure!(listed == ["1111-0001"], "{listed:?}");
    // The surviving sandbox still works.
    let out = sh(
        &second.get("1111-0001").await.context("whole pod")?,
        "hostname",
    )
    .await?;
    ensure!(out.trim() == "whole", "{out}");
    ensure!(whole.ips == second.get("1111-0001").await.context("whole")?.ips);
    second.teardown_all().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_teardown_leaves_no_namespace_cgroup_or_process() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let a = mgr.create(&pod("5555-0005", "a")).await?;
    mgr.create(&pod("6666-0006", "b")).await?;
    let mut hostnet = pod("7777-0007", "h");
    hostnet.host_network = true;
    let h = mgr.create(&hostnet).await?;
    let mut p1 = a.command("sleep")?.arg("300").kill_on_drop(true).spawn()?;
    let mut p2 = h.command("sleep")?.arg("300").kill_on_drop(true).spawn()?;
    ensure!(list_netns(&fx.prefix).len() == 2);
    ensure!(a.pids().len() == 1, "pod cgroup pids {:?}", a.pids());

    // A failed create (dnsPolicy None without dnsConfig) leaves nothing behind.
    let mut bad = pod("8888-0008", "bad");
    bad.dns_policy = DnsPolicy::None;
    let err = mgr
        .create(&bad)
        .await
        .expect_err("None without dnsConfig must fail")
        .to_string();
    ensure!(err.contains("dnsConfig"), "{err}");
    ensure!(
        !list_netns(&fx.prefix)
            .iter()
            .any(|n| n.ends_with("8888-0008"))
    );

    mgr.teardown_all().await?;
    for child in [&mut p1, &mut p2] {
        wait_gone(child.id().context("pid")?).await?;
        let _ = child.wait().await;
    }
    let all = ip(&["netns", "list"])?;
    ensure!(
        !all.contains(&fx.prefix),
        "ip netns list still shows: {all}"
    );
    ensure!(
        fx.pod_cgroups().is_empty(),
        "cgroups left: {:?}",
        fx.pod_cgroups()
    );
    ensure!(
        !fx.cgroup_parent_exists(),
        "cgroup parent {} left",
        fx.cgroup_parent
    );
    ensure!(
        ip(&["-n", &fx.node_ns, "link", "show", "skiff0"]).is_err(),
        "bridge still in the node namespace"
    );
    ensure!(mgr.list().await.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_process_mount_namespace_is_private_and_holds_no_pod_netns() -> Result<()> {
    if !privileged("sandbox") {
        return Ok(());
    }
    let fx = NodeFixture::new("x")?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let a = mgr.create(&pod("9999-0009", "a")).await?;
    let mut p = a.command("sleep")?.arg("300").kill_on_drop(true).spawn()?;
    let pid = p.id().context("pid")?;
    // A pod made after the process started: its netns mount must not reach the process.
    let b = mgr.create(&pod("aaaa-0010", "b")).await?;
    let b_netns = b.netns_path.clone().context("netns path of b")?;
    ensure!(
        b_netns.exists(),
        "{} missing on the node",
        b_netns.display()
    );

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    let under_netns: Vec<&str> = mountinfo
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with("/run/netns"))
        })
        .collect();
    ensure!(
        under_netns.is_empty(),
        "the pod process holds netns mounts (each would keep a namespace alive): {under_netns:?}"
    );
    // Private (upstream's `mountPropagation: None`): no peer group, no master.
    let propagating: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(" shared:") || l.contains(" master:"))
        .collect();
    ensure!(
        propagating.is_empty(),
        "mounts still propagate into the pod process: {propagating:?}"
    );
    // Its own namespace and DNS files are still in place.
    let resolv = std::fs::read_to_string(format!("/proc/{pid}/root/etc/resolv.conf"))?;
    ensure!(
        resolv.contains("nameserver 10.96.0.10"),
        "resolv.conf seen by the pod process: {resolv:?}"
    );
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
    let ino = netns_inode(a.netns_path.as_deref().context("netns path of a")?)?;
    ensure!(
        ns.to_string_lossy() == format!("net:[{ino}]"),
        "netns {ns:?}, want inode {ino}"
    );

    mgr.teardown_all().await?;
    wait_gone(pid).await?;
    let _ = p.wait().await;
    ensure!(
        list_netns(&fx.prefix).is_empty(),
        "{:?}",
        list_netns(&fx.prefix)
    );
    Ok(())
}
