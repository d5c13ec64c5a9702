//! The metadata fields the store owns: resourceVersion, uid, creationTimestamp, and preconditions.

use serde_json::{Map, Value};

use super::{ObjectKey, Preconditions, Revision, StoreError};

fn metadata_mut<'a>(
    key: &ObjectKey,
    object: &'a mut Value,
) -> Result<&'a mut Map<String, Value>, StoreError> {
    let Value::Object(map) = object else {
        return Err(StoreError::Invalid(format!(
            "{key}: the stored value must be a JSON object"
        )));
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    match meta {
        Value::Object(meta) => Ok(meta),
        _ => Err(StoreError::Invalid(format!(
            "{key}: metadata must be an object"
        ))),
    }
}

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.as_object()
}

/// The object's `metadata.resourceVersion`, if set and non-empty.
pub fn revision_of(key: &ObjectKey, object: &Value) -> Result<Option<Revision>, StoreError> {
    match metadata(object).and_then(|m| m.get("resourceVersion")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse::<Revision>().map(Some).map_err(|_| {
            StoreError::Invalid(format!(
                "{key}: metadata.resourceVersion {s:?} is not a resourceVersion this store issued"
            ))
        }),
        Some(other) => Err(StoreError::Invalid(format!(
            "{key}: metadata.resourceVersion must be a string, got {other}"
        ))),
    }
}

/// The object's `metadata.uid`, if set.
pub fn uid_of(object: &Value) -> Option<&str> {
    metadata(object)?.get("uid")?.as_str()
}

/// Sets `metadata.resourceVersion` (as the decimal string Kubernetes clients expect).
pub fn set_revision(object: &mut Value, revision: Revision) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

