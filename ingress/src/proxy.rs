//! The pingora `ProxyHttp` implementation: each request is routed by the current
//! `RouteTable` (one `ArcSwap` load), answered locally (404, 503, 308 to HTTPS) or sent to an
//! endpoint chosen per request by P2C over peak-EWMA.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use crate::balance::{self, Endpoint};
use crate::metrics::Metrics;
use crate::model::BackendProtocol;
use crate::table::{Backend, Decision, Route, RouteTable, normalize_host};

/// The `Server` response header.
pub const SERVER: &str = "skiff-ingress";
/// Upstream connect timeout: a dead pod is left fast and the request retried elsewhere.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an idle pooled upstream connection is kept.
pub(crate) const UPSTREAM_IDLE: Duration = Duration::from_secs(60);
/// Concurrent streams per upstream HTTP/2 connection before another is opened.
const H2_STREAMS: usize = 100;
/// Upstream attempts per request (idempotent requests only, before any response header):
/// a pod that stops may refuse, reset or close several pooled connections at once.
pub(crate) const MAX_TRIES: u32 = 4;
/// A retry that finds no endpoint it has not tried yet waits this long for the route table to
/// change (the EndpointSlice update that removes a stopped pod is usually on its way), up to
/// [`RETRY_WAITS`] times.
const RETRY_WAIT: Duration = Duration::from_millis(100);
const RETRY_WAITS: u32 = 5;

/// Which listener a proxy instance serves.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub tls: bool,
    /// The port clients reach this listener on (`X-Forwarded-Port`).
    pub port: u16,
    /// The port clients reach HTTPS on, for the redirect's `Location` (443 is left out).
    pub https_port: u16,
}

/// One proxy per listener; both read the same route table.
#[derive(Debug)]
pub struct IngressProxy {
    routes: Arc<ArcSwap<RouteTable>>,
    listener: ListenerInfo,
    metrics: Arc<Metrics>,
}

impl IngressProxy {
    pub fn new(
        routes: Arc<ArcSwap<RouteTable>>,
        listener: ListenerInfo,
        metrics: Arc<Metrics>,
    ) -> IngressProxy {
        IngressProxy {
            routes,
            listener,
            metrics,
        }
    }
}

/// Per-request state.
#[derive(Debug, Default)]
pub struct RequestCtx {
    route: Option<Arc<Route>>,
    /// The route's backend, or its canary's, drawn once per request.
    backend: Option<Arc<Backend>>,
    endpoint: Option<Arc<Endpoint>>,
    sent: Option<Instant>,
    started: Option<Instant>,
    tries: u32,
    /// Endpoints that failed this request: a retry picks another.
    tried: Vec<std::net::SocketAddr>,
    /// An upstream response header arrived: from then on nothing is retried.
    responded: bool,
    /// When the request's `grpc-timeout` runs out: the upstream deadline.
    grpc_deadline: Option<Instant>,
    /// Host and path as routed, and the canary draw: a retry routes again on the newest table.
    host: String,
    path: String,
    draw: u8,
    body_bytes: u64,
    request_id: String,
    /// Status of a locally generated response (404, 503, 308).
    local_status: Option<u16>,
}

impl RequestCtx {
    fn release_endpoint(&mut self) {
        if let Some(ep) = self.endpoint.take() {
            ep.finish();
        }
    }
}

fn request_host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// A new request id: 128 random bits in hex, unless the client sent one.
pub(crate) fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}{:016x}",
        balance::random_u64(),
        balance::random_u64() ^ n
    )
}

/// The body of a 404: no rule for this host and path.
pub(crate) fn not_found_text(host: &str, path: &str) -> String {
    format!(
        "404 Not Found: no Ingress rule matches host {:?} path {path:?}\n",
        normalize_host(host)
    )
}

/// The body of a 503: the backend has no ready endpoint.
pub(crate) fn unavailable_text(backend: &Backend) -> String {
    let why = backend
        .unavailable
        .clone()
        .unwrap_or_else(|| format!("service {} has no endpoints", backend.name));
    format!("503 Service Unavailable: {why}\n")
}

/// The body of a 413 by declared length.
pub(crate) fn too_large_text(max: u64) -> String {
    format!("413 Payload Too Large: the limit of this route is {max} bytes\n")
}

