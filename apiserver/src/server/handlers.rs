//! Request handling: authentication, then get / list / create / update (PUT) / delete / watch.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use ring::rand::SecureRandom;
use serde_json::{Value, json};
use skiff_api::{Kind, KindInfo, Strictness, apply_defaults, decode_value, validate};

use super::apply::FieldOwner;
use super::filter::{Filter, matches_selectors};
use super::routes::{self, DiscoveryPath, HealthCheck, ResourcePath, Route};
use super::status::ApiError;
use super::{Ctx, deletion, dry_run, watch};
use crate::lifecycle::UpdateOutcome;
use crate::patch::{self, PatchType};
use crate::storage::{ObjectKey, Preconditions, ResourceName, Scope, StoreError};
use crate::{discovery, tables};

/// Every response body: a whole buffer or a watch stream.
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Largest request body accepted (etcd's request limit, as upstream).
pub const MAX_BODY_BYTES: usize = skiff_api::manifest::MAX_OBJECT_BYTES;

/// The Kubernetes version skiff reports. The minor selects the kubectl the dispatcher runs.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
/// Semver-valid (kubectl parses it): build metadata names skiff.
pub const GIT_VERSION: &str = "v1.32.0+skiff";

/// The query parameters skiff understands (`timeout` is read by `limits` before dispatch);
/// others (`limit`, `continue`, `resourceVersionMatch`, `pretty`...) are ignored, which
/// upstream semantics allow.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub field_validation: Option<String>,
    pub dry_run: bool,
    /// `includeObject` for Table responses.
    pub include_object: Option<String>,
    /// The client asked for a `meta.k8s.io/v1` Table (the `Accept` header, not the query).
    pub as_table: bool,
    /// `fieldManager`.
    pub field_manager: Option<String>,
    /// `force` (server-side apply).
    pub force: Option<String>,
    /// The `User-Agent` header: names the field manager when `fieldManager` is absent.
    pub user_agent: Option<String>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self::default();
        let mut dry_run = Vec::new();
        for (k, v) in routes::parse_query(query) {
            match k.as_str() {
                "watch" => q.watch = truthy(&v),
                "resourceVersion" => q.resource_version = Some(v),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds {v:?}"))
                    })?);
                }
                "allowWatchBookmarks" => q.allow_bookmarks = truthy(&v),
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "fieldValidation" => q.field_validation = Some(v),
                "includeObject" => q.include_object = Some(v),
                "dryRun" => dry_run.push(v),
                "fieldManager" => q.field_manager = Some(v),
                "force" => q.force = Some(v),
                _ => {}
            }
        }
        q.dry_run = dry_run::parse(&dry_run)?;
        Ok(q)
    }

    /// `fieldValidation`: Strict, Warn (upstream's default when absent) or Ignore.
    pub(crate) fn strictness(&self) -> Result<Strictness, ApiError> {
        match self.field_validation.as_deref() {
            None | Some("") | Some("Warn") => Ok(Strictness::Warn),
            Some("Strict") => Ok(Strictness::Strict),
            Some("Ignore") => Ok(Strictness::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
            ))),
        }
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn response(code: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json_response(code: u16, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    response(code, "application/json", bytes)
}

pub(crate) fn status_response(err: &ApiError) -> Response<Body> {
    json_response(err.code, &err.to_status())
}

pub(crate) fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append("warning", v);
        }
    }
}

/// The hyper service: never fails; every error becomes a `Status` response.
pub(crate) async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let deadline = super::limits::deadline(&req, ctx.request_timeout);
    let served = match deadline {
        Ok(deadline) => super::limits::with_deadline(deadline, dispatch(&ctx, req)).await,
        Err(e) => Err(e),
    };
    let resp = match served {
        Ok(resp) => resp,
        Err(err) => status_response(&err),
    };
    let status = resp.status().as_u16();
    let micros = start.elapsed().as_micros() as u64;
    if resp.status().is_server_error() {
        tracing::warn!(%method, %uri, status, micros, "request failed");
    } else {
        tracing::debug!(%method, %uri, status, micros, "request");
    }
    Ok(resp)
}

