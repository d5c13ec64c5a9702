//! HTTP/2 client connections (TLS with ALPN h2, or h2c) served by our own path on the `h2`
//! crate instead of pingora: each stream is routed like `lean`'s requests and forwarded as an
//! HTTP/1.1 request over the lean keep-alive pool (HTTP backends, bodies streamed both ways)
//! or as a stream on a multiplexed upstream h2c connection of `h2pool` (GRPC/H2C backends:
//! trailers, `grpc-timeout`, resets passed through). 400/404/503/308/413 and 502/504 are
//! answered here. Whole connections go to pingora instead while the table routes anything to
//! an HTTPS backend (`RouteTable::has_tls_upstreams`, decided in `server` per connection); a
//! stream that still meets one (the table changed mid-connection) gets `421 Misdirected
//! Request`, which tells the client to retry on a new connection.

use std::future::poll_fn;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::balance;
use crate::h1::Limits;
use crate::h2pool::H2Pool;
use crate::lean::Lean;
use crate::model::BackendProtocol;
use crate::proxy::{
    SERVER, new_request_id, not_found_text, parse_grpc_timeout, redirect_location, too_large_text,
    unavailable_text,
};
use crate::table::{Backend, Decision, Route};
use crate::upstream::{
    Attempts, BodyState, Conn, Failure, Forwarding, Framing, Head, Logged, MAX_HEADERS,
    MAX_RESPONSE_HEAD, READ_CHUNK, Retry, dropped_response_header, log_request, parse_response,
    read_some, upstream_head,
};

/// Concurrent streams a client may open on one connection.
const MAX_STREAMS: u32 = 256;
/// Flow-control windows announced to clients: request bodies of that size flow without a
/// WINDOW_UPDATE round trip.
const STREAM_WINDOW: u32 = 1 << 20;
const CONN_WINDOW: u32 = 4 << 20;

/// What every stream of the h2 path needs.
#[derive(Debug)]
pub struct H2Path {
    pub(crate) lean: Arc<Lean>,
    pub(crate) pool: Arc<H2Pool>,
}

/// Serves one HTTP/2 client connection until the client or the server ends it: the handshake
/// within the header timeout, streams polled by this task, GOAWAY on shutdown or after `idle`
/// without streams.
pub(crate) async fn serve<T>(
    path: Arc<H2Path>,
    io: T,
    peer: Option<IpAddr>,
    limits: &Limits,
    idle: Duration,
    shutdown: &watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_STREAMS)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(u32::try_from(limits.max_header_bytes * 2).unwrap_or(u32::MAX));
    let mut conn = match tokio::time::timeout(
        limits.header_timeout,
        builder.handshake::<T, Bytes>(io),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "h2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let mut shutdown = shutdown.clone();
    let mut closing = false;
    // The streams run inside this task, not one task each: a stream's response frames are
    // queued for the connection, which this same task flushes on its next poll, so a request
    // costs no task spawn and no cross-task wake-ups (the connection's streams share one core,
    // as each of nginx's connections does).
    let mut streams = FuturesUnordered::new();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        if !closing && *shutdown.borrow() {
            closing = true;
            conn.graceful_shutdown();
        }
        // Streams first: every stream that can finish does before the connection is polled,
        // and the connection's poll is what writes the queued frames, so the answers of all
        // the backends that replied meanwhile leave in one TLS write instead of one each.
        let next = tokio::select! {
            biased;
            Some(()) = streams.next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                continue;
            }
            r = conn.accept() => r,
            r = shutdown.changed(), if !closing => {
                if r.is_err() {
                    closing = true;
                    conn.graceful_shutdown();
                }
                continue;
            }
            () = &mut idle_timer, if !closing && streams.is_empty() => {
                closing = true;
                conn.graceful_shutdown();
                continue;
            }
        };
        match next {
            Some(Ok((req, respond))) => {
                let path = path.clone();
                streams.push(async move { stream(&path, req, respond, peer).await });
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "h2 client connection failed");
                break;
            }
            None => break,
        }
    }
    // The connection is gone: what streams are left end on their own (their sends fail) and
    // still log.
    while streams.next().await.is_some() {}
}

