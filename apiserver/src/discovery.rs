//! API discovery documents, generated from the kinds registry ([`skiff_api::kinds::KINDS`]).
//!
//! Legacy discovery (every kubectl):
//! - `GET /api` → [`core_api_versions`] (`APIVersions`)
//! - `GET /apis` → [`api_group_list`] (`APIGroupList`)
//! - `GET /api/v1`, `GET /apis/{group}/{version}` → [`resource_list`] (`APIResourceList`)
//!
//! Aggregated discovery (kubectl ≥ 1.30 asks for it first): when [`wants_aggregated`] says the
//! `Accept` header asks for it, answer `GET /api` with [`aggregated_core`] and `GET /apis` with
//! [`aggregated_groups`], with the Content-Type [`AGGREGATED_CONTENT_TYPE`].
//!
//! Everything here is pure: no I/O, the documents are plain `serde_json::Value`s.

use serde_json::{Map, Value, json};
use skiff_api::kinds::{KINDS, KindInfo, group_versions};

/// The Content-Type to answer aggregated discovery with (the exact media type kubectl asked for).
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One media range of an `Accept` header: lowercased `type/subtype` and its parameters
/// (parameter names lowercased, values as written, quotes removed).
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    pub media_type: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// The value of a parameter, by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The quality (`q=`), 1.0 when absent or unparseable.
    pub fn quality(&self) -> f32 {
        self.param("q")
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0)
    }
}

/// Parse an `Accept` header into its media ranges, in the order written.
pub fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media_type = parts.next()?.trim().to_ascii_lowercase();
            if media_type.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    ))
                })
                .collect();
            Some(MediaRange { media_type, params })
        })
        .collect()
}

/// Does the `Accept` header ask for JSON of the given `g`/`v`/`as` (e.g. a `Table` or an
/// `APIGroupDiscoveryList`) with a non-zero quality? Parameter values compare case-sensitively
/// like upstream; only the `application/json` media type counts.
pub fn accepts_as(accept: &str, group: &str, version: &str, as_kind: &str) -> bool {
    parse_accept(accept).iter().any(|m| {
        m.media_type == "application/json"
            && m.param("g") == Some(group)
            && m.param("v") == Some(version)
            && m.param("as") == Some(as_kind)
            && m.quality() > 0.0
    })
}

/// Does this `Accept` header ask for aggregated discovery (`apidiscovery.k8s.io/v2`
/// `APIGroupDiscoveryList`)? If so answer with [`aggregated_core`] / [`aggregated_groups`] and
/// [`AGGREGATED_CONTENT_TYPE`]; otherwise with the legacy documents and `application/json`.
/// (kubectl 1.27–1.29 ask for `v2beta1` only; they get the legacy documents, which they accept.)
pub fn wants_aggregated(accept: &str) -> bool {
    accepts_as(accept, "apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")
}

/// `GET /api`: the legacy core group's versions. `server_address` is `host:port` as clients
/// should reach this server (upstream uses the advertised address).
pub fn core_api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ]
    })
}

/// The named groups served (everything but the core group), each with its versions, in
/// registry order.
fn named_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for (group, version) in group_versions() {
        if group.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, versions)) => versions.push(version),
            None => out.push((group, vec![version])),
        }
    }
    out
}

