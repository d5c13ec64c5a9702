//! List responses written straight from stored JSON: each item's members are copied as raw
//! bytes, and only `apiVersion`, `kind` and `metadata.resourceVersion` are written anew.
//!
//! Decoding every stored object into a `Value` and serialising it again was two thirds of a
//! 10,000-pod list; scanning the bytes with `RawValue` skips both. The output is
//! byte-for-byte what serialising the decoded list would give (keys in sorted order).

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::storage::{RawObject, Revision};

/// One object's top-level or metadata members, in stored order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// A member name, borrowed from the input unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A member value to write: stored bytes, or a string written anew.
enum Piece<'a> {
    Raw(&'a RawValue),
    Str(&'a str),
    Metadata(Members<'a>),
}

/// Writes a whole `<Kind>List` body: `{"apiVersion":..,"items":[..],"kind":..,"metadata":{..}}`.
pub(crate) fn write_list(
    api_version: &str,
    kind: &str,
    revision: Revision,
    items: &[RawObject],
) -> Result<Vec<u8>, serde_json::Error> {
    let size: usize = items.iter().map(|i| i.json.len() + 64).sum();
    let mut out = Vec::with_capacity(size + 128);
    out.extend_from_slice(b"{\"apiVersion\":");
    write_str(&mut out, api_version);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(&mut out, api_version, kind, item)?;
    }
    out.extend_from_slice(b"],\"kind\":");
    write_str(&mut out, &format!("{kind}List"));
    out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":");
    write_str(&mut out, &revision.to_string());
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// Writes one item with its type meta and resourceVersion, members in sorted order.
fn write_item(
    out: &mut Vec<u8>,
    api_version: &str,
    kind: &str,
    item: &RawObject,
) -> Result<(), serde_json::Error> {
    let Members(stored) = serde_json::from_slice(&item.json)?;
    let mut members: Vec<(Cow<'_, str>, Piece<'_>)> = Vec::with_capacity(stored.len() + 2);
    for (key, value) in stored {
        let piece = match key.as_ref() {
            "apiVersion" | "kind" => continue,
            "metadata" => match serde_json::from_str::<Members<'_>>(value.get()) {
                Ok(meta) => Piece::Metadata(meta),
                // Not an object: nowhere to put the resourceVersion, as with a decoded value.
                Err(_) => Piece::Raw(value),
            },
            _ => Piece::Raw(value),
        };
        members.push((key, piece));
    }
    members.push((Cow::Borrowed("apiVersion"), Piece::Str(api_version)));
    members.push((Cow::Borrowed("kind"), Piece::Str(kind)));
    members.sort_by(|a, b| a.0.cmp(&b.0));

    let revision = item.revision.to_string();
    out.push(b'{');
    for (i, (key, piece)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        match piece {
            Piece::Raw(raw) => out.extend_from_slice(raw.get().as_bytes()),
            Piece::Str(s) => write_str(out, s),
            Piece::Metadata(Members(meta)) => write_metadata(out, meta, &revision),
        }
    }
    out.push(b'}');
    Ok(())
}

/// Writes `metadata` with `resourceVersion` in its sorted place (any stored one replaced).
fn write_metadata(out: &mut Vec<u8>, meta: &[(Cow<'_, str>, &RawValue)], revision: &str) {
    let mut written = false;
    let mut first = true;
    let mut separator = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    out.push(b'{');
    for (key, value) in meta {
        if !written && key.as_ref() >= "resourceVersion" {
            separator(out);
            out.extend_from_slice(b"\"resourceVersion\":");
            write_str(out, revision);
            written = true;
        }
        if key == "resourceVersion" {
            continue;
        }
        separator(out);
        write_str(out, key);
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    if !written {
        separator(out);
        out.extend_from_slice(b"\"resourceVersion\":");
        write_str(out, revision);
    }
    out.push(b'}');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(revision: Revision, value: &Value) -> RawObject {
        RawObject {
            revision,
            json: serde_json::to_vec(value).unwrap(),
        }
    }

    /// What the decoding path produces: the list as a `Value`, serialised.
    fn decoded(api_version: &str, kind: &str, revision: Revision, items: &[RawObject]) -> Vec<u8> {
        let items: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut v: Value = serde_json::from_slice(&i.json).unwrap();
                v["apiVersion"] = json!(api_version);
                v["kind"] = json!(kind);
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.insert("resourceVersion".into(), json!(i.revision.to_string()));
                }
                v
            })
            .collect();
        serde_json::to_vec(&json!({
            "apiVersion": api_version,
            "items": items,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": revision.to_string()},
        }))
        .unwrap()
    }

    #[test]
    fn spliced_list_is_byte_identical_to_the_decoded_one() {
        let items = vec![
            raw(
                7,
                &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "d", "uid": "u", "labels": {"x\"y": "é\n"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running", "n": 1.5}}),
            ),
            // No type meta stored, a metadata key after resourceVersion, an escaped member name.
            raw(
                9,
                &json!({"metadata": {"name": "b", "selfLink": "", "zz": 1}, "sp\u{0007}ec": null}),
            ),
            // Only keys sorting before resourceVersion.
            raw(3, &json!({"metadata": {"name": "c"}, "data": {"k": "v"}})),
            raw(4, &json!({"metadata": {}})),
        ];
        let spliced = write_list("v1", "Pod", 12, &items).unwrap();
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            String::from_utf8(decoded("v1", "Pod", 12, &items)).unwrap()
        );
    }

    #[test]
    fn type_meta_from_the_request_replaces_the_stored_one() {
        let items = vec![raw(
            2,
            &json!({"apiVersion": "apps/v1beta1", "kind": "Old", "metadata": {"name": "a", "resourceVersion": "1"}}),
        )];
        let body: Value =
            serde_json::from_slice(&write_list("apps/v1", "Deployment", 5, &items).unwrap())
                .unwrap();
        assert_eq!(body["items"][0]["apiVersion"], "apps/v1");
        assert_eq!(body["items"][0]["kind"], "Deployment");
        assert_eq!(body["items"][0]["metadata"]["resourceVersion"], "2");
        assert_eq!(body["kind"], "DeploymentList");
        assert_eq!(body["metadata"]["resourceVersion"], "5");
    }

    #[test]
    fn empty_list_and_bad_stored_json() {
        let body: Value =
            serde_json::from_slice(&write_list("v1", "Pod", 1, &[]).unwrap()).unwrap();
        assert_eq!(body["items"], json!([]));
        let bad = RawObject {
            revision: 1,
            json: b"{\"metadata\":".to_vec(),
        };
        assert!(write_list("v1", "Pod", 1, &[bad]).is_err());
    }
}
