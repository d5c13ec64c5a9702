//! Upstream's bridges between client-side apply's last-applied annotation and server-side apply by the `kubectl` manager.

use serde_json::Value;
use skiff_api::Kind;

use super::fieldset::FieldSet;
use super::walk::{compare, field_set};

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager name `kubectl apply --server-side` uses; only it gets these bridges upstream.
pub const KUBECTL: &str = "kubectl";

fn annotation(object: &Value) -> Option<&str> {
    object["metadata"]["annotations"][ANNOTATION].as_str()
}

/// Fields a `kubectl` apply may take over from client-side apply without a conflict
/// (upstream `lastAppliedManager`): those in the last-applied configuration whose live value
/// nobody changed since.
pub fn allowed_conflicts(kind: Kind, live: &Value) -> FieldSet {
    let Some(text) = annotation(live) else {
        return FieldSet::default();
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return FieldSet::default();
    };
    let (Ok(set), Ok(diff)) = (field_set(kind, &last), compare(kind, &last, live)) else {
        return FieldSet::default();
    };
    set.difference(&diff.modified)
}

/// Keeps the annotation in step with a `kubectl` apply when the live object has one (upstream
/// `lastAppliedUpdater`): it becomes the applied configuration, without the annotation itself.
pub fn sync(live: &Value, config: &Value, merged: &mut Value) {
    if annotation(live).is_none() {
        return;
    }
    let mut last = config.clone();
    if let Some(annotations) = last
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.remove(ANNOTATION);
        if annotations.is_empty()
            && let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    // kubectl writes the annotation with a trailing newline (a JSON encoder's output).
    let text = format!("{last}\n");
    if let Some(annotations) = merged
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.insert(ANNOTATION.into(), Value::String(text));
    }
}