/// `GET /apis`: the `APIGroupList` of every named group with its versions and preferred version.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = named_groups()
        .into_iter()
        .map(|(group, versions)| {
            let gvs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            let preferred = gvs.first().cloned().unwrap_or(Value::Null);
            json!({"name": group, "versions": gvs, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// What discovery says about one subresource: the kind its endpoint returns
/// (`(group, version, kind)`; the group/version are the parent's unless given) and its verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubresourceInfo {
    pub name: &'static str,
    /// `Some((group, version))` when the response kind lives in another group/version
    /// (`scale` → `autoscaling/v1`).
    pub group_version: Option<(&'static str, &'static str)>,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

const GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];

/// Upstream's discovery row for a subresource of `info`.
pub fn subresource_info(info: &KindInfo, sub: &'static str) -> SubresourceInfo {
    match sub {
        "status" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: info.name,
            verbs: GET_PATCH_UPDATE,
        },
        "scale" => SubresourceInfo {
            name: sub,
            group_version: Some(("autoscaling", "v1")),
            kind: "Scale",
            verbs: GET_PATCH_UPDATE,
        },
        "log" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: "Pod",
            verbs: &["get"],
        },
        "portforward" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: "PodPortForwardOptions",
            verbs: &["create", "get"],
        },
        "finalize" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: info.name,
            verbs: &["update"],
        },
        "exec" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: "PodExecOptions",
            verbs: &["create", "get"],
        },
        "attach" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: "PodAttachOptions",
            verbs: &["create", "get"],
        },
        "binding" => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: "Binding",
            verbs: &["create"],
        },
        "eviction" => SubresourceInfo {
            name: sub,
            group_version: Some(("policy", "v1")),
            kind: "Eviction",
            verbs: &["create"],
        },
        _ => SubresourceInfo {
            name: sub,
            group_version: None,
            kind: info.name,
            verbs: &["get"],
        },
    }
}

fn strings(list: &[&str]) -> Value {
    Value::Array(
        list.iter()
            .map(|s| Value::String((*s).to_string()))
            .collect(),
    )
}

