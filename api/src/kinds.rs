//! The static registry of the kinds skiff serves: group, version, resource names, scope, verbs.

use std::fmt;

/// Calls `$callback!` with every served kind's name after any leading arguments: the one list
/// the [`Kind`] enum, [`crate::Object`] and the decoder are generated from. Each name is also the
/// k8s-openapi type's name, imported where the callback expands.
macro_rules! for_all_kinds {
    ($callback:ident ! ($($arg:tt)*)) => {
        $callback! {
            $($arg)*
            Namespace, Pod, Service, Endpoints, EndpointSlice, ConfigMap, Secret, Node, Event,
            Deployment, ReplicaSet, StatefulSet, Ingress, IngressClass, Lease
        }
    };
}
pub(crate) use for_all_kinds;

macro_rules! kind_enum {
    ($($variant:ident),*) => {
        /// Which of the kinds skiff serves. The registry row for each is [`KindInfo`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($variant,)*
        }
    };
}
for_all_kinds!(kind_enum!());

/// The verbs of a resource that supports the whole CRUD + watch set.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Namespaces have no `deletecollection` upstream.
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// One row of the registry: what discovery (`/api`, `/apis`) says about a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: Kind,
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The `kind` string, e.g. `Deployment`.
    pub name: &'static str,
    /// Plural resource name, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `deployment`.
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Subresources skiff serves, e.g. `status`, `scale`, `log`.
    pub subresources: &'static [&'static str],
}