/// Removes `metadata.resourceVersion`: it is derived from the revision, never stored in the value.
pub fn strip_revision(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

/// Checks the object's identity against its key and that it is a JSON object with metadata.
fn check_identity(key: &ObjectKey, object: &mut Value) -> Result<(), StoreError> {
    let meta = metadata_mut(key, object)?;
    match meta.get("name") {
        None | Some(Value::Null) => {
            meta.insert("name".into(), Value::String(key.name.clone()));
        }
        Some(Value::String(n)) if *n == key.name => {}
        Some(other) => {
            return Err(StoreError::Invalid(format!(
                "{key}: metadata.name {other} does not match the key"
            )));
        }
    }
    match (&key.namespace, meta.get("namespace")) {
        (Some(ns), None | Some(Value::Null)) => {
            meta.insert("namespace".into(), Value::String(ns.clone()));
        }
        (Some(ns), Some(Value::String(n))) if n == ns => {}
        (None, None | Some(Value::Null)) => {}
        (None, Some(Value::String(n))) if n.is_empty() => {
            meta.remove("namespace");
        }
        (_, Some(other)) => {
            return Err(StoreError::Invalid(format!(
                "{key}: metadata.namespace {other} does not match the key"
            )));
        }
    }
    Ok(())
}

/// Prepares a new object for create: identity checked, resourceVersion absent,
/// `uid` and `creationTimestamp` assigned.
pub fn prepare_create(key: &ObjectKey, object: &mut Value) -> Result<(), StoreError> {
    check_identity(key, object)?;
    if revision_of(key, object)?.is_some() {
        return Err(StoreError::Invalid(format!(
            "{key}: metadata.resourceVersion must not be set on create"
        )));
    }
    let meta = metadata_mut(key, object)?;
    meta.remove("resourceVersion");
    meta.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    Ok(())
}

/// Prepares a replacement for `stored`: identity checked, `uid` and `creationTimestamp`
/// carried over from the stored object, resourceVersion removed.
pub fn prepare_update(
    key: &ObjectKey,
    object: &mut Value,
    stored: &Value,
) -> Result<(), StoreError> {
    check_identity(key, object)?;
    let stored_meta = metadata(stored);
    let meta = metadata_mut(key, object)?;
    meta.remove("resourceVersion");
    for field in ["uid", "creationTimestamp"] {
        match stored_meta.and_then(|m| m.get(field)) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    Ok(())
}

/// Checks update/delete preconditions against the stored object's revision and uid.
/// `object_revision` is the resourceVersion the caller's object carried, if any.
pub fn check_preconditions(
    key: &ObjectKey,
    stored_revision: Revision,
    stored: &Value,
    object_revision: Option<Revision>,
    pre: &Preconditions,
) -> Result<(), StoreError> {
    for wanted in [object_revision, pre.resource_version]
        .into_iter()
        .flatten()
    {
        if wanted != stored_revision {
            return Err(StoreError::Conflict {
                key: key.clone(),
                message: format!(
                    "the object has been modified; please apply your changes to the latest version and try again (resourceVersion {wanted} is stale, current is {stored_revision})"
                ),
            });
        }
    }
    if let Some(uid) = &pre.uid {
        let stored_uid = uid_of(stored).unwrap_or_default();
        if uid != stored_uid {
            return Err(StoreError::Conflict {
                key: key.clone(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {stored_uid}"
                ),
            });
        }
    }
    Ok(())
}

/// Now as Kubernetes writes timestamps: RFC 3339, whole seconds, UTC (`2026-11-23T04:14:36Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::ResourceName;
    use serde_json::json;

    fn key() -> ObjectKey {
        ObjectKey::new(
            ResourceName::new("configmaps").unwrap(),
            Some("default"),
            "a",
        )
    }

    #[test]
    fn create_assigns_uid_and_timestamp_and_fills_identity() {
        let mut obj = json!({"kind": "ConfigMap", "metadata": {}});
        prepare_create(&key(), &mut obj).unwrap();
        assert_eq!(obj["metadata"]["name"], "a");
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
        let ts = obj["metadata"]["creationTimestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    }

    #[test]
    fn create_refuses_resource_version_and_mismatched_name() {
        let mut obj = json!({"metadata": {"resourceVersion": "5"}});
        assert!(matches!(
            prepare_create(&key(), &mut obj),
            Err(StoreError::Invalid(_))
        ));
        let mut obj = json!({"metadata": {"name": "b"}});
        assert!(matches!(
            prepare_create(&key(), &mut obj),
            Err(StoreError::Invalid(_))
        ));
        let mut obj = json!([1]);
        assert!(matches!(
            prepare_create(&key(), &mut obj),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn update_carries_uid_and_timestamp() {
        let stored = json!({"metadata": {"name": "a", "uid": "u1", "creationTimestamp": "t"}});
        let mut obj = json!({"metadata": {"name": "a", "uid": "forged", "resourceVersion": "3"}});
        prepare_update(&key(), &mut obj, &stored).unwrap();
        assert_eq!(obj["metadata"]["uid"], "u1");
        assert_eq!(obj["metadata"]["creationTimestamp"], "t");
        assert!(obj["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn preconditions() {
        let stored = json!({"metadata": {"uid": "u1"}});
        let k = key();
        assert!(check_preconditions(&k, 7, &stored, Some(7), &Preconditions::default()).is_ok());
        assert!(matches!(
            check_preconditions(&k, 7, &stored, Some(6), &Preconditions::default()),
            Err(StoreError::Conflict { .. })
        ));
        let pre = Preconditions {
            resource_version: None,
            uid: Some("u2".into()),
        };
        assert!(matches!(
            check_preconditions(&k, 7, &stored, None, &pre),
            Err(StoreError::Conflict { .. })
        ));
    }

    #[test]
    fn revision_parsing() {
        let k = key();
        assert_eq!(
            revision_of(&k, &json!({"metadata": {"resourceVersion": ""}})).unwrap(),
            None
        );
        assert_eq!(
            revision_of(&k, &json!({"metadata": {"resourceVersion": "42"}})).unwrap(),
            Some(42)
        );
        assert!(revision_of(&k, &json!({"metadata": {"resourceVersion": "x"}})).is_err());
    }
}
