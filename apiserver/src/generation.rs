//! `metadata.generation`: set to 1 on create and bumped on every spec change for the kinds whose upstream strategy does so, so controllers can report `status.observedGeneration`.

use serde_json::{Value, json};
use skiff_api::Kind;

/// Kinds whose upstream registry strategy maintains `metadata.generation`.
fn tracks_generation(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Deployment
            | Kind::ReplicaSet
            | Kind::StatefulSet
            | Kind::Ingress
            | Kind::IngressClass
    )
}

/// Upstream `PrepareForCreate`: a new object starts at generation 1 whatever the client sent.
pub fn on_create(kind: Kind, object: &mut Value) {
    if !tracks_generation(kind) {
        return;
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), json!(1));
    }
}

/// Upstream `PrepareForUpdate`: clients cannot set the generation; it grows by one when the
/// spec changes. (Upstream also bumps a Deployment on annotation changes, because its controller
/// writes the revision annotation through `/status`; skiff's `/status` keeps metadata, so the
/// controller writes annotations on the main resource and only spec changes count.)
pub fn on_update(kind: Kind, current: &Value, next: &mut Value) {
    if !tracks_generation(kind) {
        return;
    }
    let stored = current["metadata"]["generation"].as_i64().unwrap_or(0);
    let changed = current.get("spec") != next.get("spec");
    let generation = if changed { stored + 1 } else { stored };
    if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
        if generation > 0 {
            meta.insert("generation".into(), json!(generation));
        } else {
            meta.remove("generation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_starts_at_one_and_ignores_the_client() {
        let mut d = json!({"metadata": {"name": "a", "generation": 9}, "spec": {}});
        on_create(Kind::Deployment, &mut d);
        assert_eq!(d["metadata"]["generation"], 1);
        let mut cm = json!({"metadata": {"name": "a"}});
        on_create(Kind::ConfigMap, &mut cm);
        assert!(cm["metadata"].get("generation").is_none());
    }

    #[test]
    fn spec_changes_bump_and_status_changes_do_not() {
        let current = json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}});
        let mut same = json!({"metadata": {"generation": 7}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        on_update(Kind::ReplicaSet, &current, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
        let mut scaled = json!({"metadata": {}, "spec": {"replicas": 2}});
        on_update(Kind::ReplicaSet, &current, &mut scaled);
        assert_eq!(scaled["metadata"]["generation"], 4);
    }
}