/// One stream's request as routed.
struct Req<'a> {
    method: &'a Method,
    host: &'a str,
    path: &'a str,
    request_id: &'a str,
    route: Option<Arc<Route>>,
    backend: Option<Arc<Backend>>,
    status: u16,
    error: Option<Failure>,
}

async fn stream(
    h2: &H2Path,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Option<IpAddr>,
) {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(new_request_id, str::to_owned);
    let host = match parts.headers.get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => Some(parts.uri.authority().map_or("", |a| a.as_str())),
    };
    let mut r = Req {
        method: &parts.method,
        host: host.unwrap_or(""),
        path: parts.uri.path(),
        request_id: &request_id,
        route: None,
        backend: None,
        status: 0,
        error: None,
    };
    serve_stream(h2, &mut r, &parts, host, body, &mut respond, peer).await;
    log_request(
        &h2.lean.metrics,
        &Logged {
            request_id: &request_id,
            method: parts.method.as_str(),
            host: r.host,
            path: r.path,
            route: r.route.as_deref(),
            backend: r.backend.as_deref(),
            status: r.status,
            started,
            error: r.error.map(Failure::as_str),
        },
    );
}

async fn serve_stream(
    h2: &H2Path,
    r: &mut Req<'_>,
    parts: &http::request::Parts,
    host: Option<&str>,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    peer: Option<IpAddr>,
) {
    let lean = &h2.lean;
    let Some(host) = host else {
        let text = "400 Bad Request: invalid Host header (not visible ASCII)\n".to_owned();
        return local(r, respond, 400, text, None);
    };
    let route = match lean.routes.load().lookup(host, r.path) {
        Decision::Route(route) => route.clone(),
        Decision::NotFound => return local(r, respond, 404, not_found_text(host, r.path), None),
    };
    r.route = Some(route.clone());
    if route.redirect_https && !lean.listener.tls {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let location = redirect_location(&lean.listener, host, pq);
        let text = format!("308 Permanent Redirect to {location}\n");
        return local(r, respond, 308, text, Some(&location));
    }
    if route.protocol == BackendProtocol::Https {
        let text = "421 Misdirected Request: retry on a new connection\n".to_owned();
        return local(r, respond, 421, text, None);
    }
    let draw = (balance::random_u64() % 100) as u8;
    let backend = route.choose_backend(draw).clone();
    r.backend = Some(backend.clone());
    if backend.endpoints.is_empty() {
        return local(r, respond, 503, unavailable_text(&backend), None);
    }
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                let text = "400 Bad Request: invalid Content-Length\n".to_owned();
                return local(r, respond, 400, text, None);
            }
        },
    };
    if let Some(max) = route.max_body
        && declared.is_some_and(|n| n > max)
    {
        return local(r, respond, 413, too_large_text(max), None);
    }
    let fwd = Forwarding {
        peer,
        tls: lean.listener.tls,
        host,
        port: lean.listener.port,
        request_id: r.request_id,
    };
    match route.protocol {
        BackendProtocol::Http => {
            to_h1(lean, r, parts, declared, body, respond, &fwd, draw, backend).await;
        }
        // Boxed: its state (an upstream h2 stream, deadlines) would make every stream's
        // future, HTTP ones included, as large as its own (moved on each push).
        _ => Box::pin(to_h2(h2, r, parts, body, respond, &fwd, draw, backend)).await,
    }
}

/// Answers locally with a plain-text body.
fn local(
    r: &mut Req<'_>,
    respond: &mut SendResponse<Bytes>,
    status: u16,
    text: String,
    location: Option<&str>,
) {
    r.status = status;
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    ours(h, r.request_id);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    if let Some(l) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, l);
    }
    let head = *r.method == Method::HEAD;
    match respond.send_response(resp, head) {
        Ok(mut s) if !head => {
            // Small: within any flow-control window worth having; h2 buffers it otherwise.
            let _ = s.send_data(Bytes::from(text), true);
        }
        _ => {}
    }
}

