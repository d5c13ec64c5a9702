//! The lean HTTP/1.1 path: the common request (HTTP/1.1 in origin form, any method but
//! CONNECT, no body or one framed by a single `Content-Length` or a lone `chunked` coding,
//! routed to a plain-HTTP backend with endpoints) proxied straight from the head `h1` already
//! read, to a pooled keep-alive upstream connection and back, without pingora's per-request
//! session, header maps and channels. Upgrades (WebSocket) without a body are taken too: after
//! the backend's 101 the two connections are joined byte for byte until both ends close
//! (pingora 0.9 can end such a tunnel the moment it starts, cloudflare/pingora#946). Everything
//! else (`h2c` upgrades, HTTP/1.0, pipelined bytes,
//! other `Expect`s, local answers such as 404/503/308 and 413 by declared length,
//! HTTPS/h2c/gRPC backends) returns [`Outcome::Fallback`] before anything is written and goes
//! through pingora as before.
//!
//! Request bodies are forwarded as framed, byte for byte, before the response is read (as
//! nginx does); `Expect: 100-continue` is answered here; a chunked body over the route's limit
//! gets 413. Upstream reads have the read timeout (then 504). Kept from the pingora path:
//! routing on the newest table, canary draw, P2C over peak-EWMA with
//! `start`/`observe`/`succeed`/`finish`, retries on connect failure or (idempotent requests
//! without a body) a dead connection before any response byte, up to `MAX_TRIES` (`upstream::
//! Attempts`), passive ejection (`penalize`), `X-Forwarded-For/Proto/Host/Port`,
//! `X-Request-ID` (the client's or a new one, also on the response), `Server: skiff-ingress`,
//! hop-by-hop headers dropped, metrics and the access log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pingora::protocols::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::balance::{self, Endpoint};
use crate::metrics::Metrics;
use crate::model::BackendProtocol;
use crate::pool::Pool;
use crate::proxy::{ListenerInfo, SERVER, new_request_id};
use crate::table::{Decision, RouteTable};
use crate::upstream::{
    Attempts, BodyState, Conn, Failure, Forwarding, Framing, Head, Logged, MAX_HEADERS,
    MAX_RESPONSE_HEAD, READ_CHUNK, Retry, dropped_response_header, eq, log_request, parse_response,
    read_some, upstream_head, visible,
};

/// How a request on the lean path ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not for the lean path; nothing was written: serve it through pingora.
    Fallback,
    /// Answered; the client connection may carry the next request.
    KeepAlive,
    /// Answered (or failed); the client connection must be closed.
    Close,
    /// Answered before the request body was read whole: closed after draining the rest.
    Linger,
}

/// The lean path of one listener (both share the pool).
#[derive(Debug)]
pub struct Lean {
    pub(crate) routes: Arc<ArcSwap<RouteTable>>,
    pub(crate) listener: ListenerInfo,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pool: Arc<Pool>,
    /// How long the backend may be silent while a response is awaited (then 504) or streams.
    pub(crate) read_timeout: Duration,
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
    /// `Connection: upgrade` with an `Upgrade` protocol: the backend may switch (101).
    upgrade: bool,
    headers: &'a [httparse::Header<'a>],
    body: Framing,
    /// `Expect: 100-continue`: answered here before the body is read.
    expect_continue: bool,
}

