//! HTTP/1.x connections: our keep-alive loop reads each request head under limits (a total
//! header deadline against slowloris, an idle timeout between requests, a size cap) and answers
//! malformed, oversized and too slow heads itself with our `Server` header; pingora's
//! `HttpProxy` then parses the head from the bytes already read and serves the request, unless
//! the lean path (`lean`) takes it.
//!
//! pingora alone has no total deadline (each read of a head gets its own 60 s, so one byte a
//! minute keeps a connection forever), caps heads at 1 MiB, and answers a bad head with
//! `400` and `Server: Pingora`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::bufio::WriteBuffered;
use crate::lean::{Lean, Outcome, Scratch};
use crate::proxy::{IngressProxy, SERVER};

/// Header fields per request, as pingora's parser allows.
const MAX_HEADERS: usize = 256;
/// After an error answer, how long unread request bytes are drained (so closing does not
/// reset the connection before the client has read the answer), per read and in total.
const LINGER_READ: Duration = Duration::from_secs(1);
const LINGER_TOTAL: Duration = Duration::from_secs(5);

/// Limits on client connections (both listeners).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head (request line and header fields) must be complete this long after its
    /// first byte (the first request: after the connection was accepted), else `408` and the
    /// connection is closed (nginx's `client_header_timeout`).
    pub header_timeout: Duration,
    /// A keep-alive connection with no new request for this long is closed
    /// (nginx's `keepalive_timeout`).
    pub idle_timeout: Duration,
    /// Largest request head in bytes: beyond it `431` (`414` when the request line alone is
    /// longer).
    pub max_header_bytes: usize,
    /// How long a backend may be silent on the lean paths while its response is awaited
    /// (then `504`) or while its body streams (then the response is cut) (nginx's
    /// `proxy_read_timeout`).
    pub upstream_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 32 << 10,
            upstream_read_timeout: Duration::from_secs(60),
        }
    }
}

/// How reading one request head ended.
#[derive(Debug)]
enum Head {
    /// A complete head, maybe followed by body bytes: for pingora to parse.
    Complete(BytesMut),
    /// Closed by the client, idle too long, a read error, or the server shutting down.
    Closed,
    /// Answer with this status and reason, then close.
    Reject(u16, String),
}