async fn dispatch(ctx: &Arc<Ctx>, mut req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let route = routes::parse(req.uri().path());
    if let Route::Health(check) = route {
        return Ok(health(ctx, check).await);
    }
    let authorization = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(user) = ctx.auth.authenticate(authorization) else {
        return Err(ApiError::unauthorized());
    };
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    if !crate::protobuf::accept_allows_json(accept.unwrap_or("")) {
        return Err(ApiError::not_acceptable());
    }
    req.extensions_mut().insert(user);
    match route {
        Route::Version if req.method() == Method::GET => Ok(json_response(200, &version())),
        Route::Version => Err(ApiError::method_not_allowed(
            "only GET is allowed on /version",
        )),
        Route::Discovery(path) if req.method() == Method::GET => discovery(&req, &path),
        Route::Discovery(_) => Err(ApiError::method_not_allowed(
            "only GET is allowed on discovery documents",
        )),
        Route::Resource(path) => resource(ctx, req, path).await,
        Route::Bindings { namespace } => {
            let query = Query::parse(req.uri().query())?;
            super::binding::bind(ctx, req, &namespace, None, &query).await
        }
        Route::OpenApi(path) if req.method() == Method::GET => openapi_v3(&path),
        Route::OpenApi(_) => Err(ApiError::method_not_allowed(
            "only GET is allowed on OpenAPI documents",
        )),
        Route::Health(_) | Route::NotFound => Err(ApiError::no_route()),
    }
}

async fn health(ctx: &Ctx, check: HealthCheck) -> Response<Body> {
    match check {
        HealthCheck::Healthz | HealthCheck::Livez => {
            response(200, "text/plain; charset=utf-8", "ok")
        }
        HealthCheck::Readyz => match ctx.store.current_revision().await {
            Ok(_) => response(200, "text/plain; charset=utf-8", "ok"),
            Err(e) => {
                tracing::warn!(error = %e, "readyz: storage is not ready");
                response(
                    500,
                    "text/plain; charset=utf-8",
                    "readyz check failed: storage",
                )
            }
        },
    }
}

/// `/version`: what kubectl's dispatcher and client-go read.
pub fn version() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{arch}", std::env::consts::OS),
    })
}

pub(crate) fn resource_name(info: &KindInfo) -> Result<ResourceName, ApiError> {
    ResourceName::new(info.group_resource()).map_err(|e| ApiError::internal(e.to_string()))
}

pub(crate) fn object_key(
    info: &KindInfo,
    namespace: Option<&str>,
    name: &str,
) -> Result<ObjectKey, ApiError> {
    let key = ObjectKey::new(resource_name(info)?, namespace, name);
    key.validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(key)
}

/// The scope a collection path lists: one namespace, or all of them.
pub(crate) fn scope(path: &ResourcePath) -> Result<Scope, ApiError> {
    Ok(Scope {
        resource: resource_name(path.info)?,
        namespace: path.namespace.clone(),
    })
}

/// Sets `apiVersion` and `kind` (objects in lists and events carry them).
pub(crate) fn with_type_meta(info: &KindInfo, mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), json!(info.api_version()));
        map.insert("kind".into(), json!(info.name));
    }
    object
}

async fn resource(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    path: ResourcePath,
) -> Result<Response<Body>, ApiError> {
    let mut query = Query::parse(req.uri().query())?;
    query.as_table = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(tables::wants_table);
    query.user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A named object of a namespaced kind needs its namespace in the path.
    if path.info.namespaced && path.namespace.is_none() && path.name.is_some() {
        return Err(ApiError::no_route());
    }
    if let Some(sub) = path.subresource.clone() {
        return subresource(ctx, req, &path, &sub, &query).await;
    }
    let watch_permit = if query.watch && req.method() == Method::GET {
        let user = req
            .extensions()
            .get::<super::auth::User>()
            .map_or("", |u| u.name.as_str());
        match ctx.watches.acquire(user) {
            Ok(permit) => Some(permit),
            Err(refused) => return Ok(*refused),
        }
    } else {
        None
    };
    let method = req.method().clone();
    match (&method, path.name.clone()) {
        (&Method::GET, None) if query.watch => {
            let filter = Filter::from_query(
                path.info.kind,
                query.label_selector.as_deref(),
                query.field_selector.as_deref(),
            )?;
            watch::watch(ctx, &path, filter, &query, watch_permit).await
        }
        (&Method::GET, Some(_)) if query.watch => {
            // The object's name is added by the watch itself.
            let filter = Filter::from_query(path.info.kind, None, None)?;
            watch::watch(ctx, &path, filter, &query, watch_permit).await
        }
        (&Method::GET, None) => list(ctx, &path, &query).await,
        (&Method::GET, Some(name)) => get(ctx, &path, &name, &query).await,
        (&Method::POST, None) => create(ctx, req, &path, &query).await,
        (&Method::PUT, Some(name)) => update(ctx, req, &path, &name, &query, Target::Main).await,
        (&Method::DELETE, Some(name)) => deletion::delete(ctx, req, &path, &name, &query).await,
        (&Method::DELETE, None) => Err(ApiError::method_not_allowed(
            "deleting a collection is not supported by this server yet",
        )),
        (&Method::PATCH, Some(name)) => patch(ctx, req, &path, &name, &query, Target::Main).await,
        (&Method::PATCH, None) => Err(ApiError::method_not_allowed(
            "PATCH needs an object name: collections cannot be patched",
        )),
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed on this path"
        ))),
    }
}