/// The request, if the lean path takes it.
fn eligible<'a>(req: &'a httparse::Request<'a, 'a>) -> Option<Request<'a>> {
    let method = req.method?;
    if req.version != Some(1) || method == "CONNECT" {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let mut host = None;
    let mut request_id = None;
    let mut client_close = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut upgrade = None;
    let mut connection_upgrade = false;
    for h in req.headers.iter() {
        let n = h.name;
        if eq(n, "host") {
            if host.is_some() {
                return None;
            }
            host = Some(visible(h.value)?);
        } else if eq(n, "content-length") {
            // One plain decimal length (repeats, lists and signs: pingora's checks).
            let v = visible(h.value)?.trim();
            if length.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            length = Some(v.parse().ok()?);
        } else if eq(n, "transfer-encoding") {
            // Only a lone `chunked` (other codings, repeats: pingora's path).
            if chunked || !eq(visible(h.value)?.trim(), "chunked") {
                return None;
            }
            chunked = true;
        } else if eq(n, "expect") {
            if expect_continue || !eq(visible(h.value)?.trim(), "100-continue") {
                return None;
            }
            expect_continue = true;
        } else if eq(n, "upgrade") {
            // One protocol list, and not HTTP/2 (h2c's upgrade: pingora's path).
            let v = visible(h.value)?.trim();
            if upgrade.is_some() || v.is_empty() || v.split(',').any(|p| eq(p.trim(), "h2c")) {
                return None;
            }
            upgrade = Some(v);
        } else if eq(n, "http2-settings") {
            return None;
        } else if eq(n, "connection") {
            for token in visible(h.value)?.split(',') {
                let t = token.trim();
                if eq(t, "close") {
                    client_close = true;
                } else if eq(t, "upgrade") {
                    connection_upgrade = true;
                } else if !(t.is_empty() || eq(t, "keep-alive") || eq(t, "te")) {
                    // Upgrades and hop-by-hop headers named by the client: pingora's path.
                    return None;
                }
            }
        } else if eq(n, "x-request-id") {
            request_id = visible(h.value).filter(|v| !v.is_empty() && v.len() <= 200);
        }
    }
    // Both framings at once is how requests are smuggled (RFC 9112 §6.3): pingora refuses it.
    let body = match (length, chunked) {
        (Some(_), true) => return None,
        (Some(0) | None, false) => Framing::None,
        (Some(n), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
    };
    // An upgrade needs both fields (either alone, or one with a body: pingora's path).
    let upgrade = match (upgrade, connection_upgrade) {
        (None, false) => false,
        (Some(_), true) if matches!(body, Framing::None) && !expect_continue => true,
        _ => return None,
    };
    Some(Request {
        method,
        target,
        host: host?,
        request_id,
        client_close,
        upgrade,
        headers: req.headers,
        body,
        expect_continue,
    })
}

impl Lean {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        listener: ListenerInfo,
        metrics: Arc<Metrics>,
        pool: Arc<Pool>,
        read_timeout: Duration,
    ) -> Lean {
        Lean {
            routes,
            listener,
            metrics,
            pool,
            read_timeout,
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
        let head_len = match parsed.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Outcome::Fallback,
        };
        let Some(req) = eligible(&parsed) else {
            return Outcome::Fallback;
        };
        // Body bytes read with the head: all of them must belong to this request (pipelined
        // requests after it: pingora's path).
        let prefix = &head[head_len..];
        let mut body_state = BodyState::new(req.body);
        let mut payload = 0u64;
        let (taken, body_done) = body_state.scan(prefix, |p| payload += p.len() as u64);
        if taken != Some(prefix.len()) {
            return Outcome::Fallback;
        }
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
            // A body declared too large: pingora's 413.
            if let (Some(max), Framing::Length(n)) = (route.max_body, req.body)
                && n > max
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
        upstream_head(
            &mut up_head,
            Head {
                method: req.method,
                target: req.target,
                host: None,
                // `Expect` is answered here (nginx does too): the backend gets the body.
                headers: req
                    .headers
                    .iter()
                    .filter(|h| !eq(h.name, "expect"))
                    .map(|h| (h.name, h.value)),
                // `Upgrade` is passed on as the client sent it.
                extra: req.upgrade.then_some("Connection: upgrade"),
            },
            &Forwarding {
                peer,
                tls: self.listener.tls,
                host: req.host,
                port: self.listener.port,
                request_id: &request_id,
            },
        );
        let mut x = Exchange {
            lean: self,
            req: &req,
            attempts: Attempts::new(
                &self.routes,
                req.host,
                path,
                draw,
                backend,
                // Replayed only without a body (which is read from the client once).
                idempotent(req.method) && matches!(req.body, Framing::None),
            ),
            unread_body: !matches!(req.body, Framing::None) && !body_done,
            max_body: route.max_body,
            body: (!matches!(req.body, Framing::None)).then(|| Body {
                prefix: prefix.to_vec(),
                state: body_state,
                done: body_done,
                payload,
                expect_continue: req.expect_continue,
                max: route.max_body,
            }),
            close,
            request_id: &request_id,
            status: 0,
            error: None,
        };
        let outcome = x.run(client, &up_head, scratch).await;
        scratch.out = up_head;
        let (status, error) = (x.status, x.error);
        log_request(
            &self.metrics,
            &Logged {
                request_id: &request_id,
                method: req.method,
                host: req.host,
                path,
                route: Some(&route),
                backend: x.attempts.backend.as_deref(),
                status,
                started,
                error: error.map(Failure::as_str),
            },
        );
        outcome
    }
}

/// One request's trip upstream and back.
struct Exchange<'a> {
    lean: &'a Lean,
    req: &'a Request<'a>,
    attempts: Attempts<'a>,
    /// The request body, until it went upstream.
    body: Option<Body>,
    /// Part of the request body may still be unread from the client.
    unread_body: bool,
    /// The route's body limit (for the 413's text).
    max_body: Option<u64>,
    close: bool,
    request_id: &'a str,
    status: u16,
    error: Option<Failure>,
}