/// The failure's answer (502/504/413), or a reset when the client is gone.
fn fail(r: &mut Req<'_>, respond: &mut SendResponse<Bytes>, f: Failure) {
    r.error = Some(f);
    if f == Failure::ClientGone {
        r.status = 499;
        return;
    }
    let (status, text) = f.answer(r.route.as_ref().and_then(|r| r.max_body));
    local(r, respond, status, text, None);
}

/// Request fields an HTTP/1.1 upstream gets besides `Host` (written first, from
/// `:authority`) and cookies (joined): `dropped_request_header` drops the rest.
fn h1_field(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host" | "cookie" | "transfer-encoding" | "upgrade"
    )
}

#[allow(clippy::too_many_arguments)]
async fn to_h1(
    lean: &Lean,
    r: &mut Req<'_>,
    parts: &http::request::Parts,
    declared: Option<u64>,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    fwd: &Forwarding<'_>,
    draw: u8,
    backend: Arc<Backend>,
) {
    let has_body = !body.is_end_stream();
    // HTTP/2 splits cookies into fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
    let mut extra = String::new();
    let mut cookies = parts.headers.get_all(header::COOKIE).iter().peekable();
    if cookies.peek().is_some() {
        extra.push_str("Cookie: ");
        for (i, c) in cookies.enumerate() {
            if i > 0 {
                extra.push_str("; ");
            }
            extra.push_str(&String::from_utf8_lossy(c.as_bytes()));
        }
    }
    let chunked = has_body && declared.is_none();
    if chunked {
        if !extra.is_empty() {
            extra.push_str("\r\n");
        }
        extra.push_str("Transfer-Encoding: chunked");
    }
    let mut head = Vec::with_capacity(512);
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    upstream_head(
        &mut head,
        Head {
            method: parts.method.as_str(),
            target,
            host: Some(fwd.host),
            headers: parts
                .headers
                .iter()
                .filter(|(n, _)| h1_field(n))
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
            extra: (!extra.is_empty()).then_some(extra.as_str()),
        },
        fwd,
    );
    let replayable = parts.method.is_idempotent() && !has_body;
    let max_body = r.route.as_ref().and_then(|r| r.max_body);
    let mut x = H1Exchange {
        lean,
        head_request: parts.method == Method::HEAD,
        request_id: r.request_id,
        body: has_body.then_some(body),
        chunked,
        max_body,
        buf: Vec::new(),
    };
    let mut attempts = Attempts::new(&lean.routes, fwd.host, r.path, draw, backend, replayable);
    loop {
        let Conn {
            endpoint,
            tcp,
            reused,
        } = match attempts.connect(&lean.pool).await {
            Ok(c) => c,
            Err(f) => {
                r.backend = attempts.backend.clone();
                return fail(r, respond, f);
            }
        };
        let result = x.run(tcp, &head, &endpoint, respond, &mut r.status).await;
        endpoint.finish();
        r.backend = attempts.backend.clone();
        match result {
            Ok(()) => return,
            Err(e) if attempts.failed(endpoint, reused, &e) => {}
            Err(e) if e.responded => {
                r.error = Some(e.failure);
                return;
            }
            Err(e) => return fail(r, respond, e.failure),
        }
    }
}

/// One HTTP/2 stream's trip to an HTTP/1.1 upstream and back.
struct H1Exchange<'a> {
    lean: &'a Lean,
    head_request: bool,
    request_id: &'a str,
    /// The request body, until it went upstream.
    body: Option<RecvStream>,
    chunked: bool,
    max_body: Option<u64>,
    buf: Vec<u8>,
}

