//! The hook points where Service writes meet `crate::allocation`: allocate before the store write, commit or roll back after it, release after a delete.

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use skiff_api::{Kind, KindInfo};

use super::Ctx;
use super::status::ApiError;
use crate::allocation::{AllocError, Holding, Owner};

fn is_service(info: &KindInfo) -> bool {
    info.kind == Kind::Service
}

fn owner_of(value: &Value) -> Owner {
    Owner {
        namespace: value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        name: value["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    }
}

fn typed(value: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::internal(format!("decoding the Service: {e}")))
}

/// Writes `svc.spec` back into `value`, leaving every other field as it was.
fn put_spec(value: &mut Value, svc: &Service) -> Result<(), ApiError> {
    let spec = serde_json::to_value(&svc.spec)
        .map_err(|e| ApiError::internal(format!("encoding the Service: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("spec".into(), spec);
    }
    Ok(())
}

fn api_error(info: &KindInfo, name: &str, err: AllocError) -> ApiError {
    match err {
        AllocError::Invalid(errors) => ApiError::invalid(info, name, &errors),
        AllocError::Full(_) => ApiError::internal(format!("Internal error occurred: {err}")),
        AllocError::Store(e) => ApiError::from_store(info, name, e),
    }
}

/// Before a Service is created: ClusterIPs, node ports and the health-check node port are
/// allocated and written into `object`.
pub(crate) async fn before_create(
    ctx: &Ctx,
    info: &KindInfo,
    object: &mut Value,
) -> Result<Option<Holding>, ApiError> {
    if !is_service(info) {
        return Ok(None);
    }
    let owner = owner_of(object);
    let mut svc = typed(object)?;
    let holding = ctx
        .services
        .allocate(ctx.store.as_ref(), owner.clone(), None, &mut svc)
        .await
        .map_err(|e| api_error(info, &owner.name, e))?;
    if let Err(e) = put_spec(object, &svc) {
        ctx.services.rollback(ctx.store.as_ref(), holding).await;
        return Err(e);
    }
    Ok(Some(holding))
}

/// Before an update is decoded and validated: allocated values a client omitted are kept, and
/// values the new type no longer needs are dropped (upstream `PrepareForUpdate`). A body that
/// does not decode is left for validation to refuse.
pub(crate) fn carry_over(info: &KindInfo, current: &Value, merged: &mut Value) {
    if !is_service(info) {
        return;
    }
    let (Ok(old), Ok(mut new)) = (
        serde_json::from_value::<Service>(current.clone()),
        serde_json::from_value::<Service>(merged.clone()),
    ) else {
        return;
    };
    crate::allocation::carry_over(&old, &mut new);
    if let Ok(spec) = serde_json::to_value(&new.spec)
        && let Some(map) = merged.as_object_mut()
    {
        map.insert("spec".into(), spec);
    }
}

/// Before an updated Service is stored over `current`: immutability, then whatever the new
/// spec needs that the old did not hold is allocated.
pub(crate) async fn before_update(
    ctx: &Ctx,
    info: &KindInfo,
    current: &Value,
    object: &mut Value,
) -> Result<Option<Holding>, ApiError> {
    if !is_service(info) {
        return Ok(None);
    }
    let owner = owner_of(current);
    let old = typed(current)?;
    let mut svc = typed(object)?;
    let holding = ctx
        .services
        .allocate(ctx.store.as_ref(), owner.clone(), Some(&old), &mut svc)
        .await
        .map_err(|e| api_error(info, &owner.name, e))?;
    if let Err(e) = put_spec(object, &svc) {
        ctx.services.rollback(ctx.store.as_ref(), holding).await;
        return Err(e);
    }
    Ok(Some(holding))
}

/// After the store write: on success release what the Service no longer holds, on failure
/// release what was claimed for it.
pub(crate) async fn settle(ctx: &Ctx, holding: Option<Holding>, stored: bool) {
    let Some(holding) = holding else { return };
    if stored {
        ctx.services.commit(ctx.store.as_ref(), holding).await;
    } else {
        ctx.services.rollback(ctx.store.as_ref(), holding).await;
    }
}

/// After a Service is removed from the store: everything it held is released.
pub(crate) async fn after_delete(ctx: &Ctx, info: &KindInfo, deleted: &Value) {
    if !is_service(info) {
        return;
    }
    let Ok(svc) = serde_json::from_value::<Service>(deleted.clone()) else {
        return;
    };
    ctx.services
        .release(ctx.store.as_ref(), &owner_of(deleted), &svc)
        .await;
}
