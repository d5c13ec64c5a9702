//! The manifest and decode error types: what went wrong, in which file, document, line and field.

use std::fmt;

/// What went wrong while parsing or decoding an object. Messages follow upstream wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// The text is not valid YAML or JSON.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A mapping repeats a key.
    #[error("duplicate key {0:?}")]
    DuplicateKey(String),
    /// The document is not a mapping/object.
    #[error("expected an object, found {0}")]
    NotAnObject(&'static str),
    /// `apiVersion` or `kind` is missing or empty (upstream: `Object 'Kind' is missing`).
    #[error("Object '{0}' is missing: required field {1:?} is not set")]
    MissingTypeField(&'static str, &'static str),
    /// `apiVersion`/`kind` is not a string.
    #[error("field {0:?} must be a string")]
    TypeFieldNotString(&'static str),
    /// The group/version is served but has no such kind.
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    /// The group/version is not served at all.
    #[error("no matches for kind {kind:?} in version {api_version:?}")]
    UnknownVersion { api_version: String, kind: String },
    /// A value has the wrong type or an invalid value (serde's message).
    #[error("{0}")]
    InvalidValue(String),
    /// Strict mode: fields the schema does not know, every one of them.
    #[error("strict decoding error: {}", unknown_list(.0))]
    UnknownFields(Vec<String>),
    /// The input or one object is larger than the limit.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// Nesting deeper than the limit.
    #[error("nesting is deeper than the limit of {0} levels")]
    TooDeep(usize),
    /// A resource budget was exceeded (aliases, nodes, documents...).
    #[error("resource limit exceeded: {0}")]
    LimitExceeded(String),
}

fn unknown_list(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error decoding one `serde_json::Value` into a typed object (what the API server receives).
/// `field` is the path within the object, e.g. `spec.ports[0].port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    pub field: Option<String>,
    pub kind: ErrorKind,
}

impl DecodeError {
    pub fn new(kind: ErrorKind) -> Self {
        Self { field: None, kind }
    }

    pub fn at(field: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            field: Some(field.into()),
            kind,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) if !field.is_empty() => write!(f, "field {field}: {}", self.kind),
            _ => write!(f, "{}", self.kind),
        }
    }
}

/// An error in a manifest file. Names the file, the document (stored 0-based, shown 1-based as
/// "document N"), the line and column where known (1-based), and the field path where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file name the caller passed to [`crate::manifest::parse_manifests`].
    pub file: String,
    /// 0-based index of the document in the file (`---`-separated YAML or a JSON stream).
    pub document: Option<usize>,
    /// 1-based line in the file.
    pub line: Option<u64>,
    /// 1-based column in the file.
    pub column: Option<u64>,
    /// Field path inside the document, e.g. `spec.ports[0].port` or `items[2].metadata.name`.
    pub field: Option<String>,
    pub kind: ErrorKind,
}

impl ManifestError {
    pub(crate) fn new(file: &str, document: Option<usize>, kind: ErrorKind) -> Self {
        Self {
            file: file.to_string(),
            document,
            line: None,
            column: None,
            field: None,
            kind,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(d) = self.document {
            write!(f, ": document {} (1-based)", d + 1)?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, ", line {l}, column {c}")?,
            (Some(l), None) => write!(f, ", line {l}")?,
            _ => {}
        }
        if let Some(field) = &self.field
            && !field.is_empty()
        {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.kind)
    }
}
