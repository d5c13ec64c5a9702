//! Fuzz the patch engine: JSON patch, merge patch, strategic merge patch and server-side apply
//! on every kind.
//! Input: one byte picks the kind, the rest is `original` NUL `patch`; an original that is not
//! a JSON object is replaced by a Deployment, so the strategic paths (merge keys, directives,
//! `$setElementOrder`) get deep objects to work on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use skiff_api::kinds::Kind;
use skiff_apiserver::apply::{self, Request};
use skiff_apiserver::patch::{PatchType, apply_patch};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "a", "image": "x", "ports": [{"containerPort": 80}, {"containerPort": 443}],
                         "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
                        {"name": "b", "image": "y"}
                    ],
                    "volumes": [{"name": "v", "emptyDir": {}}],
                    "tolerations": [{"key": "k", "operator": "Exists"}]
                }
            }
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kinds: Vec<Kind> = Kind::all().collect();
    let kind = kinds[usize::from(selector) % kinds.len()];
    let (original, patch) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let original = serde_json::from_slice::<Value>(original)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(deployment);
    for patch_type in [PatchType::Json, PatchType::Merge, PatchType::Strategic] {
        if let Ok(out) = apply_patch(kind, &original, patch_type, patch) {
            assert!(out.is_object(), "a patch result must be an object");
        }
    }
    // The empty merge and strategic patches change nothing.
    for patch_type in [PatchType::Merge, PatchType::Strategic] {
        let same = apply_patch(kind, &original, patch_type, b"{}");
        assert_eq!(same.ok().as_ref(), Some(&original), "{patch_type:?} {{}} changed the object");
    }
    // Server-side apply of the patch bytes as a configuration, onto the original and as a
    // create: applying the result's configuration again by the same manager changes nothing.
    let Ok(config) = serde_json::from_slice::<Value>(patch) else {
        return;
    };
    let req = Request {
        kind,
        api_version: "v1",
        manager: "fuzz",
        subresource: "",
        status_is_separate: true,
        now: "2026-11-23T00:00:00Z",
    };
    for live in [Some(&original), None] {
        for force in [false, true] {
            if let Ok(first) = apply::apply(&req, live, &config, force) {
                let again = apply::apply(&req, Some(&first.object), &config, false);
                if let Ok(again) = again {
                    assert!(!again.changed, "re-applying the same configuration changed the object");
                }
            }
        }
    }
});