impl Exchange<'_> {
    async fn run(&mut self, client: &mut Stream, up_head: &[u8], scratch: &mut Scratch) -> Outcome {
        loop {
            let conn = match self.attempts.connect(&self.lean.pool).await {
                Ok(c) => c,
                Err(f) => return self.fail(client, f).await,
            };
            let Conn {
                endpoint,
                tcp,
                reused,
            } = conn;
            let result = self
                .exchange(client, tcp, up_head, &endpoint, scratch)
                .await;
            endpoint.finish();
            match result {
                Ok(outcome) => return outcome,
                Err(r) if self.attempts.failed(endpoint, reused, &r) => {}
                Err(r) if r.responded => {
                    // Part of the answer already went to the client: nothing to retry and
                    // nothing more to say.
                    self.error = Some(r.failure);
                    return Outcome::Close;
                }
                Err(r) => return self.fail(client, r.failure).await,
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
        if let Some(body) = self.body.take() {
            // Sent whole before the response is read, as nginx does.
            if body.send(client, &mut tcp, self.lean.read_timeout).await? {
                // Bytes of a next request came with the body's end: not kept, so the client
                // is told to reconnect.
                self.close = true;
            }
            self.unread_body = false;
        }
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
                Ok(Some(r)) if r.status == 101 && !self.req.upgrade => {
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
            match read_some(&mut tcp, buf, self.lean.read_timeout).await {
                Ok(0) => return Err(before(Failure::ConnectionClosed)),
                Ok(_) => {}
                Err(f) => return Err(before(f)),
            }
        };
        endpoint.observe(sent.elapsed());
        endpoint.succeed();
        self.status = resp.status;
        if resp.status == 101 {
            return Ok(tunnel(
                client,
                tcp,
                &buf[..resp.head_len],
                &buf[resp.head_len..],
                self.request_id,
            )
            .await);
        }
        let until_close = matches!(resp.framing, Framing::UntilClose);
        let close = self.close || until_close;
        let mut out = Vec::with_capacity(resp.head_len + 128);
        let connection = close.then_some("close");
        client_head(&mut out, &buf[..resp.head_len], self.request_id, connection);
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
            let n = match read_some(&mut tcp, buf, self.lean.read_timeout).await {
                Ok(n) => n,
                Err(f) => return Err(responded(f)),
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

    /// Answers 502, 504 or 413 (no response started), with the failure named.
    async fn fail(&mut self, client: &mut Stream, f: Failure) -> Outcome {
        self.error = Some(f);
        if f == Failure::ClientGone {
            self.status = 499;
            return Outcome::Close;
        }
        let (status, body) = f.answer(self.max_body);
        self.status = status;
        let head = if self.req.method == "HEAD" { "" } else { &body };
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nServer: {SERVER}\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: {}\r\nX-Request-ID: {}\r\nConnection: close\r\n\r\n{head}",
            body.len(),
            self.request_id
        );
        if client.write_all(answer.as_bytes()).await.is_ok() {
            let _ = client.flush().await;
        }
        if self.unread_body {
            Outcome::Linger
        } else {
            Outcome::Close
        }
    }
}

/// After the backend's 101: its head (ours added) and the bytes that came with it go to the
/// client, then the two connections are joined until both directions have ended (each end's
/// close is passed on as a shutdown of the other's write side). No idle limit: a quiet
/// WebSocket stays open as long as both ends keep it (nginx closes it after 60 s).
async fn tunnel(
    client: &mut Stream,
    mut tcp: TcpStream,
    head: &[u8],
    early: &[u8],
    request_id: &str,
) -> Outcome {
    let mut out = Vec::with_capacity(head.len() + 128 + early.len());
    client_head(&mut out, head, request_id, Some("upgrade"));
    out.extend_from_slice(early);
    if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
        return Outcome::Close;
    }
    if let Err(e) = tokio::io::copy_bidirectional(client, &mut tcp).await {
        tracing::debug!(request_id, error = %e, "upgraded connection ended");
    }
    Outcome::Close
}

/// RFC 9110 §9.2.2 (CONNECT never reaches here).
fn idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// A request body on its way from the client to the backend, forwarded as framed (length or
/// chunked, byte for byte).
struct Body {
    /// Body bytes that came with the head.
    prefix: Vec<u8>,
    state: BodyState,
    done: bool,
    /// Payload bytes so far (without chunk framing).
    payload: u64,
    expect_continue: bool,
    /// The route's limit on the body (`skiff.dev/proxy-body-size`).
    max: Option<u64>,
}

impl Body {
    /// Streams the body upstream; `Ok(true)` when bytes after its end were read (they are
    /// dropped: the connection must close). Each read of the client gets `timeout`.
    async fn send(
        mut self,
        client: &mut Stream,
        tcp: &mut TcpStream,
        timeout: Duration,
    ) -> Result<bool, Retry> {
        use tokio::io::AsyncReadExt;
        let before = |failure| Retry {
            failure,
            responded: false,
        };
        if self.max.is_some_and(|m| self.payload > m) {
            return Err(before(Failure::BodyTooLarge));
        }
        if !self.prefix.is_empty() {
            tcp.write_all(&self.prefix)
                .await
                .map_err(|_| before(Failure::WriteError))?;
        }
        if self.done {
            return Ok(false);
        }
        if self.expect_continue && self.prefix.is_empty() {
            let _ = client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            client
                .flush()
                .await
                .map_err(|_| before(Failure::ClientGone))?;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // A length-delimited body is read exactly: what follows is the next request's.
            let want = match self.state {
                BodyState::Length(left) => {
                    usize::try_from(left).map_or(READ_CHUNK, |l| l.min(READ_CHUNK))
                }
                _ => READ_CHUNK,
            };
            let n = match tokio::time::timeout(timeout, client.read(&mut buf[..want])).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return Err(before(Failure::ClientGone)),
            };
            let payload = &mut self.payload;
            let (taken, done) = self.state.scan(&buf[..n], |p| *payload += p.len() as u64);
            let Some(taken) = taken else {
                return Err(before(Failure::ClientGone));
            };
            if self.max.is_some_and(|m| self.payload > m) {
                return Err(before(Failure::BodyTooLarge));
            }
            tcp.write_all(&buf[..taken])
                .await
                .map_err(|_| before(Failure::WriteError))?;
            if done {
                return Ok(taken < n);
            }
        }
    }
}

