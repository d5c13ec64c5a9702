//! Field sets as structured-merge-diff keeps them, and their `FieldsV1` JSON form (`f:`, `k:`, `v:`, `i:`, `.`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of a map or struct (`f:name`).
    Field(String),
    /// An item of a list-type map, by its keys: canonical JSON of the key fields (`k:{...}`).
    Key(String),
    /// An item of a set, by its value: canonical JSON (`v:...`).
    Value(String),
    /// A list item by position (`i:N`); upstream writes it only for lists with no other identity.
    Index(usize),
}

impl PathElement {
    /// The key element of a list-map item whose key fields are `keys` (sorted by field name, as
    /// upstream encodes them).
    pub fn key(keys: &BTreeMap<String, Value>) -> Self {
        Self::Key(canonical(&Value::Object(
            keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )))
    }

    /// The value element of a set item.
    pub fn value(v: &Value) -> Self {
        Self::Value(canonical(v))
    }

    fn encode(&self) -> String {
        match self {
            Self::Field(f) => format!("f:{f}"),
            Self::Key(k) => format!("k:{k}"),
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Self, String> {
        let parse = |json: &str| {
            serde_json::from_str::<Value>(json)
                .map(|v| canonical(&v))
                .map_err(|e| format!("invalid path element {s:?}: {e}"))
        };
        match s.split_once(':') {
            Some(("f", f)) => Ok(Self::Field(f.to_owned())),
            Some(("k", k)) => match serde_json::from_str::<Value>(k) {
                Ok(Value::Object(_)) => parse(k).map(Self::Key),
                _ => Err(format!(
                    "invalid path element {s:?}: a key must be a JSON object"
                )),
            },
            Some(("v", v)) => parse(v).map(Self::Value),
            Some(("i", i)) => i
                .parse()
                .map(Self::Index)
                .map_err(|_| format!("invalid path element {s:?}: bad index")),
            _ => Err(format!("invalid path element {s:?}")),
        }
    }

    /// Upstream's `fieldpath.Path.String()` form of this step.
    fn display(&self) -> String {
        match self {
            Self::Field(f) => format!(".{f}"),
            Self::Key(k) => {
                let fields = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m
                        .iter()
                        .map(|(name, v)| format!("{name}={}", canonical(v)))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => k.clone(),
                };
                format!("[{fields}]")
            }
            Self::Value(v) => format!("[={v}]"),
            Self::Index(i) => format!("[{i}]"),
        }
    }
}

/// Compact JSON with object keys sorted, so equal values give equal strings.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let ordered: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A path (list of steps) in upstream's printed form, e.g. `.spec.containers[name="app"].image`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A set of paths, stored as a tree: a node is a member when the path to it is in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// Whether no path at all is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds `path`.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// The node at `path`, if the tree has one.
    pub fn node(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.node(rest),
        }
    }

    /// Whether `path` itself is in the set.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether `path` or any path below it is in the set.
    pub fn contains_at_or_below(&self, path: &[PathElement]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    /// Whether this node itself is a member.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The child nodes, by step.
    pub fn children(&self) -> &BTreeMap<PathElement, FieldSet> {
        &self.children
    }

    /// Removes the subtree at `path` (the path and everything below it).
    pub fn remove_subtree(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => *self = FieldSet::default(),
            Some((first, [])) => {
                self.children.remove(first);
            }
            Some((first, rest)) => {
                if let Some(child) = self.children.get_mut(first) {
                    child.remove_subtree(rest);
                }
            }
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (k, c) in &other.children {
            let merged = match out.children.get(k) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(k.clone(), merged);
        }
        out
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Every path in the set, in order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON of the set.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                map.insert(k.encode(), c.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = v else {
            return Err("fieldsV1 must be a JSON object".to_owned());
        };
        let mut out = FieldSet::default();
        for (k, child) in map {
            if k == "." {
                out.member = true;
                continue;
            }
            let element = PathElement::decode(k)?;
            let node = match child {
                Value::Object(m) if m.is_empty() => FieldSet {
                    member: true,
                    children: BTreeMap::new(),
                },
                other => FieldSet::from_fields_v1(other)?,
            };
            out.children.insert(element, node);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(name: &str) -> PathElement {
        PathElement::Field(name.to_owned())
    }

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
                }}},
            },
            "f:metadata2": {"f:finalizers": {"v:\"a\"": {}, "i:0": {}}}
        });
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.contains(&[f("spec"), f("replicas")]));
        assert!(!set.contains(&[f("spec")]));
        assert!(set.contains(&[f("metadata"), f("labels")]));
        let paths: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert!(paths.contains(&".spec.template.spec.containers[name=\"app\"].image".to_owned()));
        assert!(paths.contains(
            &".spec.template.spec.containers[name=\"app\"].ports[containerPort=80,protocol=\"TCP\"]"
                .to_owned()
        ));
        assert!(paths.contains(&".metadata2.finalizers[=\"a\"]".to_owned()));
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"k:[1]": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }

    #[test]
    fn set_operations() {
        let mut a = FieldSet::default();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::default();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("metadata"), f("labels"), f("x")]);
        let i = a.intersection(&b);
        assert_eq!(i.paths(), vec![vec![f("spec"), f("replicas")]]);
        let d = a.difference(&b);
        assert_eq!(d.paths(), vec![vec![f("spec"), f("paused")]]);
        let u = a.union(&b);
        assert_eq!(u.paths().len(), 3);
        assert!(u.contains_at_or_below(&[f("metadata")]));
        let mut r = u.clone();
        r.remove_subtree(&[f("spec")]);
        assert_eq!(r.paths(), vec![vec![f("metadata"), f("labels"), f("x")]]);
        assert!(a.difference(&a).is_empty());
        // Keys are canonical whatever the order they were written in.
        let k1 = FieldSet::from_fields_v1(&json!({"k:{\"b\":1,\"a\":2}": {}})).unwrap();
        let k2 = FieldSet::from_fields_v1(&json!({"k:{\"a\":2,\"b\":1}": {}})).unwrap();
        assert_eq!(k1, k2);
    }
}
