//! Privileged tests of the socket load balancer: real programs at the cgroup v2 root, traffic
//! only between two throwaway network namespaces joined by a veth, with no route out.
//!
//! Topology per test: namespace A (client, 10.250.0.1, fd00:250::1) — veth — namespace B
//! (backends 10.250.0.2/.3 and fd00:250::2/::3, echo servers on port 8080). Neither has a
//! route to 10.96.0.0/12 or fd00:10:96::/112, so an untranslated connect to a virtual
//! address fails inside the namespace with ENETUNREACH.

use std::{
    io::{Read, Write},
    net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use skiff_ebpf::{BackendAddr, ServiceOptions, SockLb, SockLbOptions, Vip, netns_cookie};

const BACKEND_PORT: u16 = 8080;

/// Root, or an explicit opt-out; anything else is a failure that says why.
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
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` on a thread inside this namespace (setns affects only that thread).
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>> {
        let file = std::fs::File::open(self.path()).context("opening netns")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let entered = move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network));
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            // never run the closure in the wrong namespace
            assert!(ok, "setns failed");
            f()
        });
        rx.recv().context("netns thread")?.context("setns")?;
        Ok(handle)
    }

    fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.run(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Echo servers in B: each reply is `<local address>|<request>`, so the client learns which
/// backend answered.
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
            Ok((mut conn, _)) => {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 512];
                if let Ok(n) = conn.read(&mut buf) {
                    let reply = format!("{local}|{}", String::from_utf8_lossy(&buf[..n]));
                    let _ = conn.write_all(reply.as_bytes());
                }
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
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            let reply = format!("{local}|{}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from);
        }
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The two namespaces, the servers and a loaded, attached balancer that allows A.
struct Env {
    lb: SockLb,
    _servers: Servers,
    a: Netns,
    b: Netns,
}

fn backend(s: &str) -> BackendAddr {
    BackendAddr(s.parse().expect("backend address"))
}

fn vip_tcp(s: &str) -> Vip {
    Vip::tcp(s.parse().expect("vip"))
}

fn vip_udp(s: &str) -> Vip {
    Vip::udp(s.parse().expect("vip"))
}

const B1: &str = "10.250.0.2:8080";
const B2: &str = "10.250.0.3:8080";
const B1_6: &str = "[fd00:250::2]:8080";

impl Env {
    fn new() -> Result<Self> {
        Self::with(SockLbOptions::default())
    }

    fn with(options: SockLbOptions) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let a = Netns::new(format!("sktebpf-a-{pid}-{n}"))?;
        let b = Netns::new(format!("sktebpf-b-{pid}-{n}"))?;
        // the peer is created directly in B: nothing appears in the host namespace
        ip(&[
            "-n", &a.name, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &b.name,
        ])?;
        for (ns, dev, addrs) in [
            (&a, "va", &["10.250.0.1/24", "fd00:250::1/64"][..]),
            (
                &b,
                "vb",
                &[
                    "10.250.0.2/24",
                    "10.250.0.3/24",
                    "fd00:250::2/64",
                    "fd00:250::3/64",
                ][..],
            ),
        ] {
            for addr in addrs {
                // nodad: IPv6 addresses usable at once, not after duplicate detection
                let mut args = vec!["-n", &ns.name, "addr", "add", addr, "dev", dev];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip(&args)?;
            }
            ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in ["10.250.0.2", "10.250.0.3", "fd00:250::2", "fd00:250::3"] {
            let sa = SocketAddr::new(addr.parse()?, BACKEND_PORT);
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
        let servers = Servers { stop, threads };
        let started = Instant::now();
        let mut lb = SockLb::load(options)?;
        let loaded = started.elapsed();
        let root = lb.attach_root()?;
        eprintln!(
            "sock_lb: load {:.1} ms + attach at {} {:.1} ms",
            loaded.as_secs_f64() * 1e3,
            root.display(),
            (started.elapsed() - loaded).as_secs_f64() * 1e3
        );
        lb.allow_netns(netns_cookie(a.path())?)?;
        Ok(Env {
            lb,
            _servers: servers,
            a,
            b,
        })
    }
}

/// TCP request through `to`; returns (reply, the peer address the socket reports).
fn tcp_echo(to: SocketAddr, msg: &str) -> std::io::Result<(String, SocketAddr)> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(msg.as_bytes())?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok((reply, conn.peer_addr()?))
}

/// Unconnected UDP request; returns (reply, the source address recvfrom reports).
fn udp_echo(to: SocketAddr, msg: &str) -> std::io::Result<(String, SocketAddr)> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("any");
    let socket = UdpSocket::bind(any)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(msg.as_bytes(), to)?;
    let mut buf = [0u8; 512];
    let (n, from) = socket.recv_from(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

/// Connected UDP request; returns (reply, peer address).
fn udp_connected_echo(to: SocketAddr, msg: &str) -> std::io::Result<(String, SocketAddr)> {
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("any");
    let socket = UdpSocket::bind(any)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.connect(to)?;
    socket.send(msg.as_bytes())?;
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf)?;
    Ok((
        String::from_utf8_lossy(&buf[..n]).into_owned(),
        socket.peer_addr()?,
    ))
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

#[test]
fn tcp_and_udp_in_both_families_reach_the_backend_and_see_the_vip() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let v4 = vip_tcp("10.96.200.1:80");
    let v4u = vip_udp("10.96.200.1:53");
    let v6 = vip_tcp("[fd00:10:96::c8]:80");
    let v6u = vip_udp("[fd00:10:96::c8]:53");
    let slot = env
        .lb
        .upsert_service(v4, &[backend(B1)], ServiceOptions::default())?;
    let slot_u = env
        .lb
        .upsert_service(v4u, &[backend(B1)], ServiceOptions::default())?;
    env.lb
        .upsert_service(v6, &[backend(B1_6)], ServiceOptions::default())?;
    env.lb
        .upsert_service(v6u, &[backend(B1_6)], ServiceOptions::default())?;

    let (reply, peer) = env.a.call(move || tcp_echo(v4.addr, "hello"))??;
    assert_eq!(reply, format!("{B1}|hello"));
    assert_eq!(peer, v4.addr, "getpeername shows the virtual address");

    let (reply, from) = env.a.call(move || udp_echo(v4u.addr, "ping"))??;
    assert_eq!(reply, format!("{B1}|ping"));
    assert_eq!(from, v4u.addr, "recvfrom shows the virtual address");

    let (reply, peer) = env.a.call(move || udp_connected_echo(v4u.addr, "c"))??;
    assert_eq!(reply, format!("{B1}|c"));
    assert_eq!(peer, v4u.addr);

    let (reply, peer) = env.a.call(move || tcp_echo(v6.addr, "hello6"))??;
    assert_eq!(reply, format!("{B1_6}|hello6"));
    assert_eq!(peer, v6.addr);

    let (reply, from) = env.a.call(move || udp_echo(v6u.addr, "ping6"))??;
    assert_eq!(reply, format!("{B1_6}|ping6"));
    assert_eq!(from, v6u.addr);

    // a dual-stack IPv6 socket connecting to the v4-mapped VIP finds the IPv4 service
    let mapped = SocketAddr::new(Ipv6Addr::from(0xffff_0a60_c801u128).into(), 80);
    let (reply, peer) = env.a.call(move || tcp_echo(mapped, "mapped"))??;
    assert_eq!(reply, format!("{B1}|mapped"));
    assert_eq!(peer, mapped);

    let c = env.lb.counters(slot)?;
    assert_eq!((c.connects, c.rejected), (2, 0), "{c:?}");
    let cu = env.lb.counters(slot_u)?;
    assert_eq!((cu.connects, cu.datagrams), (1, 1), "{cu:?}");
    let dump = env.lb.dump()?;
    assert!(dump.contains("tcp 10.96.200.1:80 slot="), "{dump}");
    assert!(dump.contains(&format!("-> {B1}")), "{dump}");
    assert!(dump.contains("[fd00:10:96::c8]:53"), "{dump}");
    eprintln!("{dump}");
    Ok(())
}

#[test]
fn sockets_of_other_namespaces_are_untouched() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let v4 = vip_tcp("10.96.200.1:80");
    let v6 = vip_tcp("[fd00:10:96::c8]:80");
    env.lb
        .upsert_service(v4, &[backend(B1)], ServiceOptions::default())?;
    env.lb
        .upsert_service(v6, &[backend(B1_6)], ServiceOptions::default())?;
    // B is not allowed: its connect goes to the real (unroutable) address
    assert_eq!(
        env.b.call(move || errno(tcp_echo(v4.addr, "x")))?,
        Some(libc::ENETUNREACH)
    );
    assert_eq!(
        env.b.call(move || errno(tcp_echo(v6.addr, "x")))?,
        Some(libc::ENETUNREACH)
    );
    assert_eq!(
        env.b.call(move || errno(udp_echo(v4.addr, "x")))?,
        Some(libc::ENETUNREACH)
    );
    // A stops being translated once forbidden, and is again when re-allowed
    let cookie_a = netns_cookie(env.a.path())?;
    assert!(env.a.call(move || tcp_echo(v4.addr, "x"))?.is_ok());
    env.lb.forbid_netns(cookie_a)?;
    assert_eq!(
        env.a.call(move || errno(tcp_echo(v4.addr, "x")))?,
        Some(libc::ENETUNREACH)
    );
    env.lb.allow_netns(cookie_a)?;
    assert!(env.a.call(move || tcp_echo(v4.addr, "x"))?.is_ok());
    // a removed service is no longer translated
    assert!(env.lb.remove_service(&v4)?);
    assert!(!env.lb.remove_service(&v4)?);
    assert_eq!(
        env.a.call(move || errno(tcp_echo(v4.addr, "x")))?,
        Some(libc::ENETUNREACH)
    );
    Ok(())
}

#[test]
fn a_service_without_backends_refuses_connect_and_sendto() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let v4 = vip_tcp("10.96.200.1:80");
    let v4u = vip_udp("10.96.200.1:53");
    let v6 = vip_tcp("[fd00:10:96::c8]:80");
    let slot = env.lb.upsert_service(v4, &[], ServiceOptions::default())?;
    let slot_u = env.lb.upsert_service(v4u, &[], ServiceOptions::default())?;
    env.lb.upsert_service(v6, &[], ServiceOptions::default())?;
    // ECONNREFUSED on 5.18+ kernels (bpf_set_retval), EPERM before: what kube-proxy's
    // REJECT gives a TCP client, at once and without a packet
    let refused = if kernel_at_least(5, 18) {
        libc::ECONNREFUSED
    } else {
        libc::EPERM
    };
    assert_eq!(
        env.a.call(move || errno(tcp_echo(v4.addr, "x")))?,
        Some(refused)
    );
    assert_eq!(
        env.a.call(move || errno(tcp_echo(v6.addr, "x")))?,
        Some(refused)
    );
    assert_eq!(
        env.a.call(move || errno(udp_echo(v4u.addr, "x")))?,
        Some(refused)
    );
    assert_eq!(env.lb.counters(slot)?.rejected, 1);
    assert_eq!(env.lb.counters(slot_u)?.rejected, 1);
    // endpoints appear: the same slot now connects
    assert_eq!(
        env.lb
            .upsert_service(v4, &[backend(B1)], ServiceOptions::default())?,
        slot
    );
    let (reply, _) = env.a.call(move || tcp_echo(v4.addr, "x"))??;
    assert_eq!(reply, format!("{B1}|x"));
    Ok(())
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let sticky = vip_tcp("10.96.200.1:80");
    let random = vip_tcp("10.96.200.2:80");
    let both = [backend(B1), backend(B2)];
    let affinity = ServiceOptions {
        affinity_timeout: Some(Duration::from_secs(10800)),
    };
    env.lb.upsert_service(sticky, &both, affinity)?;
    env.lb
        .upsert_service(random, &both, ServiceOptions::default())?;
    let answers = |vip: Vip| -> Result<Vec<String>> {
        env.a
            .call(move || {
                (0..40)
                    .map(|_| tcp_echo(vip.addr, "x").map(|(r, _)| r))
                    .collect::<std::io::Result<Vec<_>>>()
            })?
            .map_err(Into::into)
    };
    let mut sticky_answers = answers(sticky)?;
    sticky_answers.dedup();
    assert_eq!(
        sticky_answers.len(),
        1,
        "affinity: one backend, got {sticky_answers:?}"
    );
    // the client keeps its backend across updates that keep it, whatever its index
    let chosen = sticky_answers[0].clone();
    for round in 0..8 {
        let list = if round % 2 == 0 {
            [backend(B2), backend(B1)]
        } else {
            both
        };
        env.lb.upsert_service(sticky, &list, affinity)?;
        let (reply, _) = env.a.call(move || tcp_echo(sticky.addr, "x"))??;
        assert_eq!(
            reply, chosen,
            "round {round}: affinity lost across an update"
        );
    }
    // ... and moves when its backend goes
    let other = if chosen.starts_with(B1) { B2 } else { B1 };
    env.lb.upsert_service(sticky, &[backend(other)], affinity)?;
    let (reply, _) = env.a.call(move || tcp_echo(sticky.addr, "x"))??;
    assert_eq!(reply, format!("{other}|x"));
    env.lb.upsert_service(sticky, &both, affinity)?;
    let (reply, _) = env.a.call(move || tcp_echo(sticky.addr, "x"))??;
    assert_eq!(
        reply,
        format!("{other}|x"),
        "sticks to the backend it moved to"
    );
    let dump = env.lb.dump()?;
    assert!(dump.contains(&format!("-> {other} (set=")), "{dump}");

    let mut random_answers = answers(random)?;
    random_answers.sort();
    random_answers.dedup();
    // 40 random picks out of two all landing on one backend: probability 2^-39
    assert_eq!(
        random_answers.len(),
        2,
        "no affinity: both backends, got {random_answers:?}"
    );
    Ok(())
}

#[test]
fn backend_updates_under_load_never_fail_a_connect() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut env = Env::new()?;
    let v4 = vip_tcp("10.96.200.1:80");
    env.lb
        .upsert_service(v4, &[backend(B1)], ServiceOptions::default())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_client = stop.clone();
    let client = env.a.run(move || {
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !stop_client.load(Ordering::SeqCst) {
            match tcp_echo(v4.addr, "x") {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    })?;
    let lists: [&[&str]; 4] = [&[B2], &[B1, B2], &[B2, B1], &[B1]];
    let mut updates = 0;
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        let list: Vec<BackendAddr> = lists[updates % lists.len()]
            .iter()
            .map(|s| backend(s))
            .collect();
        env.lb
            .upsert_service(v4, &list, ServiceOptions::default())?;
        updates += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    eprintln!("{updates} updates, {ok} connects, {} failed", failed.len());
    assert!(failed.is_empty(), "failed connects: {failed:?}");
    assert!(
        ok > 50 && updates > 100,
        "too little exercised: {ok} connects, {updates} updates"
    );
    // nothing leaked: after a last update to one backend, one service with one backend entry
    env.lb
        .upsert_service(v4, &[backend(B2)], ServiceOptions::default())?;
    let dump = env.lb.dump()?;
    assert!(dump.contains("backends: 1 entries"), "{dump}");
    Ok(())
}

#[test]
fn invalid_services_are_refused_and_change_nothing() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let mut lb = SockLb::load(SockLbOptions {
        max_services: 2,
        ..SockLbOptions::default()
    })?;
    let v4 = vip_tcp("10.96.200.1:80");
    assert!(
        lb.upsert_service(v4, &[backend(B1_6)], ServiceOptions::default())
            .is_err()
    );
    assert_eq!(lb.service_count(), 0);
    lb.upsert_service(v4, &[backend(B1)], ServiceOptions::default())?;
    lb.upsert_service(
        vip_tcp("10.96.200.2:80"),
        &[backend(B1)],
        ServiceOptions::default(),
    )?;
    let third = lb.upsert_service(
        vip_tcp("10.96.200.3:80"),
        &[backend(B1)],
        ServiceOptions::default(),
    );
    assert!(
        matches!(third, Err(skiff_ebpf::EbpfError::SlotsExhausted(2))),
        "{third:?}"
    );
    assert_eq!(lb.service_count(), 2);
    Ok(())
}

/// A private BPF file system for pins, unmounted and removed on drop: the test never touches
/// /sys/fs/bpf, and leaves no pinned map behind even when it fails.
struct Bpffs {
    dir: std::path::PathBuf,
}

impl Bpffs {
    fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "sktebpf-bpffs-{}-{}",
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
        let pins = self.dir.join("skiff/test");
        if let Err(e) = skiff_ebpf::remove_pins(&pins) {
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

#[test]
fn pinned_maps_survive_a_restart_with_established_connections() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let fs = Bpffs::new()?;
    let pins = fs.dir.join("skiff/test");
    let options = SockLbOptions {
        pin_dir: Some(pins.clone()),
        ..SockLbOptions::default()
    };
    // pins outside a BPF file system are refused with a clear error
    let bad = SockLb::load(SockLbOptions {
        pin_dir: Some(std::env::temp_dir().join("not-bpffs")),
        ..SockLbOptions::default()
    });
    assert!(
        matches!(bad, Err(skiff_ebpf::EbpfError::NotBpffs(_))),
        "{bad:?}"
    );

    let mut env = Env::with(options.clone())?;
    let v4 = vip_tcp("10.96.200.1:80");
    let v4u = vip_udp("10.96.200.1:53");
    let affinity = ServiceOptions {
        affinity_timeout: Some(Duration::from_secs(60)),
    };
    let slot = env
        .lb
        .upsert_service(v4, &[backend(B1), backend(B2)], affinity)?;
    env.lb
        .upsert_service(v4u, &[backend(B1)], ServiceOptions::default())?;
    // an established TCP connection and a connected UDP socket, opened before the restart
    let (tcp, udp) = env
        .a
        .call(move || -> std::io::Result<(TcpStream, UdpSocket)> {
            let tcp = TcpStream::connect_timeout(&v4.addr, Duration::from_secs(2))?;
            let udp = UdpSocket::bind("0.0.0.0:0")?;
            udp.connect(v4u.addr)?;
            Ok((tcp, udp))
        })??;
    assert_eq!(tcp.peer_addr()?, v4.addr);

    // restart: the old balancer goes away (programs detached), a new one adopts the pins
    let before = env.lb.services();
    let old = std::mem::replace(&mut env.lb, SockLb::load(options)?);
    drop(old);
    assert_eq!(env.lb.service_count(), 2);
    assert_eq!(env.lb.services(), before, "adopted services");
    assert_eq!(
        env.lb.slot_of(&v4),
        Some(slot),
        "same slot after the restart"
    );
    env.lb.attach_root()?;
    // allowed namespaces, services and reverse translations came back with the maps
    assert_eq!(tcp.peer_addr()?, v4.addr, "getpeername after the restart");
    // the established connection still works
    let mut tcp = tcp;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    tcp.write_all(b"old")?;
    let mut reply = String::new();
    tcp.read_to_string(&mut reply)?;
    assert!(reply.ends_with("|old"), "{reply}");
    udp.set_read_timeout(Some(Duration::from_secs(2)))?;
    udp.send(b"after")?;
    let mut buf = [0u8; 256];
    let (n, from) = udp.recv_from(&mut buf)?;
    assert_eq!(from, v4u.addr, "recvfrom after the restart");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), format!("{B1}|after"));
    let (reply, peer) = env.a.call(move || tcp_echo(v4.addr, "new"))??;
    assert!(reply.ends_with("|new") && peer == v4.addr, "{reply} {peer}");
    // unchanged input is a no-op; a change after adoption is a normal update
    assert_eq!(
        env.lb
            .upsert_service(v4, &[backend(B1), backend(B2)], affinity)?,
        slot
    );
    env.lb.upsert_service(v4, &[backend(B2)], affinity)?;
    let dump = env.lb.dump()?;
    assert!(dump.contains("backends: 2 entries"), "{dump}");
    drop(env);
    Ok(())
}
