//! Privileged tests of the north-south load balancer: the real tc program on the interfaces
//! of a throwaway "node" namespace between a client namespace and a backend namespace, with
//! no route out of the three.
//!
//! Topology per test: C (client 10.251.1.2, fd00:251:1::2) — veth vc — N (node 10.251.1.1,
//! fd00:251:1::1 on vc; 10.251.2.1, fd00:251:2::1 on vb; forwarding on) — veth vb — B
//! (backends 10.251.2.2/.3 and fd00:251:2::2/::3, servers on 8080, default route via N). The
//! program is attached at ingress of vc and vb. Transmit checksum offload is off on the
//! client's and the backends' veths, so every packet carries a full checksum that the
//! receiving stack verifies: a wrong incremental update shows up as a lost packet.

// One ioctl (ETHTOOL_STXCSUM), which neither rustix nor socket2 wraps.
#![allow(unsafe_code)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use skiff_ebpf::{BackendAddr, FrontendOptions, NodePortLb, NodePortOptions, Vip};

fn privileged() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var("SKIFF_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("skipping: needs root (SKIFF_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!("this test needs root (netns, BPF); run as root or set SKIFF_SKIP_PRIVILEGED=1");
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A named network namespace, deleted on drop (even when the test fails).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        // IPv6 link-local addresses usable at once (neighbour discovery needs them)
        ns.call(|| std::fs::write("/proc/sys/net/ipv6/conf/default/accept_dad", "0"))??;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let file = std::fs::File::open(self.path()).context("opening netns")?;
        std::thread::spawn(move || {
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).map(|()| f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        .context("setns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Turns transmit checksum offload off on `dev` (in the calling thread's namespace), so the
/// stack computes full checksums in software and the receiver checks them.
fn tx_checksum_off(dev: &str) -> std::io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = Ifreq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name and a pointer to an
    // ethtool_value that outlives the call) and writes nothing beyond them.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req as *mut Ifreq) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Servers in B; each reply is `<local address>|<peer address>`.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(listener: TcpListener, stop: Arc<AtomicBool>) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut conn, peer)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                // read the request (up to 3000 bytes, so segments of full size cross the node)
                let mut got = 0;
                while let Ok(n) = conn.read(&mut buf[got..]) {
                    got += n;
                    if n == 0 || buf[..got].ends_with(b"\n") {
                        break;
                    }
                }
                let _ = conn.write_all(format!("{local}|{peer}|{got}").as_bytes());
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn serve_udp(socket: UdpSocket, stop: Arc<AtomicBool>) {
    let local = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{local}|{from}").as_bytes(), from);
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Env {
    lb: NodePortLb,
    _servers: Servers,
    c: Netns,
    n: Netns,
    _b: Netns,
}

const B1: &str = "10.251.2.2:8080";
const B2: &str = "10.251.2.3:8080";
const B1_6: &str = "[fd00:251:2::2]:8080";
const B2_6: &str = "[fd00:251:2::3]:8080";
const FRONT: &str = "10.251.1.1:30080";
const FRONT_6: &str = "[fd00:251:1::1]:30080";

fn backends(list: &[&str]) -> Vec<BackendAddr> {
    list.iter()
        .map(|s| BackendAddr(s.parse().expect("backend")))
        .collect()
}

fn addr_args<'a>(ns: &'a str, dev: &'a str, addr: &'a str) -> Vec<&'a str> {
    let mut args = vec!["-n", ns, "addr", "add", addr, "dev", dev];
    if addr.contains(':') {
        // usable at once, not after duplicate address detection
        args.push("nodad");
    }
    args
}

impl Env {
    fn new() -> Result<Self> {
        Self::with(NodePortOptions {
            max_frontends: 64,
            max_backends: 256,
            maglev_size: 251,
            max_flows: 4096,
            pin_dir: None,
        })
    }

    fn with(options: NodePortOptions) -> Result<Self> {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let c = Netns::new(format!("sktnp-c-{pid}-{k}"))?;
        let n = Netns::new(format!("sktnp-n-{pid}-{k}"))?;
        let b = Netns::new(format!("sktnp-b-{pid}-{k}"))?;
        ip(&[
            "-n", &n.name, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns",
            &c.name,
        ])?;
        ip(&[
            "-n", &n.name, "link", "add", "vb", "type", "veth", "peer", "name", "eth0", "netns",
            &b.name,
        ])?;
        for (ns, dev, addrs) in [
            (&c, "eth0", &["10.251.1.2/24", "fd00:251:1::2/64"][..]),
            (&n, "vc", &["10.251.1.1/24", "fd00:251:1::1/64"][..]),
            (&n, "vb", &["10.251.2.1/24", "fd00:251:2::1/64"][..]),
            (
                &b,
                "eth0",
                &[
                    "10.251.2.2/24",
                    "10.251.2.3/24",
                    "fd00:251:2::2/64",
                    "fd00:251:2::3/64",
                ][..],
            ),
        ] {
            for addr in addrs {
                ip(&addr_args(&ns.name, dev, addr))?;
            }
            ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
        }
        // B answers through the node, as a pod whose default gateway is its node
        ip(&[
            "-n",
            &b.name,
            "route",
            "add",
            "default",
            "via",
            "10.251.2.1",
        ])?;
        ip(&[
            "-n",
            &b.name,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:251:2::1",
        ])?;
        n.call(|| -> std::io::Result<()> {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
            std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")
        })??;
        c.call(|| tx_checksum_off("eth0"))?
            .context("client tx checksum off")?;
        b.call(|| tx_checksum_off("eth0"))?
            .context("backend tx checksum off")?;

        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in [B1, B2, B1_6, B2_6] {
            let sa: SocketAddr = addr.parse()?;
            let (tcp, udp) = b.call(move || -> std::io::Result<(TcpListener, UdpSocket)> {
                let tcp = TcpListener::bind(sa)?;
                tcp.set_nonblocking(true)?;
                Ok((tcp, UdpSocket::bind(sa)?))
            })??;
            let s = stop.clone();
            threads.push(std::thread::spawn(move || serve_tcp(tcp, s)));
            let s = stop.clone();
            threads.push(std::thread::spawn(move || serve_udp(udp, s)));
        }
        let mut lb = NodePortLb::load(options)?;
        let node = std::path::PathBuf::from(n.path());
        lb.attach(&node, "vc")?;
        lb.attach(&node, "vb")?;
        lb.set_snat_addresses(Some("10.251.1.1".parse()?), Some("fd00:251:1::1".parse()?))?;
        Ok(Env {
            lb,
            _servers: Servers { stop, threads },
            c,
            n,
            _b: b,
        })
    }

    /// What a restarted process does: load with the same pins (adopting the maps), the old
    /// balancer goes (its links detached), the new one attaches.
    fn restart(&mut self, options: NodePortOptions) -> Result<()> {
        let old = std::mem::replace(&mut self.lb, NodePortLb::load(options)?);
        drop(old);
        let node = std::path::PathBuf::from(self.n.path());
        self.lb.attach(&node, "vc")?;
        self.lb.attach(&node, "vb")?;
        Ok(())
    }

    /// One TCP exchange from C with a `size`-byte request: (backend, peer it saw).
    fn tcp(&self, to: &str, size: usize) -> Result<(String, String)> {
        let to: SocketAddr = to.parse()?;
        let reply = self.c.call(move || -> std::io::Result<String> {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut req = vec![b'x'; size.saturating_sub(1)];
            req.push(b'\n');
            conn.write_all(&req)?;
            let mut out = String::new();
            conn.read_to_string(&mut out)?;
            Ok(out)
        })??;
        let mut parts = reply.split('|');
        let (Some(backend), Some(peer), Some(got)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("odd reply {reply:?}");
        };
        ensure!(
            got == size.to_string(),
            "backend read {got} of {size} bytes"
        );
        Ok((backend.to_owned(), peer.to_owned()))
    }
}

/// A UDP socket in C; `ask` sends one datagram and returns (backend, peer it saw, reply source).
struct UdpClient {
    socket: UdpSocket,
}

impl UdpClient {
    fn new(env: &Env, v6: bool) -> Result<Self> {
        let socket = env
            .c
            .call(move || UdpSocket::bind(if v6 { "[::]:0" } else { "0.0.0.0:0" }))??;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(UdpClient { socket })
    }

    fn ask(&self, to: &str) -> Result<(String, String, SocketAddr)> {
        self.socket.send_to(b"ping", to)?;
        let mut buf = [0u8; 512];
        let (n, from) = self.socket.recv_from(&mut buf)?;
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (backend, peer) = reply.split_once('|').context("odd reply")?;
        Ok((backend.to_owned(), peer.to_owned(), from))
    }
}

fn ip_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

#[test]
fn cluster_policy_dnats_and_snats_tcp_and_udp_in_both_families() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let snat = FrontendOptions {
        snat: true,
        affinity: false,
    };
    for (front, list, node) in [
        (FRONT, [B1, B2], "10.251.1.1"),
        (FRONT_6, [B1_6, B2_6], "fd00:251:1::1"),
    ] {
        let addr: SocketAddr = front.parse()?;
        let slot = env
            .lb
            .upsert_frontend(Vip::tcp(addr), &backends(&list), snat)?;
        env.lb
            .upsert_frontend(Vip::udp(addr), &backends(&list), snat)?;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..16 {
            // requests of several segments: checksums of full-size packets too
            let (backend, peer) = env.tcp(front, if i % 2 == 0 { 10 } else { 3000 })?;
            ensure!(
                ip_of(&peer) == node,
                "{front}: the backend saw {peer}, not the node"
            );
            seen.insert(backend);
        }
        ensure!(
            seen == list.iter().map(|s| s.to_string()).collect(),
            "{front}: Maglev spread over {seen:?}"
        );
        let udp = UdpClient::new(&env, addr.is_ipv6())?;
        let (backend, peer, from) = udp.ask(front)?;
        ensure!(
            list.contains(&backend.as_str()),
            "udp answered by {backend}"
        );
        ensure!(ip_of(&peer) == node, "udp: the backend saw {peer}");
        ensure!(from == addr, "udp reply from {from}, not {addr}");
        let c = env.lb.counters(slot)?;
        ensure!(
            c.flows >= 16 && c.packets > c.flows && c.replies > 0,
            "{front} counters {c:?}"
        );
    }
    let dump = env.lb.dump()?;
    ensure!(dump.contains("snat 10.251.1.1:"), "{dump}");
    Ok(())
}

#[test]
fn local_policy_keeps_the_client_address() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let keep = FrontendOptions::default();
    for (front, backend, client) in [(FRONT, B2, "10.251.1.2"), (FRONT_6, B2_6, "fd00:251:1::2")] {
        let addr: SocketAddr = front.parse()?;
        env.lb
            .upsert_frontend(Vip::tcp(addr), &backends(&[backend]), keep)?;
        env.lb
            .upsert_frontend(Vip::udp(addr), &backends(&[backend]), keep)?;
        for size in [10, 3000] {
            let (got, peer) = env.tcp(front, size)?;
            ensure!(got == backend, "{front}: reached {got}");
            ensure!(ip_of(&peer) == client, "{front}: the backend saw {peer}");
        }
        let (got, peer, from) = UdpClient::new(&env, addr.is_ipv6())?.ask(front)?;
        ensure!(got == backend && ip_of(&peer) == client && from == addr);
    }
    Ok(())
}

#[test]
fn a_frontend_without_backends_is_refused_by_the_node() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let addr: SocketAddr = FRONT.parse()?;
    let slot = env
        .lb
        .upsert_frontend(Vip::tcp(addr), &[], FrontendOptions::default())?;
    let err = env.tcp(FRONT, 10).err().context("connected to nothing")?;
    let refused = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    ensure!(refused, "expected a reset from the node's stack: {err:#}");
    ensure!(env.lb.counters(slot)?.no_backend >= 1);
    // backends arrive: the same frontend answers
    env.lb
        .upsert_frontend(Vip::tcp(addr), &backends(&[B1]), FrontendOptions::default())?;
    ensure!(env.tcp(FRONT, 10)?.0 == B1);
    // removed: left to the stack again
    ensure!(env.lb.remove_frontend(&Vip::tcp(addr))?);
    ensure!(env.tcp(FRONT, 10).is_err());
    Ok(())
}

#[test]
fn a_udp_flow_moves_when_its_backend_goes_and_tcp_flows_stay() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let opts = FrontendOptions {
        snat: true,
        affinity: false,
    };
    let addr: SocketAddr = FRONT.parse()?;
    env.lb
        .upsert_frontend(Vip::udp(addr), &backends(&[B1, B2]), opts)?;
    let udp = UdpClient::new(&env, false)?;
    let (first, _, _) = udp.ask(FRONT)?;
    for _ in 0..5 {
        ensure!(udp.ask(FRONT)?.0 == first, "a UDP flow changed backend");
    }
    let survivor = if first == B1 { B2 } else { B1 };
    env.lb
        .upsert_frontend(Vip::udp(addr), &backends(&[survivor]), opts)?;
    ensure!(
        udp.ask(FRONT)?.0 == survivor,
        "the flow did not move to {survivor}"
    );

    // TCP: an established connection keeps its backend through an update that drops it
    env.lb
        .upsert_frontend(Vip::tcp(addr), &backends(&[B1, B2]), opts)?;
    let conn = env.c.call(move || TcpStream::connect(addr))??;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let only_other = |lb: &mut NodePortLb, keep: &str| {
        lb.upsert_frontend(Vip::tcp(addr), &backends(&[keep]), opts)
    };
    // the server answers once it has a line; learn nothing before the update
    only_other(&mut env.lb, B1)?;
    only_other(&mut env.lb, B2)?;
    let mut conn = conn;
    conn.write_all(b"hello\n")?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    ensure!(
        out.ends_with("|6"),
        "the established connection broke: {out:?}"
    );
    Ok(())
}

