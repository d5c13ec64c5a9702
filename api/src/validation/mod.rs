//! Validation as the real API server does it: `field.Error`-style errors with field paths.

mod apps;
mod core;
mod meta;
pub mod names;
mod networking;
mod path;

use std::fmt;
use std::ops::RangeInclusive;

pub use path::FieldPath;

use crate::object::Object;

/// Settings the API server passes to validation (its flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    /// `--service-node-port-range`, default 30000-32767.
    pub node_port_range: RangeInclusive<u16>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            node_port_range: 30000..=32767,
        }
    }
}

/// Upstream `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    Forbidden,
    NotFound,
    TooMany,
}

impl FieldErrorType {
    /// The machine-readable reason upstream puts in `details.causes[].reason` (`FieldValueRequired`...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
            Self::Forbidden => "FieldValueForbidden",
            Self::NotFound => "FieldValueNotFound",
            Self::TooMany => "FieldValueTooMany",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "Not found",
            Self::TooMany => "Too many",
        }
    }
}

/// One validation failure, like upstream `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.ports[0].port`.
    pub field: String,
    pub error_type: FieldErrorType,
    /// The offending value rendered as upstream does (`"Foo"` for strings, `0` for numbers).
    pub value: Option<String>,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.error_type.label())?;
        if let (
            Some(v),
            FieldErrorType::Invalid
            | FieldErrorType::NotSupported
            | FieldErrorType::Duplicate
            | FieldErrorType::NotFound,
        ) = (&self.value, self.error_type)
        {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// All validation failures of one object, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        if parts.len() == 1 {
            write!(f, "{}", parts.join(""))
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.0.iter()
    }

    /// The message of a 422 response: `Service "web" is invalid: [...]`.
    pub fn status_message(&self, kind: &str, name: &str) -> String {
        format!("{kind} {name:?} is invalid: {self}")
    }

    /// Does any error point at exactly this field?
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    pub(crate) fn push(
        &mut self,
        field: &FieldPath,
        error_type: FieldErrorType,
        value: Option<String>,
        detail: impl Into<String>,
    ) {
        self.0.push(FieldError {
            field: field.to_string(),
            error_type,
            value,
            detail: detail.into(),
        });
    }

    pub(crate) fn required(&mut self, field: &FieldPath, detail: impl Into<String>) {
        self.push(field, FieldErrorType::Required, None, detail);
    }

    pub(crate) fn invalid(
        &mut self,
        field: &FieldPath,
        value: impl fmt::Debug,
        detail: impl Into<String>,
    ) {
        self.push(
            field,
            FieldErrorType::Invalid,
            Some(format!("{value:?}")),
            detail,
        );
    }

    pub(crate) fn forbidden(&mut self, field: &FieldPath, detail: impl Into<String>) {
        self.push(field, FieldErrorType::Forbidden, None, detail);
    }

    pub(crate) fn duplicate(&mut self, field: &FieldPath, value: impl fmt::Debug) {
        self.push(
            field,
            FieldErrorType::Duplicate,
            Some(format!("{value:?}")),
            "",
        );
    }

    pub(crate) fn not_found(&mut self, field: &FieldPath, value: impl fmt::Debug) {
        self.push(
            field,
            FieldErrorType::NotFound,
            Some(format!("{value:?}")),
            "",
        );
    }

    pub(crate) fn too_long(&mut self, field: &FieldPath, limit: usize) {
        self.push(
            field,
            FieldErrorType::TooLong,
            None,
            format!("must have at most {limit} bytes"),
        );
    }

    /// `NotSupported` unless `value` is one of `supported`.
    pub(crate) fn one_of(&mut self, field: &FieldPath, value: &str, supported: &[&str]) {
        if !supported.contains(&value) {
            let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
            self.push(
                field,
                FieldErrorType::NotSupported,
                Some(format!("{value:?}")),
                format!("supported values: {}", list.join(", ")),
            );
        }
    }

    /// Add one `Invalid` error per message from a `names` check.
    pub(crate) fn invalid_msgs(
        &mut self,
        field: &FieldPath,
        value: impl fmt::Debug + Copy,
        msgs: Vec<String>,
    ) {
        for m in msgs {
            self.invalid(field, value, m);
        }
    }
}

/// Validate an object as the API server does on create. The object should be defaulted first
/// ([`crate::defaults::apply_defaults`]), as upstream validates defaulted objects.
pub fn validate(obj: &Object, config: &ValidationConfig) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    meta::object_meta(obj, &mut errs);
    match obj {
        Object::Namespace(o) => core::namespace(o, &mut errs),
        Object::Pod(o) => core::pod(o, &mut errs),
        Object::Service(o) => core::service(o, config, &mut errs),
        Object::Endpoints(o) => core::endpoints(o, &mut errs),
        Object::EndpointSlice(o) => networking::endpoint_slice(o, &mut errs),
        Object::ConfigMap(o) => core::config_map(o, &mut errs),
        Object::Secret(o) => core::secret(o, &mut errs),
        Object::Node(o) => core::node(o, &mut errs),
        Object::Event(o) => core::event(o, &mut errs),
        Object::Deployment(o) => apps::deployment(o, &mut errs),
        Object::ReplicaSet(o) => apps::replica_set(o, &mut errs),
        Object::StatefulSet(o) => apps::stateful_set(o, &mut errs),
        Object::Ingress(o) => networking::ingress(o, &mut errs),
        Object::IngressClass(o) => networking::ingress_class(o, &mut errs),
        Object::Lease(o) => networking::lease(o, &mut errs),
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

#[cfg(test)]
mod tests;
