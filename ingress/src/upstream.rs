//! The HTTP/1.1 upstream side shared by the lean paths (`lean` for HTTP/1.1 clients, `h2down`
//! for HTTP/2 clients): choosing and connecting to an endpoint with retries (`Attempts`),
//! which header fields are hop-by-hop, parsing a response head and following its body's
//! framing, and the upstream read timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::balance::{self, Endpoint};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::proxy::{CONNECT_TIMEOUT, MAX_TRIES, retry_endpoint};
use crate::table::{Backend, Route, RouteTable};

/// Header fields of a request or response the lean paths take (more: pingora's path).
pub(crate) const MAX_HEADERS: usize = 64;
/// Largest upstream response head.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Read size for response bodies.
pub(crate) const READ_CHUNK: usize = 16 << 10;

/// Why the upstream exchange failed, named as pingora names it (for the 502 body and log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    ConnectRefused,
    ConnectTimedout,
    ConnectError,
    WriteError,
    ReadError,
    ConnectionClosed,
    InvalidHttpHeader,
    /// No answer within the upstream read timeout (a 504).
    ReadTimedout,
    /// The request body went over the route's limit (a 413; not the backend's fault).
    BodyTooLarge,
    /// The client went away (reset its stream, closed); nothing to answer.
    ClientGone,
}

impl Failure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "ConnectRefused",
            Failure::ConnectTimedout => "ConnectTimedout",
            Failure::ConnectError => "ConnectError",
            Failure::WriteError => "WriteError",
            Failure::ReadError => "ReadError",
            Failure::ConnectionClosed => "ConnectionClosed",
            Failure::InvalidHttpHeader => "InvalidHTTPHeader",
            Failure::ReadTimedout => "ReadTimedout",
            Failure::BodyTooLarge => "BodyTooLarge",
            Failure::ClientGone => "ClientGone",
        }
    }

    /// The status and plain-text body the client gets: 504 when the backend did not answer
    /// in time, 413 over the route's body limit `max_body`, else 502.
    pub(crate) fn answer(self, max_body: Option<u64>) -> (u16, String) {
        match self {
            Failure::BodyTooLarge => (
                413,
                format!(
                    "413 Payload Too Large: the request body is over the route's limit of {} bytes\n",
                    max_body.unwrap_or(0)
                ),
            ),
            Failure::ReadTimedout => (
                504,
                "504 Gateway Timeout: the backend did not answer within the read timeout\n"
                    .to_owned(),
            ),
            f => (
                502,
                format!("502 Bad Gateway: the backend failed ({})\n", f.as_str()),
            ),
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed upstream response head.
pub(crate) struct Response {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    pub reusable: bool,
}

pub(crate) fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Visible ASCII, spaces and tabs: what `HeaderValue::to_str` accepts.
pub(crate) fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// Client headers not passed upstream: hop-by-hop ones and those the proxy sets itself.
pub(crate) fn dropped_request_header(n: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ]
    .iter()
    .chain(&[
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-request-id",
    ])
    .any(|d| eq(n, d))
}

/// Upstream headers not passed to the client: hop-by-hop ones and those the proxy sets.
pub(crate) fn dropped_response_header(n: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "server",
        "x-request-id",
    ]
    .iter()
    .any(|d| eq(n, d))
}

/// An upstream failure; `responded`: the client already has part of the answer.
pub(crate) struct Retry {
    pub failure: Failure,
    pub responded: bool,
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Failure::ConnectRefused),
        Ok(Err(_)) => Err(Failure::ConnectError),
        Err(_) => Err(Failure::ConnectTimedout),
    }
}

/// Parses the upstream response head in `buf`: `Ok(None)` while incomplete, `Err` when it is
/// not HTTP/1.x or its framing is contradictory.
pub(crate) fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<Response>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let mut reusable = resp.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut other_coding = false;
    for h in resp.headers.iter() {
        if eq(h.name, "content-length") {
            let v = visible(h.value).ok_or(())?.trim();
            let n: u64 = v.parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != n) {
                return Err(());
            }
            length = Some(n);
        } else if eq(h.name, "transfer-encoding") {
            let v = visible(h.value).ok_or(())?;
            // Only the last coding tells whether the body is chunked.
            for coding in v.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                chunked = eq(coding, "chunked");
                other_coding |= !chunked;
            }
        } else if eq(h.name, "connection") {
            let v = visible(h.value).ok_or(())?;
            if v.split(',').any(|t| eq(t.trim(), "close")) {
                reusable = false;
            }
        }
    }
    // Both framings at once is how responses are split (RFC 9112 6.3 says to treat it as an
    // error): a 502, never a Content-Length passed on beside a chunked body.
    if length.is_some() && (chunked || other_coding) {
        return Err(());
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if other_coding {
        Framing::UntilClose
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(Response {
        status,
        head_len,
        framing,
        reusable,
    }))
}

