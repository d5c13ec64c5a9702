//! An Ingress cut down to routing: rules, paths, backends, TLS hosts and the `skiff.dev/`
//! annotations. Invalid parts are dropped with a [`Problem`] naming the field.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::jiff::Timestamp;

use super::{Key, Problem, key_of};

/// The deprecated class annotation, still honoured when `spec.ingressClassName` is unset.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Per-Ingress switch for the HTTP → HTTPS redirect of its TLS hosts.
pub const SSL_REDIRECT_ANNOTATION: &str = "skiff.dev/ssl-redirect";
/// How the proxy talks to an Ingress's backends: `HTTP` (default), `HTTPS`, `GRPC`, `H2C`.
pub const BACKEND_PROTOCOL_ANNOTATION: &str = "skiff.dev/backend-protocol";
/// Largest accepted request body of an Ingress's routes (`0`: no limit); a size with an
/// optional `k`, `m` or `g` suffix (powers of 1024), as ingress-nginx's `proxy-body-size`.
pub const BODY_SIZE_ANNOTATION: &str = "skiff.dev/proxy-body-size";
/// Marks an Ingress as a canary: this percentage (0-100) of the requests matching one of its
/// paths goes to its backend instead of the backend of the main Ingress with the same path.
pub const CANARY_WEIGHT_ANNOTATION: &str = "skiff.dev/canary-weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathType {
    Exact,
    Prefix,
    /// Treated as `Prefix` (what the specification lets a controller choose).
    ImplementationSpecific,
}

/// The upstream protocol of an Ingress's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// HTTP/1.1 in clear text.
    #[default]
    Http,
    /// HTTP/1.1 or HTTP/2 (by ALPN) over TLS; pod certificates are not verified (pods rarely
    /// have certificates a cluster-external CA signed; the hop is inside the cluster).
    Https,
    /// HTTP/2 in clear text with prior knowledge.
    H2c,
    /// gRPC: HTTP/2 end to end (h2c to the pod), trailers passed through.
    Grpc,
}

impl BackendProtocol {
    pub fn parse(v: &str) -> Option<BackendProtocol> {
        match v.trim().to_ascii_uppercase().as_str() {
            "HTTP" => Some(BackendProtocol::Http),
            "HTTPS" => Some(BackendProtocol::Https),
            "H2C" => Some(BackendProtocol::H2c),
            "GRPC" => Some(BackendProtocol::Grpc),
            _ => None,
        }
    }
}

/// A Service port as an Ingress names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// A Service backend: a Service in the Ingress's namespace (or anywhere, for the controller-wide
/// default backend) and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendRef {
    pub service: Key,
    pub port: PortRef,
}

impl BackendRef {
    /// `--default-backend`: `[NAMESPACE/]NAME[:PORT]`, PORT a number or a port name; the
    /// namespace defaults to `default`, the port to 80.
    pub fn parse(v: &str) -> Result<BackendRef, String> {
        let bad =
            |why: &str| format!("default backend {v:?}: {why} (want [NAMESPACE/]NAME[:PORT])");
        let (svc, port) = match v.rsplit_once(':') {
            Some((s, p)) => (s, Some(p)),
            None => (v, None),
        };
        let (ns, name) = svc.split_once('/').unwrap_or(("default", svc));
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !label_ok(ns) {
            return Err(bad("the namespace is not a DNS label"));
        }
        if !label_ok(name) {
            return Err(bad("the service name is not a DNS label"));
        }
        let port = match port {
            None => PortRef::Number(80),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => PortRef::Number(
                p.parse::<u16>()
                    .ok()
                    .filter(|n| *n != 0)
                    .ok_or_else(|| bad("the port is not 1-65535"))?,
            ),
            Some(p) if label_ok(p) => PortRef::Name(p.to_owned()),
            Some(_) => return Err(bad("the port is neither a number nor a port name")),
        };
        Ok(BackendRef {
            service: Key::new(ns, name),
            port,
        })
    }
}

