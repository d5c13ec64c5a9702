//! Targets and connections: address resolution, TCP connect, the optional TLS handshake, and one
//! stream type over both.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::config::TlsOptions;
use crate::proto::Failure;

/// `HOST:PORT` (or `[V6]:PORT`) to one address, `default_port` when the port is missing.
pub(crate) async fn resolve(target: &str, default_port: Option<u16>) -> Result<SocketAddr, Error> {
    let bad = |problem: String| Error::Target {
        target: target.to_owned(),
        problem,
    };
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let has_port = match target.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    };
    let with_port = match (has_port, default_port) {
        (true, _) => target.to_owned(),
        (false, Some(port)) if target.starts_with('[') || !target.contains(':') => {
            format!("{target}:{port}")
        }
        (false, Some(port)) => format!("[{target}]:{port}"),
        (false, None) => return Err(bad("no port: write HOST:PORT".into())),
    };
    let mut addrs = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| bad(format!("cannot resolve: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| bad("the name resolves to no address".into()))
}

/// Where and how to connect: an address, and TLS when the target is `https://`.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    handshakes: Arc<Handshakes>,
}

/// TLS handshakes of a run, full and resumed (so `--no-resumption` and its opposite show).
#[derive(Debug, Default)]
pub(crate) struct Handshakes {
    full: AtomicU64,
    resumed: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .field("handshakes", &self.handshakes)
            .finish()
    }
}

impl Endpoint {
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            tls: None,
            handshakes: Arc::default(),
        }
    }

    pub fn tls(
        addr: SocketAddr,
        host: &str,
        options: &TlsOptions,
        alpn: &[&[u8]],
    ) -> Result<Endpoint, Error> {
        let config = crate::tls::client_config(options, alpn)?;
        let name = crate::tls::server_name(options, host)?;
        Ok(Endpoint {
            addr,
            tls: Some((TlsConnector::from(config), name)),
            handshakes: Arc::default(),
        })
    }

    /// `(full, resumed)` TLS handshakes so far; `None` without TLS.
    pub fn tls_handshakes(&self) -> Option<(u64, u64)> {
        self.tls.as_ref().map(|_| {
            (
                self.handshakes.full.load(Ordering::Relaxed),
                self.handshakes.resumed.load(Ordering::Relaxed),
            )
        })
    }

    /// A new connection, handshake done. With TLS, also the negotiated ALPN protocol.
    pub async fn connect(&self) -> Result<Stream, Failure> {
        let addr = self.addr;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| Failure::new("connect", format!("cannot connect to {addr}: {e}"), true))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                    Failure::new(
                        "tls",
                        format!(
                            "TLS handshake with {addr} (server name {:?}) failed: {e}",
                            name.to_str()
                        ),
                        true,
                    )
                })?;
                let counter = match tls.get_ref().1.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => &self.handshakes.resumed,
                    _ => &self.handshakes.full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Stream::Tls(Box::new(tls)))
            }
        }
    }
}

/// A TCP connection, plain or TLS.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The ALPN protocol the server chose (TLS only).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An `http://` or `https://` URL taken apart.
#[derive(Clone, Debug)]
pub(crate) struct HttpTarget {
    pub tls: bool,
    pub host: String,
    /// `host[:port]` as the Host header / `:authority` carries it.
    pub authority: String,
    pub path: String,
    pub addr: SocketAddr,
}

impl HttpTarget {
    /// `bare_scheme`: the scheme assumed for `HOST:PORT` without one (gRPC targets).
    pub async fn parse(target: &str, bare_scheme: Option<&str>) -> Result<HttpTarget, Error> {
        let bad = |problem: String| Error::Target {
            target: target.to_owned(),
            problem,
        };
        let text = match bare_scheme {
            Some(scheme) if !target.contains("://") => format!("{scheme}://{target}"),
            _ => target.to_owned(),
        };
        let uri: http::Uri = text.parse().map_err(|e| {
            bad(format!(
                "not a URL ({e}): write e.g. http://127.0.0.1:8080/"
            ))
        })?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(bad(format!("scheme {other:?}: use http or https"))),
            None => return Err(bad("no scheme: write http://HOST:PORT/PATH".into())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| bad("no host".into()))?
            .clone();
        let host = authority.host().to_owned();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = resolve(&format!("{host}:{port}"), None)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(HttpTarget {
            tls,
            host,
            authority: authority.as_str().to_owned(),
            path,
            addr,
        })
    }

    pub fn endpoint(&self, options: &TlsOptions, alpn: &[&[u8]]) -> Result<Endpoint, Error> {
        if self.tls {
            Endpoint::tls(self.addr, &self.host, options, alpn)
        } else {
            Ok(Endpoint::plain(self.addr))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn targets_resolve_or_say_what_is_wrong() {
        assert_eq!(
            resolve("127.0.0.1:53", None).await.unwrap().to_string(),
            "127.0.0.1:53"
        );
        assert_eq!(
            resolve("127.0.0.1", Some(53)).await.unwrap().to_string(),
            "127.0.0.1:53"
        );
        assert_eq!(
            resolve("::1", Some(53)).await.unwrap().to_string(),
            "[::1]:53"
        );
        let e = resolve("127.0.0.1", None).await.unwrap_err().to_string();
        assert!(e.contains("no port"), "{e}");
        let t = HttpTarget::parse("http://127.0.0.1:8080/a?b=1", None)
            .await
            .unwrap();
        assert_eq!((t.tls, t.path.as_str()), (false, "/a?b=1"));
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = HttpTarget::parse("127.0.0.1:50051", Some("http"))
            .await
            .unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (50051, "/"));
        let e = HttpTarget::parse("ftp://x/", None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("ftp"), "{e}");
    }
}