/// The response head for the client: the upstream's status line and fields without the
/// hop-by-hop ones, then ours (`Connection` when given).
fn client_head(out: &mut Vec<u8>, upstream: &[u8], request_id: &str, connection: Option<&str>) {
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
    if let Some(connection) = connection {
        out.extend_from_slice(b"Connection: ");
        out.extend_from_slice(connection.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_heads_drop_hop_by_hop_fields_and_carry_ours() {
        let mut out = Vec::new();
        client_head(
            &mut out,
            b"HTTP/1.0 201 Made\r\nServer: pod\r\nConnection: keep-alive\r\nX-App: 1\r\nKeep-Alive: timeout=5\r\n\r\n",
            "id1",
            Some("close"),
        );
        assert_eq!(
            String::from_utf8(out).ok(),
            Some("HTTP/1.1 201 Made\r\nX-App: 1\r\nServer: skiff-ingress\r\nX-Request-ID: id1\r\nConnection: close\r\n\r\n".to_owned())
        );
    }

    /// `f` of what the lean path makes of `head`, if it takes it.
    fn with_eligible<T>(head: &[u8], f: impl FnOnce(&Request<'_>) -> T) -> Option<T> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let _ = req.parse(head);
        eligible(&req).map(|r| f(&r))
    }

    #[test]
    fn plain_http11_requests_with_unambiguous_framing_are_eligible() {
        let check = |head: &[u8]| {
            with_eligible(head, |r| {
                (
                    r.host.to_owned(),
                    r.client_close,
                    r.request_id.map(str::to_owned),
                    format!("{:?}", r.body),
                    r.expect_continue,
                )
            })
        };
        let none = || "None".to_owned();
        assert_eq!(
            check(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("x".into(), false, None, none(), false))
        );
        assert_eq!(
            check(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: r1\r\n\r\n"),
            Some(("x".into(), true, Some("r1".into()), none(), false))
        );
        assert_eq!(
            check(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"),
            Some(("x".into(), false, None, "Length(12)".into(), false))
        );
        assert_eq!(
            check(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            Some(("x".into(), false, None, none(), false))
        );
        assert_eq!(
            check(b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n"),
            Some(("x".into(), false, None, "Chunked".into(), true))
        );
        for head in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: something\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n",
        ] {
            assert_eq!(check(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn upgrades_without_a_body_are_eligible() {
        let upgrade = |head: &[u8]| with_eligible(head, |r| r.upgrade);
        assert_eq!(
            upgrade(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"),
            Some(true)
        );
        assert_eq!(upgrade(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Some(false));
        for head in [
            // HTTP/2's upgrade, either field alone, two protocol fields, a body.
            &b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert_eq!(upgrade(head), None, "{}", String::from_utf8_lossy(head));
        }
    }
}
