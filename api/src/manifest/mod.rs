//! Manifest parsing: multi-document YAML and JSON streams into typed objects, with limits.
//!
//! Limits: the whole input may be at most [`MAX_INPUT_BYTES`], one document (one object) at
//! most [`MAX_OBJECT_BYTES`] (etcd's default request limit), nesting at most [`MAX_DEPTH`].
//! Inputs over a size limit are refused before parsing, so a 50 MB file fails at once.

// ManifestError is 152 bytes and only built on the cold error path; boxing it would make every
// caller and test match through a Box for no gain.
#![allow(clippy::result_large_err)]

mod decode;
mod error;
mod json;
mod yaml;

use serde_json::Value;

pub use decode::{Decoded, decode_value, resolve_kind};
pub use error::{DecodeError, ErrorKind, ManifestError};

use crate::object::Object;

/// Largest whole input accepted by [`parse_manifests`].
pub const MAX_INPUT_BYTES: usize = 32 * 1024 * 1024;
/// Largest single document/object accepted (etcd's default request size limit).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;
/// Deepest nesting of mappings and sequences accepted.
pub const MAX_DEPTH: usize = 64;

/// What to do with fields the schema does not know: Kubernetes `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Unknown fields are an error listing every one of them (kubectl's default).
    #[default]
    Strict,
    /// Unknown fields are dropped and reported as warnings.
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

/// One object read from a manifest file.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file name the caller passed in.
    pub file: String,
    /// 0-based index of the document in the file.
    pub document: usize,
    /// 0-based index in the `items` of a `List` document, if the object came from one.
    pub item: Option<usize>,
    /// 1-based line where the document starts, where known.
    pub line: Option<u64>,
    /// The typed object (not defaulted, not validated).
    pub object: Object,
    /// The object as written (for client-side apply's last-applied configuration).
    pub raw: Value,
    /// Warnings such as `unknown field "spec.foo"` ([`Strictness::Warn`] only).
    pub warnings: Vec<String>,
}

/// Parse a manifest file's text: multi-document YAML (`---`), or a JSON object or stream of
/// objects (when the first non-blank character is `{`, as kubectl decides). `kind: List`
/// documents are expanded into their `items`; empty documents are skipped. `file` is only used
/// in messages and in the result: this function does no I/O.
pub fn parse_manifests(
    file: &str,
    text: &str,
    mode: Strictness,
) -> Result<Vec<Manifest>, ManifestError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(ManifestError::new(
            file,
            None,
            ErrorKind::TooLarge {
                what: "the input",
                size: text.len(),
                limit: MAX_INPUT_BYTES,
            },
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    if text.trim_start().starts_with('{') {
        parse_json(file, text, mode, &mut out)?;
    } else {
        parse_yaml(file, text, mode, &mut out)?;
    }
    Ok(out)
}

fn too_large(file: &str, document: usize, size: usize) -> ManifestError {
    ManifestError::new(
        file,
        Some(document),
        ErrorKind::TooLarge {
            what: "the document",
            size,
            limit: MAX_OBJECT_BYTES,
        },
    )
}

fn parse_yaml(
    file: &str,
    text: &str,
    mode: Strictness,
    out: &mut Vec<Manifest>,
) -> Result<(), ManifestError> {
    for (index, chunk) in yaml::split_documents(text).iter().enumerate() {
        if chunk.text.len() > MAX_OBJECT_BYTES {
            let mut e = too_large(file, index, chunk.text.len());
            e.line = Some(chunk.first_line);
            return Err(e);
        }
        let value = match yaml::parse_chunk(chunk) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(y) => {
                let mut e = ManifestError::new(file, Some(index), y.kind);
                e.line = y.line;
                e.column = y.column;
                return Err(e);
            }
        };
        let ctx = DocContext {
            file,
            document: index,
            line: Some(chunk.first_line),
            mode,
        };
        ctx.add(value, out)?;
    }
    Ok(())
}

