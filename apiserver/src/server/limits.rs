//! Request limits: the per-request deadline (`?timeout=`, upstream's `--request-timeout`) and
//! the cap on concurrent watches per user. The body size limit lives with body reading
//! (`handlers::MAX_BODY_BYTES`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use serde_json::json;

use super::handlers::{Body, json_response};
use super::routes::{self, Route};
use super::status::ApiError;

/// Upstream's default `--request-timeout`: the longest a non-long-running request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on concurrent watches per user. Generous: in `skiff server` every controller
/// informer watches as the admin, and a fan-out benchmark opens 100 watches of its own; the cap
/// is there to stop a runaway client, not to ration well-behaved ones.
pub const DEFAULT_MAX_WATCHES_PER_USER: usize = 1000;
/// What a client refused for too many watches is told to wait.
const RETRY_AFTER_SECONDS: u64 = 1;

/// Subresources upstream treats as long-running (no deadline): they stream for as long as the
/// client wants.
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "log", "portforward", "proxy"];

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1.5h`, `2h45m`, `0`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() || rest.starts_with('-') {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * nanos_per_unit;
    }
    (total.is_finite() && total < u64::MAX as f64).then(|| Duration::from_nanos(total as u64))
}

/// The deadline of a request: `None` for long-running ones (watches, streaming subresources),
/// else `?timeout=` capped at `max` (a client may only shorten it, as upstream), default `max`.
pub(crate) fn deadline<B>(req: &Request<B>, max: Duration) -> Result<Option<Duration>, ApiError> {
    let query = routes::parse_query(req.uri().query());
    let watch = query
        .iter()
        .any(|(k, v)| k == "watch" && matches!(v.as_str(), "true" | "1" | "True" | "TRUE"));
    if watch {
        return Ok(None);
    }
    if let Route::Resource(path) = routes::parse(req.uri().path())
        && path
            .subresource
            .as_deref()
            .is_some_and(|s| LONG_RUNNING_SUBRESOURCES.contains(&s))
    {
        return Ok(None);
    }
    let Some((_, value)) = query.iter().find(|(k, _)| k == "timeout") else {
        return Ok(Some(max));
    };
    match parse_go_duration(value) {
        Some(d) if d > Duration::ZERO && d < max => Ok(Some(d)),
        Some(_) => Ok(Some(max)),
        None => Err(ApiError::bad_request(format!(
            "invalid timeout specified in the request URL: {value:?}"
        ))),
    }
}

/// Runs `work` under `deadline`; past it, upstream's 504 Timeout Status.
pub(crate) async fn with_deadline<F>(
    deadline: Option<Duration>,
    work: F,
) -> Result<Response<Body>, ApiError>
where
    F: Future<Output = Result<Response<Body>, ApiError>>,
{
    let Some(deadline) = deadline else {
        return work.await;
    };
    match tokio::time::timeout(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline \
             exceeded",
        )),
    }
}

/// Counts open watches per user; a [`WatchPermit`] holds one until dropped.
#[derive(Debug, Clone)]
pub(crate) struct WatchLimiter {
    max_per_user: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open watch of one user; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct WatchPermit {
    user: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(n) = open.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl WatchLimiter {
    pub(crate) fn new(max_per_user: usize) -> Self {
        Self {
            max_per_user,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A permit for one more watch of `user`, or the 429 answer when `user` has too many.
    pub(crate) fn acquire(&self, user: &str) -> Result<WatchPermit, Box<Response<Body>>> {
        let mut open = self.open.lock().map_err(|_| {
            Box::new(super::handlers::status_response(&ApiError::internal(
                "the watch limiter is poisoned",
            )))
        })?;
        let n = open.entry(user.to_owned()).or_insert(0);
        if *n >= self.max_per_user {
            return Err(Box::new(too_many_watches(user, self.max_per_user)));
        }
        *n += 1;
        Ok(WatchPermit {
            user: user.to_owned(),
            open: self.open.clone(),
        })
    }
}

/// 429 TooManyRequests with `Retry-After`, as upstream's priority-and-fairness rejection.
fn too_many_watches(user: &str, max: usize) -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!(
            "Too many requests, please try again later. User {user:?} has {max} open watches, \
             the most this server allows per user"
        ),
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": RETRY_AFTER_SECONDS},
        "code": 429,
    });
    let mut resp = json_response(429, &status);
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "5", "x", "-1s", "1d", "s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    fn req(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).unwrap_or_default()
    }

    #[test]
    fn deadlines() {
        let max = DEFAULT_REQUEST_TIMEOUT;
        let d = |uri: &str| deadline(&req(uri), max).map_err(|e| e.code);
        assert_eq!(d("/api/v1/pods"), Ok(Some(max)));
        assert_eq!(
            d("/api/v1/pods?timeout=5s"),
            Ok(Some(Duration::from_secs(5)))
        );
        assert_eq!(d("/api/v1/pods?timeout=10m"), Ok(Some(max)));
        assert_eq!(d("/api/v1/pods?timeout=soon"), Err(400));
        assert_eq!(d("/api/v1/pods?watch=true&timeout=1s"), Ok(None));
        assert_eq!(d("/api/v1/namespaces/a/pods/p/log?follow=true"), Ok(None));
        assert_eq!(d("/api/v1/namespaces/a/pods/p/exec"), Ok(None));
        assert_eq!(d("/api/v1/namespaces/a/pods/p/status"), Ok(Some(max)));
    }

    #[tokio::test]
    async fn slow_work_times_out_with_504() {
        let never = std::future::pending::<Result<Response<Body>, ApiError>>();
        let err = with_deadline(Some(Duration::from_millis(1)), never)
            .await
            .err();
        let status = err.map(|e| e.to_status()).unwrap_or_default();
        assert_eq!(status["code"], 504);
        assert_eq!(status["reason"], "Timeout");
    }

    #[test]
    fn watch_cap_per_user() {
        let limiter = WatchLimiter::new(2);
        let a1 = limiter.acquire("alice");
        let a2 = limiter.acquire("alice");
        assert!(a1.is_ok() && a2.is_ok());
        let refused = limiter.acquire("alice").err();
        let refused =
            refused.map(|r| (r.status().as_u16(), r.headers().get("retry-after").cloned()));
        assert_eq!(refused, Some((429, Some(HeaderValue::from(1u64)))));
        assert!(limiter.acquire("bob").is_ok(), "limits are per user");
        drop(a1);
        assert!(
            limiter.acquire("alice").is_ok(),
            "a closed watch frees its slot"
        );
    }
}
