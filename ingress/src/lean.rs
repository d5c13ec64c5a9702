//! The lean HTTP/1.1 path: the common request (GET or HEAD without a body, HTTP/1.1, routed
//! to a plain-HTTP backend with endpoints) proxied straight from the head `h1` already read, to
//! a pooled keep-alive upstream connection and back, without pingora's per-request session,
//! header maps and channels. Everything else (bodies, upgrades, HTTP/1.0, local answers such as
//! 404/503/308, HTTPS/h2c/gRPC backends) returns [`Outcome::Fallback`] before anything is
//! written and goes through pingora as before.
//!
//! Kept from the pingora path: routing on the newest table, canary draw, P2C over peak-EWMA with
//! `start`/`observe`/`succeed`/`finish`, retries on connect failure or a dead connection before
//! any response byte (idempotent requests, up to `MAX_TRIES`, another endpoint when one
//! refused), passive ejection (`penalize`), `X-Forwarded-For/Proto/Host/Port`, `X-Request-ID`
//! (the client's or a new one, also on the response), `Server: skiff-ingress`, hop-by-hop
//! headers dropped, metrics and the access log.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::balance::{self, Endpoint};
use crate::metrics::Metrics;
use crate::model::BackendProtocol;
use crate::pool::Pool;
use crate::proxy::{
    CONNECT_TIMEOUT, ListenerInfo, MAX_TRIES, SERVER, new_request_id, retry_endpoint,
};
use crate::table::{Backend, Decision, RouteTable};

/// Header fields of a request or response the lean path takes (more: pingora's path).
const MAX_HEADERS: usize = 64;
/// Largest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Read size for response bodies.
const READ_CHUNK: usize = 16 << 10;

/// How a request on the lean path ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not for the lean path; nothing was written: serve it through pingora.
    Fallback,
    /// Answered; the client connection may carry the next request.
    KeepAlive,
    /// Answered (or failed); the client connection must be closed.
    Close,
}

/// The lean path of one listener (both share the pool).
#[derive(Debug)]
pub struct Lean {
    routes: Arc<ArcSwap<RouteTable>>,
    listener: ListenerInfo,
    metrics: Arc<Metrics>,
    pool: Arc<Pool>,
}

/// Buffers kept for a client connection's requests.
#[derive(Debug, Default)]
pub struct Scratch {
    up: Vec<u8>,
    out: Vec<u8>,
}

/// What the lean path needs of a request head.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    host: &'a str,
    request_id: Option<&'a str>,
    client_close: bool,
    headers: &'a [httparse::Header<'a>],
}