async fn get(
    ctx: &Ctx,
    path: &ResourcePath,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let key = object_key(path.info, path.namespace.as_deref(), name)?;
    let object = ctx
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(path.info, name, e))?;
    let object = with_type_meta(path.info, object);
    if query.as_table {
        return Ok(table_response(&object_table(path.info, object, query)));
    }
    Ok(json_response(200, &object))
}

/// A `meta.k8s.io/v1` Table of `objects`, answered with the Table content type.
pub(crate) fn table_value(
    info: &KindInfo,
    objects: &[Value],
    revision: &str,
    query: &Query,
) -> Value {
    tables::table(
        info.kind,
        objects,
        jiff::Timestamp::now(),
        tables::IncludeObject::from_query(query.include_object.as_deref()),
        revision,
    )
}

/// A one-row Table of `object`, at the object's own resourceVersion (get, writes, watch events).
pub(crate) fn object_table(info: &KindInfo, object: Value, query: &Query) -> Value {
    let revision = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    table_value(info, &[object], &revision, query)
}

fn table_response(table: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(table).unwrap_or_default();
    response(200, tables::TABLE_CONTENT_TYPE, bytes)
}

/// `/openapi/v3` and its group-version documents (built once, then served from memory).
fn openapi_v3(path: &routes::OpenApiPath) -> Result<Response<Body>, ApiError> {
    let doc = match path {
        routes::OpenApiPath::Index => crate::openapi::index(),
        routes::OpenApiPath::GroupVersion { group, version } => {
            crate::openapi::document(group, version)
        }
    };
    match doc {
        Ok(bytes) => Ok(response(200, "application/json", bytes)),
        Err(crate::openapi::OpenApiError::UnknownGroupVersion(_)) => Err(ApiError::no_route()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// `/api`, `/apis`, `/apis/{g}`, `/api/v1`, `/apis/{g}/{v}`: legacy documents, or the
/// aggregated (v2) ones when the client's `Accept` asks for them (kubectl >= 1.30).
fn discovery(req: &Request<Incoming>, path: &DiscoveryPath) -> Result<Response<Body>, ApiError> {
    let accept = req
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let aggregated = discovery::wants_aggregated(accept);
    let answer = |value: Value, content_type: &'static str| {
        let bytes = serde_json::to_vec(&value).unwrap_or_default();
        Ok(response(200, content_type, bytes))
    };
    match path {
        DiscoveryPath::CoreVersions if aggregated => answer(
            discovery::aggregated_core(),
            discovery::AGGREGATED_CONTENT_TYPE,
        ),
        DiscoveryPath::Groups if aggregated => answer(
            discovery::aggregated_groups(),
            discovery::AGGREGATED_CONTENT_TYPE,
        ),
        DiscoveryPath::CoreVersions => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()))
                .unwrap_or("");
            answer(discovery::core_api_versions(host), "application/json")
        }
        DiscoveryPath::Groups => answer(discovery::api_group_list(), "application/json"),
        DiscoveryPath::Group(group) => {
            let list = discovery::api_group_list();
            let found = list["groups"]
                .as_array()
                .and_then(|groups| groups.iter().find(|g| g["name"] == group.as_str()))
                .cloned();
            match found {
                Some(mut g) => {
                    if let Some(map) = g.as_object_mut() {
                        map.insert("kind".into(), json!("APIGroup"));
                        map.insert("apiVersion".into(), json!("v1"));
                    }
                    answer(g, "application/json")
                }
                None => Err(ApiError::no_route()),
            }
        }
        DiscoveryPath::Resources { group, version } => {
            match discovery::resource_list(group, version) {
                Some(list) => answer(list, "application/json"),
                None => Err(ApiError::no_route()),
            }
        }
    }
}

