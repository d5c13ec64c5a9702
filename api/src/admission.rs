//! Mutating admission that upstream runs on create and skiff builds in: `DefaultTolerationSeconds`.

use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::Object;

/// The taint the node controller puts on a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint the node controller puts on a node that stopped sending heartbeats.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Upstream's `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// What upstream's admission chain adds to an object being created (never on update).
pub fn on_create(obj: &mut Object) {
    if let Object::Pod(pod) = obj {
        default_toleration_seconds(pod);
    }
}

/// `DefaultTolerationSeconds`: a pod that does not already tolerate the not-ready / unreachable
/// NoExecute taints gets a 300 s toleration for each, so the node controller evicts it five
/// minutes after its node fails rather than at once.
pub fn default_toleration_seconds(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        let covered = tolerations.iter().any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoExecute");
            let key_ok = match t.key.as_deref() {
                None | Some("") => t.operator.as_deref() == Some("Exists"),
                Some(k) => k == key,
            };
            effect_ok && key_ok
        });
        if !covered {
            tolerations.push(Toleration {
                key: Some(key.to_owned()),
                operator: Some("Exists".to_owned()),
                effect: Some("NoExecute".to_owned()),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
                value: None,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "i"}], "tolerations": tolerations}}))
        .unwrap()
    }

    #[test]
    fn adds_the_two_default_tolerations_unless_present() {
        let mut p = pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 5}]));
        default_toleration_seconds(&mut p);
        let t = p.spec.unwrap().tolerations.unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].toleration_seconds, Some(5));
        assert_eq!(t[1].key.as_deref(), Some(TAINT_NOT_READY));
        assert_eq!(t[1].toleration_seconds, Some(300));

        let mut all = pod(json!([{"operator": "Exists"}]));
        default_toleration_seconds(&mut all);
        assert_eq!(all.spec.unwrap().tolerations.unwrap().len(), 1);
    }
}
