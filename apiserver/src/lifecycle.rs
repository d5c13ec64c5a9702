//! Deletion semantics as pure decisions: `DeleteOptions`, finalizer transitions on delete and update, and namespace termination.
//!
//! Upstream sources mirrored here: the generic registry's `Delete` /
//! `deletionFinalizersForGarbageCollection` / `markAsDeleting` and `ShouldDeleteDuringUpdate`,
//! `rest.BeforeUpdate` (deletionTimestamp is sticky), `ValidateObjectMetaUpdate` (no new
//! finalizers once deleting), and the namespace registry (`Terminating`, `spec.finalizers`).

use serde_json::{Map, Value, json};
use skiff_api::{FieldError, FieldErrorType, FieldErrors, Kind};

use crate::server::status::{ApiError, Cause, Details};

/// `metav1.FinalizerOrphanDependents`: the garbage collector orphans dependents, then removes it.
pub const FINALIZER_ORPHAN: &str = "orphan";
/// `metav1.FinalizerDeleteDependents`: the garbage collector deletes blocking dependents first.
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
/// The namespace `spec.finalizers` entry the namespace controller removes once the namespace
/// is empty.
pub const FINALIZER_KUBERNETES: &str = "kubernetes";

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationPolicy {
    Orphan,
    Background,
    Foreground,
}

impl PropagationPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Orphan" => Some(Self::Orphan),
            "Background" => Some(Self::Background),
            "Foreground" => Some(Self::Foreground),
            _ => None,
        }
    }
}

/// The parts of `DeleteOptions` skiff acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub propagation_policy: Option<PropagationPolicy>,
    /// Deprecated `orphanDependents` (true = Orphan, false = the old "cascade").
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
}

/// `DeleteOptions.meta.k8s.io "" is invalid: ...` (422), as upstream `ValidateDeleteOptions`.
fn invalid_options(error: FieldError) -> ApiError {
    let errors = FieldErrors(vec![error]);
    let mut err = ApiError::new(
        422,
        "Invalid",
        errors.status_message("DeleteOptions.meta.k8s.io", ""),
    );
    err.details = Some(Box::new(Details {
        name: Some(String::new()),
        group: Some("meta.k8s.io".into()),
        kind: Some("DeleteOptions".into()),
        causes: errors
            .iter()
            .map(|e| Cause {
                reason: e.error_type.reason().to_owned(),
                message: e.to_string(),
                field: Some(e.field.clone()),
            })
            .collect(),
    }));
    err
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "True" | "1" => Ok(true),
        "false" | "False" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {field}: {v:?} is not a boolean"
        ))),
    }
}