/// Where the response body stands: how much of each read belongs to it, and when it ends.
#[derive(Debug)]
pub(crate) enum BodyState {
    /// Bytes left of a `Content-Length` body (0: done).
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// A chunked body, scanned as it passes (the bytes are forwarded unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// In a chunk-size line: the size so far and whether a digit was seen.
    Size(u64, bool),
    /// After the size: extensions up to the end of the line.
    Ext(u64),
    /// Chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// Trailer fields; `true` at the start of a line (an empty line ends the body).
    Trailer(bool),
    Done,
}

impl BodyState {
    pub(crate) fn new(framing: Framing) -> BodyState {
        match framing {
            Framing::None => BodyState::Length(0),
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Chunk::Size(0, false)),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }

    /// Of `data`, how many bytes belong to the body (`None`: malformed) and whether the body
    /// is complete with them.
    pub(crate) fn advance(&mut self, data: &[u8]) -> (Option<usize>, bool) {
        self.scan(data, |_| {})
    }

    /// [`BodyState::advance`], handing each piece of payload (the body without its chunk
    /// framing and trailers) to `payload`: for clients that get the body unframed (HTTP/2).
    pub(crate) fn scan(
        &mut self,
        data: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> (Option<usize>, bool) {
        match self {
            BodyState::Length(left) => {
                let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                *left -= take as u64;
                payload(&data[..take]);
                (Some(take), *left == 0)
            }
            BodyState::UntilClose => {
                payload(data);
                (Some(data.len()), false)
            }
            BodyState::Chunked(state) => {
                let mut i = 0;
                while i < data.len() && *state != Chunk::Done {
                    let b = data[i];
                    *state = match *state {
                        Chunk::Size(n, digit) => match (b as char).to_digit(16) {
                            Some(d) => match n.checked_mul(16) {
                                Some(m) => Chunk::Size(m + u64::from(d), true),
                                None => return (None, false),
                            },
                            None if !digit => return (None, false),
                            None if b == b'\n' => size_line_end(n),
                            None if matches!(b, b';' | b' ' | b'\t' | b'\r') => Chunk::Ext(n),
                            None => return (None, false),
                        },
                        Chunk::Ext(n) if b == b'\n' => size_line_end(n),
                        Chunk::Ext(n) => Chunk::Ext(n),
                        Chunk::Data(left) => {
                            let take = usize::try_from(left)
                                .map_or(data.len() - i, |l| l.min(data.len() - i));
                            payload(&data[i..i + take]);
                            i += take;
                            let left = left - take as u64;
                            *state = if left == 0 {
                                Chunk::DataEnd
                            } else {
                                Chunk::Data(left)
                            };
                            continue;
                        }
                        Chunk::DataEnd => match b {
                            b'\r' => Chunk::DataEnd,
                            b'\n' => Chunk::Size(0, false),
                            _ => return (None, false),
                        },
                        Chunk::Trailer(start) => match b {
                            b'\n' if start => Chunk::Done,
                            b'\n' => Chunk::Trailer(true),
                            b'\r' => Chunk::Trailer(start),
                            _ => Chunk::Trailer(false),
                        },
                        Chunk::Done => Chunk::Done,
                    };
                    i += 1;
                }
                (Some(i), *state == Chunk::Done)
            }
        }
    }
}

/// The end of a chunk-size line: the last chunk's trailers, or the chunk's data.
fn size_line_end(n: u64) -> Chunk {
    if n == 0 {
        Chunk::Trailer(true)
    } else {
        Chunk::Data(n)
    }
}

/// Fields of a request head for [`upstream_head`].
pub(crate) struct Head<'a, I> {
    pub method: &'a str,
    /// Origin form: path and query.
    pub target: &'a str,
    /// A `Host` field to write first (clients whose fields carry none: HTTP/2's `:authority`).
    pub host: Option<&'a str>,
    /// The client's fields; hop-by-hop ones and those the proxy sets are left out here.
    pub headers: I,
    /// Written after the client's fields (e.g. `Transfer-Encoding: chunked`).
    pub extra: Option<&'a str>,
}

/// What the proxy adds to every request it forwards.
pub(crate) struct Forwarding<'a> {
    pub peer: Option<IpAddr>,
    pub tls: bool,
    pub host: &'a str,
    pub port: u16,
    pub request_id: &'a str,
}

