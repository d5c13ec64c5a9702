//! Idle keep-alive connections to HTTP/1.1 endpoints for the lean path (`lean`): taken newest
//! first, dropped after [`UPSTREAM_IDLE`], swept now and then so connections to pods that left
//! the table do not linger.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::proxy::UPSTREAM_IDLE;

/// Idle connections kept per endpoint (as nginx's `keepalive 128` per upstream block).
const PER_ENDPOINT: usize = 128;
/// How often the whole pool is swept of expired connections.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Idle {
    conn: TcpStream,
    since: Instant,
}

#[derive(Debug)]
struct Inner {
    idle: HashMap<SocketAddr, VecDeque<Idle>>,
    swept: Instant,
}

/// Shared by both listeners. One uncontended mutex per take and put: a pool is mutable by
/// nature (pingora's own pool locks too); the route table stays a lock-free snapshot.
#[derive(Debug)]
pub struct Pool {
    inner: Mutex<Inner>,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            inner: Mutex::new(Inner {
                idle: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

impl Pool {
    /// The most recently used idle connection to `addr` that has not expired.
    pub fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let q = inner.idle.get_mut(&addr)?;
        while let Some(idle) = q.pop_back() {
            if idle.since.elapsed() < UPSTREAM_IDLE {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Keeps `conn` (which finished a response cleanly) for the next request to `addr`.
    pub fn put(&self, addr: SocketAddr, conn: TcpStream) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(inner.swept) > SWEEP_EVERY {
            inner.swept = now;
            inner.idle.retain(|_, q| {
                q.retain(|i| now.duration_since(i.since) < UPSTREAM_IDLE);
                !q.is_empty()
            });
        }
        let q = inner.idle.entry(addr).or_default();
        // The oldest go first: expired, or beyond the cap.
        while q
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= UPSTREAM_IDLE)
            || q.len() >= PER_ENDPOINT
        {
            q.pop_front();
        }
        q.push_back(Idle { conn, since: now });
    }

    /// Idle connections held (for tests).
    pub fn idle_count(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.idle.values().map(VecDeque::len).sum()
    }
}