impl DeleteOptions {
    /// Reads the options from the request body when there is one, else from the query
    /// (upstream decodes query parameters only for an empty body), then validates them.
    pub fn parse(body: Option<&Value>, query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut policy: Option<String> = None;
        let mut out = Self::default();
        match body {
            Some(body) => {
                if !body.is_object() {
                    return Err(ApiError::bad_request(
                        "the DeleteOptions body must be a JSON or YAML object",
                    ));
                }
                match &body["propagationPolicy"] {
                    Value::Null => {}
                    Value::String(s) => policy = Some(s.clone()),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "DeleteOptions.propagationPolicy must be a string, got {other}"
                        )));
                    }
                }
                match &body["orphanDependents"] {
                    Value::Null => {}
                    Value::Bool(b) => out.orphan_dependents = Some(*b),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "DeleteOptions.orphanDependents must be a boolean, got {other}"
                        )));
                    }
                }
                let pre = &body["preconditions"];
                out.precondition_uid = pre["uid"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned);
                out.precondition_resource_version = pre["resourceVersion"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned);
            }
            None => {
                for (k, v) in query {
                    match k.as_str() {
                        "propagationPolicy" => policy = Some(v.clone()),
                        "orphanDependents" => {
                            out.orphan_dependents = Some(parse_bool("orphanDependents", v)?);
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(p) = policy {
            if out.orphan_dependents.is_some() {
                return Err(invalid_options(FieldError {
                    field: "propagationPolicy".into(),
                    error_type: FieldErrorType::Invalid,
                    value: Some(format!("{p:?}")),
                    detail: "orphanDependents and deletionPropagation cannot be both set".into(),
                }));
            }
            out.propagation_policy = Some(PropagationPolicy::parse(&p).ok_or_else(|| {
                invalid_options(FieldError {
                    field: "propagationPolicy".into(),
                    error_type: FieldErrorType::NotSupported,
                    value: Some(format!("{p:?}")),
                    detail: "supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                        .into(),
                })
            })?);
        }
        Ok(out)
    }

    /// Upstream answers 202 only when the deprecated `orphanDependents: false` was sent and the
    /// object was not deleted at once (`handlers/delete.go`); every other case is 200.
    pub fn accepted_code(&self) -> u16 {
        if self.orphan_dependents == Some(false) {
            202
        } else {
            200
        }
    }
}

/// `metadata.finalizers` of a JSON object.
pub fn finalizers(object: &Value) -> Vec<String> {
    string_list(&object["metadata"]["finalizers"])
}

/// `spec.finalizers` of a Namespace.
pub fn namespace_finalizers(ns: &Value) -> Vec<String> {
    string_list(&ns["spec"]["finalizers"])
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub fn deletion_timestamp(object: &Value) -> Option<&str> {
    object["metadata"]["deletionTimestamp"].as_str()
}

/// Is this Namespace being terminated (creating content in it is forbidden)?
pub fn namespace_terminating(ns: &Value) -> bool {
    deletion_timestamp(ns).is_some() || ns["status"]["phase"] == "Terminating"
}

fn meta_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    object.get_mut("metadata").and_then(Value::as_object_mut)
}

fn set_finalizers(object: &mut Value, list: &[String]) {
    if let Some(meta) = meta_mut(object) {
        if list.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(list));
        }
    }
}

/// Whether dependents should be orphaned (upstream `shouldOrphanDependents`): the options win,
/// then a GC finalizer already on the object; the default for every kind skiff serves is
/// Background.
fn should_orphan(existing: &[String], options: &DeleteOptions) -> bool {
    if let Some(orphan) = options.orphan_dependents {
        return orphan;
    }
    match options.propagation_policy {
        Some(PropagationPolicy::Orphan) => return true,
        Some(_) => return false,
        None => {}
    }
    for f in existing {
        match f.as_str() {
            FINALIZER_ORPHAN => return true,
            FINALIZER_FOREGROUND => return false,
            _ => {}
        }
    }
    false
}

/// Upstream `shouldDeleteDependents`.
fn should_foreground(existing: &[String], options: &DeleteOptions) -> bool {
    if options.orphan_dependents.is_some() {
        return false;
    }
    match options.propagation_policy {
        Some(PropagationPolicy::Foreground) => return true,
        Some(_) => return false,
        None => {}
    }
    for f in existing {
        match f.as_str() {
            FINALIZER_FOREGROUND => return true,
            FINALIZER_ORPHAN => return false,
            _ => {}
        }
    }
    false
}

/// The finalizers after a DELETE with `options` (upstream
/// `deletionFinalizersForGarbageCollection`): `orphan` / `foregroundDeletion` added or removed
/// per the policy, others kept in order. `None` when the set does not change.
pub fn gc_finalizers(existing: &[String], options: &DeleteOptions) -> Option<Vec<String>> {
    let mut next: Vec<String> = existing
        .iter()
        .filter(|f| *f != FINALIZER_ORPHAN && *f != FINALIZER_FOREGROUND)
        .cloned()
        .collect();
    if should_orphan(existing, options) {
        next.push(FINALIZER_ORPHAN.into());
    }
    if should_foreground(existing, options) {
        next.push(FINALIZER_FOREGROUND.into());
    }
    let mut a: Vec<&String> = existing.iter().collect();
    let mut b: Vec<&String> = next.iter().collect();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    (a != b).then_some(next)
}