impl std::fmt::Display for BackendRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Starts with `/` (checked); for `ImplementationSpecific` an unset path is `/`.
    pub path: String,
    pub path_type: PathType,
    pub backend: BackendRef,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Lower-cased; `None` matches every host. `*.foo.com` is a wildcard of one label.
    pub host: Option<String>,
    pub paths: Vec<PathRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRule {
    /// Lower-cased. Empty means "every host of this Ingress's rules" is not implied: the
    /// specification says unset hosts default to the wildcard host of the load balancer, which
    /// here is the default certificate, so empty host lists add no SNI names.
    pub hosts: Vec<String>,
    /// A Secret in the Ingress's namespace.
    pub secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressInfo {
    pub key: Key,
    /// For Events' `involvedObject`.
    pub uid: Option<String>,
    pub created: Option<Timestamp>,
    /// `spec.ingressClassName`, else the legacy annotation.
    pub class: Option<String>,
    pub default_backend: Option<BackendRef>,
    pub rules: Vec<HostRule>,
    pub tls: Vec<TlsRule>,
    /// HTTP → HTTPS redirect for this Ingress's TLS hosts (default on).
    pub ssl_redirect: bool,
    pub backend_protocol: BackendProtocol,
    /// `skiff.dev/proxy-body-size`; `None` is no limit.
    pub max_body: Option<u64>,
    /// `skiff.dev/canary-weight`: a canary Ingress (percent of matching requests).
    pub canary_weight: Option<u8>,
    /// Parts dropped because they were invalid.
    pub problems: Vec<Problem>,
    /// `status.loadBalancer.ingress` as it is now (IPs and hostnames), so status is written
    /// only when it differs.
    pub status: Vec<String>,
}

impl IngressInfo {
    /// `None` for an object without namespace or name (never from a real API server).
    pub fn from_ingress(ing: &Ingress) -> Option<IngressInfo> {
        let key = key_of(&ing.metadata)?;
        let annotations = ing.metadata.annotations.as_ref();
        let spec = ing.spec.as_ref();
        let class = spec
            .and_then(|s| s.ingress_class_name.clone())
            .or_else(|| annotations.and_then(|a| a.get(LEGACY_CLASS_ANNOTATION).cloned()))
            .filter(|c| !c.is_empty());
        let ssl_redirect = annotations
            .and_then(|a| a.get(SSL_REDIRECT_ANNOTATION))
            .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| {
            problems.push(Problem {
                object: key.clone(),
                field,
                message,
            })
        };
        let backend_protocol = match annotations.and_then(|a| a.get(BACKEND_PROTOCOL_ANNOTATION)) {
            None => BackendProtocol::Http,
            Some(v) => BackendProtocol::parse(v).unwrap_or_else(|| {
                problem(
                    format!("metadata.annotations[{BACKEND_PROTOCOL_ANNOTATION}]"),
                    format!("unknown backend protocol {v:?} (HTTP, HTTPS, GRPC, H2C); using HTTP"),
                );
                BackendProtocol::Http
            }),
        };
        let default_backend = spec.and_then(|s| s.default_backend.as_ref()).and_then(|b| {
            backend_ref(&key.namespace, b)
                .map_err(|m| problem("spec.defaultBackend".into(), m))
                .ok()
        });
        let max_body = annotations
            .and_then(|a| a.get(BODY_SIZE_ANNOTATION))
            .and_then(|v| {
                parse_size(v)
                    .map_err(|m| {
                        problem(format!("metadata.annotations[{BODY_SIZE_ANNOTATION}]"), m)
                    })
                    .ok()
            })
            .filter(|n| *n > 0);
        let canary_weight = annotations
            .and_then(|a| a.get(CANARY_WEIGHT_ANNOTATION))
            .and_then(|v| {
                v.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|w| *w <= 100)
                    .or_else(|| {
                        problem(
                            format!("metadata.annotations[{CANARY_WEIGHT_ANNOTATION}]"),
                            format!("canary weight {v:?} is not a percentage 0-100; not a canary"),
                        );
                        None
                    })
            });
        let mut rules = Vec::new();
        for (i, rule) in spec
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(h) => match check_host(h) {
                    Ok(h) => Some(h),
                    Err(m) => {
                        problem(format!("spec.rules[{i}].host"), m);
                        continue;
                    }
                },
            };
            let mut paths = Vec::new();
            for (j, p) in rule.http.iter().flat_map(|h| &h.paths).enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                match path_rule(&key.namespace, p) {
                    Ok(r) => paths.push(r),
                    Err((sub, m)) => problem(format!("{field}.{sub}"), m),
                }
            }
            rules.push(HostRule { host, paths });
        }
        let tls = spec
            .and_then(|s| s.tls.as_ref())
            .into_iter()
            .flatten()
            .map(|t| TlsRule {
                hosts: t
                    .hosts
                    .iter()
                    .flatten()
                    .filter(|h| !h.is_empty())
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                secret: t.secret_name.clone().filter(|s| !s.is_empty()),
            })
            .collect();
        let status = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
            .collect();
        Some(IngressInfo {
            uid: ing.metadata.uid.clone(),
            status,
            created: ing.metadata.creation_timestamp.as_ref().map(|t| t.0),
            key,
            class,
            default_backend,
            rules,
            tls,
            ssl_redirect,
            backend_protocol,
            max_body,
            canary_weight,
            problems,
        })
    }

    /// The merge order of Ingresses sharing a host: oldest first, then by namespace/name.
    pub fn order_key(&self) -> (Option<Timestamp>, &Key) {
        (self.created, &self.key)
    }
}

