//! UDP frontends: one session per client address, each with its own connected socket to the
//! backend chosen for it, so replies find their way back; idle sessions expire.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::debug;

use super::{Pool, Stats};

/// Idle time after which a UDP session is forgotten (the kernel's conntrack default for
/// unreplied-then-replied UDP streams is 120 s; a shorter one keeps memory small).
const SESSION_IDLE: Duration = Duration::from_secs(60);
const MAX_DATAGRAM: usize = 65_535;

struct Session {
    upstream: Arc<UdpSocket>,
    backend: SocketAddr,
    last: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Receives until the task is aborted. The session map is owned by this one task: no lock.
pub(super) async fn serve(
    socket: UdpSocket,
    pool: Arc<arc_swap::ArcSwap<Pool>>,
    stats: Arc<Stats>,
) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_sweep = Instant::now();
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "udp recv");
                continue;
            }
        };
        let now = Instant::now();
        if now.duration_since(last_sweep) > SESSION_IDLE / 4 {
            sessions.retain(|_, s| now.duration_since(s.last) < SESSION_IDLE);
            last_sweep = now;
        }
        let current = pool.load();
        // A session whose backend left the pool is dropped (its replies could only be stale).
        if sessions
            .get(&client)
            .is_some_and(|s| !current.backends.contains(&s.backend))
        {
            sessions.remove(&client);
        }
        let session = match sessions.entry(client) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Some(backend) = current.pick(client.ip()) else {
                    stats
                        .rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                match open(socket.clone(), client, backend).await {
                    Ok(s) => {
                        stats
                            .connections
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        e.insert(s)
                    }
                    Err(err) => {
                        debug!(%backend, error = %err, "udp session");
                        continue;
                    }
                }
            }
        };
        session.last = now;
        if let Err(e) = session.upstream.send(&buf[..n]).await {
            debug!(backend = %session.backend, error = %e, "udp send");
        }
    }
}

/// A socket connected to `backend`, and a task sending its replies to `client` from the
/// service address.
async fn open(
    frontend: Arc<UdpSocket>,
    client: SocketAddr,
    backend: SocketAddr,
) -> std::io::Result<Session> {
    let bind: SocketAddr = if backend.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(backend).await?;
    let reader_socket = upstream.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match reader_socket.recv(&mut buf).await {
                Ok(n) => {
                    let _ = frontend.send_to(&buf[..n], client).await;
                }
                // ICMP unreachable from the backend shows up here: keep the session, the
                // client's next datagram may find it listening again.
                Err(e) => debug!(%backend, error = %e, "udp reply"),
            }
        }
    });
    Ok(Session {
        upstream,
        backend,
        last: Instant::now(),
        reader,
    })
}
