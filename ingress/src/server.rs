//! Listeners: our own accept loops on the caller's tokio runtime, handing each connection to
//! `h1` (HTTP/1.x: the lean path or pingora's `HttpProxy`) or to pingora (HTTP/2). pingora's `Server` is not used: it owns
//! its runtimes and binds its own sockets, while the caller (`skiff up`) binds listeners inside
//! a network namespace and runs everything on one runtime.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{ALPN, GetSocketDigest, SocketDigest, Stream};
use pingora::proxy::{HttpProxy, http_proxy};
use pingora::server::configuration::ServerConf;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::h1::{self, Limits};
use crate::h2down::{self, H2Path};
use crate::h2pool::H2Pool;
use crate::lean::Lean;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::{IngressProxy, ListenerInfo};
use crate::table::RouteTable;
use crate::tls::{CertSnapshot, TlsError, default_certificate, server_config};

/// A TLS handshake that has not finished by then is dropped (slowloris on the handshake).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/2 client connection without streams for this long is closed.
const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// A clear-text connection that sends nothing for this long is dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot use listener: {0}")]
    Listener(std::io::Error),
}

/// What the data plane reads, shared with the control loop that replaces it.
#[derive(Debug, Clone)]
pub struct SharedState {
    pub routes: Arc<ArcSwap<RouteTable>>,
    pub certs: Arc<ArcSwap<CertSnapshot>>,
    pub metrics: Arc<Metrics>,
}

impl SharedState {
    /// Empty routes (everything 404) and only a freshly generated default certificate.
    pub fn new() -> Result<SharedState, TlsError> {
        Ok(SharedState {
            routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            certs: Arc::new(ArcSwap::from_pointee(CertSnapshot::empty(
                default_certificate()?,
            ))),
            metrics: Arc::new(Metrics::default()),
        })
    }
}

/// Already-bound listeners (bound by the caller, e.g. inside a network namespace).
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<std::net::TcpListener>,
    pub https: Option<std::net::TcpListener>,
    /// The HTTPS port clients see, for redirects (defaults to the HTTPS listener's port).
    pub public_https_port: Option<u16>,
    /// The HTTP port clients see, for `X-Forwarded-Port` (defaults to the listener's port).
    pub public_http_port: Option<u16>,
    /// Header deadline, keep-alive idle timeout and head size of client connections.
    pub limits: Limits,
}

/// Running listeners; dropping it does not stop them, [`IngressServer::shutdown`] does.
#[derive(Debug)]
pub struct IngressServer {
    pub http_addr: Option<SocketAddr>,
    pub https_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl IngressServer {
    /// Starts the accept loops on `runtime`: every socket the proxy creates (upstream
    /// connections) belongs to the network namespace of that runtime's threads, while the
    /// listeners keep the namespace they were bound in. `skiff up` runs this on its node-netns
    /// runtime with listeners bound on the host loopback.
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        listeners: Listeners,
        state: &SharedState,
    ) -> Result<IngressServer, ServerError> {
        let _entered = runtime.enter();
        IngressServer::start(listeners, state)
    }

    /// Starts the accept loops on the current tokio runtime.
    pub fn start(listeners: Listeners, state: &SharedState) -> Result<IngressServer, ServerError> {
        let conf = Arc::new(ServerConf::default());
        let (tx, rx) = watch::channel(false);
        let local = |l: &Option<std::net::TcpListener>| {
            l.as_ref()
                .map(|l| l.local_addr())
                .transpose()
                .map_err(ServerError::Listener)
        };
        let http_addr = local(&listeners.http)?;
        let https_addr = local(&listeners.https)?;
        let https_port = listeners
            .public_https_port
            .or(https_addr.map(|a| a.port()))
            .unwrap_or(443);
        let mut tasks = Vec::new();
        let pool = Arc::new(Pool::default());
        let h2_pool = Arc::new(H2Pool::default());
        let lean = |info: ListenerInfo| {
            Arc::new(Lean::new(
                state.routes.clone(),
                info,
                state.metrics.clone(),
                pool.clone(),
                listeners.limits.upstream_read_timeout,
            ))
        };
        let h2 = |lean: &Arc<Lean>| {
            Arc::new(H2Path {
                lean: lean.clone(),
                pool: h2_pool.clone(),
            })
        };
        let proxy = |info: ListenerInfo, h2c: bool| {
            let mut app = http_proxy(
                &conf,
                IngressProxy::new(state.routes.clone(), info, state.metrics.clone()),
            );
            let mut opts = HttpServerOptions::default();
            opts.h2c = h2c;
            // An HTTP/2 connection with no stream for this long is closed (HTTP/1.1 idle
            // keep-alive is pingora's 60 s).
            opts.h2_idle_timeout = Some(H2_IDLE_TIMEOUT);
            app.server_options = Some(opts);
            Arc::new(app)
        };
        if let Some(l) = listeners.http {
            let info = ListenerInfo {
                tls: false,
                port: listeners
                    .public_http_port
                    .or(http_addr.map(|a| a.port()))
                    .unwrap_or(80),
                https_port,
            };
            // Two apps: pingora's own h2c detection waits for 24 bytes, which hangs a shorter
            // HTTP/1 request; `detect_h2c` decides first and the h2c app only sees h2c.
            let lean = lean(info.clone());
            let mode = Mode::Plain {
                h1: proxy(info.clone(), false),
                h2c: proxy(info.clone(), true),
                h2: h2(&lean),
                lean,
            };
            tasks.push(spawn_loop(
                l,
                Arc::new(mode),
                listeners.limits.clone(),
                rx.clone(),
            )?);
        }
        if let Some(l) = listeners.https {
            let info = ListenerInfo {
                tls: true,
                port: https_port,
                https_port,
            };
            let acceptor = Acceptor::from_server_config(server_config(state.certs.clone())?);
            let lean = lean(info.clone());
            let mode = Mode::Tls {
                app: proxy(info.clone(), false),
                acceptor,
                h2: h2(&lean),
                lean,
            };
            tasks.push(spawn_loop(l, Arc::new(mode), listeners.limits, rx.clone())?);
        }
        Ok(IngressServer {
            http_addr,
            https_addr,
            shutdown: tx,
            tasks,
        })
    }

