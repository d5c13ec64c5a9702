//! The HTTP side of server-side apply and field ownership: `PATCH` with `application/apply-patch+yaml`, and the `managedFields` every write records.

use http::{Request, Response};
use hyper::body::Incoming;
use serde_json::Value;
use skiff_api::KindInfo;

use super::Ctx;
use super::handlers::{
    Body, Query, Target, add_warnings, create_owned, guarded_write, json_response, object_key,
    read_body,
};
use super::routes::ResourcePath;
use super::status::{ApiError, Cause, Details};
use crate::apply::{self, ApplyError};
use crate::storage::StoreError;
use crate::storage::meta::now_rfc3339;

/// Who a write records its fields for.
#[derive(Debug, Clone)]
pub(crate) enum FieldOwner {
    /// A create, PUT or PATCH by this manager: the fields it changes become its `Update` entry.
    Update(String),
    /// A server-side apply: the object already carries its new `managedFields`.
    Applied,
}

impl Query {
    /// The manager of a non-apply write (`fieldManager`, else from the User-Agent).
    pub(crate) fn manager(&self) -> String {
        apply::manager_or_user_agent(self.field_manager.as_deref(), self.user_agent.as_deref())
    }
}

fn subresource(target: Target) -> &'static str {
    match target {
        Target::Main => "",
        Target::Status => "status",
        Target::Scale => "scale",
        Target::Finalize => "finalize",
    }
}

fn ownership<'a>(
    info: &KindInfo,
    target: Target,
    manager: &'a str,
    api_version: &'a str,
    now: &'a str,
) -> apply::Request<'a> {
    apply::Request {
        kind: info.kind,
        api_version,
        manager,
        subresource: subresource(target),
        status_is_separate: info.has_subresource("status"),
        now,
    }
}

impl FieldOwner {
    /// Records a non-apply write of `object` over `live` in its `managedFields`.
    pub(crate) fn record(
        &self,
        info: &KindInfo,
        target: Target,
        live: Option<&Value>,
        object: &mut Value,
    ) {
        if let Self::Update(manager) = self {
            let (api_version, now) = (info.api_version(), now_rfc3339());
            let req = ownership(info, target, manager, &api_version, &now);
            apply::record_update(&req, live, object);
        }
    }

    /// Before an update is stored: records a non-apply write, or puts an apply's `managedFields`
    /// (computed on the whole object) on what a subresource write keeps. Returns true when an
    /// apply changed nothing, so nothing is written (upstream skips no-op writes).
    pub(crate) fn record_or_keep(
        &self,
        info: &KindInfo,
        target: Target,
        current: &Value,
        object: &mut Value,
        applied_fields: Value,
    ) -> bool {
        match self {
            Self::Update(_) => {
                self.record(info, target, Some(current), object);
                false
            }
            Self::Applied => {
                if target != Target::Main
                    && let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut)
                {
                    meta.insert("managedFields".into(), applied_fields);
                }
                object == current
            }
        }
    }
}

/// 422 for bad `PatchOptions`, as upstream words it.
fn invalid_options(field: &str, reason: &str, detail: &str) -> ApiError {
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}"),
    );
    err.details = Some(Box::new(Details {
        group: Some("meta.k8s.io".to_owned()),
        kind: Some("PatchOptions".to_owned()),
        causes: vec![Cause {
            reason: reason.to_owned(),
            message: detail.to_owned(),
            field: Some(field.to_owned()),
        }],
        ..Details::default()
    }));
    err
}

/// Upstream refuses `force` on patches that are not applies.
pub(crate) fn refuse_force(query: &Query) -> Result<(), ApiError> {
    match query.force {
        Some(_) => Err(invalid_options(
            "force",
            "FieldValueForbidden",
            "Forbidden: may not be specified for non-apply patch",
        )),
        None => Ok(()),
    }
}

fn from_apply(err: ApplyError) -> ApiError {
    match err {
        ApplyError::BadRequest(msg) => ApiError::bad_request(msg),
        ApplyError::Conflicts(ref conflicts) => {
            let mut e = ApiError::new(409, "Conflict", err.to_string());
            e.details = Some(Box::new(Details {
                causes: conflicts
                    .iter()
                    .map(|c| Cause {
                        reason: "FieldManagerConflict".to_owned(),
                        message: format!("conflict with {}", c.manager),
                        field: Some(c.field.clone()),
                    })
                    .collect(),
                ..Details::default()
            }));
            e
        }
    }
}

/// An apply configuration: YAML (JSON is YAML too).
fn parse_config(bytes: &[u8]) -> Result<Value, ApiError> {
    let parsed = serde_json::from_slice::<Value>(bytes).or_else(|_| {
        serde_saphyr::from_slice::<Value>(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    })?;
    if !parsed.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be a YAML or JSON object",
        ));
    }
    Ok(parsed)
}

/// `PATCH` with `application/apply-patch+yaml`: creates the object (201) or applies to it (200).
pub(crate) async fn apply_patch(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    name: &str,
    query: &Query,
    target: Target,
) -> Result<Response<Body>, ApiError> {
    let manager = query.field_manager.clone().unwrap_or_default();
    if manager.is_empty() {
        return Err(invalid_options(
            "fieldManager",
            "FieldValueRequired",
            "Required value: is required for apply patch",
        ));
    }
    apply::validate_field_manager(&manager)
        .map_err(|detail| invalid_options("fieldManager", "FieldValueInvalid", &detail))?;
    let force = match query.force.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    if target == Target::Scale {
        return Err(ApiError::bad_request(
            "server-side apply of the scale subresource is not supported by this server; apply \
             spec.replicas to the object itself",
        ));
    }
    let strictness = query.strictness()?;
    let (_, bytes) = read_body(req).await?;
    let mut config = parse_config(&bytes)?;
    match config["metadata"]["name"].as_str() {
        None | Some("") => {
            if let Some(meta) = config
                .as_object_mut()
                .map(|m| m.entry("metadata").or_insert_with(|| serde_json::json!({})))
                .and_then(Value::as_object_mut)
            {
                meta.insert("name".into(), Value::String(name.to_owned()));
            }
        }
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let info = path.info;
    let ns = path.namespace.as_deref();
    let api_version = info.api_version();
    let key = object_key(info, ns, name)?;
    match ctx.store.get(&key).await {
        Err(StoreError::NotFound(_)) if target == Target::Main => {
            let now = now_rfc3339();
            let own = ownership(info, target, &manager, &api_version, &now);
            let applied = apply::apply(&own, None, &config, force).map_err(from_apply)?;
            let (stored, warnings) = create_owned(
                ctx,
                info,
                ns,
                applied.object,
                strictness,
                query.dry_run,
                &FieldOwner::Applied,
            )
            .await?;
            let mut resp = json_response(201, &stored);
            add_warnings(&mut resp, &warnings);
            return Ok(resp);
        }
        Err(e) => return Err(ApiError::from_store(info, name, e)),
        Ok(_) => {}
    }
    let pinned = config["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty());
    let sent_for = |current: &Value| {
        let now = now_rfc3339();
        let own = ownership(info, target, &manager, &api_version, &now);
        Ok(apply::apply(&own, Some(current), &config, force)
            .map_err(from_apply)?
            .object)
    };
    guarded_write(
        ctx,
        path,
        name,
        query,
        target,
        strictness,
        pinned,
        &FieldOwner::Applied,
        sent_for,
    )
    .await
}