fn parse_json(
    file: &str,
    text: &str,
    mode: Strictness,
    out: &mut Vec<Manifest>,
) -> Result<(), ManifestError> {
    for (index, doc) in json::parse_stream(text).into_iter().enumerate() {
        match doc {
            Ok(doc) => {
                if doc.end - doc.start > MAX_OBJECT_BYTES {
                    return Err(too_large(file, index, doc.end - doc.start));
                }
                let line = text
                    .get(..doc.start)
                    .map(|t| t.matches('\n').count() as u64 + 1);
                let ctx = DocContext {
                    file,
                    document: index,
                    line,
                    mode,
                };
                ctx.add(doc.value, out)?;
            }
            Err(err) => {
                let (kind, field) = match err.stop {
                    Some(json::Stop::DuplicateKey { path, key }) => {
                        (ErrorKind::DuplicateKey(key), Some(path))
                    }
                    Some(json::Stop::TooDeep) => (ErrorKind::TooDeep(MAX_DEPTH), None),
                    None => (ErrorKind::Syntax(err.error.to_string()), None),
                };
                let mut e = ManifestError::new(file, Some(index), kind);
                e.field = field;
                if err.error.line() > 0 {
                    e.line = Some(err.error.line() as u64);
                    e.column = Some(err.error.column() as u64);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

struct DocContext<'a> {
    file: &'a str,
    document: usize,
    line: Option<u64>,
    mode: Strictness,
}

impl DocContext<'_> {
    fn error(&self, item: Option<usize>, e: DecodeError) -> ManifestError {
        let field = match (item, e.field) {
            (Some(i), Some(f)) => Some(format!("items[{i}].{f}")),
            (Some(i), None) => Some(format!("items[{i}]")),
            (None, f) => f,
        };
        let kind = match e.kind {
            ErrorKind::UnknownFields(fields) if item.is_some() => ErrorKind::UnknownFields(
                fields
                    .into_iter()
                    .map(|f| format!("items[{}].{f}", item.unwrap_or(0)))
                    .collect(),
            ),
            k => k,
        };
        ManifestError {
            file: self.file.to_string(),
            document: Some(self.document),
            line: self.line,
            column: None,
            field,
            kind,
        }
    }

    /// Add one document: a single object, or a `List` whose items are added one by one.
    fn add(&self, value: Value, out: &mut Vec<Manifest>) -> Result<(), ManifestError> {
        if let Some(items) = list_items(&value) {
            let items = items.map_err(|e| self.error(None, e))?;
            for (i, item) in items.into_iter().enumerate() {
                self.add_one(item, Some(i), out)?;
            }
            return Ok(());
        }
        self.add_one(value, None, out)
    }

    fn add_one(
        &self,
        value: Value,
        item: Option<usize>,
        out: &mut Vec<Manifest>,
    ) -> Result<(), ManifestError> {
        let decoded = decode_value(&value, self.mode).map_err(|e| self.error(item, e))?;
        out.push(Manifest {
            file: self.file.to_string(),
            document: self.document,
            item,
            line: self.line,
            object: decoded.object,
            raw: value,
            warnings: decoded.warnings,
        });
        Ok(())
    }
}

/// If the value is a list (`v1 List`, or `v1 ServiceList`-style typed lists of served kinds),
/// return its items; typed-list items without `apiVersion`/`kind` get them from the list.
fn list_items(value: &Value) -> Option<Result<Vec<Value>, DecodeError>> {
    let obj = value.as_object()?;
    let kind = obj.get("kind")?.as_str()?;
    let api_version = obj.get("apiVersion")?.as_str()?;
    let item_kind = if kind == "List" && api_version == "v1" {
        None
    } else {
        let base = kind.strip_suffix("List")?;
        crate::kinds::by_api_version_kind(api_version, base)?;
        Some(base)
    };
    let items = match obj.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            return Some(Err(DecodeError::at(
                "items",
                ErrorKind::InvalidValue(format!(
                    "invalid type: {}, expected a list of objects",
                    decode::type_name(other)
                )),
            )));
        }
    };
    let items = items
        .into_iter()
        .map(|mut item| {
            if let (Some(k), Some(o)) = (item_kind, item.as_object_mut()) {
                o.entry("apiVersion")
                    .or_insert_with(|| Value::String(api_version.to_string()));
                o.entry("kind")
                    .or_insert_with(|| Value::String(k.to_string()));
            }
            item
        })
        .collect();
    Some(Ok(items))
}

#[cfg(test)]
mod tests;
