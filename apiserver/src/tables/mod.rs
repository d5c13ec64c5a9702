//! Server-side printing: `meta.k8s.io/v1` `Table`s for `kubectl get`.
//!
//! kubectl asks with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...`
//! ([`wants_table`]); answer with [`table`] and the Content-Type [`TABLE_CONTENT_TYPE`].
//! Columns and cells follow upstream `pkg/printers/internalversion/printers.go`, generated the
//! way the apiserver does it (always "wide": priority-1 columns are included and kubectl hides
//! them unless `-o wide`).
//!
//! Each kind has a small module: [`core`] (pods, services, endpoints, namespaces, nodes,
//! configmaps, secrets, events), [`apps`] (deployments, replicasets, statefulsets) and
//! [`networking`] (ingresses, ingressclasses, endpointslices, leases).

pub mod apps;
pub mod core;
pub mod networking;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use skiff_api::Kind;

use crate::discovery::accepts_as;

/// The Content-Type to answer a Table request with.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Does this `Accept` header ask for a `meta.k8s.io/v1` `Table`?
pub fn wants_table(accept: &str) -> bool {
    accepts_as(accept, "meta.k8s.io", "v1", "Table")
}

/// What `rows[].object` holds (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default; kubectl needs it for
    /// the NAMESPACE and LABELS columns).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the `includeObject` query parameter (`None`, `Metadata`, `Object`); absent or
    /// unknown values give the default, `Metadata`.
    pub fn from_query(value: Option<&str>) -> IncludeObject {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// One column definition (upstream `TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: &'static str,
    /// `name` for the object-name column, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
}

pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(crate) const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The `Name` column.
pub(crate) const fn name_col() -> Column {
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESC,
        priority: 0,
    }
}

/// The `Age` column.
pub(crate) const fn age_col() -> Column {
    col("Age", "string", AGE_DESC)
}

/// A plain priority-0 column.
pub(crate) const fn col(name: &'static str, type_: &'static str, desc: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description: desc,
        priority: 0,
    }
}

/// A priority-1 (`-o wide`) column.
pub(crate) const fn wide(name: &'static str, type_: &'static str, desc: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description: desc,
        priority: 1,
    }
}

/// One printed row: its cells and, optionally, row conditions (pods that completed).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub cells: Vec<Value>,
    pub conditions: Vec<Value>,
}

impl Row {
    pub(crate) fn new(cells: Vec<Value>) -> Row {
        Row {
            cells,
            conditions: Vec::new(),
        }
    }
}

/// The column definitions for a kind.
pub fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Pod => core::POD_COLUMNS,
        Kind::Service => core::SERVICE_COLUMNS,
        Kind::Endpoints => core::ENDPOINTS_COLUMNS,
        Kind::Namespace => core::NAMESPACE_COLUMNS,
        Kind::Node => core::NODE_COLUMNS,
        Kind::ConfigMap => core::CONFIGMAP_COLUMNS,
        Kind::Secret => core::SECRET_COLUMNS,
        Kind::Event => core::EVENT_COLUMNS,
        Kind::Deployment => apps::DEPLOYMENT_COLUMNS,
        Kind::ReplicaSet => apps::REPLICASET_COLUMNS,
        Kind::StatefulSet => apps::STATEFULSET_COLUMNS,
        Kind::Ingress => networking::INGRESS_COLUMNS,
        Kind::IngressClass => networking::INGRESSCLASS_COLUMNS,
        Kind::EndpointSlice => networking::ENDPOINTSLICE_COLUMNS,
        Kind::Lease => networking::LEASE_COLUMNS,
    }
}

/// The row for one object of `kind`, as of `now`.
pub fn row(kind: Kind, object: &Value, now: Timestamp) -> Row {
    match kind {
        Kind::Pod => core::pod_row(object, now),
        Kind::Service => core::service_row(object, now),
        Kind::Endpoints => core::endpoints_row(object, now),
        Kind::Namespace => core::namespace_row(object, now),
        Kind::Node => core::node_row(object, now),
        Kind::ConfigMap => core::configmap_row(object, now),
        Kind::Secret => core::secret_row(object, now),
        Kind::Event => core::event_row(object, now),
        Kind::Deployment => apps::deployment_row(object, now),
        Kind::ReplicaSet => apps::replicaset_row(object, now),
        Kind::StatefulSet => apps::statefulset_row(object, now),
        Kind::Ingress => networking::ingress_row(object, now),
        Kind::IngressClass => networking::ingressclass_row(object, now),
        Kind::EndpointSlice => networking::endpointslice_row(object, now),
        Kind::Lease => networking::lease_row(object, now),
    }
}

/// The `columnDefinitions` JSON for a kind.
pub fn column_definitions(kind: Kind) -> Value {
    Value::Array(
        columns(kind)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// `rows[].object` for one object.
fn row_object(object: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(object.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        })),
    }
}

