//! The files of configMap, secret, downwardAPI and projected volumes, as upstream lays them out.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

use super::VolumeError;
use super::atomic::Payload;
use crate::env::{EnvSources, field_value, resource_value};

/// Mode of files without `mode`/`defaultMode` (upstream's 0644).
pub const DEFAULT_MODE: u32 = 0o644;

fn mode(m: Option<i32>, default: u32) -> u32 {
    m.and_then(|m| u32::try_from(m).ok())
        .map(|m| m & 0o777)
        .unwrap_or(default)
}

/// Keys → files: all keys when `items` is empty, else each item's key at its path.
fn keyed(
    kind: &'static str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        return Err(VolumeError::SourceMissing {
            kind,
            name: name.to_owned(),
        });
    };
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k, (v, default_mode));
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => {
                        out.insert(
                            item.path.clone(),
                            (v.clone(), mode(item.mode, default_mode)),
                        );
                    }
                    None if optional => {}
                    None => {
                        return Err(VolumeError::KeyMissing {
                            kind,
                            name: name.to_owned(),
                            key: item.key.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

pub fn config_map(
    sources: &dyn EnvSources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    let data = sources.config_map(name).map(|d| {
        d.into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect::<BTreeMap<_, _>>()
    });
    keyed("configmap", name, data, items, optional, default_mode, out)
}

pub fn secret(
    sources: &dyn EnvSources,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    keyed(
        "secret",
        name,
        sources.secret(name),
        items,
        optional,
        default_mode,
        out,
    )
}

pub fn downward_api(
    pod: &Pod,
    sources: &dyn EnvSources,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), VolumeError> {
    for item in items.into_iter().flatten() {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &item.path, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let container = pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| VolumeError::Container {
                    path: item.path.clone(),
                    container: name.to_owned(),
                })?;
            resource_value(
                container,
                &item.path,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                sources,
            )?
        } else {
            String::new()
        };
        out.insert(
            item.path.clone(),
            (value.into_bytes(), mode(item.mode, default_mode)),
        );
    }
    Ok(())
}

pub(super) fn default_mode(m: Option<i32>) -> u32 {
    mode(m, DEFAULT_MODE)
}