async fn list(ctx: &Ctx, path: &ResourcePath, query: &Query) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(
        path.info.kind,
        query.label_selector.as_deref(),
        query.field_selector.as_deref(),
    )?;
    if filter.selects_everything() && !query.as_table {
        return raw_list(ctx, path).await;
    }
    let list = ctx
        .store
        .list(&scope(path)?)
        .await
        .map_err(|e| ApiError::from_store(path.info, "", e))?;
    let items: Vec<Value> = list
        .items
        .into_iter()
        .filter(|o| matches_selectors(&filter, o))
        .map(|o| with_type_meta(path.info, o))
        .collect();
    if query.as_table {
        return Ok(table_response(&table_value(
            path.info,
            &items,
            &list.revision.to_string(),
            query,
        )));
    }
    // Built by hand: `json!` would serialize `items` into a fresh Value, a deep copy of the
    // whole list.
    let mut body = serde_json::Map::new();
    body.insert("kind".into(), json!(format!("{}List", path.info.name)));
    body.insert("apiVersion".into(), json!(path.info.api_version()));
    body.insert(
        "metadata".into(),
        json!({"resourceVersion": list.revision.to_string()}),
    );
    body.insert("items".into(), Value::Array(items));
    Ok(json_response(200, &Value::Object(body)))
}

/// An unfiltered list, written from the stored JSON without decoding it (see `list_body`).
async fn raw_list(ctx: &Ctx, path: &ResourcePath) -> Result<Response<Body>, ApiError> {
    let list = ctx
        .store
        .list_raw(&scope(path)?)
        .await
        .map_err(|e| ApiError::from_store(path.info, "", e))?;
    let body = super::list_body::write_list(
        &path.info.api_version(),
        path.info.name,
        list.revision,
        &list.items,
    )
    .map_err(|e| {
        ApiError::internal(format!(
            "a stored {} is not valid JSON: {e}",
            path.info.name
        ))
    })?;
    Ok(response(200, "application/json", body))
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub(crate) async fn read_body(
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Parses a body as JSON, YAML or Kubernetes protobuf per its `Content-Type`; anything else is 415.
pub(crate) fn parse_body(parts: &http::request::Parts, bytes: &[u8]) -> Result<Value, ApiError> {
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match crate::patch::media_type(content_type).as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            serde_saphyr::from_slice::<Value>(bytes).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
            })
        }
        crate::protobuf::MEDIA_TYPE => {
            crate::protobuf::decode(bytes).map_err(|e| ApiError::from_protobuf(&e))
        }
        _ => Err(ApiError::unsupported_media_type(content_type)),
    }
}

fn random_suffix() -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal("no random numbers available"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Whether a create or an update is being prepared (they differ in name and RV handling).
pub(crate) enum Write<'a> {
    Create,
    Update { url_name: &'a str },
}

/// Checks a body against the request (type, namespace, name), decodes it per `fieldValidation`,
/// defaults and validates it. Returns the object to store, its name and the decode warnings.
pub(crate) fn prepare(
    ctx: &Ctx,
    info: &'static KindInfo,
    namespace: Option<&str>,
    mut value: Value,
    strictness: Strictness,
    write: Write<'_>,
) -> Result<(Value, String, Vec<String>), ApiError> {
    let creating = matches!(write, Write::Create);
    let Some(map) = value.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    };
    let expected_version = info.api_version();
    for (field, expected, what) in [
        ("apiVersion", expected_version.as_str(), "API version"),
        ("kind", info.name, "kind"),
    ] {
        match map.get(field) {
            None | Some(Value::Null) => {
                map.insert(field.into(), json!(expected));
            }
            Some(Value::String(s)) if s.is_empty() => {
                map.insert(field.into(), json!(expected));
            }
            Some(Value::String(s)) if s == expected => {}
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "the {what} in the data ({}) does not match the expected {what} ({expected})",
                    other.as_str().unwrap_or("?")
                )));
            }
        }
    }
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        if info.namespaced {
            let url_ns = namespace.unwrap_or("");
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
                Some(ns) if ns == url_ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace \
                         sent on the request",
                    ));
                }
            }
        } else {
            meta.remove("namespace");
        }
        let body_name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        match write {
            Write::Create => {
                if meta
                    .get("resourceVersion")
                    .and_then(Value::as_str)
                    .is_some_and(|rv| !rv.is_empty())
                {
                    return Err(ApiError::bad_request(
                        "resourceVersion should not be set on objects to be created",
                    ));
                }
                let generate = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if body_name.is_empty() && !generate.is_empty() {
                    meta.insert(
                        "name".into(),
                        json!(format!("{generate}{}", random_suffix()?)),
                    );
                }
            }
            Write::Update { url_name } => {
                if body_name.is_empty() {
                    meta.insert("name".into(), json!(url_name));
                } else if body_name != url_name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({body_name}) does not match the name on the \
                         URL ({url_name})"
                    )));
                }
            }
        }
    }
    let decoded = decode_value(&value, strictness).map_err(|e| ApiError::decode(info, &e))?;
    let mut object = decoded.object;
    apply_defaults(&mut object);
    if creating {
        skiff_api::admission::on_create(&mut object);
    }
    let name = object.name().to_owned();
    validate(&object, &ctx.validation).map_err(|e| ApiError::invalid(info, &name, &e))?;
    let stored = object
        .to_value()
        .map_err(|e| ApiError::internal(format!("encoding the object: {e}")))?;
    Ok((stored, name, decoded.warnings))
}

