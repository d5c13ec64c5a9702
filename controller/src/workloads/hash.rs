//! The `pod-template-hash`: FNV-32a over the pod template (and the collision count), encoded with upstream's `rand.SafeEncodeString` alphabet.
//!
//! Upstream hashes Go's `spew` dump of the template, which cannot be reproduced outside Go; skiff
//! hashes the template's JSON instead. Same shape (up to 10 characters from the same alphabet),
//! same stability (one template always gives one hash), different values.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label every ReplicaSet of a Deployment (and its pods) carries.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// `ComputeHash(template, collisionCount)`.
pub fn compute(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&without_hash(template)).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// The template as JSON without the `pod-template-hash` label (upstream `EqualIgnoreHash`).
pub fn without_hash(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .get_mut("metadata")
        .and_then(|m| m.get_mut("labels"))
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty()
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    value
}

/// Two templates equal but for the hash label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str, hash: Option<&str>) -> PodTemplateSpec {
        let mut labels = std::collections::BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        if let Some(h) = hash {
            labels.insert(POD_TEMPLATE_HASH.into(), h.into());
        }
        let mut t: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap();
        t.metadata = Some(ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        });
        t
    }

    #[test]
    fn stable_safe_and_ignores_its_own_label() {
        let a = compute(&template("nginx:1", None), None);
        assert_eq!(a, compute(&template("nginx:1", Some("zzz")), None));
        assert_ne!(a, compute(&template("nginx:2", None), None));
        assert_ne!(a, compute(&template("nginx:1", None), Some(1)));
        assert!(!a.is_empty() && a.len() <= 10);
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert!(equal_ignoring_hash(
            &template("nginx:1", Some("x")),
            &template("nginx:1", None)
        ));
    }
}