/// What a DELETE does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum DeletePlan {
    /// No finalizers left: remove it now.
    Now,
    /// Store this object (deletionTimestamp set, finalizers per policy) and keep it.
    Update(Value),
    /// Already being deleted and nothing to change: answer with it as it is.
    Unchanged,
}

/// Upstream `markAsDeleting`: the first deletion bumps `generation` (for kinds that have one)
/// and sets the timestamp; the grace period is 0 (skiff has no graceful deletion).
fn mark_as_deleting(object: &mut Value, now: &str) {
    let Some(meta) = meta_mut(object) else {
        return;
    };
    if !meta.get("deletionTimestamp").is_some_and(Value::is_string) {
        if let Some(generation) = meta
            .get("generation")
            .and_then(Value::as_i64)
            .filter(|g| *g > 0)
        {
            meta.insert("generation".into(), json!(generation + 1));
        }
        meta.insert("deletionTimestamp".into(), json!(now));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
}

/// DELETE of any object but a Namespace.
pub fn plan_delete(current: &Value, options: &DeleteOptions, now: &str) -> DeletePlan {
    let existing = finalizers(current);
    let changed = gc_finalizers(&existing, options);
    let next_finalizers = changed.clone().unwrap_or_else(|| existing.clone());
    if next_finalizers.is_empty() {
        return DeletePlan::Now;
    }
    let mut next = current.clone();
    set_finalizers(&mut next, &next_finalizers);
    mark_as_deleting(&mut next, now);
    if next == *current {
        DeletePlan::Unchanged
    } else {
        DeletePlan::Update(next)
    }
}

/// DELETE of a Namespace (upstream namespace registry): the first one marks it `Terminating`
/// and leaves the rest to the namespace controller; once `spec.finalizers` is empty a DELETE
/// goes through the generic rules (metadata finalizers).
pub fn plan_namespace_delete(current: &Value, options: &DeleteOptions, now: &str) -> DeletePlan {
    if deletion_timestamp(current).is_none() {
        let mut next = current.clone();
        if let Some(meta) = meta_mut(&mut next) {
            meta.insert("deletionTimestamp".into(), json!(now));
        }
        if let Some(list) = gc_finalizers(&finalizers(current), options) {
            set_finalizers(&mut next, &list);
        }
        set_phase(&mut next, "Terminating");
        return DeletePlan::Update(next);
    }
    if !namespace_finalizers(current).is_empty() {
        return DeletePlan::Unchanged;
    }
    let existing = finalizers(current);
    match gc_finalizers(&existing, options) {
        None if existing.is_empty() => DeletePlan::Now,
        None => DeletePlan::Unchanged,
        Some(list) if list.is_empty() => DeletePlan::Now,
        Some(list) => {
            let mut next = current.clone();
            set_finalizers(&mut next, &list);
            DeletePlan::Update(next)
        }
    }
}

fn set_phase(ns: &mut Value, phase: &str) {
    if let Some(map) = ns.as_object_mut() {
        let status = map.entry("status").or_insert_with(|| json!({}));
        if let Some(status) = status.as_object_mut() {
            status.insert("phase".into(), json!(phase));
        }
    }
}

/// Fixes up an object about to be created (upstream `BeforeCreate` and the namespace strategy):
/// clients cannot create an object that is already being deleted, and a Namespace always starts
/// `Active` with the `kubernetes` finalizer in `spec.finalizers`.
pub fn prepare_create(kind: Kind, object: &mut Value) {
    if let Some(meta) = meta_mut(object) {
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
    }
    crate::generation::on_create(kind, object);
    if kind == Kind::Namespace {
        let mut list = namespace_finalizers(object);
        if !list.iter().any(|f| f == FINALIZER_KUBERNETES) {
            list.push(FINALIZER_KUBERNETES.into());
        }
        if let Some(map) = object.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                spec.insert("finalizers".into(), json!(list));
            }
        }
        set_phase(object, "Active");
    }
}

/// What an update (PUT, PATCH, `/status`, `/finalize`) does once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Store the new object.
    Store,
    /// The object is being deleted and its last finalizer is gone: delete it instead of
    /// storing (upstream `ShouldDeleteDuringUpdate`).
    Delete,
}