/// Why the upstream exchange failed, named as pingora names it (for the 502 body and log).
#[derive(Debug, Clone, Copy)]
enum Failure {
    ConnectRefused,
    ConnectTimedout,
    ConnectError,
    WriteError,
    ReadError,
    ConnectionClosed,
    InvalidHttpHeader,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectRefused => "ConnectRefused",
            Failure::ConnectTimedout => "ConnectTimedout",
            Failure::ConnectError => "ConnectError",
            Failure::WriteError => "WriteError",
            Failure::ReadError => "ReadError",
            Failure::ConnectionClosed => "ConnectionClosed",
            Failure::InvalidHttpHeader => "InvalidHTTPHeader",
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed upstream response head.
struct Response {
    status: u16,
    head_len: usize,
    framing: Framing,
    reusable: bool,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Visible ASCII, spaces and tabs: what `HeaderValue::to_str` accepts.
fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// The request, if the lean path takes it.
fn eligible<'a>(req: &'a httparse::Request<'a, 'a>) -> Option<Request<'a>> {
    let method = req.method?;
    if req.version != Some(1) || !(method == "GET" || method == "HEAD") {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let mut host = None;
    let mut request_id = None;
    let mut client_close = false;
    for h in req.headers.iter() {
        let n = h.name;
        if eq(n, "host") {
            if host.is_some() {
                return None;
            }
            host = Some(visible(h.value)?);
        } else if eq(n, "content-length")
            || eq(n, "transfer-encoding")
            || eq(n, "upgrade")
            || eq(n, "expect")
            || eq(n, "http2-settings")
        {
            return None;
        } else if eq(n, "connection") {
            for token in visible(h.value)?.split(',') {
                let t = token.trim();
                if eq(t, "close") {
                    client_close = true;
                } else if !(t.is_empty() || eq(t, "keep-alive") || eq(t, "te")) {
                    // Upgrades and hop-by-hop headers named by the client: pingora's path.
                    return None;
                }
            }
        } else if eq(n, "x-request-id") {
            request_id = visible(h.value).filter(|v| !v.is_empty() && v.len() <= 200);
        }
    }
    Some(Request {
        method,
        target,
        host: host?,
        request_id,
        client_close,
        headers: req.headers,
    })
}

/// Client headers not passed upstream: hop-by-hop ones and those the proxy sets itself.
fn dropped_request_header(n: &str) -> bool {
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
fn dropped_response_header(n: &str) -> bool {
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

impl Lean {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        listener: ListenerInfo,
        metrics: Arc<Metrics>,
        pool: Arc<Pool>,
    ) -> Lean {
        Lean {
            routes,
            listener,
            metrics,
            pool,
        }
    }

    /// Serves the request whose complete head (and nothing more) is `head`, or says
    /// [`Outcome::Fallback`] having written nothing.
    pub async fn serve(
        &self,
        client: &mut Stream,
        head: &[u8],
        peer: Option<IpAddr>,
        closing: bool,
        scratch: &mut Scratch,
    ) -> Outcome {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(head) {
            // Pipelined requests or a body after the head: pingora's path.
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return Outcome::Fallback,
        }
        let Some(req) = eligible(&parsed) else {
            return Outcome::Fallback;
        };
        let path = req.target.split_once('?').map_or(req.target, |(p, _)| p);
        let (route, backend, draw) = {
            let table = self.routes.load();
            let Decision::Route(route) = table.lookup(req.host, path) else {
                return Outcome::Fallback;
            };
            if route.protocol != BackendProtocol::Http
                || (route.redirect_https && !self.listener.tls)
            {
                return Outcome::Fallback;
            }
            let draw = (balance::random_u64() % 100) as u8;
            let backend = route.choose_backend(draw);
            if backend.endpoints.is_empty() {
                return Outcome::Fallback;
            }
            (route.clone(), backend.clone(), draw)
        };
        let started = Instant::now();
        let request_id = req
            .request_id
            .map_or_else(new_request_id, ToString::to_string);
        let close = req.client_close || closing;
        let mut up_head = std::mem::take(&mut scratch.out);
        up_head.clear();
        self.upstream_head(&mut up_head, &req, peer, &request_id);
        let mut x = Exchange {
            lean: self,
            req: &req,
            path,
            draw,
            backend: Some(backend),
            close,
            request_id: &request_id,
            status: 0,
            error: None,
        };
        let outcome = x.run(client, &up_head, scratch).await;
        scratch.out = up_head;
        let (status, error) = (x.status, x.error);
        let backend = x.backend.take();
        let elapsed = started.elapsed();
        self.metrics.record(Some(&route), status, elapsed);
        tracing::info!(
            target: "skiff_ingress::access",
            request_id = %request_id,
            method = req.method,
            host = req.host,
            path,
            status,
            ingress = route.ingress.as_ref().map(ToString::to_string),
            service = backend.as_ref().map(|b| b.name.to_string()),
            duration_us = elapsed.as_micros() as u64,
            error = error.map(Failure::as_str),
        );
        outcome
    }

    /// The request head as sent upstream: the client's request line and fields without the
    /// hop-by-hop ones, then the forwarding headers.
    fn upstream_head(
        &self,
        out: &mut Vec<u8>,
        req: &Request<'_>,
        peer: Option<IpAddr>,
        request_id: &str,
    ) {
        use std::io::Write as _;
        out.extend_from_slice(req.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(req.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut xff_prev = false;
        let mut xff = Vec::new();
        for h in req.headers {
            if eq(h.name, "x-forwarded-for") {
                if !h.value.is_empty() {
                    if xff_prev {
                        xff.extend_from_slice(b", ");
                    }
                    xff.extend_from_slice(h.value);
                    xff_prev = true;
                }
                continue;
            }
            if dropped_request_header(h.name) {
                continue;
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(ip) = peer {
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
        let proto = if self.listener.tls { "https" } else { "http" };
        let _ = write!(
            out,
            "X-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {}\r\nX-Forwarded-Port: {}\r\n\
             X-Request-ID: {request_id}\r\n\r\n",
            req.host, self.listener.port
        );
    }
}

/// One request's trip upstream and back.
struct Exchange<'a> {
    lean: &'a Lean,
    req: &'a Request<'a>,
    path: &'a str,
    draw: u8,
    backend: Option<Arc<Backend>>,
    close: bool,
    request_id: &'a str,
    status: u16,
    error: Option<Failure>,
}

impl Exchange<'_> {
    async fn run(&mut self, client: &mut Stream, up_head: &[u8], scratch: &mut Scratch) -> Outcome {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut tries = 0u32;
        // Set after a pooled connection died: the same endpoint again, on a new connection.
        let mut again: Option<Arc<Endpoint>> = None;
        loop {
            // The endpoint: P2C for the first try; a retry routes again and avoids endpoints
            // that refused.
            let fresh = again.is_some();
            let pick = match again.take() {
                Some(same) => Some(same),
                None if tries == 0 => self
                    .backend
                    .as_ref()
                    .and_then(|b| balance::pick(&b.endpoints))
                    .cloned(),
                None => {
                    retry_endpoint(
                        &self.lean.routes,
                        self.req.host,
                        self.path,
                        self.draw,
                        &mut self.backend,
                        &tried,
                    )
                    .await
                }
            };
            let Some(endpoint) = pick else {
                return self.fail(client, Failure::ConnectError).await;
            };
            tries += 1;
            let last = tries >= MAX_TRIES;
            endpoint.start();
            let pooled = if fresh {
                None
            } else {
                self.lean.pool.take(endpoint.addr)
            };
            let reused = pooled.is_some();
            let tcp = match pooled {
                Some(tcp) => tcp,
                None => match connect(endpoint.addr).await {
                    Ok(tcp) => tcp,
                    Err(f) => {
                        endpoint.penalize();
                        endpoint.finish();
                        tried.push(endpoint.addr);
                        if last {
                            return self.fail(client, f).await;
                        }
                        continue;
                    }
                },
            };
            let result = self
                .exchange(client, tcp, up_head, &endpoint, scratch)
                .await;
            endpoint.finish();
            match result {
                Ok(outcome) => return outcome,
                Err(Retry {
                    failure,
                    responded: true,
                }) => {
                    // Part of the answer already went to the client: nothing to retry and
                    // nothing more to say.
                    endpoint.penalize();
                    self.error = Some(failure);
                    return Outcome::Close;
                }
                Err(Retry { failure, .. }) if last => {
                    endpoint.penalize();
                    return self.fail(client, failure).await;
                }
                Err(_) if reused => again = Some(endpoint),
                Err(_) => tried.push(endpoint.addr),
            }
        }
    }

    /// Sends the head, reads the response head and streams the answer to the client.
    async fn exchange(
        &mut self,
        client: &mut Stream,
        mut tcp: TcpStream,
        up_head: &[u8],
        endpoint: &Endpoint,
        scratch: &mut Scratch,
    ) -> Result<Outcome, Retry> {
        let before = |failure| Retry {
            failure,
            responded: false,
        };
        let sent = Instant::now();
        tcp.write_all(up_head)
            .await
            .map_err(|_| before(Failure::WriteError))?;
        let buf = &mut scratch.up;
        buf.clear();
        let resp = loop {
            // Parsed before each read: an interim answer may be followed by the final one in
            // the same read.
            match parse_response(buf, self.req.method == "HEAD") {
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    // Interim answers (100, 103) are dropped; the final one follows.
                    buf.drain(..r.head_len);
                    continue;
                }
                Ok(Some(r)) if r.status == 101 => {
                    return Err(before(Failure::InvalidHttpHeader));
                }
                Ok(Some(r)) => break r,
                Ok(None) if buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(before(Failure::InvalidHttpHeader));
                }
                Ok(None) => {}
                Err(()) => return Err(before(Failure::InvalidHttpHeader)),
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            match tcp.read_buf(buf).await {
                Ok(0) => return Err(before(Failure::ConnectionClosed)),
                Ok(_) => {}
                Err(_) => return Err(before(Failure::ReadError)),
            }
        };
        endpoint.observe(sent.elapsed());
        endpoint.succeed();
        self.status = resp.status;
        let until_close = matches!(resp.framing, Framing::UntilClose);
        let close = self.close || until_close;
        let mut out = Vec::with_capacity(resp.head_len + 128);
        client_head(&mut out, &buf[..resp.head_len], self.request_id, close);
        let responded = |failure| Retry {
            failure,
            responded: true,
        };
        // The body bytes already read, then the rest as it comes.
        let mut body = BodyState::new(resp.framing);
        let (taken, done) = body.advance(&buf[resp.head_len..]);
        let Some(taken) = taken else {
            return Err(responded(Failure::InvalidHttpHeader));
        };
        let extra = resp.head_len + taken < buf.len();
        out.extend_from_slice(&buf[resp.head_len..resp.head_len + taken]);
        let mut reusable = resp.reusable && !extra;
        let write = client.write_all(&out).await;
        let mut client_ok = write.is_ok();
        let mut finished = done;
        while client_ok && !finished {
            buf.clear();
            if buf.capacity() < READ_CHUNK {
                buf.reserve(READ_CHUNK);
            }
            if client.flush().await.is_err() {
                client_ok = false;
                break;
            }
            let n = match tcp.read_buf(buf).await {
                Ok(n) => n,
                Err(_) => return Err(responded(Failure::ReadError)),
            };
            if n == 0 {
                if until_close {
                    reusable = false;
                    finished = true;
                    break;
                }
                return Err(responded(Failure::ConnectionClosed));
            }
            let (taken, done) = body.advance(buf);
            let Some(taken) = taken else {
                return Err(responded(Failure::InvalidHttpHeader));
            };
            if taken < buf.len() {
                reusable = false;
            }
            client_ok = client.write_all(&buf[..taken]).await.is_ok();
            finished = done;
        }
        client_ok = client_ok && client.flush().await.is_ok();
        if finished && reusable {
            self.lean.pool.put(endpoint.addr, tcp);
        }
        Ok(if client_ok && !close {
            Outcome::KeepAlive
        } else {
            Outcome::Close
        })
    }

    /// Answers 502 (no response started), with the failure named.
    async fn fail(&mut self, client: &mut Stream, f: Failure) -> Outcome {
        self.status = 502;
        self.error = Some(f);
        let body = format!("502 Bad Gateway: the backend failed ({})\n", f.as_str());
        let head = if self.req.method == "HEAD" { "" } else { &body };
        let answer = format!(
            "HTTP/1.1 502 Bad Gateway\r\nServer: {SERVER}\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: {}\r\nX-Request-ID: {}\r\nConnection: close\r\n\r\n{head}",
            body.len(),
            self.request_id
        );
        if client.write_all(answer.as_bytes()).await.is_ok() {
            let _ = client.flush().await;
        }
        Outcome::Close
    }
}

/// An upstream failure; `responded`: the client already has part of the answer.
struct Retry {
    failure: Failure,
    responded: bool,
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
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
fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<Response>, ()> {
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

/// The response head for the client: the upstream's status line and fields without the
/// hop-by-hop ones, then ours.
fn client_head(out: &mut Vec<u8>, upstream: &[u8], request_id: &str, close: bool) {
    let mut lines = upstream.split(|&b| b == b'\n');
    if let Some(status_line) = lines.next() {
        let line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
        // Always HTTP/1.1 to the client (the status code and reason as the backend said).
        let rest = line
            .splitn(2, |&b| b == b' ')
            .nth(1)
            .unwrap_or(b"502 Bad Gateway");
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(rest);
        out.extend_from_slice(b"\r\n");
    }
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(line);
        if std::str::from_utf8(name).is_ok_and(|n| dropped_response_header(n.trim())) {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Server: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\nX-Request-ID: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where the response body stands: how much of each read belongs to it, and when it ends.
#[derive(Debug)]
enum BodyState {
    /// Bytes left of a `Content-Length` body (0: done).
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

/// A chunked body, scanned as it passes (the bytes are forwarded unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
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
    fn new(framing: Framing) -> BodyState {
        match framing {
            Framing::None => BodyState::Length(0),
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Chunk::Size(0, false)),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }

    /// Of `data`, how many bytes belong to the body (`None`: malformed) and whether the body
    /// is complete with them.
    fn advance(&mut self, data: &[u8]) -> (Option<usize>, bool) {
        match self {
            BodyState::Length(left) => {
                let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                *left -= take as u64;
                (Some(take), *left == 0)
            }
            BodyState::UntilClose => (Some(data.len()), false),
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

    #[test]
    fn client_heads_drop_hop_by_hop_fields_and_carry_ours() {
        let mut out = Vec::new();
        client_head(
            &mut out,
            b"HTTP/1.0 201 Made\r\nServer: pod\r\nConnection: keep-alive\r\nX-App: 1\r\nKeep-Alive: timeout=5\r\n\r\n",
            "id1",
            true,
        );
        assert_eq!(
            String::from_utf8(out).ok(),
            Some("HTTP/1.1 201 Made\r\nX-App: 1\r\nServer: skiff-ingress\r\nX-Request-ID: id1\r\nConnection: close\r\n\r\n".to_owned())
        );
    }

    #[test]
    fn only_plain_bodyless_http11_requests_are_eligible() {
        let check = |head: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let _ = req.parse(head);
            eligible(&req).map(|r| {
                (
                    r.host.to_owned(),
                    r.client_close,
                    r.request_id.map(str::to_owned),
                )
            })
        };
        assert_eq!(
            check(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("x".into(), false, None))
        );
        assert_eq!(
            check(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: r1\r\n\r\n"),
            Some(("x".into(), true, Some("r1".into())))
        );
        for head in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n",
        ] {
            assert_eq!(check(head), None, "{}", String::from_utf8_lossy(head));
        }
    }
}
