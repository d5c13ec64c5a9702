//! A write buffer in front of a client connection, so an HTTP/1 response's head and body leave
//! in one write (one TCP segment, one TLS record) instead of one each.
//!
//! pingora's own listeners put a 1460-byte write buffer under every accepted stream (its
//! `Stream::set_buffer` is crate-private); our accept loops build the stream themselves and got
//! none, so every `write_all` of pingora's HTTP/1 session went straight to the socket: the head
//! and the body of each response were two `sendto`s, two loopback deliveries and two wakeups
//! of the client. pingora flushes where a response must leave (its code expects the buffer).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes smaller than this are gathered until a flush: the head and body of a typical small
/// response fit, larger bodies go straight through (after what is buffered).
pub const WRITE_BUFFER: usize = 4096;

/// A [`Stream`] whose writes are buffered until flushed; everything else passes through.
#[derive(Debug)]
pub struct WriteBuffered {
    inner: Stream,
    /// Allocated on the first buffered write, kept (cleared) for the connection's next
    /// responses.
    buf: Vec<u8>,
    /// How much of `buf` already went out during an unfinished flush.
    sent: usize,
}

impl WriteBuffered {
    pub fn new(inner: Stream) -> WriteBuffered {
        WriteBuffered {
            inner,
            buf: Vec::new(),
            sent: 0,
        }
    }

    /// Writes out what is buffered (not flushing the stream under it).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WriteBuffered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteBuffered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.buf.len() + data.len() > WRITE_BUFFER {
            ready!(self.poll_drain(cx))?;
        }
        if data.len() >= WRITE_BUFFER {
            return Pin::new(&mut self.inner).poll_write(cx, data);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(WRITE_BUFFER);
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for WriteBuffered {
    async fn shutdown(&mut self) {
        // What is still buffered goes out first (best effort: the connection is ending).
        let _ = tokio::io::AsyncWriteExt::flush(self).await;
        self.inner.shutdown().await;
    }
}

impl UniqueID for WriteBuffered {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for WriteBuffered {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for WriteBuffered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for WriteBuffered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for WriteBuffered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for WriteBuffered {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small writes stay buffered until a flush and then leave in one piece; a write of at
    /// least the buffer size goes through after what was buffered, in order.
    #[tokio::test]
    async fn small_writes_wait_for_a_flush_and_order_is_kept() -> anyhow::Result<()> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = tokio::net::TcpStream::connect(l.local_addr()?).await?;
        let (server, _) = l.accept().await?;
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        let mut s = WriteBuffered::new(stream);
        s.write_all(b"head").await?;
        s.write_all(b"body").await?;
        assert_eq!(s.buf, b"headbody", "nothing leaves before a flush");
        s.flush().await?;
        assert!(s.buf.is_empty());
        let mut got = [0u8; 8];
        client.read_exact(&mut got).await?;
        assert_eq!(&got, b"headbody");
        let big = vec![b'x'; WRITE_BUFFER];
        s.write_all(b"a").await?;
        s.write_all(&big).await?;
        s.write_all(b"z").await?;
        s.flush().await?;
        let mut all = vec![0u8; WRITE_BUFFER + 2];
        client.read_exact(&mut all).await?;
        assert_eq!(all[0], b'a');
        assert!(all[1..=WRITE_BUFFER].iter().all(|&b| b == b'x'));
        assert_eq!(all[WRITE_BUFFER + 1], b'z');
        Ok(())
    }
}
