//! Schema-aware walks over object JSON: field sets, comparisons, merges and path removal.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use skiff_api::Kind;

use super::fieldset::{FieldSet, PathElement};
use super::schema::{ListType, is_atomic_struct, key_default, list_type};

/// A list-map item without one of its key fields, or two items with the same keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WalkError(pub String);

/// Where a walk is: the schema path (field names) and the set path (with item keys).
#[derive(Clone, Default)]
struct At {
    names: Vec<String>,
    path: Vec<PathElement>,
}

impl At {
    fn field(&self, name: &str) -> At {
        let mut next = self.clone();
        next.names.push(name.to_owned());
        next.path.push(PathElement::Field(name.to_owned()));
        next
    }

    fn item(&self, pe: PathElement) -> At {
        let mut next = self.clone();
        next.path.push(pe);
        next
    }

    fn dotted(&self) -> String {
        self.names.join(".")
    }

    fn shown(&self) -> String {
        super::fieldset::path_string(&self.path)
    }
}

/// How the walk treats the node at `at` holding `v`.
enum Shape<'a> {
    Leaf,
    Map(&'a Map<String, Value>),
    List(&'a [Value], ListType),
}

fn shape<'a>(kind: Kind, at: &At, v: &'a Value) -> Shape<'a> {
    match v {
        Value::Object(m) if !is_atomic_struct(kind, &at.dotted()) => Shape::Map(m),
        Value::Array(a) => match list_type(kind, &at.dotted()) {
            ListType::Atomic => Shape::Leaf,
            t => Shape::List(a, t),
        },
        _ => Shape::Leaf,
    }
}

/// The path element that identifies `item` in a list of type `t`.
fn item_element(t: ListType, item: &Value, at: &At) -> Result<PathElement, WalkError> {
    match t {
        ListType::Set | ListType::Atomic => Ok(PathElement::value(item)),
        ListType::Map(keys) => {
            let mut fields = BTreeMap::new();
            for key in keys {
                match item.get(*key).filter(|v| !v.is_null()).cloned() {
                    Some(v) => {
                        fields.insert((*key).to_owned(), v);
                    }
                    None => match key_default(key) {
                        Some(d) => {
                            fields.insert((*key).to_owned(), d);
                        }
                        None => {
                            return Err(WalkError(format!(
                                "{}: associative list with keys has an element that omits key \
                                 field {key:?}",
                                at.shown()
                            )));
                        }
                    },
                }
            }
            Ok(PathElement::key(&fields))
        }
    }
}

/// The items of a list by their path element, refusing duplicates.
fn keyed<'a>(
    t: ListType,
    items: &'a [Value],
    at: &At,
) -> Result<Vec<(PathElement, &'a Value)>, WalkError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pe = item_element(t, item, at)?;
        if !seen.insert(pe.clone()) {
            // Upstream tolerates duplicate set values but not duplicate map keys.
            if matches!(t, ListType::Map(_)) {
                return Err(WalkError(format!(
                    "{}: duplicate entries for key {}",
                    at.shown(),
                    super::fieldset::path_string(std::slice::from_ref(&pe))
                )));
            }
            continue;
        }
        out.push((pe, item));
    }
    Ok(out)
}

/// The set of every path a configuration sets (upstream `ToFieldSet`): scalars, atomic lists
/// and structs, and empty maps are leaves; list-map and set items are members themselves.
pub fn field_set(kind: Kind, v: &Value) -> Result<FieldSet, WalkError> {
    let mut set = FieldSet::default();
    visit_set(kind, &At::default(), v, &mut set)?;
    Ok(set)
}

