//! TCP frontends: accept on the service address, connect to a backend (another one if that
//! fails), then copy both ways until either side closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::{Pool, Stats};

/// How long one backend may take to accept before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts until the task is aborted.
pub(super) async fn serve(
    listener: TcpListener,
    pool: Arc<arc_swap::ArcSwap<Pool>>,
    stats: Arc<Stats>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                debug!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if gone(&client) {
            // Reset while it waited in the accept queue: a backend connection would only be
            // opened to be reset again. When the proxy lags behind a burst of short-lived
            // clients (health checks that connect and close, scanners, the connect benchmark)
            // this is most of them, and skipping them is how it catches up.
            stats
                .abandoned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let pool = pool.load_full();
        let stats = stats.clone();
        // The client socket has TCP_NODELAY already: accepted sockets inherit it from the
        // listener (one setsockopt less per connection).
        tokio::spawn(async move {
            match connect(&pool, peer).await {
                Some(mut upstream) => {
                    stats
                        .connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = upstream.set_nodelay(true);
                    let mut client = client;
                    if tokio::io::copy_bidirectional(&mut client, &mut upstream)
                        .await
                        .is_err()
                    {
                        // A reset (or any error) on one side resets the other, as it would pass
                        // through a NAT. Closing the backend side with a FIN instead would make
                        // this socket the active closer: a TIME_WAIT in the node namespace, on
                        // an ephemeral port to the same backend, for every client that resets,
                        // and with thousands of those each connect() searches the port range
                        // (most of the proxy's CPU under the pod → ClusterIP benchmark).
                        reset(&client);
                        reset(&upstream);
                    }
                }
                None => {
                    // No backend answered: a zero linger makes the close a reset, as a REJECT
                    // rule would (and a non-blocking socket never waits on it).
                    stats
                        .rejected
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    reset(&client);
                }
            }
        });
    }
}

/// The chosen backend first, then the others in pool order, each with a timeout.
async fn connect(pool: &Pool, peer: SocketAddr) -> Option<TcpStream> {
    let first = pool.pick(peer.ip())?;
    let order = std::iter::once(first).chain(pool.backends.iter().copied().filter(|b| *b != first));
    for backend in order {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(s)) => return Some(s),
            Ok(Err(e)) => debug!(%backend, error = %e, "backend connect failed"),
            Err(_) => debug!(%backend, "backend connect timed out"),
        }
    }
    None
}

/// Whether the client reset the connection before it was accepted (its pending error; reading
/// that error clears it, which does not matter for a socket about to be closed).
fn gone(client: &TcpStream) -> bool {
    matches!(socket2::SockRef::from(client).take_error(), Ok(Some(_)))
}

/// Makes the socket's close a reset (zero linger; a non-blocking socket never waits on it).
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_reset_in_the_accept_queue_is_gone_and_a_live_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");

        let quitter = TcpStream::connect(addr).await.expect("connect");
        reset(&quitter);
        drop(quitter);
        let (accepted, _) = listener.accept().await.expect("accept");
        // The reset is delivered on loopback before close() returns.
        assert!(gone(&accepted), "a reset client must count as gone");

        let stayer = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!gone(&accepted), "a connected client is not gone");

        // One that sent a request and half-closed is still owed an answer.
        let mut polite = TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut polite, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        tokio::io::AsyncWriteExt::shutdown(&mut polite)
            .await
            .expect("shutdown");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!gone(&accepted), "a half-closed client is not gone");
        drop(stayer);
    }
}
