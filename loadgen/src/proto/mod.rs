//! The protocol interface the driver runs: open a connection's lanes, make requests on a lane.

use std::borrow::Cow;
use std::future::Future;
use std::time::Instant;

pub(crate) mod dns;
pub(crate) mod dns_tcp;
pub(crate) mod h2;
pub(crate) mod http1;
pub(crate) mod tcp;
pub(crate) mod udp;

/// One failed request or connection attempt.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// Short, stable category for the error table (`connect`, `tls`, `io`, `http 503`, ...).
    pub kind: Cow<'static, str>,
    /// The whole story, for the first failure of a run.
    pub message: String,
    /// The connection is unusable: open a new one.
    pub reconnect: bool,
    /// How many requests failed this way (a pipelined batch may hold several).
    pub count: u32,
}

impl Failure {
    pub fn new(kind: impl Into<Cow<'static, str>>, message: String, reconnect: bool) -> Failure {
        Failure {
            kind: kind.into(),
            message,
            reconnect,
            count: 1,
        }
    }

    /// A broken connection (reset, closed, short read).
    pub fn io(addr: std::net::SocketAddr, e: &std::io::Error) -> Failure {
        Failure::new("io", format!("connection to {addr}: {e}"), true)
    }
}

/// A protocol the driver can run. A *lane* is one sequence of requests: a connection for
/// HTTP/1.1, TCP, UDP and DNS, one stream slot of a shared connection for HTTP/2 and gRPC.
pub(crate) trait Proto: Send + Sync + 'static {
    type Lane: Send + 'static;

    /// `lanes` lanes on one new connection (unconnected ones with `--new-conn`: every request
    /// then opens its own).
    fn open(&self, lanes: usize) -> impl Future<Output = Result<Vec<Self::Lane>, Failure>> + Send;

    /// `n` requests back to back on `lane` (n > 1 only where the protocol pipelines), pushing the
    /// instant each answer was complete onto `done`, in order.
    fn call(
        &self,
        lane: &mut Self::Lane,
        n: usize,
        done: &mut Vec<Instant>,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// `(full, resumed)` TLS handshakes so far, for protocols over TLS.
    fn tls_handshakes(&self) -> Option<(u64, u64)> {
        None
    }
}