/// Where a plain-HTTP request for a TLS host is redirected (`pq`: path and query).
pub(crate) fn redirect_location(listener: &ListenerInfo, host: &str, pq: &str) -> String {
    let host = normalize_host(host);
    let port = match listener.https_port {
        443 => String::new(),
        p => format!(":{p}"),
    };
    format!("https://{host}{port}{pq}")
}

async fn respond_text(
    session: &mut Session,
    status: u16,
    body: String,
    location: Option<&str>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::SERVER, SERVER)?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    if let Some(l) = location {
        resp.insert_header(http::header::LOCATION, l)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
    }
    Ok(())
}

/// The endpoint of a retry: the request routed again on the newest table (an endpoint that
/// stopped may be gone from it, a new one there), avoiding endpoints that already refused this
/// request. With none left, waits a little for the table to change; in the end any endpoint
/// (the caller's last try fails as it would have). `backend` is updated to the one picked from.
pub(crate) async fn retry_endpoint(
    routes: &ArcSwap<RouteTable>,
    host: &str,
    path: &str,
    draw: u8,
    backend: &mut Option<Arc<Backend>>,
    tried: &[std::net::SocketAddr],
) -> Option<Arc<Endpoint>> {
    let mut waits = 0;
    loop {
        if let Decision::Route(r) = routes.load().lookup(host, path) {
            let b = r.choose_backend(draw);
            if !b.endpoints.is_empty() {
                *backend = Some(b.clone());
            }
        }
        let backend = backend.as_ref()?;
        let untried: Vec<&Arc<Endpoint>> = backend
            .endpoints
            .iter()
            .filter(|e| !tried.contains(&e.addr))
            .collect();
        if let Some(ep) = balance::pick(&untried) {
            return Some(Arc::clone(ep));
        }
        if waits == RETRY_WAITS {
            return balance::pick(&backend.endpoints).cloned();
        }
        waits += 1;
        tokio::time::sleep(RETRY_WAIT).await;
    }
}

/// A `grpc-timeout` value (gRPC over HTTP/2: at most 8 digits and a unit of H, M, S, m, u
/// or n), or `None` for anything else (then no deadline is enforced).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let digits = v.get(..v.len() - unit.len_utf8())?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC answer to a call whose `grpc-timeout` ran out: a trailers-only response (HTTP 200,
/// one HEADERS frame ending the stream) with status DEADLINE_EXCEEDED.
async fn respond_grpc_deadline_exceeded(session: &mut Session) -> Result<()> {
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(http::header::SERVER, SERVER)?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    resp.insert_header("grpc-status", "4")?;
    resp.insert_header(
        "grpc-message",
        "deadline exceeded: no answer from the backend within the grpc-timeout",
    )?;
    session.set_keepalive(None);
    match session.as_downstream_mut() {
        // `Session::write_response_header` drops its end-of-stream flag for HTTP/2: the h2
        // session itself puts END_STREAM on the HEADERS frame.
        ServerSession::H2(h2) => h2.write_response_header(Box::new(resp), true),
        _ => {
            resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
            session.write_response_header(Box::new(resp), true).await
        }
    }
}

