//! The userspace data plane's engine inside a node namespace the test creates (as root):
//! TCP and UDP service addresses in both families, round-robin and ClientIP affinity, a
//! refused empty service, backends changing under a steady stream of new connections.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_proxy::routes::{self, Cidr, ServiceRoute};
use skiff_proxy::userspace::{Engine, L4Proto, ListenKey, Pool};

use crate::privileged::{ip, netns_runtime, privileged};

/// A node namespace with the service CIDRs routed to itself (as the userspace data plane
/// sets up), and a runtime whose threads live in it. Drop removes the namespace.
struct Node {
    name: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Node {
    fn new() -> Result<Node> {
        let name = format!("sktup-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let mut node = Node { name, rt: None };
        ip(&["-n", &node.name, "link", "set", "lo", "up"])?;
        let cidrs: Vec<Cidr> = vec!["10.96.0.0/12".parse()?, "fd00:10:96::/112".parse()?];
        routes::install(Some(&node.name), &cidrs, ServiceRoute::Local)?;
        node.rt = Some(netns_runtime(&node.name)?);
        Ok(node)
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .unwrap_or_else(|| unreachable!("set in new"))
    }

    /// Runs blocking client code on a thread inside the namespace.
    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        Ok(self.rt().block_on(self.rt().spawn_blocking(f))?)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// A TCP backend that answers every connection with its name, and a UDP one that answers
/// `<name>:<datagram>`, both on `addr` inside the namespace.
fn spawn_backends(node: &Node, addr: SocketAddr, name: &'static str) -> Result<()> {
    // Spawned, not block_on: the sockets must be made on a thread inside the namespace.
    let (tcp, udp) = node.rt().block_on(node.rt().spawn(async move {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        anyhow::Ok((tcp, udp))
    }))??;
    node.rt().spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = tcp.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    node.rt().spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    Ok(())
}

/// Connects to `addr` and reads the backend's name; Err when refused or reset.
fn tcp_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    if out.is_empty() {
        return Err(std::io::Error::other("closed without an answer"));
    }
    Ok(out)
}

/// Sends one datagram to `addr`; the reply and the address it came from.
fn udp_ask(addr: SocketAddr, msg: &str) -> std::io::Result<(String, SocketAddr)> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(std::io::Error::other)?;
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.send_to(msg.as_bytes(), addr)?;
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf)?;
    Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

fn key(addr: &str, proto: L4Proto) -> Result<ListenKey> {
    Ok(ListenKey {
        addr: addr.parse().context("addr")?,
        proto,
    })
}

#[test]
fn userspace_engine_proxies_tcp_and_udp_services_in_both_families() -> Result<()> {
    if !privileged("userspace proxy") {
        return Ok(());
    }
    let node = Node::new()?;
    let (a4, b4): (SocketAddr, SocketAddr) = ("127.0.0.1:7001".parse()?, "127.0.0.1:7002".parse()?);
    let a6: SocketAddr = "[::1]:7001".parse()?;
    spawn_backends(&node, a4, "a")?;
    spawn_backends(&node, b4, "b")?;
    spawn_backends(&node, a6, "a6")?;
    let engine = Engine::new(node.rt().handle().clone());
    let up = |k: ListenKey, backends: Vec<SocketAddr>, affinity: bool| {
        node.rt()
            .block_on(engine.upsert(k, Pool::new(backends, affinity)))
    };
    let vip_tcp = key("10.96.5.5:80", L4Proto::Tcp)?;
    let vip_udp = key("10.96.5.5:53", L4Proto::Udp)?;
    let vip6_tcp = key("[fd00:10:96::5]:80", L4Proto::Tcp)?;
    let vip6_udp = key("[fd00:10:96::5]:53", L4Proto::Udp)?;
    up(vip_tcp, vec![a4, b4], false)?;
    up(vip_udp, vec![a4, b4], false)?;
    up(vip6_tcp, vec![a6], false)?;
    up(vip6_udp, vec![a6], false)?;

    // Round-robin reaches both backends; IPv6 reaches its own.
    let names = node.client(move || (0..6).map(|_| tcp_get(vip_tcp.addr)).collect::<Vec<_>>())?;
    let names: Vec<String> = names.into_iter().collect::<std::io::Result<_>>()?;
    ensure!(
        names.iter().any(|n| n == "a") && names.iter().any(|n| n == "b"),
        "round-robin: {names:?}"
    );
    let six = node.client(move || tcp_get(vip6_tcp.addr))??;
    ensure!(six == "a6", "IPv6 service answered {six:?}");

    // UDP replies come from the service address, not the backend's.
    for vip in [vip_udp, vip6_udp] {
        let (reply, from) = node.client(move || udp_ask(vip.addr, "hello"))??;
        ensure!(reply.ends_with(":hello"), "udp reply {reply:?}");
        ensure!(
            from == vip.addr,
            "udp reply came from {from}, not {}",
            vip.addr
        );
    }

    // ClientIP affinity: one client, one backend.
    up(vip_tcp, vec![a4, b4], true)?;
    let sticky = node.client(move || (0..8).map(|_| tcp_get(vip_tcp.addr)).collect::<Vec<_>>())?;
    let sticky: Vec<String> = sticky.into_iter().collect::<std::io::Result<_>>()?;
    ensure!(
        sticky.iter().all(|n| *n == sticky[0]),
        "affinity: {sticky:?}"
    );

    // Backends change under a stream of new connections: none fails.
    up(vip_tcp, vec![a4, b4], false)?;
    let stream = node.rt().spawn_blocking(move || {
        (0..300)
            .map(|_| tcp_get(vip_tcp.addr))
            .filter(Result::is_err)
            .count()
    });
    for pool in [vec![b4], vec![a4, b4], vec![a4], vec![a4, b4]] {
        std::thread::sleep(Duration::from_millis(20));
        up(vip_tcp, pool, false)?;
    }
    let failed = node.rt().block_on(stream)?;
    ensure!(
        failed == 0,
        "{failed} of 300 connections failed during backend changes"
    );

    // No backends: refused (reset), and counted. An unknown service address: refused.
    up(vip_tcp, Vec::new(), false)?;
    ensure!(
        node.client(move || tcp_get(vip_tcp.addr))?.is_err(),
        "a service without backends answered"
    );
    let (_, rejected) = engine.stats(&vip_tcp).context("stats")?;
    ensure!(rejected >= 1, "the refusal was not counted");
    let unknown: SocketAddr = "10.96.9.9:80".parse()?;
    ensure!(
        node.client(move || tcp_get(unknown))?.is_err(),
        "an unknown service address answered"
    );
    ensure!(engine.remove(&vip_tcp) && !engine.remove(&vip_tcp));
    ensure!(
        node.client(move || tcp_get(vip_tcp.addr))?.is_err(),
        "a removed service still answers"
    );
    Ok(())
}

/// How the backend saw one proxied connection end: the bytes before a clean end (FIN), or
/// the error kind (a reset).
type Ending = std::result::Result<Vec<u8>, std::io::ErrorKind>;

#[test]
fn userspace_engine_passes_a_client_reset_and_a_clean_close_to_the_backend() -> Result<()> {
    if !privileged("userspace proxy") {
        return Ok(());
    }
    let node = Node::new()?;
    let backend: SocketAddr = "127.0.0.1:7011".parse()?;
    let (tx, rx) = std::sync::mpsc::channel::<Ending>();
    let listener = node.rt().block_on(
        node.rt()
            .spawn(async move { tokio::net::TcpListener::bind(backend).await }),
    )??;
    node.rt().spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let ending = s.read_to_end(&mut got).await.map(|_| got);
                let _ = tx.send(ending.map_err(|e| e.kind()));
            });
        }
    });
    let engine = Engine::new(node.rt().handle().clone());
    let vip = key("10.96.5.6:80", L4Proto::Tcp)?;
    node.rt()
        .block_on(engine.upsert(vip, Pool::new(vec![backend], false)))?;

    // A client that resets (zero linger, as the connect benchmark closes): the backend sees a
    // reset too, not a FIN (which would leave the proxy's side in TIME_WAIT).
    node.client(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut s = TcpStream::connect_timeout(&vip.addr, Duration::from_secs(5))?;
        s.write_all(b"partial")?;
        // Let the proxy connect the backend before the reset arrives.
        std::thread::sleep(Duration::from_millis(200));
        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
        Ok(())
    })??;
    let ending = rx.recv_timeout(Duration::from_secs(5))?;
    ensure!(
        ending == Err(std::io::ErrorKind::ConnectionReset),
        "after a client reset the backend saw {ending:?}"
    );

    // A client that closes cleanly: its bytes, then a clean end.
    node.client(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut s = TcpStream::connect_timeout(&vip.addr, Duration::from_secs(5))?;
        s.write_all(b"whole")?;
        s.shutdown(std::net::Shutdown::Write)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)?;
        Ok(())
    })??;
    let ending = rx.recv_timeout(Duration::from_secs(5))?;
    ensure!(
        ending == Ok(b"whole".to_vec()),
        "after a clean close the backend saw {ending:?}"
    );
    Ok(())
}
