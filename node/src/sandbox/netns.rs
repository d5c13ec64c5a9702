//! Network namespaces: names under /run/netns, running code on a thread inside one, and TCP
//! connections whose socket is created inside one (per call, or by a parked `SocketMaker`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use rustix::mount::{MountPropagationFlags, UnmountFlags, mount_bind, mount_change, unmount};
use rustix::thread::{LinkNameSpaceType, UnshareFlags, move_into_link_name_space, unshare_unsafe};
use tokio::net::{TcpSocket, TcpStream};

use super::error::{Result, SandboxError};
use super::netlink::Netlink;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// [`NETNS_DIR`] for system calls made where nothing may allocate (a child before exec).
pub(crate) const NETNS_DIR_C: &std::ffi::CStr = c"/run/netns";

/// The path of the named network namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Names of the network namespaces under /run/netns that start with `prefix`.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Makes /run/netns a shared mount (a bind mount of itself first if it is not a mount point),
/// as iproute2 does: a namespace's bind mount then propagates to mount namespaces made later
/// (the pods'), and so does its unmount, which would otherwise keep the namespace alive.
fn share_netns_dir() -> Result<()> {
    static SHARED: AtomicBool = AtomicBool::new(false);
    if SHARED.load(Ordering::Acquire) {
        return Ok(());
    }
    let dir = Path::new(NETNS_DIR);
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create", dir, e))?;
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    let mut bound = false;
    loop {
        match mount_change(dir, shared) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::INVAL && !bound => {
                mount_bind(dir, dir).map_err(|e| SandboxError::io("bind-mount", dir, e.into()))?;
                bound = true;
            }
            Err(e) => return Err(SandboxError::io("make shared", dir, e.into())),
        }
    }
    SHARED.store(true, Ordering::Release);
    Ok(())
}

/// Creates the named network namespace `name` as `ip netns add` does (a fresh namespace
/// bind-mounted at /run/netns/NAME) and returns a netlink socket inside it. Blocks.
#[allow(unsafe_code)]
pub(crate) fn create_netns(name: &str) -> Result<Netlink> {
    share_netns_dir()?;
    let path = netns_path(name);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| SandboxError::io("create network namespace file", &path, e))?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<Netlink> {
            // This helper thread alone moves into the new namespace, and ends there.
            // SAFETY: NEWNET does not unshare the file table, the only unsafe case.
            unsafe { unshare_unsafe(UnshareFlags::NEWNET) }?;
            mount_bind("/proc/thread-self/ns/net", &path)?;
            if let Err(error) = quiet_ipv6() {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot turn off IPv6 duplicate address detection and router solicitation in pod namespaces (pods still start; each costs more multicast on the bridge)");
                }
            }
            Netlink::open()
        })
        .join()
    });
    let err = match made {
        Ok(Ok(nl)) => return Ok(nl),
        Ok(Err(e)) => SandboxError::io("create network namespace", &path, e),
        Err(_) => SandboxError::Thread(path.clone()),
    };
    let _ = unmount(&path, UnmountFlags::DETACH);
    let _ = std::fs::remove_file(&path);
    Err(err)
}

/// The IPv6 settings of a new pod namespace, written from a thread inside it before its eth0
/// exists (a device takes the namespace's `default` values when it is made): no duplicate
/// address detection, as IPAM makes every address unique, and no router solicitations, as
/// addresses and routes are static. Both would be multicast that the bridge carries to every
/// pod, for each pod that starts. Without IPv6 in the kernel there is nothing to set.
fn quiet_ipv6() -> std::io::Result<()> {
    for (setting, value) in [
        ("/proc/sys/net/ipv6/conf/all/accept_dad", "0"),
        ("/proc/sys/net/ipv6/conf/default/accept_dad", "0"),
        ("/proc/sys/net/ipv6/conf/default/router_solicitations", "0"),
    ] {
        match std::fs::write(setting, value) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{setting}: {e}"))),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Removes the named network namespace as `ip netns delete` does; a missing one is fine.
/// The namespace itself goes once nothing else holds it.
pub(crate) fn delete_netns(name: &str) -> Result<()> {
    let path = netns_path(name);
    // Not mounted (a half-made namespace) is fine: the file still goes.
    let _ = unmount(&path, UnmountFlags::DETACH);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("remove network namespace", &path, e)),
    }
}

pub(crate) fn open_netns(path: &Path) -> Result<OwnedFd> {
    let f = std::fs::File::open(path)
        .map_err(|e| SandboxError::io("open network namespace", path, e))?;
    Ok(OwnedFd::from(f))
}