    /// Stops accepting; connections in flight are told to finish (no new keep-alive reuse).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// How a listener's connections are served.
enum Mode {
    /// Clear text: HTTP/1.x, or HTTP/2 with prior knowledge (h2c).
    Plain {
        h1: Arc<HttpProxy<IngressProxy>>,
        h2c: Arc<HttpProxy<IngressProxy>>,
        lean: Arc<Lean>,
        h2: Arc<H2Path>,
    },
    /// TLS, then HTTP/1.1 or HTTP/2 by ALPN.
    Tls {
        app: Arc<HttpProxy<IngressProxy>>,
        acceptor: Acceptor,
        lean: Arc<Lean>,
        h2: Arc<H2Path>,
    },
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes diverge from the HTTP/2 preface (HTTP/1) or complete it (h2c), then
/// puts them back. A short HTTP/1 request is decided on its first bytes, not left waiting.
async fn detect_h2c(l4: &mut L4Stream) -> std::io::Result<bool> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    let mut chunk = [0u8; 24];
    let h2c = loop {
        let want = H2_PREFACE.len() - seen.len();
        let n = l4.read(&mut chunk[..want]).await?;
        seen.extend_from_slice(&chunk[..n]);
        if n == 0 || !H2_PREFACE.starts_with(&seen) {
            break false;
        }
        if seen.len() == H2_PREFACE.len() {
            break true;
        }
    };
    l4.rewind(&seen);
    Ok(h2c)
}

/// HTTP/2 connections are ours (`h2down`) unless some route needs pingora's TLS upstreams.
fn own_h2(h2: &H2Path) -> bool {
    !h2.lean.routes.load().has_tls_upstreams()
}

fn spawn_loop(
    listener: std::net::TcpListener,
    mode: Arc<Mode>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, ServerError> {
    listener
        .set_nonblocking(true)
        .map_err(ServerError::Listener)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(ServerError::Listener)?;
    Ok(tokio::spawn(accept_loop(
        listener,
        mode,
        Arc::new(limits),
        shutdown,
    )))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    mode: Arc<Mode>,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, peer)) => (tcp, peer.ip()),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (mode, limits, shutdown) = (mode.clone(), limits.clone(), shutdown.clone());
        let accepted = std::time::Instant::now();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let fd = tcp.as_raw_fd();
            let mut l4 = L4Stream::from(tcp);
            l4.set_socket_digest(SocketDigest::from_raw_fd(fd));
            match &*mode {
                Mode::Plain { h1, h2c, lean, h2 } => {
                    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, detect_h2c(&mut l4)).await {
                        Ok(Ok(true)) if own_h2(h2) => {
                            h2down::serve(
                                h2.clone(),
                                l4,
                                Some(peer),
                                &limits,
                                H2_IDLE_TIMEOUT,
                                &shutdown,
                            )
                            .await;
                        }
                        Ok(Ok(true)) => {
                            h2c.process_new(Box::new(l4), &shutdown).await;
                        }
                        Ok(Ok(false)) => {
                            let stream: Stream = Box::new(l4);
                            h1::serve(h1, lean, stream, Some(peer), &limits, accepted, &shutdown)
                                .await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "read failed before the first request");
                        }
                        // Nothing sent within the limit: dropped.
                        Err(_) => {}
                    }
                }
                Mode::Tls {
                    app,
                    acceptor,
                    lean,
                    h2,
                } => {
                    let stream: Stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(l4))
                            .await
                        {
                            Ok(Ok(s)) => Box::new(s),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("TLS handshake timed out");
                                return;
                            }
                        };
                    if stream.selected_alpn_proto() == Some(ALPN::H2) {
                        if own_h2(h2) {
                            h2down::serve(
                                h2.clone(),
                                stream,
                                Some(peer),
                                &limits,
                                H2_IDLE_TIMEOUT,
                                &shutdown,
                            )
                            .await;
                        } else {
                            app.process_new(stream, &shutdown).await;
                        }
                    } else {
                        h1::serve(app, lean, stream, Some(peer), &limits, accepted, &shutdown)
                            .await;
                    }
                }
            }
        });
    }
}