impl H1Exchange<'_> {
    async fn run(
        &mut self,
        mut tcp: tokio::net::TcpStream,
        head: &[u8],
        endpoint: &crate::balance::Endpoint,
        respond: &mut SendResponse<Bytes>,
        status: &mut u16,
    ) -> Result<(), Retry> {
        let before = |failure| Retry {
            failure,
            responded: false,
        };
        let sent = Instant::now();
        tcp.write_all(head)
            .await
            .map_err(|_| before(Failure::WriteError))?;
        if let Some(body) = self.body.take() {
            // Sent whole before the response is read, as nginx does (`proxy_request_buffering`
            // streams here instead of spooling).
            send_h1_body(&mut tcp, body, self.chunked, self.max_body).await?;
        }
        let buf = &mut self.buf;
        buf.clear();
        let read_timeout = self.lean.read_timeout;
        let resp = loop {
            match parse_response(buf, self.head_request) {
                Ok(Some(r)) if (100..200).contains(&r.status) && r.status != 101 => {
                    buf.drain(..r.head_len);
                    continue;
                }
                Ok(Some(r)) if r.status == 101 => return Err(before(Failure::InvalidHttpHeader)),
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
            // The client may give up meanwhile: then so do we.
            let n = tokio::select! {
                n = read_some(&mut tcp, buf, read_timeout) => n,
                _ = poll_fn(|cx| respond.poll_reset(cx)) => Err(Failure::ClientGone),
            };
            match n {
                Ok(0) => return Err(before(Failure::ConnectionClosed)),
                Ok(_) => {}
                Err(f) => return Err(before(f)),
            }
        };
        endpoint.observe(sent.elapsed());
        endpoint.succeed();
        *status = resp.status;
        let head_end = resp.head_len;
        let response = client_response(&buf[..head_end], self.request_id)
            .ok_or(before(Failure::InvalidHttpHeader))?;
        let empty = matches!(resp.framing, Framing::None | Framing::Length(0));
        let responded = |failure| Retry {
            failure,
            responded: true,
        };
        let mut out = match respond.send_response(response, empty) {
            Ok(s) => s,
            Err(_) => return Err(responded(Failure::ClientGone)),
        };
        let mut state = BodyState::new(resp.framing);
        let mut payload = BytesMut::new();
        let (taken, mut done) = state.scan(&buf[head_end..], |p| payload.extend_from_slice(p));
        let Some(taken) = taken else {
            out.send_reset(Reason::INTERNAL_ERROR);
            return Err(responded(Failure::InvalidHttpHeader));
        };
        let mut reusable = resp.reusable && head_end + taken == buf.len();
        if empty {
            if reusable {
                self.lean.pool.put(endpoint.addr, tcp);
            }
            return Ok(());
        }
        let until_close = matches!(resp.framing, Framing::UntilClose);
        loop {
            if (!payload.is_empty() || done)
                && send(&mut out, payload.split().freeze(), done)
                    .await
                    .is_err()
            {
                return Err(responded(Failure::ClientGone));
            }
            if done {
                break;
            }
            buf.clear();
            if buf.capacity() < READ_CHUNK {
                buf.reserve(READ_CHUNK);
            }
            let n = match read_some(&mut tcp, buf, read_timeout).await {
                Ok(n) => n,
                Err(f) => {
                    out.send_reset(Reason::INTERNAL_ERROR);
                    return Err(responded(f));
                }
            };
            if n == 0 {
                if until_close {
                    reusable = false;
                    done = true;
                    continue;
                }
                out.send_reset(Reason::INTERNAL_ERROR);
                return Err(responded(Failure::ConnectionClosed));
            }
            let (taken, d) = state.scan(buf, |p| payload.extend_from_slice(p));
            let Some(taken) = taken else {
                out.send_reset(Reason::INTERNAL_ERROR);
                return Err(responded(Failure::InvalidHttpHeader));
            };
            if taken < buf.len() {
                reusable = false;
            }
            done = d;
        }
        if reusable {
            self.lean.pool.put(endpoint.addr, tcp);
        }
        Ok(())
    }
}