fn enter(path: &Path, fd: &OwnedFd) -> Result<()> {
    move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| SandboxError::io("enter network namespace", path, e.into()))
}

/// Runs `f` on a fresh thread inside the network namespace at `path` (`None`: this one) and
/// returns its result. Sockets `f` creates stay in that namespace; the caller's thread never
/// changes namespace. Blocks the calling thread until `f` returns.
pub fn run_in_netns<T: Send, F: FnOnce() -> T + Send>(path: Option<&Path>, f: F) -> Result<T> {
    let fd = path.map(open_netns).transpose()?;
    std::thread::scope(|s| {
        s.spawn(move || -> Result<T> {
            if let (Some(p), Some(fd)) = (path, &fd) {
                enter(p, fd)?;
            }
            Ok(f())
        })
        .join()
        .map_err(|_| SandboxError::Thread(path.map(Path::to_path_buf).unwrap_or_default()))?
    })
}

/// `run_in_netns` for async callers: the helper thread is not a runtime thread, so the
/// runtime keeps going while `f` runs.
pub async fn run_in_netns_async<T, F>(path: Option<PathBuf>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(run_in_netns(thread_path.as_deref(), f));
    });
    rx.await
        .map_err(|_| SandboxError::Thread(path.unwrap_or_default()))?
}

/// Opens a TCP connection to `addr` with a socket created inside the network namespace at
/// `netns` (`None`: this one). The connect itself runs on the caller's runtime.
pub async fn connect_tcp_in(netns: Option<&Path>, addr: SocketAddr) -> Result<TcpStream> {
    SocketMaker::start(netns)?.connect(addr).await
}

/// A request to [`SocketMaker`]: the family (true: IPv6) and where to send the socket.
type SocketRequest = (
    bool,
    tokio::sync::oneshot::Sender<std::io::Result<TcpSocket>>,
);

/// A thread parked inside one network namespace that makes TCP sockets there on request, so
/// frequent connections from that namespace (probes every period for every pod) cost no
/// thread and no `setns` each. The thread ends when the maker is dropped.
#[derive(Debug)]
pub struct SocketMaker {
    /// `None`: sockets are made in the caller's namespace, on the caller's thread.
    inside: Option<(PathBuf, std::sync::mpsc::Sender<SocketRequest>)>,
}

impl SocketMaker {
    /// A maker for the namespace at `path` (`None`: the current one, no thread).
    pub fn start(path: Option<&Path>) -> Result<SocketMaker> {
        let Some(path) = path else {
            return Ok(SocketMaker { inside: None });
        };
        let fd = open_netns(path)?;
        let (requests, incoming) = std::sync::mpsc::channel::<SocketRequest>();
        let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
        let thread_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("skiff-netns-socket".into())
            .spawn(move || {
                let result = enter(&thread_path, &fd);
                let ok = result.is_ok();
                let _ = entered_tx.send(result);
                if !ok {
                    return;
                }
                drop(fd);
                while let Ok((v6, reply)) = incoming.recv() {
                    let socket = if v6 {
                        TcpSocket::new_v6()
                    } else {
                        TcpSocket::new_v4()
                    };
                    let _ = reply.send(socket);
                }
            })
            .map_err(|e| SandboxError::io("start a socket thread for", path, e))?;
        entered
            .recv()
            .map_err(|_| SandboxError::Thread(path.to_path_buf()))??;
        Ok(SocketMaker {
            inside: Some((path.to_path_buf(), requests)),
        })
    }

    /// Opens a TCP connection to `addr` from this maker's namespace.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        let (name, socket) = match &self.inside {
            None => ("(current)".to_owned(), new_socket(addr)),
            Some((path, requests)) => {
                let thread = || SandboxError::Thread(path.clone());
                let (reply, socket) = tokio::sync::oneshot::channel();
                requests
                    .send((addr.is_ipv6(), reply))
                    .map_err(|_| thread())?;
                (
                    path.display().to_string(),
                    socket.await.map_err(|_| thread())?,
                )
            }
        };
        let err = |source: std::io::Error| SandboxError::Connect {
            addr,
            netns: name.clone(),
            source,
        };
        socket.map_err(err)?.connect(addr).await.map_err(err)
    }
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Connects to `port` on the loopback of the namespace at `netns`: 127.0.0.1 first, then
/// ::1 (what port-forward does inside a pod).
pub async fn connect_loopback_in(netns: Option<&Path>, port: u16) -> Result<TcpStream> {
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match connect_tcp_in(netns, v4).await {
        Ok(s) => Ok(s),
        Err(first) => connect_tcp_in(
            netns,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        )
        .await
        .map_err(|_| first),
    }
}
