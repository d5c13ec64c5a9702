//! DELETE with finalizers and propagation policies, plus the deletion rules that create and update go through (terminating namespaces, finalizer removal).
//!
//! The decisions are the pure functions of [`crate::lifecycle`]; this module reads the stored
//! object, applies them with the stored resourceVersion as precondition, and retries when
//! another writer got there first (upstream `GuaranteedUpdate`).

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use skiff_api::{Kind, KindInfo, kinds};

use super::handlers::{
    Body, Query, json_response, object_key, parse_body, read_body, with_type_meta,
};
use super::routes::{self, ResourcePath};
use super::status::{ApiError, Cause};
use super::{Ctx, dry_run};
use crate::lifecycle::{self, DeleteOptions, DeletePlan, UpdateOutcome};
use crate::storage::meta::{now_rfc3339, revision_of};
use crate::storage::{ObjectKey, Preconditions, Revision, Store, StoreError};

/// Namespaces upstream forbids deleting.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// How often a DELETE re-reads after losing a race with another writer.
const ATTEMPTS: usize = 10;

/// DELETE of one object, as upstream's generic registry and namespace registry do it:
///
/// - `DeleteOptions` come from the body, or from the query when the body is empty
///   (`propagationPolicy`, `orphanDependents`); `preconditions` (uid, resourceVersion) are
///   honoured. An unknown policy is 422 naming the value.
/// - `propagationPolicy: Orphan` adds the `orphan` finalizer, `Foreground` adds
///   `foregroundDeletion`, `Background` (the default) adds neither; the garbage collector in
///   skiff-controller acts on them.
/// - An object left with finalizers gets `deletionTimestamp` (and `deletionGracePeriodSeconds:
///   0`) and stays until an update removes the last finalizer; otherwise it is removed at once.
///   Repeating the DELETE is harmless.
/// - A Namespace is marked `Terminating` and stays until the namespace controller has emptied
///   it and cleared `spec.finalizers` through `/finalize`. `default`, `kube-system` and
///   `kube-public` cannot be deleted (403).
///
/// The answer is the object (200), whether it was removed or is still being deleted; 202 only
/// for the deprecated `orphanDependents: false` on an object that stays, as upstream.
/// Pods are removed at once too: skiff has no graceful deletion (`gracePeriodSeconds` is
/// accepted and ignored).
pub(crate) async fn delete(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let info = path.info;
    let is_namespace = info.kind == Kind::Namespace;
    if is_namespace && PROTECTED_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(
            info,
            name,
            "this namespace may not be deleted",
        ));
    }
    let params = routes::parse_query(req.uri().query());
    let (parts, bytes) = read_body(req).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_body(&parts, &bytes)?)
    };
    let options = DeleteOptions::parse(body.as_ref(), &params)?;
    // kubectl sends `DeleteOptions.dryRun` in the body rather than the query.
    let in_body: Vec<String> = body
        .as_ref()
        .and_then(|b| b["dryRun"].as_array())
        .map(|values| {
            values
                .iter()
                .map(|v| v.as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default();
    let dry_run = query.dry_run || dry_run::parse(&in_body)?;
    let store = dry_run::store_for(ctx, dry_run);
    let wanted_revision = options
        .precondition_resource_version
        .as_deref()
        .map(|rv| {
            rv.parse::<Revision>().map_err(|_| {
                ApiError::bad_request(format!("invalid precondition resourceVersion {rv:?}"))
            })
        })
        .transpose()?;
    let key = object_key(info, path.namespace.as_deref(), name)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = ctx
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(info, name, e))?;
        let current_revision = stored_revision(&key, &current)?;
        if wanted_revision.is_some_and(|rv| rv != current_revision) {
            return Err(ApiError::conflict(info, name));
        }
        let pre = Preconditions {
            resource_version: Some(current_revision),
            uid: options.precondition_uid.clone(),
        };
        let now = now_rfc3339();
        let plan = if is_namespace {
            lifecycle::plan_namespace_delete(&current, &options, &now)
        } else {
            lifecycle::plan_delete(&current, &options, &now)
        };
        let result = match plan {
            DeletePlan::Unchanged => {
                return Ok(json_response(
                    options.accepted_code(),
                    &with_type_meta(info, current),
                ));
            }
            DeletePlan::Now => match store.delete(&key, &pre).await {
                Ok(deleted) => {
                    tracing::debug!(%key, "deleted");
                    if !dry_run {
                        super::services::after_delete(ctx, info, &deleted).await;
                    }
                    Ok(json_response(200, &with_type_meta(info, deleted)))
                }
                Err(e) => Err(e),
            },
            DeletePlan::Update(next) => {
                store.update(&key, next, &pre).await.map(|stored| {
                    tracing::debug!(%key, finalizers = ?lifecycle::finalizers(&stored), "marked for deletion");
                    json_response(options.accepted_code(), &with_type_meta(info, stored))
                })
            }
        };
        match result {
            Ok(resp) => return Ok(resp),
            Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {
                tracing::debug!(%key, attempt, "delete lost a race; re-reading");
            }
            Err(e) => return Err(ApiError::from_store(info, name, e)),
        }
    }
}

