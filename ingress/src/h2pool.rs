//! Multiplexed HTTP/2 (h2c, prior knowledge) connections to GRPC/H2C endpoints for `h2down`:
//! one connection per endpoint carries the streams of every client (another is opened only
//! when it died), dropped after [`UPSTREAM_IDLE`] without use so connections to pods that left
//! the table do not linger.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;

use crate::proxy::{CONNECT_TIMEOUT, UPSTREAM_IDLE};
use crate::upstream::{Failure, connect};

/// How often idle connections are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Flow-control windows announced upstream: a response body of that size flows without
/// waiting for a WINDOW_UPDATE round trip.
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 4 << 20;

#[derive(Debug)]
struct Conn {
    send: SendRequest<Bytes>,
    /// Set when the connection task ended (GOAWAY, I/O error, closed).
    closed: Arc<AtomicBool>,
    used: Instant,
}

#[derive(Debug)]
struct Inner {
    conns: HashMap<SocketAddr, Conn>,
    swept: Instant,
}

/// Shared by both listeners; one uncontended mutex per request to clone a handle (the
/// streams themselves run without it).
#[derive(Debug)]
pub struct H2Pool {
    inner: Mutex<Inner>,
}

impl Default for H2Pool {
    fn default() -> H2Pool {
        H2Pool {
            inner: Mutex::new(Inner {
                conns: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

impl H2Pool {
    /// A handle on the live connection to `addr`, or a new connection; `true` when reused.
    pub(crate) async fn get(
        &self,
        addr: SocketAddr,
    ) -> Result<(SendRequest<Bytes>, bool), Failure> {
        if let Some(send) = self.live(addr) {
            return Ok((send, true));
        }
        let tcp = connect(addr).await?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW);
        let (send, conn) = match tokio::time::timeout(CONNECT_TIMEOUT, builder.handshake(tcp)).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(_)) => return Err(Failure::ConnectError),
            Err(_) => return Err(Failure::ConnectTimedout),
        };
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %addr, "upstream h2 connection ended");
            }
            flag.store(true, Ordering::Relaxed);
        });
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Two requests may have connected at once: the newer connection replaces the older
        // (whose streams in flight finish on it; it closes when they are done).
        inner.conns.insert(
            addr,
            Conn {
                send: send.clone(),
                closed,
                used: now,
            },
        );
        Ok((send, false))
    }

    fn live(&self, addr: SocketAddr) -> Option<SendRequest<Bytes>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(inner.swept) > SWEEP_EVERY {
            inner.swept = now;
            inner.conns.retain(|_, c| {
                !c.closed.load(Ordering::Relaxed) && now.duration_since(c.used) < UPSTREAM_IDLE
            });
        }
        let c = inner.conns.get_mut(&addr)?;
        if c.closed.load(Ordering::Relaxed) {
            inner.conns.remove(&addr);
            return None;
        }
        c.used = now;
        Some(c.send.clone())
    }

    /// Forgets the connection to `addr` (it failed a request before any stream went out).
    pub(crate) fn discard(&self, addr: SocketAddr) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.conns.remove(&addr);
    }

    /// Connections held (for tests).
    pub fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
