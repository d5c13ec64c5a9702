//! `metadata.managedFields`: decoding the entries into per-manager field sets and encoding them back, sorted as upstream.

use serde_json::{Value, json};

use super::fieldset::FieldSet;

/// `Apply` or `Update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// Who owns a set of fields: upstream's manager identifier (manager, operation, subresource;
/// the API version too for updates, but skiff serves one version per kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerId {
    pub manager: String,
    pub operation: Operation,
    pub subresource: String,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: ManagerId,
    pub api_version: String,
    pub time: Option<String>,
    pub fields: FieldSet,
}

impl ManagerId {
    /// How upstream names a manager in conflict messages (`printManager`).
    pub fn describe(&self, api_version: &str) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {api_version}"));
        }
        s
    }
}

/// The entries of `object`'s `metadata.managedFields`; an absent or null list is empty.
pub fn decode(object: &Value) -> Result<Vec<Entry>, String> {
    let Some(list) = object
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .filter(|v| !v.is_null())
    else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err("metadata.managedFields must be a list".to_owned());
    };
    let mut out: Vec<Entry> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| item.get(name).and_then(Value::as_str).unwrap_or("");
        let operation = match field("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => {
                return Err(format!(
                    "metadata.managedFields[{i}].operation: Unsupported value: {other:?}: \
                     supported values: \"Apply\", \"Update\""
                ));
            }
        };
        let fields_type = field("fieldsType");
        if fields_type != "FieldsV1" {
            return Err(format!(
                "metadata.managedFields[{i}].fieldsType: Unsupported value: {fields_type:?}: \
                 supported values: \"FieldsV1\""
            ));
        }
        let fields = match item.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::default(),
            Some(v) => FieldSet::from_fields_v1(v)
                .map_err(|e| format!("metadata.managedFields[{i}].fieldsV1: {e}"))?,
        };
        let entry = Entry {
            id: ManagerId {
                manager: field("manager").to_owned(),
                operation,
                subresource: field("subresource").to_owned(),
            },
            api_version: field("apiVersion").to_owned(),
            time: item.get("time").and_then(Value::as_str).map(str::to_owned),
            fields,
        };
        // Upstream merges duplicate identifiers into one entry.
        match out.iter_mut().find(|e| e.id == entry.id) {
            Some(existing) => existing.fields = existing.fields.union(&entry.fields),
            None => out.push(entry),
        }
    }
    Ok(out)
}

/// The `managedFields` JSON of `entries`: empty sets dropped, sorted as upstream
/// (`Apply` before `Update`, then by time, manager, subresource).
pub fn encode(entries: &[Entry]) -> Value {
    let mut kept: Vec<&Entry> = entries.iter().filter(|e| !e.fields.is_empty()).collect();
    kept.sort_by(|a, b| {
        (
            a.id.operation,
            &a.time,
            &a.id.manager,
            &a.api_version,
            &a.id.subresource,
        )
            .cmp(&(
                b.id.operation,
                &b.time,
                &b.id.manager,
                &b.api_version,
                &b.id.subresource,
            ))
    });
    Value::Array(
        kept.into_iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.id.manager,
                    "operation": e.id.operation.as_str(),
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if let Some(t) = &e.time {
                    v["time"] = json!(t);
                }
                if !e.id.subresource.is_empty() {
                    v["subresource"] = json!(e.id.subresource);
                }
                v
            })
            .collect(),
    )
}

/// Stores `entries` in `object`'s metadata (removing the list when none is left).
pub fn set(object: &mut Value, entries: &[Entry]) {
    let encoded = encode(entries);
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if encoded.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encoded);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decode_encode_round_trip_and_order() {
        let obj = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1",
             "time": "2026-01-02T00:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
             "time": "2026-01-03T00:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:a": {}}}}},
            {"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
             "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "subresource": "scale",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]}});
        let entries = decode(&obj).unwrap();
        assert_eq!(entries.len(), 3);
        let out = encode(&entries);
        let managers: Vec<(&str, &str)> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap(),
                    e["operation"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            managers,
            [
                ("kubectl", "Apply"),
                ("kubectl", "Update"),
                ("kubectl-edit", "Update")
            ]
        );
        assert_eq!(out[1]["subresource"], "scale");
        assert_eq!(
            out[0]["fieldsV1"],
            obj["metadata"]["managedFields"][1]["fieldsV1"]
        );
        assert_eq!(
            entries[2].id.describe("apps/v1"),
            "\"kubectl\" with subresource \"scale\" using apps/v1"
        );
        assert_eq!(entries[1].id.describe("apps/v1"), "\"kubectl\"");
        let bad = json!({"metadata": {"managedFields": [{"operation": "Patch", "fieldsType": "FieldsV1"}]}});
        assert!(decode(&bad).unwrap_err().contains("operation"));
    }
}