/// Streams the client's request body upstream: as is with a `Content-Length`, else chunked.
async fn send_h1_body(
    tcp: &mut tokio::net::TcpStream,
    mut body: RecvStream,
    chunked: bool,
    max: Option<u64>,
) -> Result<(), Retry> {
    let before = |failure| Retry {
        failure,
        responded: false,
    };
    let mut total = 0u64;
    while let Some(data) = body.data().await {
        let data = data.map_err(|_| before(Failure::ClientGone))?;
        let _ = body.flow_control().release_capacity(data.len());
        total += data.len() as u64;
        if max.is_some_and(|m| total > m) {
            return Err(before(Failure::BodyTooLarge));
        }
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            tcp.write_all(size.as_bytes())
                .await
                .map_err(|_| before(Failure::WriteError))?;
        }
        tcp.write_all(&data)
            .await
            .map_err(|_| before(Failure::WriteError))?;
        if chunked {
            tcp.write_all(b"\r\n")
                .await
                .map_err(|_| before(Failure::WriteError))?;
        }
    }
    if chunked {
        tcp.write_all(b"0\r\n\r\n")
            .await
            .map_err(|_| before(Failure::WriteError))?;
    }
    Ok(())
}

/// The HTTP/2 response for an HTTP/1.1 response head: status and fields without the
/// hop-by-hop ones and those HTTP/2 forbids, then ours.
fn client_response(head: &[u8], request_id: &str) -> Option<Response<()>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(head).ok()?;
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::from_u16(parsed.code?).ok()?;
    let map = resp.headers_mut();
    for h in parsed.headers.iter() {
        if dropped_response_header(h.name)
            || ["transfer-encoding", "upgrade", "te", "trailer"]
                .iter()
                .any(|d| h.name.eq_ignore_ascii_case(d))
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(n, v);
        }
    }
    ours(map, request_id);
    Some(resp)
}

/// `Server` and `X-Request-ID` on every response.
fn ours(map: &mut HeaderMap, request_id: &str) {
    map.insert(header::SERVER, HeaderValue::from_static(SERVER));
    if let Some(id) = request_id_value(request_id) {
        map.insert("x-request-id", id);
    }
}