impl KindInfo {
    /// `apiVersion` as written in manifests: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Upstream `GroupResource.String()`: `pods`, `deployments.apps`. Storage keys objects by it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Does this resource have the given subresource?
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

macro_rules! row {
    ($kind:ident, $group:expr, $version:expr, $plural:expr, $singular:expr, $namespaced:expr,
     short: [$($short:expr),*], cat: [$($cat:expr),*], verbs: $verbs:expr, sub: [$($sub:expr),*]) => {
        KindInfo {
            kind: Kind::$kind,
            group: $group,
            version: $version,
            name: stringify!($kind),
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            verbs: $verbs,
            subresources: &[$($sub),*],
        }
    };
}

/// Every kind skiff serves, in a stable order (core group first, then by group).
pub static KINDS: &[KindInfo] = &[
    row!(Namespace, "", "v1", "namespaces", "namespace", false,
         short: ["ns"], cat: [], verbs: NAMESPACE_VERBS, sub: ["status", "finalize"]),
    row!(Pod, "", "v1", "pods", "pod", true,
         short: ["po"], cat: ["all"], verbs: ALL_VERBS,
         sub: ["attach", "binding", "exec", "log", "portforward", "status"]),
    row!(Service, "", "v1", "services", "service", true,
         short: ["svc"], cat: ["all"], verbs: ALL_VERBS, sub: ["status"]),
    row!(Endpoints, "", "v1", "endpoints", "endpoints", true,
         short: ["ep"], cat: [], verbs: ALL_VERBS, sub: []),
    row!(ConfigMap, "", "v1", "configmaps", "configmap", true,
         short: ["cm"], cat: [], verbs: ALL_VERBS, sub: []),
    row!(Secret, "", "v1", "secrets", "secret", true,
         short: [], cat: [], verbs: ALL_VERBS, sub: []),
    row!(Node, "", "v1", "nodes", "node", false,
         short: ["no"], cat: [], verbs: ALL_VERBS, sub: ["status"]),
    row!(Event, "", "v1", "events", "event", true,
         short: ["ev"], cat: [], verbs: ALL_VERBS, sub: []),
    row!(Deployment, "apps", "v1", "deployments", "deployment", true,
         short: ["deploy"], cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"]),
    row!(ReplicaSet, "apps", "v1", "replicasets", "replicaset", true,
         short: ["rs"], cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"]),
    row!(StatefulSet, "apps", "v1", "statefulsets", "statefulset", true,
         short: ["sts"], cat: ["all"], verbs: ALL_VERBS, sub: ["status", "scale"]),
    row!(Lease, "coordination.k8s.io", "v1", "leases", "lease", true,
         short: [], cat: [], verbs: ALL_VERBS, sub: []),
    row!(EndpointSlice, "discovery.k8s.io", "v1", "endpointslices", "endpointslice", true,
         short: [], cat: [], verbs: ALL_VERBS, sub: []),
    row!(Ingress, "networking.k8s.io", "v1", "ingresses", "ingress", true,
         short: ["ing"], cat: [], verbs: ALL_VERBS, sub: ["status"]),
    row!(IngressClass, "networking.k8s.io", "v1", "ingressclasses", "ingressclass", false,
         short: [], cat: [], verbs: ALL_VERBS, sub: []),
];

impl Kind {
    /// The registry row of this kind.
    pub fn info(self) -> &'static KindInfo {
        // KINDS holds exactly one row per variant; the fallback is never taken.
        KINDS.iter().find(|k| k.kind == self).unwrap_or(&KINDS[0])
    }

    /// Every kind, in registry order.
    pub fn all() -> impl Iterator<Item = Kind> {
        KINDS.iter().map(|k| k.kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

/// Split `apps/v1` into (`apps`, `v1`) and `v1` into (`""`, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Look a kind up by `apiVersion` and `kind`, as written in a manifest.
pub fn by_api_version_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    let (group, version) = split_api_version(api_version);
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.name == kind)
}

/// Is `apiVersion` a group/version skiff serves at all (whatever the kind)?
pub fn is_served_version(api_version: &str) -> bool {
    let (group, version) = split_api_version(api_version);
    KINDS
        .iter()
        .any(|k| k.group == group && k.version == version)
}

/// Look a kind up by group and plural resource name (`("apps", "deployments")`).
pub fn by_resource(group: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// Look a kind up by a `GroupResource` string: `pods`, `deployments.apps`.
pub fn by_group_resource(group_resource: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.group_resource() == group_resource)
}

/// Look a kind up the way kubectl resolves a name it was given: plural, singular, short name
/// or kind, case-insensitively, optionally qualified by group (`deploy.apps`).
pub fn by_any_name(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (bare, group) = match lower.split_once('.') {
        Some((b, g)) => (b.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    KINDS.iter().find(|k| {
        let group_ok = group.as_deref().is_none_or(|g| g == k.group);
        group_ok
            && (k.plural == bare
                || k.singular == bare
                || k.name.eq_ignore_ascii_case(&bare)
                || k.short_names.contains(&bare.as_str()))
    })
}

/// Look a kind up by a short name only (`po`, `svc`, `deploy`).
pub fn by_short_name(short: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.short_names.contains(&short))
}

/// Kinds in a category, e.g. `all`.
pub fn in_category(category: &str) -> impl Iterator<Item = &'static KindInfo> + '_ {
    KINDS
        .iter()
        .filter(move |k| k.categories.contains(&category))
}

/// The distinct (group, version) pairs served, in registry order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_kind() {
        assert_eq!(KINDS.len(), 15);
        for k in KINDS {
            assert_eq!(k.kind.info().name, k.name);
            assert_eq!(KINDS.iter().filter(|o| o.kind == k.kind).count(), 1);
        }
    }

    #[test]
    fn group_resource_strings() {
        let gr = |k: Kind| k.info().group_resource();
        assert_eq!(gr(Kind::Pod), "pods");
        assert_eq!(gr(Kind::Deployment), "deployments.apps");
        assert_eq!(gr(Kind::Ingress), "ingresses.networking.k8s.io");
        assert_eq!(gr(Kind::EndpointSlice), "endpointslices.discovery.k8s.io");
        assert_eq!(gr(Kind::Lease), "leases.coordination.k8s.io");
        assert_eq!(
            by_group_resource("statefulsets.apps").unwrap().kind,
            Kind::StatefulSet
        );
    }

    #[test]
    fn lookups() {
        assert_eq!(
            by_api_version_kind("apps/v1", "Deployment").unwrap().kind,
            Kind::Deployment
        );
        assert!(by_api_version_kind("v1", "Deployment").is_none());
        assert!(by_api_version_kind("apps/v1beta1", "Deployment").is_none());
        assert_eq!(by_resource("", "pods").unwrap().kind, Kind::Pod);
        assert_eq!(by_short_name("deploy").unwrap().kind, Kind::Deployment);
        assert_eq!(by_short_name("ev").unwrap().kind, Kind::Event);
        assert!(by_short_name("secret").is_none());
        assert_eq!(by_any_name("svc").unwrap().kind, Kind::Service);
        assert_eq!(by_any_name("Ingress").unwrap().kind, Kind::Ingress);
        assert_eq!(
            by_any_name("deployments.apps").unwrap().kind,
            Kind::Deployment
        );
        assert!(by_any_name("pods.apps").is_none());
        assert!(is_served_version("networking.k8s.io/v1"));
        assert!(!is_served_version("batch/v1"));
    }

    #[test]
    fn short_names_and_scope() {
        let shorts: Vec<&str> = KINDS
            .iter()
            .flat_map(|k| k.short_names.iter().copied())
            .collect();
        for s in [
            "po", "svc", "deploy", "ep", "ns", "cm", "ing", "rs", "sts", "no", "ev",
        ] {
            assert!(shorts.contains(&s), "{s}");
        }
        for k in [
            Kind::Secret,
            Kind::EndpointSlice,
            Kind::IngressClass,
            Kind::Lease,
        ] {
            assert!(k.info().short_names.is_empty());
        }
        let cluster: Vec<Kind> = KINDS
            .iter()
            .filter(|k| !k.namespaced)
            .map(|k| k.kind)
            .collect();
        assert_eq!(
            cluster,
            vec![Kind::Namespace, Kind::Node, Kind::IngressClass]
        );
        let all: Vec<Kind> = in_category("all").map(|k| k.kind).collect();
        assert_eq!(
            all,
            vec![
                Kind::Pod,
                Kind::Service,
                Kind::Deployment,
                Kind::ReplicaSet,
                Kind::StatefulSet
            ]
        );
        assert!(Kind::Deployment.info().has_subresource("scale"));
        assert!(Kind::Pod.info().has_subresource("log"));
        assert!(!Kind::ConfigMap.info().has_subresource("status"));
        assert_eq!(Kind::Endpoints.info().singular, "endpoints");
    }

    #[test]
    fn group_versions_listed() {
        let gv = group_versions();
        assert_eq!(gv[0], ("", "v1"));
        assert!(gv.contains(&("apps", "v1")));
        assert_eq!(gv.len(), 5);
    }
}
