//! Listening sockets for the built-in servers (`[::]` dual-stack, else `0.0.0.0`) and their accept loop with graceful shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// How long open connections get to finish their requests after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr}: {source}; choose another port with --port (or PORT), or stop what holds it"
)]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Why a built-in server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signal(#[source] io::Error),
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] io::Error),
}

/// What every built-in image does as a process: listen on `host:port`, print
/// `skiff <name> listening on ADDR (<protocols>)` once it accepts connections, then run
/// `serve_on(listener, shutdown)` until SIGTERM/SIGINT.
pub(crate) async fn serve_until_signal<F, Fut>(
    name: &str,
    protocols: &str,
    host: Option<IpAddr>,
    port: u16,
    serve_on: F,
) -> Result<(), ServeError>
where
    F: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()>,
{
    use std::io::Write as _;
    let signal = super::signal::shutdown_signal().map_err(ServeError::Signal)?;
    let listener = bind(host, port)?;
    let addr = listener.local_addr().map_err(|source| ListenError {
        addr: SocketAddr::new(host.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), port),
        source,
    })?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "skiff {name} listening on {addr} ({protocols})")
            .and_then(|()| out.flush())
            .map_err(ServeError::Stdout)?;
    }
    let name = name.to_owned();
    serve_on(
        listener,
        Box::pin(async move {
            let signal_name = signal.wait().await;
            tracing::info!("{signal_name}: {name} shutting down");
        }),
    )
    .await;
    Ok(())
}

/// Listen on `host:port`; with no host, on `[::]:port` accepting IPv4 too, falling back to
/// `0.0.0.0:port` where IPv6 is unavailable. Port 0 picks a free port (see `local_addr`).
pub fn bind(host: Option<IpAddr>, port: u16) -> Result<TcpListener, ListenError> {
    if let Some(ip) = host {
        return listen(SocketAddr::new(ip, port));
    }
    let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    match listen(any6) {
        Ok(listener) => Ok(listener),
        Err(e) if e.source.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "no IPv6 here; listening on IPv4 only");
            listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
        }
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    let make = || -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            // Dual-stack whatever net.ipv6.bindv6only says: one socket for both families.
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    make().map_err(|source| ListenError { addr, source })
}

/// Accept until `shutdown` resolves, handing each connection (with a graceful-shutdown
/// watcher) to `serve`, which spawns it. Then stop accepting and give open connections
/// [`DRAIN`] to finish.
pub(crate) async fn accept_loop<S>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut serve: S,
) where
    S: FnMut(TcpStream, SocketAddr, Watcher),
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    // Small request/response exchanges: never wait for Nagle.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY");
                    }
                    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
                    serve(stream, remote, graceful.watcher());
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open after {DRAIN:?}; exiting anyway");
        }
    }
}