#[test]
fn affinity_keeps_a_client_on_one_backend_across_its_connections() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let addr: SocketAddr = FRONT.parse()?;
    env.lb.upsert_frontend(
        Vip::tcp(addr),
        &backends(&[B1, B2]),
        FrontendOptions {
            snat: true,
            affinity: true,
        },
    )?;
    // every connection has a new source port; only the client address is hashed (without
    // affinity, 11 connections over 2 backends all on one would be a 1-in-1024 chance)
    let first = env.tcp(FRONT, 10)?.0;
    for _ in 0..10 {
        ensure!(env.tcp(FRONT, 10)?.0 == first, "affinity broken");
    }
    Ok(())
}

#[test]
fn a_bad_maglev_size_is_refused() {
    if !privileged() {
        return;
    }
    let err = NodePortLb::load(NodePortOptions {
        maglev_size: 1000,
        ..NodePortOptions::default()
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("maglev_size") && err.contains("prime"),
        "{err}"
    );
}

/// A private BPF file system for pins, unmounted and removed on drop: the test never touches
/// /sys/fs/bpf, and leaves no pinned map behind even when it fails.
struct Bpffs {
    dir: std::path::PathBuf,
}

impl Bpffs {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "sktnp-bpffs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)?;
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            bail!("mount -t bpf failed");
        }
        Ok(Bpffs { dir })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = skiff_ebpf::remove_pins(self.dir.join("skiff/test")) {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir(self.dir.join("skiff"));
        match Command::new("umount").arg(&self.dir).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("cleanup: umount {}: {other:?}", self.dir.display()),
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The backend the flow table holds for a client address, from the dump.
fn flow_backend(lb: &NodePortLb, client: SocketAddr, front: &str) -> Result<String> {
    let dump = lb.dump()?;
    let needle = format!("{client} -> {front}: ");
    let line = dump
        .lines()
        .find(|l| l.contains(&needle))
        .with_context(|| format!("no flow {needle} in\n{dump}"))?;
    let rest = &line[line.find(&needle).unwrap_or(0) + needle.len()..];
    Ok(rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn pinned_frontends_and_flows_survive_a_restart() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let fs = Bpffs::new()?;
    let options = NodePortOptions {
        max_frontends: 64,
        max_backends: 256,
        maglev_size: 251,
        max_flows: 4096,
        pin_dir: Some(fs.dir.join("skiff/test")),
    };
    let mut env = Env::with(options.clone())?;
    env.lb
        .set_snat_addresses(Some("10.251.1.1".parse()?), None)?;
    let snat = FrontendOptions {
        snat: true,
        affinity: false,
    };
    let addr: SocketAddr = FRONT.parse()?;
    let stale = Vip::tcp("10.251.1.1:30099".parse()?);
    let slot = env
        .lb
        .upsert_frontend(Vip::tcp(addr), &backends(&[B1, B2]), snat)?;
    env.lb
        .upsert_frontend(Vip::udp(addr), &backends(&[B1, B2]), snat)?;
    env.lb.upsert_frontend(stale, &backends(&[B1]), snat)?;
    let before = env.lb.frontends();
    // a TCP connection (established, no data yet) and a UDP flow, before the restart
    let conn = env
        .c
        .call(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))??;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let tcp_backend = flow_backend(&env.lb, conn.local_addr()?, FRONT)?;
    let udp = UdpClient::new(&env, false)?;
    let (udp_backend, _, _) = udp.ask(FRONT)?;

    env.restart(options.clone())?;
    ensure!(
        env.lb.frontends() == before,
        "adopted {:?}, had {before:?}",
        env.lb.frontends()
    );
    ensure!(
        env.lb.slot_of(&Vip::tcp(addr)) == Some(slot),
        "slot changed"
    );
    ensure!(
        env.lb.snat_addresses()?.0 == Some("10.251.1.1".parse()?),
        "the SNAT address was not kept"
    );
    // reconcile with a new table: the stale frontend goes, the TCP one keeps only the
    // backend the connection does not use
    ensure!(env.lb.remove_frontend(&stale)?);
    let other = if tcp_backend == B1 { B2 } else { B1 };
    env.lb
        .upsert_frontend(Vip::tcp(addr), &backends(&[other]), snat)?;
    // the flow table came back with the maps: the connection keeps its backend
    let mut conn = conn;
    conn.write_all(b"hello\n")?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    ensure!(
        out.starts_with(&tcp_backend) && out.ends_with("|6"),
        "the connection to {tcp_backend} broke across the restart: {out:?}"
    );
    ensure!(
        env.tcp(FRONT, 10)?.0 == other,
        "a new connection missed {other}"
    );
    let (again, _, from) = udp.ask(FRONT)?;
    ensure!(
        again == udp_backend && from == addr,
        "the UDP flow moved: {again} from {from}"
    );
    let dump = env.lb.dump()?;
    ensure!(!dump.contains("30099"), "stale frontend left: {dump}");

    // another Maglev size of the same chunk count: the adopted tables are rebuilt
    env.restart(NodePortOptions {
        maglev_size: 241,
        ..options.clone()
    })?;
    ensure!(env.lb.frontend_count() == 2);
    ensure!(
        env.tcp(FRONT, 10)?.0 == other,
        "rebuilt table misses {other}"
    );
    ensure!(
        env.lb.dump()?.contains("maglev_size 241"),
        "not reloaded with the new size"
    );
    // other map sizes: the pins are not reused, the balancer starts empty
    env.restart(NodePortOptions {
        max_frontends: 32,
        ..options
    })?;
    ensure!(
        env.lb.frontend_count() == 0,
        "pins of another size were reused"
    );
    Ok(())
}