/// Applies upstream's update rules for deletion fields to `next` (the object about to be
/// stored over `current`): `deletionTimestamp` and `deletionGracePeriodSeconds` cannot be set
/// or changed by clients, no finalizer may be added once deletion started, and a Namespace's
/// `spec.finalizers` changes only through `/finalize` (`finalize` = this is that request).
pub fn check_update(
    kind: Kind,
    current: &Value,
    next: &mut Value,
    finalize: bool,
) -> Result<UpdateOutcome, FieldErrors> {
    crate::generation::on_update(kind, current, next);
    let mut errors = Vec::new();
    let current_ts = current["metadata"]["deletionTimestamp"].clone();
    let current_grace = current["metadata"]["deletionGracePeriodSeconds"].clone();
    if kind == Kind::Namespace && !finalize {
        let kept = current["spec"]["finalizers"].clone();
        if let Some(map) = next.as_object_mut() {
            let spec = map.entry("spec").or_insert_with(|| json!({}));
            if let Some(spec) = spec.as_object_mut() {
                if kept.is_null() {
                    spec.remove("finalizers");
                } else {
                    spec.insert("finalizers".into(), kept);
                }
            }
        }
    }
    let Some(meta) = meta_mut(next) else {
        return Ok(UpdateOutcome::Store);
    };
    if current_ts.is_null() {
        for (field, now) in [
            ("deletionTimestamp", meta.get("deletionTimestamp")),
            (
                "deletionGracePeriodSeconds",
                meta.get("deletionGracePeriodSeconds"),
            ),
        ] {
            if let Some(v) = now.filter(|v| !v.is_null()) {
                errors.push(FieldError {
                    field: format!("metadata.{field}"),
                    error_type: FieldErrorType::Invalid,
                    value: Some(v.to_string()),
                    detail: "field is immutable".into(),
                });
            }
        }
    } else {
        meta.insert("deletionTimestamp".into(), current_ts);
        if meta
            .get("deletionGracePeriodSeconds")
            .is_none_or(Value::is_null)
            && !current_grace.is_null()
        {
            meta.insert("deletionGracePeriodSeconds".into(), current_grace.clone());
        }
        let old = finalizers(current);
        let added: Vec<String> = string_list(meta.get("finalizers").unwrap_or(&Value::Null))
            .into_iter()
            .filter(|f| !old.contains(f))
            .collect();
        if !added.is_empty() {
            let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
            errors.push(FieldError {
                field: "metadata.finalizers".into(),
                error_type: FieldErrorType::Forbidden,
                value: None,
                detail: format!(
                    "no new finalizers can be added if the object is being deleted, found new \
                     finalizers []string{{{}}}",
                    quoted.join(", ")
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(FieldErrors(errors));
    }
    let deleting = deletion_timestamp(next).is_some();
    let grace_zero = current_grace.is_null() || current_grace.as_i64() == Some(0);
    let no_finalizers = finalizers(next).is_empty()
        && (kind != Kind::Namespace || namespace_finalizers(next).is_empty());
    Ok(if deleting && grace_zero && no_finalizers {
        UpdateOutcome::Delete
    } else {
        UpdateOutcome::Store
    })
}

/// `PUT /api/v1/namespaces/{name}/finalize`: the stored namespace with only `spec.finalizers`
/// taken from the sent one (upstream `namespaceFinalizeStrategy`), under the sent
/// resourceVersion.
pub fn merge_finalize(current: &Value, sent: &Value) -> Value {
    let mut next = current.clone();
    let list = sent["spec"]["finalizers"].clone();
    if let Some(map) = next.as_object_mut() {
        let spec = map.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            if list.is_null() {
                spec.remove("finalizers");
            } else {
                spec.insert("finalizers".into(), list);
            }
        }
    }
    if let Some(meta) = meta_mut(&mut next) {
        meta.insert(
            "resourceVersion".into(),
            sent["metadata"]["resourceVersion"].clone(),
        );
    }
    next
}

#[cfg(test)]
mod tests;
