//! The userspace data plane's engine: L4 listeners on service addresses inside the node's
//! network namespace, each proxying new connections (TCP) and sessions (UDP) to the backends
//! of an immutable pool that is swapped whole on change.
//!
//! Listeners bind with `IP_FREEBIND`, so a service address need not exist on an interface; the
//! node namespace routes the service CIDRs to itself (`ip route add local ...`), which makes
//! every service address local there and keeps traffic to an unknown one inside the node
//! (refused: no listener).

mod dataplane;
mod pick;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

pub use dataplane::UserspaceDataplane;

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    /// The listener transport of a Service protocol; `None` for SCTP (not served here).
    pub fn of(protocol: crate::model::Protocol) -> Option<L4Proto> {
        match protocol {
            crate::model::Protocol::Tcp => Some(L4Proto::Tcp),
            crate::model::Protocol::Udp => Some(L4Proto::Udp),
            crate::model::Protocol::Sctp => None,
        }
    }
}

impl From<L4Proto> for crate::model::Protocol {
    fn from(proto: L4Proto) -> Self {
        match proto {
            L4Proto::Tcp => crate::model::Protocol::Tcp,
            L4Proto::Udp => crate::model::Protocol::Udp,
        }
    }
}

/// One frontend: where the engine listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    pub addr: SocketAddr,
    pub proto: L4Proto,
}

/// What a frontend proxies to, swapped whole on change.
#[derive(Debug, Default)]
pub struct Pool {
    pub backends: Vec<SocketAddr>,
    /// ClientIP session affinity: a client keeps its backend while that backend exists.
    pub affinity: bool,
    round_robin: pick::RoundRobin,
}

impl Pool {
    pub fn new(backends: Vec<SocketAddr>, affinity: bool) -> Pool {
        Pool {
            backends,
            affinity,
            round_robin: pick::RoundRobin::default(),
        }
    }

    /// The backend for a new connection or session from `client`; `None` when the pool is
    /// empty (the caller refuses the client).
    pub fn pick(&self, client: IpAddr) -> Option<SocketAddr> {
        if self.affinity {
            pick::by_client(client, &self.backends)
        } else {
            self.round_robin.next(&self.backends)
        }
    }
}

/// Counters of one frontend.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections (TCP) or sessions (UDP) handed to a backend.
    pub connections: AtomicU64,
    /// Clients refused: no backend, or none accepted the connection.
    pub rejected: AtomicU64,
    /// TCP clients that reset before they were accepted (no backend connection opened).
    pub abandoned: AtomicU64,
}

/// Why a frontend could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    #[error("cannot listen on {addr} ({proto:?}): {source}")]
    Listen {
        addr: SocketAddr,
        proto: L4Proto,
        source: std::io::Error,
    },
}

struct Listener {
    pool: Arc<ArcSwap<Pool>>,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every listener of the userspace data plane. The map is only touched by control-plane
/// updates; connections read their listener's pool snapshot.
pub struct Engine {
    /// A runtime whose threads live in the node's network namespace: every socket (listeners
    /// and backend connections) is made on it, whichever thread calls the engine.
    node: tokio::runtime::Handle,
    listeners: Mutex<HashMap<ListenKey, Listener>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("listeners", &self.keys().len())
            .finish()
    }
}

impl Engine {
    /// An engine making its sockets on `node`, a runtime whose threads are in the node's
    /// network namespace.
    pub fn new(node: tokio::runtime::Handle) -> Engine {
        Engine {
            node,
            listeners: Mutex::default(),
        }
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<ListenKey, Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves `key` with `pool`: binds a new listener or swaps the pool of the existing one;
    /// open connections keep the backend they have.
    pub async fn upsert(&self, key: ListenKey, pool: Pool) -> Result<(), UserspaceError> {
        if let Some(l) = self.listeners().get(&key) {
            l.pool.store(Arc::new(pool));
            return Ok(());
        }
        let err = |source| UserspaceError::Listen {
            addr: key.addr,
            proto: key.proto,
            source,
        };
        let joined = |e: tokio::task::JoinError| err(std::io::Error::other(e));
        let pool = Arc::new(ArcSwap::from_pointee(pool));
        let stats = Arc::new(Stats::default());
        let task = match key.proto {
            L4Proto::Tcp => {
                let bound = self.node.spawn_blocking(move || bind_tcp(key.addr));
                let listener = bound.await.map_err(joined)?.map_err(err)?;
                self.node
                    .spawn(tcp::serve(listener, pool.clone(), stats.clone()))
            }
            L4Proto::Udp => {
                let bound = self.node.spawn_blocking(move || bind_udp(key.addr));
                let socket = bound.await.map_err(joined)?.map_err(err)?;
                self.node
                    .spawn(udp::serve(socket, pool.clone(), stats.clone()))
            }
        };
        self.listeners().insert(key, Listener { pool, stats, task });
        Ok(())
    }

    /// Stops listening on `key` (open TCP connections run on until they close).
    pub fn remove(&self, key: &ListenKey) -> bool {
        self.listeners().remove(key).is_some()
    }

    /// Every frontend served, sorted.
    pub fn keys(&self) -> Vec<ListenKey> {
        let mut keys: Vec<ListenKey> = self.listeners().keys().copied().collect();
        keys.sort();
        keys
    }

    /// One line per listener: protocol, address, backends, counters.
    pub fn dump(&self) -> String {
        let listeners = self.listeners();
        let mut keys: Vec<&ListenKey> = listeners.keys().collect();
        keys.sort();
        let mut out = String::new();
        for key in keys {
            let l = &listeners[key];
            let pool = l.pool.load();
            let backends: Vec<String> = pool.backends.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "{:?} {} -> [{}]{} connections={} rejected={} abandoned={}\n",
                key.proto,
                key.addr,
                backends.join(", "),
                if pool.affinity {
                    " affinity=ClientIP"
                } else {
                    ""
                },
                l.stats.connections.load(Ordering::Relaxed),
                l.stats.rejected.load(Ordering::Relaxed),
                l.stats.abandoned.load(Ordering::Relaxed),
            ));
        }
        out
    }

    /// (connections, rejected) of `key`, if served.
    pub fn stats(&self, key: &ListenKey) -> Option<(u64, u64)> {
        let listeners = self.listeners();
        let s = &listeners.get(key)?.stats;
        Some((
            s.connections.load(Ordering::Relaxed),
            s.rejected.load(Ordering::Relaxed),
        ))
    }
}

fn socket_for(addr: SocketAddr, ty: socket2::Type) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, ty, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The accept queue of a TCP frontend (see `bind_tcp`).
const LISTEN_BACKLOG: i32 = 4096;

fn bind_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket_for(addr, socket2::Type::STREAM)?;
    // Inherited by every accepted socket: the proxy adds no Nagle delay of its own.
    socket.set_tcp_nodelay(true)?;
    // The kernel completes clients' handshakes into this queue without the proxy, so when the
    // proxy falls behind (kept off a shared CPU), the queue fills; once full, SYNs are dropped
    // and each costs that client a 1 s retransmit. Deeper is not better: with 65535 (tried) the
    // proxy fell tens of thousands of connections behind under the connect benchmark and a new
    // client waited over 10 s for its first answer. 4096 (the default net.core.somaxconn of a
    // namespace) bounds that lag to about a second of the proxy's work.
    socket.listen(LISTEN_BACKLOG)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = socket_for(addr, socket2::Type::DGRAM)?;
    tokio::net::UdpSocket::from_std(socket.into())
}
