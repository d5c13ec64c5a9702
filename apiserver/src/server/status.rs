//! The Kubernetes `Status` error: every failed request answers with one, with upstream codes and reasons.

use serde_json::{Value, json};
use skiff_api::{DecodeError, FieldErrors, KindInfo};

use crate::storage::StoreError;

/// One `details.causes[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: Option<String>,
}

/// A failed request, rendered as a `meta/v1 Status` (`status: Failure`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` (boxed: errors travel through many `Result`s).
    pub details: Option<Box<Details>>,
}

/// `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    /// The resource (`pods`) for most errors, the Kind (`Pod`) for `Invalid`.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn for_resource(mut self, info: &KindInfo, name: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: Some(name.to_owned()),
            group: (!info.group.is_empty()).then(|| info.group.to_owned()),
            kind: Some(info.plural.to_owned()),
            causes: Vec::new(),
        }));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden on one object.
    pub fn forbidden(info: &KindInfo, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} {name:?} is forbidden: {why}", info.group_resource()),
        )
        .for_resource(info, name)
    }

    /// 404 for a path no handler serves (upstream's wording).
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 NotFound for one object.
    pub fn not_found(info: &KindInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", info.group_resource()),
        )
        .for_resource(info, name)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(info: &KindInfo, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", info.group_resource()),
        )
        .for_resource(info, name)
    }

    /// 409 Conflict, upstream's optimistic-concurrency message.
    pub fn conflict(info: &KindInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again",
                info.group_resource()
            ),
        )
        .for_resource(info, name)
    }

    /// 410 Expired: a watch or list from a compacted resourceVersion.
    pub fn expired(requested: u64, compacted: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({compacted})"),
        )
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted \
                 media types include: application/json, application/yaml, \
                 application/vnd.kubernetes.protobuf"
            ),
        )
    }

    /// 406 NotAcceptable: the `Accept` header lists only protobuf, which skiff never writes.
    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    /// A protobuf body that does not decode: 400, or 415 for a kind or encoding we do not read.
    pub fn from_protobuf(err: &crate::protobuf::ProtobufError) -> Self {
        match err.code() {
            415 => Self::new(415, "UnsupportedMediaType", err.to_string()),
            _ => Self::bad_request(format!("the protobuf request body is not valid: {err}")),
        }
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(info: &KindInfo, name: &str, errors: &FieldErrors) -> Self {
        let mut err = Self::new(422, "Invalid", errors.status_message(info.name, name));
        err.details = Some(Box::new(Details {
            name: Some(name.to_owned()),
            group: (!info.group.is_empty()).then(|| info.group.to_owned()),
            kind: Some(info.name.to_owned()),
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

    /// 400 for a body that does not decode as `info`'s kind (syntax, types, unknown fields).
    pub fn decode(info: &KindInfo, err: &DecodeError) -> Self {
        let mut out = Self::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {err}",
            info.name, info.version, info.name
        ));
        out.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: "FieldValueInvalid".to_owned(),
                message: err.kind.to_string(),
                field: err.field.clone(),
            }],
            ..Details::default()
        }));
        out
    }

    /// A patch that is malformed (400), does not apply (422) or has no patch media type (415).
    pub fn from_patch(err: crate::patch::PatchError) -> Self {
        let reason = match err.code() {
            415 => "UnsupportedMediaType",
            422 => "Invalid",
            _ => "BadRequest",
        };
        Self::new(err.code(), reason, err.to_string())
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Maps a storage error on an object of `info` named `name`.
    pub fn from_store(info: &KindInfo, name: &str, err: StoreError) -> Self {
        match err {
            StoreError::NotFound(_) => Self::not_found(info, name),
            StoreError::AlreadyExists(_) => Self::already_exists(info, name),
            StoreError::Conflict { .. } => Self::conflict(info, name),
            StoreError::Expired {
                requested,
                compacted,
            } => Self::expired(requested, compacted),
            StoreError::Invalid(msg) => Self::bad_request(msg),
            other @ (StoreError::Incompatible(_)
            | StoreError::Crypto(_)
            | StoreError::Backend(_)) => {
                tracing::warn!(error = %other, "storage failure");
                Self::internal(other.to_string())
            }
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let Some(d) = &self.details else {
            return status;
        };
        let mut details = serde_json::Map::new();
        if let Some(name) = &d.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &d.group {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &d.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !d.causes.is_empty() {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| {
                    let mut v = json!({"reason": c.reason, "message": c.message});
                    if let Some(f) = &c.field {
                        v["field"] = json!(f);
                    }
                    v
                })
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds;

    #[test]
    fn not_found_names_group_resource() {
        let info = kinds::by_resource("apps", "deployments").expect("deployments");
        let s = ApiError::not_found(info, "x").to_status();
        assert_eq!(s["message"], "deployments.apps \"x\" not found");
        assert_eq!(s["details"]["group"], "apps");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["code"], 404);
    }

    #[test]
    fn expired_is_410() {
        let s = ApiError::expired(3, 9).to_status();
        assert_eq!(s["code"], 410);
        assert_eq!(s["reason"], "Expired");
    }
}
