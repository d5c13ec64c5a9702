//! RFC 6902 JSON patch (via the `json-patch` crate) and RFC 7386 JSON merge patch.

use serde_json::Value;

use super::PatchError;

/// Applies an RFC 6902 JSON patch (a list of operations) to `original`.
pub fn apply_json_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_slice(patch)
        .map_err(|e| PatchError::BadPatch(format!("invalid JSON patch: {e}")))?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::Apply(e.to_string()))?;
    Ok(doc)
}

/// Applies an RFC 7386 merge patch: objects merge recursively, `null` deletes, the rest replaces.
pub fn apply_merge_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| PatchError::BadPatch(format!("invalid merge patch: {e}")))?;
    if !patch.is_object() {
        return Err(PatchError::BadPatch(
            "a merge patch must be a JSON object".to_owned(),
        ));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}