/// The HTTP/1.1 request head as sent upstream: request line, the client's fields without
/// the hop-by-hop ones, then `X-Forwarded-For` (appended to the client's),
/// `-Proto/-Host/-Port` and `X-Request-ID`.
pub(crate) fn upstream_head<'h, I>(out: &mut Vec<u8>, head: Head<'_, I>, fwd: &Forwarding<'_>)
where
    I: Iterator<Item = (&'h str, &'h [u8])>,
{
    use std::io::Write as _;
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = head.host {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut xff_prev = false;
    let mut xff = Vec::new();
    for (name, value) in head.headers {
        if eq(name, "x-forwarded-for") {
            if !value.is_empty() {
                if xff_prev {
                    xff.extend_from_slice(b", ");
                }
                xff.extend_from_slice(value);
                xff_prev = true;
            }
            continue;
        }
        if dropped_request_header(name) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(extra) = head.extra {
        out.extend_from_slice(extra.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(ip) = fwd.peer {
        out.extend_from_slice(b"X-Forwarded-For: ");
        if xff_prev {
            out.extend_from_slice(&xff);
            out.extend_from_slice(b", ");
        }
        let _ = write!(out, "{ip}");
        out.extend_from_slice(b"\r\n");
    } else if xff_prev {
        out.extend_from_slice(b"X-Forwarded-For: ");
        out.extend_from_slice(&xff);
        out.extend_from_slice(b"\r\n");
    }
    let proto = if fwd.tls { "https" } else { "http" };
    let _ = write!(
        out,
        "X-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {}\r\nX-Forwarded-Port: {}\r\n\
         X-Request-ID: {}\r\n\r\n",
        fwd.host, fwd.port, fwd.request_id
    );
}

/// One request as the access log and the metrics see it.
pub(crate) struct Logged<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub route: Option<&'a Route>,
    pub backend: Option<&'a Backend>,
    pub status: u16,
    pub started: Instant,
    pub error: Option<&'a str>,
}

/// Metrics and the access log line (`skiff_ingress::access`) of one request, as `proxy`
/// writes them.
pub(crate) fn log_request(metrics: &Metrics, r: &Logged<'_>) {
    let elapsed = r.started.elapsed();
    metrics.record(r.route, r.status, elapsed);
    tracing::info!(
        target: "skiff_ingress::access",
        request_id = %r.request_id,
        method = r.method,
        host = r.host,
        path = r.path,
        status = r.status,
        ingress = r.route.and_then(|r| r.ingress.as_ref()).map(ToString::to_string),
        service = r.backend.map(|b| b.name.to_string()),
        duration_us = elapsed.as_micros() as u64,
        error = r.error,
    );
}

/// Reads into `buf` within `timeout` (the upstream read timeout).
pub(crate) async fn read_some(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<usize, Failure> {
    match tokio::time::timeout(timeout, tcp.read_buf(buf)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(Failure::ReadError),
        Err(_) => Err(Failure::ReadTimedout),
    }
}

/// An upstream connection for one try of a request.
pub(crate) struct Conn {
    pub endpoint: Arc<Endpoint>,
    pub tcp: TcpStream,
    /// Taken from the pool (it may have died while idle).
    pub reused: bool,
}

/// The tries of one request: P2C for the first, a retry routes again on the newest table and
/// avoids endpoints that refused; a pooled connection that died is retried on the same
/// endpoint over a fresh one. Connect failures are always retried (nothing was sent); a
/// failure after sending only when the request is `replayable` (idempotent, no body sent).
pub(crate) struct Attempts<'a> {
    routes: &'a ArcSwap<RouteTable>,
    host: &'a str,
    path: &'a str,
    draw: u8,
    pub backend: Option<Arc<Backend>>,
    replayable: bool,
    tried: Vec<SocketAddr>,
    tries: u32,
    again: Option<Arc<Endpoint>>,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(
        routes: &'a ArcSwap<RouteTable>,
        host: &'a str,
        path: &'a str,
        draw: u8,
        backend: Arc<Backend>,
        replayable: bool,
    ) -> Attempts<'a> {
        Attempts {
            routes,
            host,
            path,
            draw,
            backend: Some(backend),
            replayable,
            tried: Vec::new(),
            tries: 0,
            again: None,
        }
    }

    /// The endpoint of the next try, `start`ed (the caller `finish`es it), and whether it
    /// must be a fresh connection (a pooled one to it just died); `None`: no endpoint at all.
    pub(crate) async fn next(&mut self) -> Option<(Arc<Endpoint>, bool)> {
        let fresh = self.again.is_some();
        let pick = match self.again.take() {
            Some(same) => Some(same),
            None if self.tries == 0 => self
                .backend
                .as_ref()
                .and_then(|b| balance::pick(&b.endpoints))
                .cloned(),
            None => {
                retry_endpoint(
                    self.routes,
                    self.host,
                    self.path,
                    self.draw,
                    &mut self.backend,
                    &self.tried,
                )
                .await
            }
        };
        let endpoint = pick?;
        self.tries += 1;
        endpoint.start();
        Some((endpoint, fresh))
    }

    /// Connecting to `endpoint` failed (nothing was sent): penalized, finished and avoided
    /// from now on; `true` to try again. Refusals are cheap and safe to retry, and during a
    /// scale-down several pods of the table may refuse before the EndpointSlice update
    /// arrives: up to twice [`MAX_TRIES`] of them.
    pub(crate) fn connect_failed(&mut self, endpoint: &Endpoint) -> bool {
        endpoint.penalize();
        endpoint.finish();
        self.tried.push(endpoint.addr);
        self.tries < 2 * MAX_TRIES
    }

    /// A connection for the next try (its endpoint `start`ed: the caller `finish`es it), or
    /// the failure to answer with once the tries are used up.
    pub(crate) async fn connect(&mut self, pool: &Pool) -> Result<Conn, Failure> {
        loop {
            let Some((endpoint, fresh)) = self.next().await else {
                return Err(Failure::ConnectError);
            };
            if !fresh {
                // A request that cannot be replayed takes only a connection that is still
                // open: one the backend closed while idle would fail it for good.
                while let Some(tcp) = pool.take(endpoint.addr) {
                    if self.replayable || alive(&tcp) {
                        return Ok(Conn {
                            endpoint,
                            tcp,
                            reused: true,
                        });
                    }
                }
            }
            match connect(endpoint.addr).await {
                Ok(tcp) => {
                    return Ok(Conn {
                        endpoint,
                        tcp,
                        reused: false,
                    });
                }
                Err(f) => {
                    if !self.connect_failed(&endpoint) {
                        return Err(f);
                    }
                }
            }
        }
    }

    /// After a try failed (its endpoint already `finish`ed): `true` to try again, `false` to
    /// give up (the endpoint penalized).
    pub(crate) fn failed(&mut self, endpoint: Arc<Endpoint>, reused: bool, r: &Retry) -> bool {
        // A backend too slow to answer is not asked again (the client has waited long enough).
        if matches!(r.failure, Failure::BodyTooLarge | Failure::ClientGone) {
            return false;
        }
        if r.responded
            || !self.replayable
            || self.tries >= MAX_TRIES
            || r.failure == Failure::ReadTimedout
        {
            endpoint.penalize();
            return false;
        }
        if reused {
            self.again = Some(endpoint);
        } else {
            self.tried.push(endpoint.addr);
        }
        true
    }
}

/// An idle pooled connection the backend has not closed (nothing to read, no EOF).
fn alive(tcp: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(framing: Framing, parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut s = BodyState::new(framing);
        let mut got = Vec::new();
        let mut done = false;
        for p in parts {
            let (n, d) = s.advance(p);
            let n = n.expect("well-formed");
            got.extend_from_slice(&p[..n]);
            done = d;
            if d {
                break;
            }
        }
        (got, done)
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: a\r\n\r\n";
        let mut whole = body.to_vec();
        whole.extend_from_slice(b"NEXT");
        assert_eq!(body_of(Framing::Chunked, &[&whole]), (body.to_vec(), true));
        // The same split at every byte boundary.
        for cut in 1..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(
                body_of(Framing::Chunked, &[a, b]),
                (body.to_vec(), true),
                "{cut}"
            );
        }
        let (got, done) = body_of(Framing::Chunked, &[b"0\r\n\r\n"]);
        assert_eq!((got.len(), done), (5, true));
        let (_, done) = body_of(Framing::Chunked, &[b"4\r\nWi"]);
        assert!(!done);
        assert_eq!(BodyState::new(Framing::Chunked).advance(b"zz\r\n").0, None);
        assert_eq!(
            BodyState::new(Framing::Chunked).advance(b"1\r\naXY").0,
            None
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        assert_eq!(
            body_of(Framing::Length(3), &[b"ab", b"cde"]),
            (b"abc".to_vec(), true)
        );
        assert_eq!(body_of(Framing::None, &[b"x"]), (Vec::new(), true));
        assert_eq!(
            body_of(Framing::UntilClose, &[b"x", b"y"]),
            (b"xy".to_vec(), false)
        );
    }

    #[test]
    fn responses_are_framed_per_rfc_9112() {
        let r = |head: &[u8], head_req| parse_response(head, head_req).ok().flatten();
        let got = r(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).expect("complete");
        assert!(matches!(got.framing, Framing::Length(2)) && got.reusable);
        let got = r(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .expect("complete");
        assert!(matches!(got.framing, Framing::Chunked));
        let got = r(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false).expect("complete");
        assert!(matches!(got.framing, Framing::UntilClose) && !got.reusable);
        let got = r(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", true).expect("complete");
        assert!(matches!(got.framing, Framing::None));
        let got = r(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .expect("complete");
        assert!(matches!(got.framing, Framing::None));
        let got = r(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false).expect("complete");
        assert!(!got.reusable);
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .is_err(),
            "both framings"
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: b", false),
            Ok(None)
        ));
    }
}