#[async_trait]
impl ProxyHttp for IngressProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.started = Some(Instant::now());
        let req = session.req_header();
        ctx.request_id = req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 200)
            .map_or_else(new_request_id, str::to_owned);
        if req
            .headers
            .get(http::header::HOST)
            .is_some_and(|h| h.to_str().is_err())
        {
            ctx.local_status = Some(400);
            let body = "400 Bad Request: invalid Host header (not visible ASCII)\n".to_owned();
            respond_text(session, 400, body, None).await?;
            return Ok(true);
        }
        let host = request_host(req).to_owned();
        let path = req.uri.path().to_owned();
        let table = self.routes.load();
        let route = match table.lookup(&host, &path) {
            Decision::Route(r) => r.clone(),
            Decision::NotFound => {
                ctx.local_status = Some(404);
                respond_text(session, 404, not_found_text(&host, &path), None).await?;
                return Ok(true);
            }
        };
        drop(table);
        if route.redirect_https && !self.listener.tls {
            let pq = session
                .req_header()
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str());
            let location = redirect_location(&self.listener, &host, pq);
            ctx.local_status = Some(308);
            ctx.route = Some(route);
            respond_text(
                session,
                308,
                format!("308 Permanent Redirect to {location}\n"),
                Some(&location),
            )
            .await?;
            return Ok(true);
        }
        let draw = (balance::random_u64() % 100) as u8;
        let backend = route.choose_backend(draw).clone();
        ctx.draw = draw;
        ctx.host = host;
        ctx.path = path;
        if backend.endpoints.is_empty() {
            ctx.local_status = Some(503);
            ctx.route = Some(route);
            respond_text(session, 503, unavailable_text(&backend), None).await?;
            return Ok(true);
        }
        if let Some(max) = route.max_body {
            let declared = session
                .req_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max) {
                ctx.local_status = Some(413);
                ctx.route = Some(route);
                respond_text(session, 413, too_large_text(max), None).await?;
                return Ok(true);
            }
        }
        if let Some(t) = session
            .req_header()
            .headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
        {
            ctx.grpc_deadline = ctx.started.and_then(|s| s.checked_add(t));
        }
        ctx.route = Some(route);
        ctx.backend = Some(backend);
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Bodies without (or lying about) Content-Length are counted as they stream.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        match ctx.route.as_ref().and_then(|r| r.max_body) {
            Some(max) if ctx.body_bytes > max => Err(Error::explain(
                ErrorType::HTTPStatus(413),
                format!("request body over the route's limit of {max} bytes"),
            )),
            _ => Ok(()),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.release_endpoint();
        let ep = if ctx.tries == 0 {
            ctx.backend
                .as_ref()
                .and_then(|b| balance::pick(&b.endpoints))
                .cloned()
        } else {
            retry_endpoint(
                &self.routes,
                &ctx.host,
                &ctx.path,
                ctx.draw,
                &mut ctx.backend,
                &ctx.tried,
            )
            .await
        };
        ctx.tries += 1;
        let ep =
            ep.ok_or_else(|| Error::explain(ErrorType::InternalError, "no endpoint to pick"))?;
        ep.start();
        let protocol = ctx.route.as_ref().map(|r| r.protocol).unwrap_or_default();
        // The pod IP as the TLS name: rustls needs one, sends no SNI for an IP (as nginx's
        // default `proxy_ssl_server_name off`), and verification is off for pods anyway.
        let mut peer = HttpPeer::new(
            ep.addr,
            protocol == BackendProtocol::Https,
            ep.addr.ip().to_string(),
        );
        match protocol {
            BackendProtocol::Http => {}
            BackendProtocol::Https => {
                peer.options.set_http_version(2, 1);
                peer.options.verify_cert = false;
                peer.options.verify_hostname = false;
                peer.options.max_h2_streams = H2_STREAMS;
            }
            BackendProtocol::H2c | BackendProtocol::Grpc => {
                // Prior-knowledge HTTP/2: requests of every client multiplexed over pooled
                // upstream connections.
                peer.options.set_http_version(2, 2);
                peer.options.max_h2_streams = H2_STREAMS;
            }
        }
        peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
        peer.options.idle_timeout = Some(UPSTREAM_IDLE);
        if let Some(deadline) = ctx.grpc_deadline {
            // Each wait for the upstream (response header, data, trailers) ends when the call's
            // time is up; pingora then cancels the upstream stream (RST_STREAM CANCEL).
            let left = deadline.saturating_duration_since(Instant::now());
            peer.options.read_timeout = Some(left.max(Duration::from_millis(1)));
        }
        ctx.endpoint = Some(ep);
        ctx.sent = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip().to_string();
            let xff = match up
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
                _ => ip,
            };
            up.insert_header("X-Forwarded-For", xff)?;
        }
        let host = request_host(up).to_owned();
        if up.headers.get(http::header::HOST).is_none() && !host.is_empty() {
            // HTTP/2 clients send :authority only; HTTP/1.1 backends need Host.
            up.insert_header(http::header::HOST, &host)?;
        }
        up.insert_header(
            "X-Forwarded-Proto",
            if self.listener.tls { "https" } else { "http" },
        )?;
        up.insert_header("X-Forwarded-Host", host)?;
        up.insert_header("X-Forwarded-Port", self.listener.port.to_string())?;
        up.insert_header("X-Request-ID", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.responded = true;
        if let (Some(ep), Some(sent)) = (&ctx.endpoint, ctx.sent) {
            ep.observe(sent.elapsed());
            ep.succeed();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        resp.insert_header(http::header::SERVER, SERVER)?;
        resp.insert_header("X-Request-ID", ctx.request_id.as_str())?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(ep) = &ctx.endpoint {
            ep.penalize();
            ctx.tried.push(ep.addr);
        }
        ctx.release_endpoint();
        // Retried even with no other endpoint in this request's table: a newer table may
        // have one (`retry_endpoint`).
        if session.req_header().method.is_idempotent() && ctx.tries < MAX_TRIES {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        // Our own refusals (413 from the body filter) and the client's failures are not the
        // upstream's: kept as they are and never replayed.
        if matches!(e.etype(), ErrorType::HTTPStatus(_))
            || *e.esource() != pingora::ErrorSource::Upstream
        {
            let mut e = e;
            e.set_retry(false);
            return e;
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        if let Some(ep) = &ctx.endpoint {
            ctx.tried.push(ep.addr);
        }
        // As nginx's `proxy_next_upstream error`: an idempotent request whose upstream failed
        // before answering (a pooled connection closed by a pod shutting down, a reset from a
        // listener that closed with the connection still in its backlog) goes to another
        // endpoint, on a fresh connection or a reused one alike. Once a response header
        // arrived, or with a request body no longer buffered, it cannot be replayed.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && !ctx.responded;
        e.set_retry(replayable && ctx.tries < MAX_TRIES);
        e
    }

    /// pingora's own answer has `Server: Pingora` and no body: ours says who answered and why.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.grpc_deadline.is_some()
            && *e.etype() == ErrorType::ReadTimedout
            && *e.esource() == pingora::ErrorSource::Upstream
            && session.response_written().is_none()
        {
            if let Err(err) = respond_grpc_deadline_exceeded(session).await {
                tracing::debug!(error = %err, "cannot write the gRPC deadline answer");
            }
            return FailToProxy {
                error_code: 200,
                can_reuse_downstream: false,
            };
        }
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                pingora::ErrorSource::Upstream => 502,
                pingora::ErrorSource::Downstream => match e.etype() {
                    // The client is gone: nothing to answer.
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                pingora::ErrorSource::Internal | pingora::ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let reason = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let why = match (e.etype(), &e.context) {
                (ErrorType::HTTPStatus(_), Some(c)) => c.as_str().to_owned(),
                _ if code == 502 => format!("the backend failed ({})", e.etype().as_str()),
                _ => e.etype().as_str().to_owned(),
            };
            // Not reusable after an error: the client is told so.
            session.set_keepalive(None);
            if let Err(err) =
                respond_text(session, code, format!("{code} {reason}: {why}\n"), None).await
            {
                tracing::debug!(error = %err, "cannot write the error answer");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // Only the upstream's own failures count against it (not a client that went away).
        if e.is_some_and(|e| *e.esource() == pingora::ErrorSource::Upstream)
            && let Some(ep) = &ctx.endpoint
        {
            ep.penalize();
        }
        ctx.release_endpoint();
        let status = ctx
            .local_status
            .unwrap_or_else(|| session.response_written().map_or(0, |r| r.status.as_u16()));
        let elapsed = ctx.started.map_or(Duration::ZERO, |s| s.elapsed());
        let route = ctx.route.as_ref();
        self.metrics.record(route.map(|r| &**r), status, elapsed);
        let req = session.req_header();
        tracing::info!(
            target: "skiff_ingress::access",
            request_id = %ctx.request_id,
            method = %req.method,
            host = request_host(req),
            path = req.uri.path(),
            status,
            ingress = route.and_then(|r| r.ingress.as_ref()).map(ToString::to_string),
            service = ctx.backend.as_ref().map(|b| b.name.to_string()),
            duration_us = elapsed.as_micros() as u64,
            error = e.map(ToString::to_string),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "5", "5s", "123456789S", "-1S", "1.5S", "5 S", "5é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
