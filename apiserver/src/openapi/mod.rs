//! OpenAPI v3 (`/openapi/v3`): the index and one document per served group-version, built once.

mod extensions;
mod paths;
mod schemas;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use ring::digest;
use serde_json::{Map, Value, json};
use skiff_api::{KindInfo, kinds};

pub use paths::PATCH_CONTENT_TYPES;

/// The OpenAPI documents could not be served.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("no OpenAPI v3 document for group-version {0:?}")]
    UnknownGroupVersion(String),
    #[error("serializing the OpenAPI document: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("the OpenAPI documents could not be built: {0}")]
    Unavailable(String),
}

/// A built document: its JSON bytes and their hash (the index's `?hash=`).
#[derive(Debug)]
struct Document {
    bytes: Vec<u8>,
    hash: String,
}

/// `api/v1` or `apis/{group}/{version}`: the index key and URL tail of a group-version.
pub fn index_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI 3.0 document of one group-version, as a JSON value.
pub fn build_document(group: &str, version: &str) -> Value {
    let rows: Vec<&'static KindInfo> = kinds::KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    let mut generator = schemas::generator();
    let common = schemas::register_common(&mut generator);
    let named: Vec<(&'static KindInfo, String)> = rows
        .iter()
        .map(|info| (*info, schemas::register_kind(&mut generator, info.kind)))
        .collect();
    let mut paths = Map::new();
    for (info, schema) in &named {
        paths::add_resource(&mut paths, info, schema, &common);
    }
    let components = schemas::components(generator, &named);
    let title = if group.is_empty() {
        "Kubernetes".to_owned()
    } else {
        format!("Kubernetes {group}")
    };
    json!({
        "openapi": "3.0.0",
        "info": { "title": title, "version": "v1.32.0+skiff" },
        "paths": paths,
        "components": { "schemas": components },
    })
}

fn hash(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, bytes);
    d.as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn build_all() -> Result<BTreeMap<String, Document>, OpenApiError> {
    let mut docs = BTreeMap::new();
    for (group, version) in kinds::group_versions() {
        let bytes = serde_json::to_vec(&build_document(group, version))?;
        let hash = hash(&bytes);
        docs.insert(index_key(group, version), Document { bytes, hash });
    }
    Ok(docs)
}

static DOCUMENTS: LazyLock<Result<BTreeMap<String, Document>, String>> =
    LazyLock::new(|| build_all().map_err(|e| e.to_string()));

static INDEX: LazyLock<Result<Vec<u8>, String>> = LazyLock::new(|| {
    let docs = DOCUMENTS.as_ref().map_err(Clone::clone)?;
    serde_json::to_vec(&index_value(docs)).map_err(|e| e.to_string())
});

fn index_value(docs: &BTreeMap<String, Document>) -> Value {
    let paths: Map<String, Value> = docs
        .iter()
        .map(|(key, doc)| {
            (
                key.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{key}?hash={}", doc.hash) }),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// `GET /openapi/v3`: every group-version with its document's URL and hash.
pub fn index() -> Result<&'static [u8], OpenApiError> {
    INDEX
        .as_ref()
        .map(Vec::as_slice)
        .map_err(|e| OpenApiError::Unavailable(e.clone()))
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`: the cached document.
pub fn document(group: &str, version: &str) -> Result<&'static [u8], OpenApiError> {
    let key = index_key(group, version);
    let docs = DOCUMENTS
        .as_ref()
        .map_err(|e| OpenApiError::Unavailable(e.clone()))?;
    docs.get(&key)
        .map(|doc| doc.bytes.as_slice())
        .ok_or(OpenApiError::UnknownGroupVersion(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