/// The `rows` JSON for the objects (no column definitions): what a watch event's one-row
/// Table needs after the first event.
pub fn rows_json(kind: Kind, objects: &[Value], now: Timestamp, include: IncludeObject) -> Value {
    Value::Array(
        objects
            .iter()
            .map(|o| {
                let r = row(kind, o, now);
                let mut m = Map::new();
                m.insert("cells".into(), Value::Array(r.cells));
                if !r.conditions.is_empty() {
                    m.insert("conditions".into(), Value::Array(r.conditions));
                }
                if let Some(obj) = row_object(o, include) {
                    m.insert("object".into(), obj);
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// A `meta.k8s.io/v1` `Table` of `objects` (all of `kind`), as of `now`.
/// `resource_version` goes to `metadata.resourceVersion` (omitted when empty).
pub fn table(
    kind: Kind,
    objects: &[Value],
    now: Timestamp,
    include: IncludeObject,
    resource_version: &str,
) -> Value {
    let metadata = if resource_version.is_empty() {
        json!({})
    } else {
        json!({"resourceVersion": resource_version})
    };
    // Built by hand: `json!` would serialize the rows into a fresh Value, a deep copy.
    let mut table = serde_json::Map::new();
    table.insert("kind".into(), json!("Table"));
    table.insert("apiVersion".into(), json!("meta.k8s.io/v1"));
    table.insert("metadata".into(), metadata);
    table.insert("columnDefinitions".into(), column_definitions(kind));
    table.insert("rows".into(), rows_json(kind, objects, now, include));
    Value::Object(table)
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the per-kind modules.
// ---------------------------------------------------------------------------------------------

/// Follow a dotted path through the JSON.
pub(crate) fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, key| v.get(key))
}

/// The string at a path, `""` when missing or not a string.
pub(crate) fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// The integer at a path, 0 when missing.
pub(crate) fn int(v: &Value, path: &str) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// The boolean at a path, false when missing.
pub(crate) fn boolean(v: &Value, path: &str) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// The array at a path, empty when missing.
pub(crate) fn arr<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The number of keys of the object at a path, 0 when missing.
pub(crate) fn len_obj(v: &Value, path: &str) -> usize {
    at(v, path).and_then(Value::as_object).map_or(0, Map::len)
}

/// `metadata.name`.
pub(crate) fn name(v: &Value) -> Value {
    Value::String(s(v, "metadata.name").to_string())
}

/// Parse an RFC 3339 timestamp at a path.
pub(crate) fn timestamp(v: &Value, path: &str) -> Option<Timestamp> {
    let text = s(v, path);
    if text.is_empty() {
        return None;
    }
    text.parse::<Timestamp>().ok()
}

/// Upstream `translateTimestampSince`: `<unknown>` when unset, else the human duration.
pub(crate) fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        None => "<unknown>".to_string(),
        Some(ts) => human_duration(now.as_nanosecond() - ts.as_nanosecond()),
    }
}

/// The `Age` cell: time since `metadata.creationTimestamp`.
pub(crate) fn age(v: &Value, now: Timestamp) -> Value {
    Value::String(since(timestamp(v, "metadata.creationTimestamp"), now))
}

/// Upstream `duration.HumanDuration` of a duration in nanoseconds: `45s`, `5m12s`, `3h`,
/// `2d5h`, `3y12d`...
pub fn human_duration(nanos: i128) -> String {
    const NS: i128 = 1_000_000_000;
    let seconds = nanos / NS; // truncates toward zero like Go's int(d.Seconds())
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / (60 * NS);
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / (3600 * NS);
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        return format!("{hours}h{m}m");
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        return format!("{}d{h}h", hours / 24);
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        return format!("{}y{dy}d", hours / 24 / 365);
    }
    format!("{}y", hours / 24 / 365)
}

/// Upstream `layoutContainerCells`: container names and images, comma-joined.
pub(crate) fn containers_and_images(pod_spec: Option<&Value>) -> (Value, Value) {
    let containers = pod_spec.map_or(&[][..], |spec| arr(spec, "containers"));
    let names: Vec<&str> = containers.iter().map(|c| s(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| s(c, "image")).collect();
    (
        Value::String(names.join(",")),
        Value::String(images.join(",")),
    )
}

/// Upstream `labels.FormatLabels`: `k=v,k2=v2` sorted by key, `<none>` when empty.
pub(crate) fn format_labels(map: Option<&Value>) -> String {
    let labels: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if labels.is_empty() {
        return "<none>".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects
/// everything or is missing, `<error>` when invalid.
pub(crate) fn format_label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|v| !v.is_null()) else {
        return "<none>".to_string();
    };
    match crate::selectors::LabelSelector::from_json(selector) {
        Ok(sel) if sel.is_empty() => "<none>".to_string(),
        Ok(sel) => sel.to_string(),
        Err(_) => "<error>".to_string(),
    }
}

/// Upstream `listWithMoreString`.
pub(crate) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let ret = list.join(",");
    if more {
        return format!("{ret} + {} more...", count.saturating_sub(max));
    }
    if ret.is_empty() {
        return "<unset>".to_string();
    }
    ret
}

/// Sorted, distinct IPs or hostnames of a load balancer status (`status.loadBalancer`),
/// comma-joined (upstream `loadBalancerStatusStringer` in wide mode).
pub(crate) fn load_balancer_ingress(status: Option<&Value>) -> String {
    let mut result: Vec<&str> = status
        .map_or(&[][..], |s| arr(s, "ingress"))
        .iter()
        .filter_map(|i| {
            let ip = s(i, "ip");
            let host = s(i, "hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    result.sort_unstable();
    result.dedup();
    result.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn now() -> Timestamp {
        "2024-01-10T12:00:00Z".parse().unwrap()
    }

    /// An RFC 3339 timestamp `secs` seconds before [`now`].
    pub(crate) fn ago(secs: i64) -> String {
        let ts = now()
            .checked_sub(jiff::SignedDuration::from_secs(secs))
            .unwrap();
        ts.to_string()
    }

    pub(crate) fn names(kind: Kind) -> Vec<(&'static str, u8)> {
        columns(kind).iter().map(|c| (c.name, c.priority)).collect()
    }

    #[test]
    fn human_durations_match_upstream() {
        let s = |secs: i128| human_duration(secs * 1_000_000_000);
        assert_eq!(s(-5), "<invalid>");
        assert_eq!(human_duration(-1_500_000_000), "0s");
        assert_eq!(s(0), "0s");
        assert_eq!(s(45), "45s");
        assert_eq!(s(119), "119s");
        assert_eq!(s(120), "2m");
        assert_eq!(s(5 * 60 + 12), "5m12s");
        assert_eq!(s(10 * 60 + 12), "10m");
        assert_eq!(s(179 * 60), "179m");
        assert_eq!(s(3 * 3600), "3h");
        assert_eq!(s(3 * 3600 + 25 * 60), "3h25m");
        assert_eq!(s(8 * 3600 + 25 * 60), "8h");
        assert_eq!(s(47 * 3600), "47h");
        assert_eq!(s(2 * 86400 + 5 * 3600), "2d5h");
        assert_eq!(s(3 * 86400), "3d");
        assert_eq!(s(100 * 86400), "100d");
        assert_eq!(s(2 * 365 * 86400 + 12 * 86400), "2y12d");
        assert_eq!(s(9 * 365 * 86400), "9y");
        assert_eq!(since(None, now()), "<unknown>");
    }

    #[test]
    fn accept_and_include_object() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io"
        ));
        assert_eq!(IncludeObject::from_query(None), IncludeObject::Metadata);
        assert_eq!(
            IncludeObject::from_query(Some("Object")),
            IncludeObject::Object
        );
        assert_eq!(IncludeObject::from_query(Some("None")), IncludeObject::None);
    }

    #[test]
    fn table_shape() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "labels": {"a": "b"},
                         "creationTimestamp": ago(30)},
            "data": {"x": "1", "y": "2"}
        });
        let t = table(
            Kind::ConfigMap,
            std::slice::from_ref(&cm),
            now(),
            IncludeObject::Metadata,
            "42",
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"]["resourceVersion"], "42");
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name",
                   "description": NAME_DESC, "priority": 0})
        );
        assert_eq!(t["rows"][0]["cells"], json!(["c", 2, "30s"]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": cm["metadata"]})
        );
        let full = table(
            Kind::ConfigMap,
            std::slice::from_ref(&cm),
            now(),
            IncludeObject::Object,
            "",
        );
        assert_eq!(full["rows"][0]["object"], cm);
        assert_eq!(full["metadata"], json!({}));
        let none = table(Kind::ConfigMap, &[cm], now(), IncludeObject::None, "1");
        assert!(none["rows"][0].get("object").is_none());
    }

    #[test]
    fn every_kind_has_columns_matching_cells() {
        for kind in Kind::all() {
            let cols = columns(kind);
            assert!(!cols.is_empty());
            assert!(cols.iter().any(|c| c.format == "name"), "{kind}");
            let r = row(kind, &json!({}), now());
            assert_eq!(r.cells.len(), cols.len(), "{kind}");
            let r = row(kind, &json!({"metadata": {"name": "x"}}), now());
            let name_idx = cols.iter().position(|c| c.format == "name").unwrap();
            assert_eq!(r.cells[name_idx], "x", "{kind}");
        }
    }

    #[test]
    fn label_formatting() {
        assert_eq!(format_labels(None), "<none>");
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(
            format_label_selector(Some(&json!({"matchLabels": {"app": "web"}}))),
            "app=web"
        );
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Nope"}]})
            )),
            "<error>"
        );
    }
}