fn stored_revision(key: &ObjectKey, object: &Value) -> Result<Revision, ApiError> {
    revision_of(key, object)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::internal(format!("{key}: the store returned no resourceVersion")))
}

/// Admission for creates in namespace `ns` (upstream `NamespaceLifecycle`): 404 when the
/// namespace does not exist, 403 when it is being terminated.
pub(crate) async fn admit_create_in(
    ctx: &Ctx,
    info: &KindInfo,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let ns_info = kinds::by_resource("", "namespaces")
        .ok_or_else(|| ApiError::internal("namespaces are not registered"))?;
    let ns_key = object_key(ns_info, None, ns)?;
    let namespace = ctx
        .store
        .get(&ns_key)
        .await
        .map_err(|e| ApiError::from_store(ns_info, ns, e))?;
    if lifecycle::namespace_terminating(&namespace) {
        let mut err = ApiError::forbidden(
            info,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        );
        if let Some(details) = err.details.as_mut() {
            details.causes.push(Cause {
                reason: "NamespaceTerminating".into(),
                message: format!("namespace {ns} is being terminated"),
                field: Some("metadata.namespace".into()),
            });
        }
        return Err(err);
    }
    Ok(())
}

/// Applies the deletion rules to an update about to be stored over `current` (see
/// [`lifecycle::check_update`]); a 422 names the offending field.
pub(crate) fn check_update(
    info: &KindInfo,
    name: &str,
    current: &Value,
    next: &mut Value,
    finalize: bool,
) -> Result<UpdateOutcome, ApiError> {
    lifecycle::check_update(info.kind, current, next, finalize)
        .map_err(|errors| ApiError::invalid(info, name, &errors))
}

/// The update removed the last finalizer of an object being deleted: delete it instead, under
/// the revision the update was written against. Answers 200 with the object as the update
/// left it (upstream returns the deleted object from the update).
pub(crate) async fn delete_instead_of_update(
    ctx: &Ctx,
    store: &dyn Store,
    dry_run: bool,
    info: &KindInfo,
    key: &ObjectKey,
    current: &Value,
    next: Value,
) -> Result<Value, StoreError> {
    let revision = match revision_of(key, &next)? {
        Some(rv) => rv,
        None => revision_of(key, current)?.unwrap_or_default(),
    };
    let pre = Preconditions {
        resource_version: Some(revision),
        uid: None,
    };
    let deleted = store.delete(key, &pre).await?;
    tracing::debug!(%key, "last finalizer removed; deleted");
    if !dry_run {
        super::services::after_delete(ctx, info, &deleted).await;
    }
    let mut answer = with_type_meta(info, next);
    if let Some(meta) = answer.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            deleted["metadata"]["resourceVersion"].clone(),
        );
    }
    Ok(answer)
}