/// Creates one object as a POST would (also used for the initial namespaces).
pub(crate) async fn create_object(
    ctx: &Ctx,
    info: &'static KindInfo,
    namespace: Option<&str>,
    value: Value,
    strictness: Strictness,
    dry_run: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let owner = FieldOwner::Update("kube-apiserver".to_owned());
    create_owned(ctx, info, namespace, value, strictness, dry_run, &owner).await
}

/// Creates one object, recording its fields for `owner`.
pub(crate) async fn create_owned(
    ctx: &Ctx,
    info: &'static KindInfo,
    namespace: Option<&str>,
    mut value: Value,
    strictness: Strictness,
    dry_run: bool,
    owner: &FieldOwner,
) -> Result<(Value, Vec<String>), ApiError> {
    drop_status_on_create(info, &mut value);
    crate::lifecycle::prepare_create(info.kind, &mut value);
    let (mut object, name, warnings) =
        prepare(ctx, info, namespace, value, strictness, Write::Create)?;
    owner.record(info, Target::Main, None, &mut object);
    let namespace = if info.namespaced { namespace } else { None };
    if let Some(ns) = namespace {
        deletion::admit_create_in(ctx, info, ns, &name).await?;
    }
    let key = object_key(info, namespace, &name)?;
    let stored = if dry_run {
        dry_run::store_for(ctx, true).create(&key, object).await
    } else {
        let holding = super::services::before_create(ctx, info, &mut object).await?;
        let stored = ctx.store.create(&key, object).await;
        super::services::settle(ctx, holding, stored.is_ok()).await;
        stored
    };
    let stored = stored.map_err(|e| ApiError::from_store(info, &name, e))?;
    Ok((with_type_meta(info, stored), warnings))
}

async fn create(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    if path.info.namespaced && path.namespace.is_none() {
        return Err(ApiError::no_route());
    }
    let strictness = query.strictness()?;
    let (parts, bytes) = read_body(req).await?;
    let value = parse_body(&parts, &bytes)?;
    if path.info.kind == Kind::Event
        && let Some(resp) = super::events::aggregate(ctx, path, &value, strictness, query).await?
    {
        return Ok(resp);
    }
    let owner = FieldOwner::Update(query.manager());
    let (stored, warnings) = create_owned(
        ctx,
        path.info,
        path.namespace.as_deref(),
        value,
        strictness,
        query.dry_run,
        &owner,
    )
    .await?;
    if path.info.kind == Kind::Event && !query.dry_run {
        ctx.events.remember(&stored);
    }
    let mut resp = json_response(201, &stored);
    add_warnings(&mut resp, &warnings);
    Ok(resp)
}

/// What a PUT or PATCH writes: the whole object, only its `status`, or its `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main resource. For kinds with a `status` subresource the stored status is kept
    /// (upstream strategies' `PrepareForUpdate`): status is written only through `/status`.
    Main,
    /// `/status`: only `.status` changes; spec and metadata stay as stored (upstream status
    /// strategies).
    Status,
    /// `/scale`: the client sends an `autoscaling/v1` Scale; only `spec.replicas` of the parent
    /// changes, and the answer is the new Scale.
    Scale,
    /// A Namespace's `/finalize`: only `spec.finalizers` changes (PUT only).
    Finalize,
}

/// Kinds whose create drops a client-supplied `.status` (upstream `PrepareForCreate`). Nodes
/// and Namespaces keep theirs (kubelets register nodes with status; namespaces get `phase`).
const CREATE_DROPS_STATUS: &[Kind] = &[
    Kind::Pod,
    Kind::Service,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::StatefulSet,
    Kind::Ingress,
];

/// Drops `.status` from an object about to be created, for the kinds upstream does it for.
fn drop_status_on_create(info: &KindInfo, value: &mut Value) {
    if CREATE_DROPS_STATUS.contains(&info.kind)
        && let Some(map) = value.as_object_mut()
    {
        map.remove("status");
    }
}