fn path_rule(
    namespace: &str,
    p: &k8s_openapi::api::networking::v1::HTTPIngressPath,
) -> Result<PathRule, (&'static str, String)> {
    let path_type = match p.path_type.as_str() {
        "Exact" => PathType::Exact,
        "Prefix" => PathType::Prefix,
        "ImplementationSpecific" => PathType::ImplementationSpecific,
        other => {
            return Err((
                "pathType",
                format!("unknown pathType {other:?} (Exact, Prefix, ImplementationSpecific)"),
            ));
        }
    };
    let path = match (p.path.as_deref(), path_type) {
        (None | Some(""), PathType::ImplementationSpecific) => "/".to_owned(),
        (None | Some(""), _) => {
            return Err(("path", "path is required for Exact and Prefix".into()));
        }
        (Some(path), _) if !path.starts_with('/') => {
            return Err(("path", format!("path {path:?} must start with '/'")));
        }
        (Some(path), _) => path.to_owned(),
    };
    let backend = backend_ref(namespace, &p.backend).map_err(|m| ("backend", m))?;
    Ok(PathRule {
        path,
        path_type,
        backend,
    })
}

fn backend_ref(namespace: &str, b: &IngressBackend) -> Result<BackendRef, String> {
    let Some(svc) = b.service.as_ref() else {
        return Err(if b.resource.is_some() {
            "resource backends are not supported; use a service backend".into()
        } else {
            "backend names no service".into()
        });
    };
    if svc.name.is_empty() {
        return Err("service.name is empty".into());
    }
    let port = match svc.port.as_ref() {
        Some(p) => match (p.number, p.name.as_deref().filter(|n| !n.is_empty())) {
            (Some(n), None) => PortRef::Number(
                u16::try_from(n)
                    .ok()
                    .filter(|n| *n != 0)
                    .ok_or_else(|| format!("service.port.number {n} is not a port (1-65535)"))?,
            ),
            (None, Some(name)) => PortRef::Name(name.to_owned()),
            (Some(_), Some(_)) => {
                return Err("service.port sets both number and name".into());
            }
            (None, None) => return Err("service.port sets neither number nor name".into()),
        },
        None => return Err("service.port is required".into()),
    };
    Ok(BackendRef {
        service: Key::new(namespace, svc.name.clone()),
        port,
    })
}

/// `10`, `512k`, `8m`, `1g` (case-insensitive, powers of 1024).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim().to_ascii_lowercase();
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some(b'm') => (&t[..t.len() - 1], 1 << 20),
        Some(b'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size {v:?} is not a number with an optional k, m or g suffix"))
}

/// Lower-cases a rule host and checks its shape: DNS labels, an optional leading `*.` wildcard.
pub fn check_host(host: &str) -> Result<String, String> {
    let h = host.to_ascii_lowercase();
    let rest = h.strip_prefix("*.").unwrap_or(&h);
    let ok = !rest.is_empty()
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(h)
    } else {
        Err(format!(
            "host {host:?} is not a DNS name (or a wildcard '*.' followed by one)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{BackendRef, PortRef, parse_size};
    use crate::model::Key;

    #[test]
    fn default_backend_flag() {
        let ok = |v: &str, ns: &str, name: &str, port: PortRef| {
            assert_eq!(
                BackendRef::parse(v),
                Ok(BackendRef {
                    service: Key::new(ns, name),
                    port
                }),
                "{v}"
            );
        };
        ok("web", "default", "web", PortRef::Number(80));
        ok("web:8080", "default", "web", PortRef::Number(8080));
        ok(
            "kube-system/fallback:http",
            "kube-system",
            "fallback",
            PortRef::Name("http".into()),
        );
        for bad in [
            "",
            "Web",
            "a/b/c",
            "web:0",
            "web:70000",
            "web:",
            "/web",
            "web:HTTP",
        ] {
            assert!(BackendRef::parse(bad).is_err(), "{bad}");
        }
        assert!(BackendRef::parse("web:0").is_err_and(|e| e.contains("\"web:0\"")));
    }

    #[test]
    fn sizes() {
        for (v, want) in [
            ("0", Some(0)),
            ("10", Some(10)),
            ("512k", Some(512 << 10)),
            ("8M", Some(8 << 20)),
            (" 1g ", Some(1 << 30)),
            ("1.5m", None),
            ("m", None),
            ("-1", None),
            ("99999999999999999999g", None),
        ] {
            assert_eq!(parse_size(v).ok(), want, "{v}");
        }
        assert!(parse_size("ten").is_err_and(|e| e.contains("\"ten\"")));
    }
}