/// Serves HTTP/1.x requests on `stream` until the client or the server ends it.
pub(crate) async fn serve(
    app: &Arc<HttpProxy<IngressProxy>>,
    lean: &Lean,
    stream: Stream,
    peer: Option<IpAddr>,
    limits: &Limits,
    accepted: Instant,
    shutdown: &watch::Receiver<bool>,
) {
    // One write per response (head and body together), as from pingora's own listeners.
    let mut stream: Stream = Box::new(WriteBuffered::new(stream));
    let mut shutdown_rx = shutdown.clone();
    let mut settings: Option<HttpPersistentSettings> = None;
    let mut first = Some(accepted);
    let mut scratch = Scratch::default();
    loop {
        let head = read_head(&mut stream, limits, first.take(), &mut shutdown_rx).await;
        let buf = match head {
            Head::Complete(buf) => buf,
            Head::Closed => return,
            Head::Reject(status, why) => {
                reject(&mut stream, status, &why).await;
                return;
            }
        };
        let closing = *shutdown.borrow();
        match lean
            .serve(&mut stream, &buf, peer, closing, &mut scratch)
            .await
        {
            Outcome::KeepAlive => continue,
            Outcome::Close => {
                let _ = AsyncWriteExt::shutdown(&mut stream).await;
                return;
            }
            Outcome::Linger => {
                linger(&mut stream).await;
                return;
            }
            Outcome::Fallback => {}
        }
        let mut session = ServerSession::new_http1(stream);
        match settings.take() {
            Some(s) => s.apply_to_session(&mut session),
            None => {
                // Seconds, rounded up: pingora's unit (it only decides reuse here; the idle
                // wait itself is ours).
                let idle = limits.idle_timeout.as_secs_f64().ceil().max(1.0) as u64;
                session.set_keepalive(Some(idle));
                session.set_keepalive_reuses_remaining(
                    app.server_options().and_then(|o| o.keepalive_request_limit),
                );
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        session.set_pipelined_prefix(buf);
        match app.process_new_http(session, shutdown).await {
            Some(reused) => {
                let (s, persistent) = reused.consume();
                stream = s;
                settings = persistent;
            }
            None => return,
        }
    }
}

/// Reads one request head. `first`: when the connection was accepted (its first request's
/// deadline runs from then); later requests wait up to the idle timeout for their first byte.
async fn read_head(
    stream: &mut Stream,
    limits: &Limits,
    first: Option<Instant>,
    shutdown: &mut watch::Receiver<bool>,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    let idle_until = tokio::time::Instant::now() + limits.idle_timeout;
    let mut deadline = first.map(|t| tokio::time::Instant::from_std(t) + limits.header_timeout);
    loop {
        if buf.is_empty() && *shutdown.borrow() {
            return Head::Closed;
        }
        let until = deadline.unwrap_or(idle_until);
        let read = tokio::select! {
            r = stream.read_buf(&mut buf) => r,
            () = tokio::time::sleep_until(until) => {
                return if buf.is_empty() {
                    Head::Closed
                } else {
                    Head::Reject(408, format!(
                        "the request head was not complete within {:?}",
                        limits.header_timeout
                    ))
                };
            }
            _ = shutdown.changed(), if buf.is_empty() => return Head::Closed,
        };
        match read {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
        if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + limits.header_timeout);
        }
        match check_head(&buf, limits.max_header_bytes) {
            Ok(true) => return Head::Complete(buf),
            Ok(false) => {}
            Err((status, why)) => return Head::Reject(status, why),
        }
    }
}

/// Whether `buf` holds a complete head within the limits (`Ok(false)`: read on), or the
/// status and reason to refuse it with.
fn check_head(buf: &[u8], max: usize) -> Result<bool, (u16, String)> {
    let too_large = |buf: &[u8]| {
        let line_end = buf.iter().position(|&b| b == b'\n');
        if line_end.is_none_or(|e| e > max) {
            (414, format!("the request line is longer than {max} bytes"))
        } else {
            (431, format!("the request head is larger than {max} bytes"))
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max => Err(too_large(buf)),
        Ok(httparse::Status::Complete(_)) => Ok(true),
        Ok(httparse::Status::Partial) if buf.len() > max => Err(too_large(buf)),
        Ok(httparse::Status::Partial) => Ok(false),
        Err(httparse::Error::TooManyHeaders) => {
            Err((431, format!("more than {MAX_HEADERS} header fields")))
        }
        // A request target with characters httparse refuses (`|`, `{`, raw UTF-8...): pingora
        // percent-encodes them, so the head goes on if its request line is otherwise sound.
        Err(httparse::Error::Token | httparse::Error::Version) if request_line_sound(buf) => {
            match head_end(buf) {
                Some(n) if n > max => Err(too_large(buf)),
                Some(_) => Ok(true),
                None if buf.len() > max => Err(too_large(buf)),
                None => Ok(false),
            }
        }
        Err(e) => Err((400, format!("malformed request head: {e}"))),
    }
}

/// `METHOD SP target SP HTTP/1.x` with a token method and a target without spaces or control
/// characters.
fn request_line_sound(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !method.is_empty()
        && method.iter().all(tchar)
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// The length of the head: up to and including the empty line.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

/// Writes a plain-text error answer with our `Server` header and closes the connection,
/// draining what the client still sends for a moment so the answer is not lost to a reset.
async fn reject(stream: &mut Stream, status: u16, why: &str) {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let body = format!("{status} {reason}: {why}\n");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nContent-Type: text/plain; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tracing::debug!(status, why, "request head refused");
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    linger(stream).await;
}

/// Closes our side and drains what the client still sends for a while, so that closing with
/// unread bytes does not reset the connection before the client read our answer.
async fn linger(stream: &mut Stream) {
    let _ = AsyncWriteExt::shutdown(stream).await;
    let until = tokio::time::Instant::now() + LINGER_TOTAL;
    let mut sink = [0u8; 16 << 10];
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(LINGER_READ, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_checked_for_completeness_size_and_shape() {
        let max = 1024;
        assert_eq!(check_head(b"GET / HTTP/1.1\r\nHost: a\r\n", max), Ok(false));
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", max),
            Ok(true)
        );
        assert_eq!(check_head(b"\r\nGET / HTTP/1.1\r\n\r\nbody", max), Ok(true));
        // httparse refuses `|` and `{`; pingora encodes them.
        assert_eq!(check_head(b"GET /a|b{c} HTTP/1.1\r\n\r\n", max), Ok(true));
        assert_eq!(check_head(b"GET /a|b HTTP/1.1\r\nHost:", max), Ok(false));
        for bad in [
            &b"THIS IS NOT HTTP\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/3.0\r\n\r\n",
        ] {
            let got = check_head(bad, max);
            assert!(matches!(got, Err((400, _))), "{bad:?}: {got:?}");
        }
        let mut long_line = b"GET /".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(check_head(&long_line, max).map_err(|e| e.0), Err(414));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(check_head(&big, max).map_err(|e| e.0), Err(431));
        big.extend(b"\r\n\r\n");
        assert_eq!(check_head(&big, max).map_err(|e| e.0), Err(431));
        let many: Vec<u8> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"A: b\r\n"[..], 300))
            .chain(std::iter::once(&b"\r\n"[..]))
            .flatten()
            .copied()
            .collect();
        assert_eq!(check_head(&many, 1 << 20).map_err(|e| e.0), Err(431));
    }
}