/// `.../{name}/{sub}`: `status` and `scale` for the kinds whose registry row lists them; any
/// other subresource is 404.
async fn subresource(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    sub: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    if path.info.kind == Kind::Pod
        && let (Some(ns), Some(name)) = (&path.namespace, &path.name)
    {
        if sub == "binding" {
            return super::binding::bind(ctx, req, ns, Some(name), query).await;
        }
        if let Some(what) = super::node_proxy::target::Streaming::from_subresource(sub) {
            return super::node_proxy::serve(ctx, req, path, what, ns, name).await;
        }
    }
    let target = match sub {
        "status" if path.info.has_subresource("status") => Target::Status,
        "scale" if path.info.has_subresource("scale") => Target::Scale,
        "finalize" if path.info.has_subresource("finalize") => Target::Finalize,
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server could not find the requested resource: {} has no {sub:?} \
                     subresource",
                    path.info.group_resource()
                ),
            ));
        }
    };
    let Some(name) = path.name.clone() else {
        return Err(ApiError::no_route());
    };
    let method = req.method().clone();
    match method {
        Method::GET if query.watch => Err(ApiError::method_not_allowed(
            "watch is not allowed on subresources",
        )),
        Method::PUT if target == Target::Finalize => {
            update(ctx, req, path, &name, query, target).await
        }
        _ if target == Target::Finalize => Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed on the finalize subresource: only PUT is"
        ))),
        Method::GET if target == Target::Scale => {
            let key = object_key(path.info, path.namespace.as_deref(), &name)?;
            let parent = ctx
                .store
                .get(&key)
                .await
                .map_err(|e| ApiError::from_store(path.info, &name, e))?;
            Ok(json_response(200, &scale_of(&parent)?))
        }
        // `/status` answers the whole object, as upstream.
        Method::GET => get(ctx, path, &name, query).await,
        Method::PUT => update(ctx, req, path, &name, query, target).await,
        Method::PATCH => patch(ctx, req, path, &name, query, target).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed on the {sub} subresource"
        ))),
    }
}

/// The `autoscaling/v1` Scale of a Deployment, ReplicaSet or StatefulSet.
pub(crate) fn scale_of(parent: &Value) -> Result<Value, ApiError> {
    let meta = &parent["metadata"];
    let mut scale_meta = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field).filter(|v| !v.is_null()) {
            scale_meta.insert(field.into(), v.clone());
        }
    }
    let selector = match parent["spec"].get("selector").filter(|v| !v.is_null()) {
        None => String::new(),
        Some(sel) => crate::selectors::LabelSelector::from_json(sel)
            .map_err(|e| ApiError::internal(format!("the stored selector is invalid: {e}")))?
            .to_string(),
    };
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": parent["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {
            "replicas": parent["status"]["replicas"].as_i64().unwrap_or(0),
            "selector": selector,
        },
    }))
}

/// The object a client sent in the shape it addresses (the parent object for `Main` and
/// `Status`, a Scale for `Scale`) turned into the object to store, given the stored `current`.
fn merge_target(
    info: &KindInfo,
    name: &str,
    target: Target,
    current: &Value,
    mut sent: Value,
) -> Result<Value, ApiError> {
    if !sent.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let sent_rv = sent["metadata"]["resourceVersion"].clone();
    match target {
        Target::Main => {
            // Status is written through `/status` only: keep the stored one.
            if info.has_subresource("status")
                && let Some(map) = sent.as_object_mut()
            {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            Ok(sent)
        }
        Target::Finalize => Ok(crate::lifecycle::merge_finalize(current, &sent)),
        Target::Status | Target::Scale => {
            let sent_name = sent["metadata"]["name"].as_str().unwrap_or("");
            if !sent_name.is_empty() && sent_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({sent_name}) does not match the name on the URL \
                     ({name})"
                )));
            }
            let mut next = current.clone();
            if target == Target::Status {
                if let Some(map) = next.as_object_mut() {
                    match sent.get("status").filter(|v| !v.is_null()) {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
            } else {
                let replicas = match &sent["spec"]["replicas"] {
                    Value::Null => 0,
                    v => v.as_i64().ok_or_else(|| {
                        ApiError::bad_request("spec.replicas of a Scale must be an integer")
                    })?,
                };
                if replicas < 0 {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "Scale.autoscaling {name:?} is invalid: spec.replicas: Invalid \
                             value: {replicas}: must be greater than or equal to 0"
                        ),
                    ));
                }
                if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("replicas".into(), json!(replicas));
                }
            }
            // The sent resourceVersion (possibly empty) is the precondition.
            if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), sent_rv);
            }
            Ok(next)
        }
    }
}

/// How often a write re-reads and re-applies after losing a race with another writer
/// (upstream `GuaranteedUpdate`).
const PATCH_ATTEMPTS: usize = 10;