/// An `X-Request-ID` value for HPACK: marked never-indexed. Every value is new, so indexing
/// it (h2's default for a field not in the static table) would insert one entry per message
/// into the connection's 4 KiB dynamic table, evicting the fields that do repeat (`server`,
/// `content-type`, ...), and make every later lookup of the name walk a chain of stale ids.
fn request_id_value(id: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(id).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Sends `data` on `out` as the peer's flow-control window allows (h2 would buffer it all).
async fn send(out: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), h2::Error> {
    if data.is_empty() {
        return out.send_data(data, end);
    }
    while !data.is_empty() {
        out.reserve_capacity(data.len());
        let cap = match poll_fn(|cx| out.poll_capacity(cx)).await {
            Some(c) => c?,
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        out.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// Request fields an HTTP/2 upstream does not get: those the proxy sets itself (`h2` has
/// already refused connection-specific ones from the client).
fn h2_dropped(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port" | "x-request-id"
    )
}

/// Forwards the stream to a GRPC/H2C backend over a pooled multiplexed h2c connection.
#[allow(clippy::too_many_arguments)]
async fn to_h2(
    h2: &H2Path,
    r: &mut Req<'_>,
    parts: &http::request::Parts,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
    fwd: &Forwarding<'_>,
    draw: u8,
    backend: Arc<Backend>,
) {
    let lean = &h2.lean;
    let started = Instant::now();
    let grpc = r
        .route
        .as_ref()
        .is_some_and(|r| r.protocol == BackendProtocol::Grpc);
    let deadline = parts
        .headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .and_then(|t| started.checked_add(t))
        .map(tokio::time::Instant::from_std);
    // The upstream request: the client's, with our forwarding fields.
    let mut up = Request::new(());
    *up.method_mut() = parts.method.clone();
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(fwd.host)
        .path_and_query(pq)
        .build();
    let Ok(uri) = uri else {
        let text = "400 Bad Request: invalid :authority\n".to_owned();
        return local(r, respond, 400, text, None);
    };
    *up.uri_mut() = uri;
    let h = up.headers_mut();
    for (n, v) in parts.headers.iter() {
        if !h2_dropped(n) && n != header::HOST {
            h.append(n.clone(), v.clone());
        }
    }
    let mut xff = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(ip) = fwd.peer {
        if !xff.is_empty() {
            xff.push_str(", ");
        }
        xff.push_str(&ip.to_string());
    }
    if let Ok(v) = HeaderValue::from_str(&xff)
        && !xff.is_empty()
    {
        h.insert("x-forwarded-for", v);
    }
    let proto = if fwd.tls { "https" } else { "http" };
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(fwd.host) {
        h.insert("x-forwarded-host", v);
    }
    h.insert("x-forwarded-port", HeaderValue::from(fwd.port));
    if let Some(v) = request_id_value(fwd.request_id) {
        h.insert("x-request-id", v);
    }
    let end = body.is_end_stream();
    // A stream the backend refused (REFUSED_STREAM, or a connection gone before it went out)
    // was not processed: retried on another endpoint unless a body already went.
    let mut attempts = Attempts::new(&lean.routes, fwd.host, r.path, draw, backend, true);
    let mut body = Some(body);
    let max_body = r.route.as_ref().and_then(|r| r.max_body);
    loop {
        let Some((endpoint, _)) = attempts.next().await else {
            r.backend = attempts.backend.clone();
            return fail(r, respond, Failure::ConnectError);
        };
        r.backend = attempts.backend.clone();
        let (send_req, reused) = match h2.pool.get(endpoint.addr).await {
            Ok(s) => s,
            Err(f) => {
                if attempts.connect_failed(&endpoint) {
                    continue;
                }
                return fail(r, respond, f);
            }
        };
        let retry = |f| Retry {
            failure: f,
            responded: false,
        };
        let sent = Instant::now();
        let ready = match send_req.ready().await {
            Ok(s) => s,
            Err(_) => {
                // The connection died while idle: forgotten, retried on a fresh one.
                h2.pool.discard(endpoint.addr);
                endpoint.finish();
                if attempts.failed(endpoint, reused, &retry(Failure::ConnectionClosed)) {
                    continue;
                }
                return fail(r, respond, Failure::ConnectionClosed);
            }
        };
        let mut ready = ready;
        let (resp_fut, up_send) = match ready.send_request(clone_request(&up), end) {
            Ok(x) => x,
            Err(_) => {
                h2.pool.discard(endpoint.addr);
                endpoint.finish();
                if attempts.failed(endpoint, reused, &retry(Failure::ConnectionClosed)) {
                    continue;
                }
                return fail(r, respond, Failure::ConnectionClosed);
            }
        };
        // The request body flows beside the response (bidirectional streams).
        let pump = match body.take() {
            Some(b) if !end => Some(AbortOnDrop(tokio::spawn(pump_body(b, up_send, max_body)))),
            _ => None,
        };
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                // gRPC calls may take as long as they like without a deadline; plain h2c
                // backends get the read timeout for their response head.
                None if grpc => std::future::pending().await,
                None => tokio::time::sleep(lean.read_timeout).await,
            }
        };
        let resp = tokio::select! {
            r = resp_fut => Ok(r),
            _ = wait => Err(Failure::ReadTimedout),
            _ = poll_fn(|cx| respond.poll_reset(cx)) => Err(Failure::ClientGone),
        };
        let resp = match resp {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                endpoint.finish();
                let refused = e.reason() == Some(Reason::REFUSED_STREAM);
                if refused && pump.is_none() {
                    if attempts.failed(endpoint, false, &retry(Failure::ConnectionClosed)) {
                        continue;
                    }
                } else if e.is_remote() && e.is_reset() {
                    // The backend reset the stream: so is the client's (gRPC maps the reason).
                    r.error = Some(Failure::ConnectionClosed);
                    r.status = 0;
                    respond.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                    return;
                } else {
                    endpoint.penalize();
                    if e.is_go_away() || e.is_io() {
                        h2.pool.discard(endpoint.addr);
                    }
                }
                return fail(r, respond, Failure::ConnectionClosed);
            }
            Err(Failure::ReadTimedout) if grpc && deadline.is_some() => {
                endpoint.finish();
                return deadline_exceeded(r, respond);
            }
            Err(f) => {
                endpoint.finish();
                if f == Failure::ClientGone {
                    r.error = Some(f);
                    r.status = 499;
                    return;
                }
                return fail(r, respond, f);
            }
        };
        endpoint.observe(sent.elapsed());
        endpoint.succeed();
        let result = relay_response(r, resp, respond, deadline).await;
        endpoint.finish();
        drop(pump);
        if let Err(f) = result {
            r.error = Some(f);
        }
        return;
    }
}

