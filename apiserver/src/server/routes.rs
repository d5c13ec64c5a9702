//! Request paths: `/api/v1/[namespaces/{ns}/]{res}[/{name}[/{sub}]]` and `/apis/{g}/{v}/...`.

use skiff_api::{KindInfo, kinds};

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz` (and their `/...` sub-checks): no authentication.
    Health(HealthCheck),
    /// `/version`.
    Version,
    /// Discovery documents: `/api`, `/apis`, `/api/v1`, `/apis/{g}` and `/apis/{g}/{v}`.
    /// Served by the discovery module once wired; a 404 Status until then.
    Discovery(DiscoveryPath),
    /// A resource collection or object.
    Resource(ResourcePath),
    /// `/api/v1/namespaces/{ns}/bindings`: the legacy pod binding collection (POST only).
    Bindings { namespace: String },
    /// `/openapi/v3` and its per-group-version documents.
    OpenApi(OpenApiPath),
    /// Anything else: 404.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    Healthz,
    Livez,
    Readyz,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryPath {
    /// `/api`.
    CoreVersions,
    /// `/apis`.
    Groups,
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` (group `""`) or `/apis/{group}/{version}`.
    Resources { group: String, version: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenApiPath {
    /// `/openapi/v3`: the index of group-version documents.
    Index,
    /// `/openapi/v3/api/v1` (group `""`) or `/openapi/v3/apis/{group}/{version}`.
    GroupVersion { group: String, version: String },
}

/// A resource path: the kind, and the namespace / name / subresource it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub info: &'static KindInfo,
    /// Set for `/namespaces/{ns}/...` paths of namespaced kinds.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a (percent-decoded segment by segment) request path.
pub fn parse(path: &str) -> Route {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["healthz", ..] => Route::Health(HealthCheck::Healthz),
        ["livez", ..] => Route::Health(HealthCheck::Livez),
        ["readyz", ..] => Route::Health(HealthCheck::Readyz),
        ["version"] => Route::Version,
        ["api"] => Route::Discovery(DiscoveryPath::CoreVersions),
        ["apis"] => Route::Discovery(DiscoveryPath::Groups),
        ["apis", group] => Route::Discovery(DiscoveryPath::Group((*group).to_owned())),
        ["api", version] => Route::Discovery(DiscoveryPath::Resources {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["apis", group, version] => Route::Discovery(DiscoveryPath::Resources {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["openapi", "v3"] => Route::OpenApi(OpenApiPath::Index),
        ["openapi", "v3", "api", version] => Route::OpenApi(OpenApiPath::GroupVersion {
            group: String::new(),
            version: (*version).to_owned(),
        }),
        ["openapi", "v3", "apis", group, version] => Route::OpenApi(OpenApiPath::GroupVersion {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
        }),
        ["api", "v1", "namespaces", ns, "bindings"] => Route::Bindings {
            namespace: (*ns).to_owned(),
        },
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::NotFound,
    }
}

fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    kinds::by_resource(group, plural).filter(|k| k.version == version)
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, ..]
            if lookup(group, version, plural).is_some_and(|k| k.namespaced) =>
        {
            (Some((*ns).to_owned()), &rest[2..])
        }
        _ => (None, rest),
    };
    let Some((plural, rest)) = rest.split_first() else {
        return Route::NotFound;
    };
    let Some(info) = lookup(group, version, plural) else {
        return Route::NotFound;
    };
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return Route::NotFound,
    };
    Route::Resource(ResourcePath {
        info,
        namespace,
        name,
        subresource,
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into decoded (key, value) pairs (`+` is a space).
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse(path) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let r = res("/api/v1/namespaces/default/pods/web");
        assert_eq!(r.info.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        let r = res("/api/v1/namespaces/kube-system");
        assert_eq!(r.info.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));
        let r = res("/api/v1/namespaces/x/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        let r = res("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        let r = res("/apis/apps/v1/namespaces/a/deployments/d/scale");
        assert_eq!(r.info.plural, "deployments");
        assert_eq!(r.subresource.as_deref(), Some("scale"));
        assert_eq!(parse("/apis/apps/v2/deployments"), Route::NotFound);
        assert_eq!(parse("/api/v1/namespaces/a/nodes/x/y"), Route::NotFound);
        assert_eq!(parse("/version"), Route::Version);
        assert_eq!(parse("/openapi/v3"), Route::OpenApi(OpenApiPath::Index));
        assert_eq!(
            parse("/openapi/v3/apis/apps/v1"),
            Route::OpenApi(OpenApiPath::GroupVersion {
                group: "apps".into(),
                version: "v1".into()
            })
        );
        assert!(matches!(parse("/api"), Route::Discovery(_)));
        assert!(matches!(
            parse("/readyz/ping"),
            Route::Health(HealthCheck::Readyz)
        ));
    }

    #[test]
    fn query() {
        let q = parse_query(Some("fieldSelector=metadata.name%3Dx&watch=1&a"));
        assert_eq!(q[0], ("fieldSelector".into(), "metadata.name=x".into()));
        assert_eq!(q[2], ("a".into(), String::new()));
    }
}