/// The common end of PUT and PATCH: reads the stored object, lets `sent_for` produce what the
/// client sent (the body, or the patch applied), merges it per `target`, then decodes, defaults,
/// validates and stores it with the sent resourceVersion as precondition. A lost race is retried
/// unless the client pinned `resourceVersion` (`pinned`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn guarded_write<F>(
    ctx: &Ctx,
    path: &ResourcePath,
    name: &str,
    query: &Query,
    target: Target,
    strictness: Strictness,
    pinned: bool,
    owner: &FieldOwner,
    mut sent_for: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnMut(&Value) -> Result<Value, ApiError>,
{
    let ns = path.namespace.as_deref();
    let key = object_key(path.info, ns, name)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = ctx
            .store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_store(path.info, name, e))?;
        let current = with_type_meta(path.info, current);
        let mut sent = sent_for(&current)?;
        if !pinned && let Some(meta) = sent.get_mut("metadata").and_then(Value::as_object_mut) {
            // Unpinned: write over what was just read (and retry if that goes stale).
            meta.insert(
                "resourceVersion".into(),
                current["metadata"]["resourceVersion"].clone(),
            );
        }
        let applied_fields = sent["metadata"]["managedFields"].clone();
        let mut merged = merge_target(path.info, name, target, &current, sent)?;
        if target == Target::Main {
            super::services::carry_over(path.info, &current, &mut merged);
        }
        let (mut object, _, warnings) = prepare(
            ctx,
            path.info,
            ns,
            merged,
            strictness,
            Write::Update { url_name: name },
        )?;
        // A non-apply write that changes nothing is not stored, when its resourceVersion
        // precondition holds (a stale one is still a conflict, as upstream). An apply that
        // only takes ownership changes managedFields, which record_or_keep sees.
        let no_op_update = matches!(owner, FieldOwner::Update(_))
            && object["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"];
        if owner.record_or_keep(path.info, target, &current, &mut object, applied_fields)
            || (no_op_update && unchanged(&current, &object))
        {
            return written(path.info, current, target, query, &warnings);
        }
        let outcome = deletion::check_update(
            path.info,
            name,
            &current,
            &mut object,
            target == Target::Finalize,
        )?;
        let store = dry_run::store_for(ctx, query.dry_run);
        let result = match outcome {
            UpdateOutcome::Store if target == Target::Main && !query.dry_run => {
                let holding =
                    super::services::before_update(ctx, path.info, &current, &mut object).await?;
                let result = ctx
                    .store
                    .update(&key, object, &Preconditions::default())
                    .await;
                super::services::settle(ctx, holding, result.is_ok()).await;
                result
            }
            UpdateOutcome::Store => store.update(&key, object, &Preconditions::default()).await,
            UpdateOutcome::Delete => {
                deletion::delete_instead_of_update(
                    ctx,
                    &*store,
                    query.dry_run,
                    path.info,
                    &key,
                    &current,
                    object,
                )
                .await
            }
        };
        match result {
            Ok(stored) => {
                return written(
                    path.info,
                    with_type_meta(path.info, stored),
                    target,
                    query,
                    &warnings,
                );
            }
            Err(StoreError::Conflict { .. }) if !pinned && attempt < PATCH_ATTEMPTS => {
                tracing::debug!(name, attempt, "write lost a race; re-reading");
            }
            Err(e) => return Err(ApiError::from_store(path.info, name, e)),
        }
    }
}

/// Whether a PUT or PATCH result is the stored object again, `managedFields` aside (an
/// update that changes nothing gives its manager nothing new) and `resourceVersion` aside
/// (the precondition, checked by the caller): upstream writes nothing then — no new
/// resourceVersion, no watch event — and answers with the stored object.
fn unchanged(current: &Value, object: &Value) -> bool {
    let (Some(a), Some(b)) = (current.as_object(), object.as_object()) else {
        return current == object;
    };
    let skip = |k: &str| k == "managedFields" || k == "resourceVersion";
    let same_meta = match (a.get("metadata"), b.get("metadata")) {
        (Some(Value::Object(ma)), Some(Value::Object(mb))) => {
            ma.iter().filter(|(k, _)| !skip(k)).count()
                == mb.iter().filter(|(k, _)| !skip(k)).count()
                && ma
                    .iter()
                    .filter(|(k, _)| !skip(k))
                    .all(|(k, v)| mb.get(k) == Some(v))
        }
        (ma, mb) => ma == mb,
    };
    same_meta
        && a.len() == b.len()
        && a.iter()
            .filter(|(k, _)| k.as_str() != "metadata")
            .all(|(k, v)| b.get(k) == Some(v))
}