fn kinds_in<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static KindInfo> + 'a {
    KINDS
        .iter()
        .filter(move |k| k.group == group && k.version == version)
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`: the `APIResourceList`, one entry per
/// resource followed by one per subresource (`pods/status`, `deployments/scale`, ...).
/// `None` when the group/version is not served (the server answers 404).
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    if group.is_empty() && version == "v1" {
        // The legacy `bindings` collection (create only), listed first as upstream does.
        resources.push(json!({"name": "bindings", "singularName": "binding",
            "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
    }
    for info in kinds_in(group, version) {
        let mut r = Map::new();
        r.insert("name".into(), json!(info.plural));
        r.insert("singularName".into(), json!(info.singular));
        r.insert("namespaced".into(), json!(info.namespaced));
        r.insert("kind".into(), json!(info.name));
        r.insert("verbs".into(), strings(info.verbs));
        if !info.short_names.is_empty() {
            r.insert("shortNames".into(), strings(info.short_names));
        }
        if !info.categories.is_empty() {
            r.insert("categories".into(), strings(info.categories));
        }
        resources.push(Value::Object(r));
        for sub in info.subresources {
            let s = subresource_info(info, sub);
            let mut r = Map::new();
            r.insert("name".into(), json!(format!("{}/{}", info.plural, s.name)));
            r.insert("singularName".into(), json!(""));
            r.insert("namespaced".into(), json!(info.namespaced));
            if let Some((g, v)) = s.group_version {
                r.insert("group".into(), json!(g));
                r.insert("version".into(), json!(v));
            }
            r.insert("kind".into(), json!(s.kind));
            r.insert("verbs".into(), strings(s.verbs));
            resources.push(Value::Object(r));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// One `APIResourceDiscovery` (aggregated discovery v2) for a kind.
fn aggregated_resource(info: &KindInfo) -> Value {
    let mut r = Map::new();
    r.insert("resource".into(), json!(info.plural));
    r.insert(
        "responseKind".into(),
        json!({"group": info.group, "version": info.version, "kind": info.name}),
    );
    r.insert(
        "scope".into(),
        json!(if info.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }),
    );
    r.insert("singularResource".into(), json!(info.singular));
    r.insert("verbs".into(), strings(info.verbs));
    if !info.short_names.is_empty() {
        r.insert("shortNames".into(), strings(info.short_names));
    }
    if !info.categories.is_empty() {
        r.insert("categories".into(), strings(info.categories));
    }
    if !info.subresources.is_empty() {
        let subs: Vec<Value> = info
            .subresources
            .iter()
            .map(|sub| {
                let s = subresource_info(info, sub);
                let (g, v) = s.group_version.unwrap_or((info.group, info.version));
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": g, "version": v, "kind": s.kind},
                    "verbs": strings(s.verbs),
                })
            })
            .collect();
        r.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(r)
}

/// One `APIGroupDiscovery` item: `metadata.name` is the group (`""` for core).
fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut resources: Vec<Value> = kinds_in(group, v).map(aggregated_resource).collect();
            if group.is_empty() && *v == "v1" {
                resources.insert(
                    0,
                    json!({"resource": "bindings",
                    "responseKind": {"group": "", "version": "v1", "kind": "Binding"},
                    "scope": "Namespaced", "singularResource": "binding", "verbs": ["create"]}),
                );
            }
            json!({"version": v, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": versions,
    })
}

fn discovery_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// `GET /api` with aggregated discovery: an `APIGroupDiscoveryList` holding the core group
/// (the item with `metadata.name: ""`).
pub fn aggregated_core() -> Value {
    discovery_list(vec![aggregated_group("", &["v1"])])
}

/// `GET /apis` with aggregated discovery: an `APIGroupDiscoveryList` of every named group.
pub fn aggregated_groups() -> Value {
    let items = named_groups()
        .iter()
        .map(|(g, versions)| aggregated_group(g, versions))
        .collect();
    discovery_list(items)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    fn all_resource_lists() -> Vec<Value> {
        group_versions()
            .into_iter()
            .map(|(g, v)| resource_list(g, v).unwrap())
            .collect()
    }

    #[test]
    fn api_versions_document() {
        let v = core_api_versions("10.0.0.1:6443");
        assert_eq!(v["kind"], "APIVersions");
        assert_eq!(v["versions"], json!(["v1"]));
        assert_eq!(
            v["serverAddressByClientCIDRs"][0],
            json!({"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"})
        );
    }

    #[test]
    fn group_list_has_named_groups() {
        let v = api_group_list();
        assert_eq!(v["kind"], "APIGroupList");
        assert_eq!(v["apiVersion"], "v1");
        let groups = v["groups"].as_array().unwrap();
        let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec![
                "apps",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "networking.k8s.io"
            ]
        );
        let apps = &groups[0];
        assert_eq!(
            apps["versions"],
            json!([{"groupVersion": "apps/v1", "version": "v1"}])
        );
        assert_eq!(
            apps["preferredVersion"],
            json!({"groupVersion": "apps/v1", "version": "v1"})
        );
    }

    #[test]
    fn unknown_group_version_is_none() {
        assert!(resource_list("batch", "v1").is_none());
        assert!(resource_list("apps", "v1beta1").is_none());
        assert!(resource_list("", "v2").is_none());
    }

    #[test]
    fn core_resource_list() {
        let v = resource_list("", "v1").unwrap();
        assert_eq!(v["kind"], "APIResourceList");
        assert_eq!(v["groupVersion"], "v1");
        let pods = find(&v, "pods");
        assert_eq!(
            *pods,
            json!({
                "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["po"], "categories": ["all"]
            })
        );
        assert_eq!(
            *find(&v, "pods/status"),
            json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod",
                   "verbs": ["get", "patch", "update"]})
        );
        assert_eq!(find(&v, "pods/log")["verbs"], json!(["get"]));
        assert_eq!(find(&v, "pods/log")["kind"], "Pod");
        assert_eq!(
            find(&v, "pods/portforward")["verbs"],
            json!(["create", "get"])
        );
        let ns = find(&v, "namespaces");
        assert_eq!(ns["namespaced"], false);
        assert!(ns.get("categories").is_none());
        assert!(
            !ns["verbs"]
                .as_array()
                .unwrap()
                .contains(&json!("deletecollection"))
        );
        assert_eq!(find(&v, "namespaces/finalize")["verbs"], json!(["update"]));
        assert!(find(&v, "secrets").get("shortNames").is_none());
        assert_eq!(find(&v, "endpoints")["singularName"], "endpoints");
        assert_eq!(find(&v, "nodes")["namespaced"], false);
    }

    #[test]
    fn scale_subresource_is_autoscaling_scale() {
        let v = resource_list("apps", "v1").unwrap();
        assert_eq!(v["groupVersion"], "apps/v1");
        for res in ["deployments", "replicasets", "statefulsets"] {
            let s = find(&v, &format!("{res}/scale"));
            assert_eq!(s["group"], "autoscaling");
            assert_eq!(s["version"], "v1");
            assert_eq!(s["kind"], "Scale");
            assert_eq!(s["verbs"], json!(["get", "patch", "update"]));
            let st = find(&v, &format!("{res}/status"));
            assert!(st.get("group").is_none());
        }
        assert_eq!(find(&v, "deployments/status")["kind"], "Deployment");
    }

    #[test]
    fn every_kind_listed_with_short_names_and_scope() {
        let lists = all_resource_lists();
        let mut shorts = Vec::new();
        for info in KINDS {
            let list = lists
                .iter()
                .find(|l| l["groupVersion"] == info.api_version())
                .unwrap();
            let r = find(list, info.plural);
            assert_eq!(r["kind"], info.name);
            assert_eq!(r["namespaced"], info.namespaced);
            assert_eq!(r["verbs"], strings(info.verbs));
            if let Some(s) = r["shortNames"].as_array() {
                shorts.extend(s.iter().map(|x| x.as_str().unwrap().to_string()));
            }
            for sub in info.subresources {
                find(list, &format!("{}/{}", info.plural, sub));
            }
        }
        for s in [
            "po", "svc", "deploy", "ep", "ns", "cm", "ing", "rs", "sts", "no", "ev",
        ] {
            assert!(shorts.iter().any(|x| x == s), "{s}");
        }
    }

    #[test]
    fn category_all_matches_upstream() {
        let lists = all_resource_lists();
        let mut all = Vec::new();
        for l in &lists {
            for r in l["resources"].as_array().unwrap() {
                if r["categories"] == json!(["all"]) {
                    all.push(r["name"].as_str().unwrap().to_string());
                }
            }
        }
        all.sort();
        assert_eq!(
            all,
            vec![
                "deployments",
                "pods",
                "replicasets",
                "services",
                "statefulsets"
            ]
        );
    }

    #[test]
    fn aggregated_core_shape() {
        let v = aggregated_core();
        assert_eq!(v["kind"], "APIGroupDiscoveryList");
        assert_eq!(v["apiVersion"], "apidiscovery.k8s.io/v2");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "");
        let ver = &items[0]["versions"][0];
        assert_eq!(ver["version"], "v1");
        assert_eq!(ver["freshness"], "Current");
        let pods = ver["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(
            pods["responseKind"],
            json!({"group": "", "version": "v1", "kind": "Pod"})
        );
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        let subs = pods["subresources"].as_array().unwrap();
        let status = subs.iter().find(|s| s["subresource"] == "status").unwrap();
        assert_eq!(
            *status,
            json!({"subresource": "status",
                   "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
                   "verbs": ["get", "patch", "update"]})
        );
        let ns = ver["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "namespaces")
            .unwrap();
        assert_eq!(ns["scope"], "Cluster");
        // Resources without subresources/shortNames omit the fields, like upstream's omitempty.
        let cm = ver["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "configmaps")
            .unwrap();
        assert!(cm.get("subresources").is_none());
        assert!(cm.get("categories").is_none());
    }

    #[test]
    fn aggregated_groups_shape() {
        let v = aggregated_groups();
        let items = v["items"].as_array().unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "apps",
                "coordination.k8s.io",
                "discovery.k8s.io",
                "networking.k8s.io"
            ]
        );
        let apps = &items[0]["versions"][0];
        let deploy = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(
            deploy["responseKind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        let net = items
            .iter()
            .find(|i| i["metadata"]["name"] == "networking.k8s.io")
            .unwrap();
        let ic = net["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "ingressclasses")
            .unwrap();
        assert_eq!(ic["scope"], "Cluster");
        // Every kind appears exactly once across both documents, plus the legacy `bindings`.
        let core = aggregated_core();
        let count: usize = core["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(items.iter())
            .map(|i| {
                i["versions"][0]["resources"]
                    .as_array()
                    .map_or(0, |r| r.len())
            })
            .sum();
        assert_eq!(count, KINDS.len() + 1);
    }

    #[test]
    fn accept_header_parsing() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kubectl));
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(!wants_aggregated(old));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(""));
        assert!(!wants_aggregated("*/*"));
        assert!(wants_aggregated(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        ));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;q=0"
        ));
        assert!(!wants_aggregated(
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        ));
        let ranges = parse_accept("application/json;q=0.9, text/plain");
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].quality(), 0.9);
        assert_eq!(ranges[1].media_type, "text/plain");
    }
}
