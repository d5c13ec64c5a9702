//! The immutable route table: (host, path) → route, built whole by `compile` and read by the
//! proxy through an `ArcSwap` without locks.
//!
//! Lookup order: the exact host's rules, then the wildcard host's (`*.foo.com` covers exactly
//! one more label), then host-less rules; within each, an `Exact` path, then the longest
//! element-wise `Prefix`. If no path matches: the exact host's default backend, the wildcard
//! host's, then the catch-all default (an Ingress's `defaultBackend` without host rules, else the
//! controller-wide default), else 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::balance::Endpoint;
use crate::metrics::RouteStats;
use crate::model::{BackendProtocol, BackendRef, Key};

/// Where a request goes: a Service port's ready endpoints, or why there are none.
#[derive(Debug)]
pub struct Backend {
    pub name: BackendRef,
    /// Ready pod addresses (pod IP : target port), sorted.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Set when `endpoints` is empty: the reason, for the 503 body.
    pub unavailable: Option<String>,
}

/// A canary's share of a route.
#[derive(Debug, Clone)]
pub struct Canary {
    pub ingress: Key,
    pub backend: Arc<Backend>,
    /// Percent of the route's requests, 0-100.
    pub weight: u8,
}

/// A matched rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// The Ingress the rule came from; `None` for the controller-wide default backend.
    pub ingress: Option<Key>,
    pub backend: Arc<Backend>,
    /// Plain-HTTP requests get a 308 to HTTPS (the host is a TLS host of this Ingress and
    /// `skiff.dev/ssl-redirect` is not "false").
    pub redirect_https: bool,
    /// How to talk to the endpoints (`skiff.dev/backend-protocol` of the Ingress).
    pub protocol: BackendProtocol,
    /// Largest accepted request body (`skiff.dev/proxy-body-size`); `None`: no limit.
    pub max_body: Option<u64>,
    /// Request counters of this (Ingress, backend), kept across tables.
    pub stats: Arc<RouteStats>,
    /// A canary Ingress taking a share of this route's requests.
    pub canary: Option<Canary>,
}

impl Route {
    /// The backend of one request: the canary's for `weight` percent of draws.
    pub fn choose_backend(&self, draw_percent: u8) -> &Arc<Backend> {
        match &self.canary {
            Some(c) if draw_percent < c.weight => &c.backend,
            _ => &self.backend,
        }
    }
}

/// The rules of one host (or of all host-less rules), merged over Ingresses.
#[derive(Debug, Default)]
pub struct HostRoutes {
    pub(crate) exact: HashMap<Box<str>, Arc<Route>>,
    /// Keyed by the prefix without trailing slashes (`/` is the empty string).
    pub(crate) prefix: HashMap<Box<str>, Arc<Route>>,
    pub(crate) default: Option<Arc<Route>>,
}

impl HostRoutes {
    /// `Exact` first, then the longest `Prefix`, compared element by element: each candidate
    /// is the request path cut at a `/`, so `/foo` never matches `/foobar`.
    pub fn match_path(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // A trailing slash on the request is ignored (`/foo/` matches prefix `/foo`).
        let mut p = path.strip_suffix('/').unwrap_or(path);
        loop {
            if let Some(r) = self.prefix.get(p) {
                return Some(r);
            }
            p = &p[..p.rfind('/')?];
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.default.is_none()
    }
}

/// What the table says about a request.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    Route(&'a Arc<Route>),
    /// No rule and no default backend.
    NotFound,
}

/// Every route of every Ingress we serve.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub(crate) hosts: HashMap<Box<str>, HostRoutes>,
    /// `*.foo.com` rules, keyed by `foo.com`.
    pub(crate) wildcards: HashMap<Box<str>, HostRoutes>,
    pub(crate) any_host: HostRoutes,
    pub(crate) fallback: Option<Arc<Route>>,
    /// Every endpoint by address, so the next compile keeps their load estimates.
    pub(crate) endpoints: HashMap<SocketAddr, Arc<Endpoint>>,
    /// Request counters by (Ingress, backend), handed from table to table.
    pub(crate) stats: HashMap<(Option<Key>, BackendRef), Arc<RouteStats>>,
    /// Number of path rules (for metrics and logs).
    pub(crate) rule_count: usize,
    /// Some route goes to an HTTPS backend (only pingora's path speaks TLS upstream).
    pub(crate) tls_upstreams: bool,
}

impl RouteTable {
    /// `host` as the request names it (any case, maybe with a port); `path` without the query.
    pub fn lookup(&self, host: &str, path: &str) -> Decision<'_> {
        let host = normalize_host(host);
        let exact = self.hosts.get(host.as_ref());
        let wildcard = host
            .split_once('.')
            .and_then(|(_, rest)| self.wildcards.get(rest));
        let candidates = [exact, wildcard, Some(&self.any_host)];
        if let Some(r) = candidates.iter().flatten().find_map(|h| h.match_path(path)) {
            return Decision::Route(r);
        }
        let default = exact
            .and_then(|h| h.default.as_ref())
            .or_else(|| wildcard.and_then(|h| h.default.as_ref()))
            .or(self.fallback.as_ref());
        match default {
            Some(r) => Decision::Route(r),
            None => Decision::NotFound,
        }
    }

    /// Request counters by (Ingress, backend), for metrics.
    pub fn stats(&self) -> impl Iterator<Item = (&(Option<Key>, BackendRef), &Arc<RouteStats>)> {
        self.stats.iter()
    }

    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// Whether some route goes to an HTTPS backend: HTTP/2 client connections are then
    /// served by pingora (whose path speaks TLS upstream) rather than by `h2down`.
    pub fn has_tls_upstreams(&self) -> bool {
        self.tls_upstreams
    }

    /// Every distinct endpoint in the table.
    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }
}

/// Lower-cases a Host header / `:authority` / SNI name and drops a port and a trailing dot.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = if host.starts_with('[') {
        // IPv6 literal: keep up to the closing bracket.
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn host_normalization() {
        for (raw, want) in [
            ("Foo.COM", "foo.com"),
            ("foo.com:8080", "foo.com"),
            ("foo.com.", "foo.com"),
            ("[::1]:443", "[::1]"),
            ("[::1]", "[::1]"),
            ("", ""),
        ] {
            assert_eq!(normalize_host(raw), want, "{raw}");
        }
    }
}