/// A task aborted when its handle is dropped (the request body pump of a finished stream).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn clone_request(up: &Request<()>) -> Request<()> {
    let mut r = Request::new(());
    *r.method_mut() = up.method().clone();
    *r.uri_mut() = up.uri().clone();
    *r.headers_mut() = up.headers().clone();
    r
}

/// Client body → upstream stream, then the client's trailers; the upstream stream is reset
/// when the client's fails or goes over the route's body limit.
async fn pump_body(mut body: RecvStream, mut up: SendStream<Bytes>, max: Option<u64>) {
    let mut total = 0u64;
    while let Some(data) = body.data().await {
        let Ok(data) = data else {
            up.send_reset(Reason::CANCEL);
            return;
        };
        let n = data.len();
        total += n as u64;
        if max.is_some_and(|m| total > m) {
            up.send_reset(Reason::CANCEL);
            return;
        }
        if send(&mut up, data, false).await.is_err() {
            return;
        }
        // Credit the client only once the bytes went on: backpressure end to end.
        let _ = body.flow_control().release_capacity(n);
    }
    match body.trailers().await {
        Ok(Some(t)) => {
            let _ = up.send_trailers(t);
        }
        Ok(None) => {
            let _ = up.send_data(Bytes::new(), true);
        }
        Err(_) => up.send_reset(Reason::CANCEL),
    }
}

/// The backend's response, body and trailers to the client; resets passed on both ways.
async fn relay_response(
    r: &mut Req<'_>,
    resp: Response<RecvStream>,
    respond: &mut SendResponse<Bytes>,
    deadline: Option<tokio::time::Instant>,
) -> Result<(), Failure> {
    let (mut head, mut body) = resp.into_parts();
    r.status = head.status.as_u16();
    ours(&mut head.headers, r.request_id);
    let end = body.is_end_stream();
    let mut out = respond
        .send_response(Response::from_parts(head, ()), end)
        .map_err(|_| Failure::ClientGone)?;
    if end {
        return Ok(());
    }
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        let next = tokio::select! {
            d = body.data() => d,
            _ = &mut until => {
                // The call's time ran out mid-answer: cancelled both ways.
                out.send_reset(Reason::CANCEL);
                return Err(Failure::ReadTimedout);
            }
            reason = poll_fn(|cx| out.poll_reset(cx)) => {
                let _ = reason;
                return Err(Failure::ClientGone);
            }
        };
        match next {
            Some(Ok(data)) => {
                let n = data.len();
                if send(&mut out, data, false).await.is_err() {
                    return Err(Failure::ClientGone);
                }
                let _ = body.flow_control().release_capacity(n);
            }
            Some(Err(e)) => {
                out.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                return Err(Failure::ReadError);
            }
            None => break,
        }
    }
    match body.trailers().await {
        Ok(Some(t)) => out.send_trailers(t).map_err(|_| Failure::ClientGone),
        Ok(None) => out
            .send_data(Bytes::new(), true)
            .map_err(|_| Failure::ClientGone),
        Err(e) => {
            out.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
            Err(Failure::ReadError)
        }
    }
}

/// A call whose `grpc-timeout` ran out before the backend answered: a trailers-only
/// response with DEADLINE_EXCEEDED (the upstream stream is cancelled as its handles drop).
fn deadline_exceeded(r: &mut Req<'_>, respond: &mut SendResponse<Bytes>) {
    r.status = 200;
    r.error = Some(Failure::ReadTimedout);
    let mut resp = Response::new(());
    let h = resp.headers_mut();
    ours(h, r.request_id);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static("4"));
    h.insert(
        "grpc-message",
        HeaderValue::from_static(
            "deadline exceeded: no answer from the backend within the grpc-timeout",
        ),
    );
    let _ = respond.send_response(resp, true);
}