fn visit_set(kind: Kind, at: &At, v: &Value, set: &mut FieldSet) -> Result<(), WalkError> {
    match shape(kind, at, v) {
        Shape::Leaf => set.insert(&at.path),
        Shape::Map(m) if m.is_empty() => set.insert(&at.path),
        Shape::Map(m) => {
            for (k, child) in m {
                if !child.is_null() {
                    visit_set(kind, &at.field(k), child, set)?;
                }
            }
        }
        Shape::List(items, t) => {
            for (pe, item) in keyed(t, items, at)? {
                let item_at = at.item(pe);
                set.insert(&item_at.path);
                if let (ListType::Map(_), Value::Object(m)) = (t, item) {
                    for (k, child) in m {
                        if !child.is_null() {
                            visit_set(kind, &item_at.field(k), child, set)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// What changed from one object to another (upstream `typed.Comparison`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares `old` and `new` field by field. A map or list item that appears or disappears is
/// itself added or removed (upstream's `.` entries), except the top-level fields, which
/// upstream's empty object of a kind already holds.
pub fn compare(kind: Kind, old: &Value, new: &Value) -> Result<Comparison, WalkError> {
    let mut c = Comparison::default();
    compare_at(kind, &At::default(), Some(old), Some(new), &mut c)?;
    Ok(c)
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

fn compare_at(
    kind: Kind,
    at: &At,
    old: Option<&Value>,
    new: Option<&Value>,
    c: &mut Comparison,
) -> Result<(), WalkError> {
    let (old, new) = (present(old), present(new));
    let leaf = |c: &mut Comparison| match (old, new) {
        (None, Some(_)) => c.added.insert(&at.path),
        (Some(_), None) => c.removed.insert(&at.path),
        (Some(a), Some(b)) if a != b => c.modified.insert(&at.path),
        _ => {}
    };
    let probe = new.or(old);
    let Some(probe) = probe else {
        return Ok(());
    };
    let empty_map = Map::new();
    match shape(kind, at, probe) {
        Shape::Map(_) => {
            let (Some(om), Some(nm)) = (as_map(old, &empty_map), as_map(new, &empty_map)) else {
                leaf(c);
                return Ok(());
            };
            if om.is_empty() && nm.is_empty() {
                leaf(c);
                return Ok(());
            }
            let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let child = at.field(k);
                let (o, n) = (present(om.get(k)), present(nm.get(k)));
                compare_at(kind, &child, o, n, c)?;
                if at.path.is_empty() {
                    continue;
                }
                match (o, n) {
                    (None, Some(_)) => c.added.insert(&child.path),
                    (Some(_), None) => c.removed.insert(&child.path),
                    _ => {}
                }
            }
        }
        Shape::List(_, t) => {
            let (Some(ol), Some(nl)) = (as_list(old), as_list(new)) else {
                leaf(c);
                return Ok(());
            };
            let ok = keyed(t, ol, at)?;
            let nk = keyed(t, nl, at)?;
            let mut elements: Vec<&PathElement> = ok
                .iter()
                .map(|(p, _)| p)
                .chain(nk.iter().map(|(p, _)| p))
                .collect();
            elements.sort();
            elements.dedup();
            for pe in elements {
                let item_at = at.item(pe.clone());
                let (o, n) = (find(&ok, pe), find(&nk, pe));
                if let ListType::Map(_) = t {
                    compare_item(kind, &item_at, o, n, c)?;
                }
                match (o, n) {
                    (None, Some(_)) => c.added.insert(&item_at.path),
                    (Some(_), None) => c.removed.insert(&item_at.path),
                    _ => {}
                }
            }
        }
        Shape::Leaf => leaf(c),
    }
    Ok(())
}

fn as_map<'a>(
    v: Option<&'a Value>,
    empty: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    match v {
        None => Some(empty),
        Some(Value::Object(m)) => Some(m),
        Some(_) => None,
    }
}

fn as_list(v: Option<&Value>) -> Option<&[Value]> {
    match v {
        None => Some(&[]),
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(_) => None,
    }
}

fn find<'a>(list: &[(PathElement, &'a Value)], pe: &PathElement) -> Option<&'a Value> {
    list.iter().find(|(p, _)| p == pe).map(|(_, v)| *v)
}

/// Compares two items of a list map field by field (the item itself is handled by the caller).
fn compare_item(
    kind: Kind,
    at: &At,
    old: Option<&Value>,
    new: Option<&Value>,
    c: &mut Comparison,
) -> Result<(), WalkError> {
    let empty = Map::new();
    let om = old.and_then(Value::as_object).unwrap_or(&empty);
    let nm = new.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let child = at.field(k);
        let (o, n) = (present(om.get(k)), present(nm.get(k)));
        compare_at(kind, &child, o, n, c)?;
        match (o, n) {
            (None, Some(_)) => c.added.insert(&child.path),
            (Some(_), None) => c.removed.insert(&child.path),
            _ => {}
        }
    }
    Ok(())
}

/// `config` merged into `live` (upstream `typed.Merge`): maps field by field, list maps and sets
/// item by item, everything else replaced. Shared list items take the config's order; items
/// only the live object has stay where they were.
pub fn merge(kind: Kind, live: &Value, config: &Value) -> Result<Value, WalkError> {
    merge_at(kind, &At::default(), live, config)
}

fn merge_at(kind: Kind, at: &At, live: &Value, config: &Value) -> Result<Value, WalkError> {
    match (shape(kind, at, config), live) {
        (Shape::Map(cm), Value::Object(lm)) => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                let merged = match lm.get(k).filter(|v| !v.is_null()) {
                    Some(lv) => merge_at(kind, &at.field(k), lv, cv)?,
                    None => cv.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Shape::List(citems, t), Value::Array(litems)) => {
            let lk = keyed(t, litems, at)?;
            let ck = keyed(t, citems, at)?;
            let in_config: HashSet<&PathElement> = ck.iter().map(|(p, _)| p).collect();
            let mut emitted: HashSet<PathElement> = HashSet::new();
            let mut out = Vec::with_capacity(lk.len() + ck.len());
            let (mut li, mut ci) = (0, 0);
            let merge_item = |pe: &PathElement, cv: &Value| -> Result<Value, WalkError> {
                match (t, lk.iter().find(|(p, _)| p == pe)) {
                    (ListType::Map(_), Some((_, lv))) => {
                        merge_item_fields(kind, &at.item(pe.clone()), lv, cv)
                    }
                    _ => Ok(cv.clone()),
                }
            };
            while li < lk.len() || ci < ck.len() {
                if let Some((lpe, lv)) = lk.get(li) {
                    if emitted.contains(lpe) {
                        li += 1;
                        continue;
                    }
                    if !in_config.contains(lpe) {
                        out.push((*lv).clone());
                        li += 1;
                        continue;
                    }
                }
                match ck.get(ci) {
                    Some((cpe, cv)) => {
                        out.push(merge_item(cpe, cv)?);
                        emitted.insert(cpe.clone());
                        ci += 1;
                    }
                    None => li += 1,
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(config.clone()),
    }
}

fn merge_item_fields(
    kind: Kind,
    at: &At,
    live: &Value,
    config: &Value,
) -> Result<Value, WalkError> {
    let (Value::Object(lm), Value::Object(cm)) = (live, config) else {
        return Ok(config.clone());
    };
    let mut out = lm.clone();
    for (k, cv) in cm {
        let merged = match lm.get(k).filter(|v| !v.is_null()) {
            Some(lv) => merge_at(kind, &at.field(k), lv, cv)?,
            None => cv.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(Value::Object(out))
}

/// Removes from `v` every path that is a member of `remove`, and then any map or list that the
/// removal left empty and `keep` has nothing at or below.
pub fn remove_paths(kind: Kind, v: &mut Value, remove: &FieldSet, keep: &FieldSet) {
    remove_at(kind, &At::default(), v, remove, keep);
}

/// Returns whether something was removed below `v`.
fn remove_at(kind: Kind, at: &At, v: &mut Value, remove: &FieldSet, keep: &FieldSet) -> bool {
    let mut removed_any = false;
    let dotted = at.dotted();
    match v {
        Value::Object(m) if !is_atomic_struct(kind, &dotted) => {
            for (pe, node) in remove.children() {
                let PathElement::Field(name) = pe else {
                    continue;
                };
                let child_at = at.field(name);
                if node.is_member() {
                    removed_any |= m.remove(name).is_some();
                    continue;
                }
                if let Some(child) = m.get_mut(name)
                    && remove_at(kind, &child_at, child, node, keep)
                {
                    removed_any = true;
                    if is_empty_container(child) && !keep.contains_at_or_below(&child_at.path) {
                        m.remove(name);
                    }
                }
            }
        }
        Value::Array(items) => {
            let t = list_type(kind, &dotted);
            if t == ListType::Atomic {
                return false;
            }
            let mut kept = Vec::with_capacity(items.len());
            for mut item in std::mem::take(items) {
                let Ok(pe) = item_element(t, &item, at) else {
                    kept.push(item);
                    continue;
                };
                match remove.children().get(&pe) {
                    Some(node) if node.is_member() => removed_any = true,
                    Some(node) => {
                        let item_at = at.item(pe);
                        if let Value::Object(fields) = &mut item {
                            for (fpe, fnode) in node.children() {
                                let PathElement::Field(name) = fpe else {
                                    continue;
                                };
                                if fnode.is_member() {
                                    removed_any |= fields.remove(name).is_some();
                                } else if let Some(child) = fields.get_mut(name) {
                                    let child_at = item_at.field(name);
                                    if remove_at(kind, &child_at, child, fnode, keep) {
                                        removed_any = true;
                                        if is_empty_container(child)
                                            && !keep.contains_at_or_below(&child_at.path)
                                        {
                                            fields.remove(name);
                                        }
                                    }
                                }
                            }
                        }
                        kept.push(item);
                    }
                    None => kept.push(item),
                }
            }
            *items = kept;
        }
        _ => {}
    }
    removed_any
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// `v` without `null` map values (an apply configuration's nulls set nothing).
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "nginx:1",
                     "ports": [{"containerPort": 80}], "args": ["a", "b"]}
                ]}}}
        })
    }

    #[test]
    fn field_set_of_a_config() {
        let set = field_set(Kind::Deployment, &deployment()).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}, "f:name": {}},
                "f:spec": {"f:replicas": {}, "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                        ".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}}}}}}}}
            })
        );
        let bad = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = field_set(Kind::Deployment, &bad).unwrap_err();
        assert!(err.0.contains("omits key field \"name\""), "{err}");
        let dup =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}});
        assert!(
            field_set(Kind::Deployment, &dup)
                .unwrap_err()
                .0
                .contains("duplicate")
        );
    }

    #[test]
    fn compare_marks_added_containers() {
        let old = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
        let new = json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"replicas": 2}});
        let c = compare(Kind::Deployment, &old, &new).unwrap();
        assert_eq!(
            c.added.to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        assert_eq!(
            c.modified.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(c.removed.is_empty());
        let back = compare(Kind::Deployment, &new, &old).unwrap();
        assert_eq!(back.removed, c.added);
    }

    #[test]
    fn merge_list_maps_sets_and_atomics() {
        let live = json!({"metadata": {"finalizers": ["a"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "args": ["x"]},
                {"name": "side", "image": "busybox"}]}}}});
        let config = json!({"metadata": {"finalizers": ["b"]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:2", "ports": [{"containerPort": 80, "name": "http"}],
                 "args": ["y"]}]}}}});
        let out = merge(Kind::Deployment, &live, &config).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(c[0]["args"], json!(["y"]));
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
        assert_eq!(c[1]["name"], "side");
    }

    #[test]
    fn remove_paths_drops_items_fields_and_emptied_maps() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "x", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                {"name": "side", "image": "y"}]}}}});
        let remove = FieldSet::from_fields_v1(&json!({
            "f:metadata": {"f:labels": {"f:a": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"side\"}": {".": {}, "f:image": {}},
                "k:{\"name\":\"app\"}": {"f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}}}
            }}}}
        }))
        .unwrap();
        remove_paths(Kind::Deployment, &mut v, &remove, &FieldSet::default());
        assert_eq!(
            v,
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": "x"}]}}}})
        );
    }
}