/// The 200 answer to a PUT or PATCH: the object, a Table of it, or the Scale.
fn written(
    info: &KindInfo,
    stored: Value,
    target: Target,
    query: &Query,
    warnings: &[String],
) -> Result<Response<Body>, ApiError> {
    let mut resp = if target == Target::Scale {
        json_response(200, &scale_of(&stored)?)
    } else if query.as_table {
        table_response(&object_table(info, stored, query))
    } else {
        json_response(200, &stored)
    };
    add_warnings(&mut resp, warnings);
    Ok(resp)
}

/// PUT of the object, its `/status` or its `/scale` (whose body may lack a Content-Type:
/// treated as JSON). A body with a resourceVersion is a precondition; one without is written
/// over the current object.
async fn update(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    name: &str,
    query: &Query,
    target: Target,
) -> Result<Response<Body>, ApiError> {
    let strictness = query.strictness()?;
    let (parts, bytes) = read_body(req).await?;
    let value = parse_body(&parts, &bytes)?;
    let pinned = value["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty());
    let owner = FieldOwner::Update(query.manager());
    guarded_write(
        ctx,
        path,
        name,
        query,
        target,
        strictness,
        pinned,
        &owner,
        |_| Ok(value.clone()),
    )
    .await
}

/// PATCH: applies a JSON, merge or strategic merge patch to the stored object (or to its Scale
/// for `/scale`), then stores the result as PUT does, with the object's resourceVersion as
/// precondition. A lost race is retried unless the patch itself pins `resourceVersion`.
/// An apply patch is server-side apply (`super::apply`), which also creates.
async fn patch(
    ctx: &Ctx,
    req: Request<Incoming>,
    path: &ResourcePath,
    name: &str,
    query: &Query,
    target: Target,
) -> Result<Response<Body>, ApiError> {
    let strictness = query.strictness()?;
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let patch_type = PatchType::from_content_type(&content_type).map_err(ApiError::from_patch)?;
    if patch_type == PatchType::Apply {
        return super::apply::apply_patch(ctx, req, path, name, query, target).await;
    }
    super::apply::refuse_force(query)?;
    let (_, bytes) = read_body(req).await?;
    let pinned = patch::sets_resource_version(patch_type, &bytes);
    let kind_name = path.info.name;
    let sent_for = |current: &Value| {
        let base = if target == Target::Scale {
            scale_of(current)?
        } else {
            current.clone()
        };
        // A Scale's fields (spec.replicas, status) patch the same under the parent's schema.
        let patched = patch::apply_patch(path.info.kind, &base, patch_type, &bytes)
            .map_err(ApiError::from_patch)?;
        let uid = patched["metadata"]["uid"].as_str().unwrap_or("");
        let current_uid = current["metadata"]["uid"].as_str().unwrap_or("");
        if !uid.is_empty() && uid != current_uid {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "{kind_name} {name:?} is invalid: metadata.uid: Invalid value: {uid:?}: \
                     field is immutable"
                ),
            ));
        }
        Ok(patched)
    };
    let owner = FieldOwner::Update(query.manager());
    guarded_write(
        ctx, path, name, query, target, strictness, pinned, &owner, sent_for,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_that_changes_nothing_but_managed_fields_is_unchanged() {
        let current = serde_json::json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "resourceVersion": "7",
                         "managedFields": [{"manager": "kubelet", "time": "2026-01-01T00:00:00Z"}]},
            "status": {"phase": "Running"}
        });
        let mut same = current.clone();
        same["metadata"]["managedFields"][0]["time"] = "2026-01-01T00:00:09Z".into();
        same["metadata"]["resourceVersion"] = "6".into();
        assert!(unchanged(&current, &same));
        let mut changed = current.clone();
        changed["status"]["phase"] = "Succeeded".into();
        assert!(!unchanged(&current, &changed));
        let mut labelled = current.clone();
        labelled["metadata"]["labels"] = serde_json::json!({"a": "b"});
        assert!(!unchanged(&current, &labelled));
        let mut extra = current.clone();
        extra["spec"] = serde_json::json!({});
        assert!(!unchanged(&current, &extra));
    }

    #[test]
    fn version_is_semver_and_minor_32() {
        let v = version();
        assert_eq!(v["minor"], "32");
        assert!(
            v["gitVersion"]
                .as_str()
                .is_some_and(|s| s.starts_with("v1.32.0"))
        );
    }

    #[test]
    fn query_parsing() -> Result<(), ApiError> {
        let q = Query::parse(Some("watch=1&allowWatchBookmarks=true&timeoutSeconds=5"))?;
        assert!(q.watch && q.allow_bookmarks);
        assert_eq!(q.timeout_seconds, Some(5));
        assert!(Query::parse(Some("timeoutSeconds=x")).is_err());
        assert_eq!(Query::parse(None)?.strictness()?, Strictness::Warn);
        Ok(())
    }
}
