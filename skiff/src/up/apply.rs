//! `skiff up -f`: applies manifest files and folders once the cluster is ready, as
//! `kubectl apply --server-side --force-conflicts -R` would.

use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use skiff_api::{Manifest, Strictness, ValidationConfig};

use crate::manifests;

/// The field manager `up` applies as (visible in `managedFields`).
const FIELD_MANAGER: &str = "skiff-up";

/// What one `apply` run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: usize,
    pub failed: usize,
}

/// Applies every object of `paths` (folders recursively, files in name order; Namespaces
/// first so the objects in them can follow). Each failure is logged with its file and object
/// and counted; the others are still applied. Only an unreadable path is an error.
pub async fn apply(client: &kube::Client, paths: &[PathBuf]) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    let mut objects: Vec<Manifest> = Vec::new();
    for file in manifests::expand_with(paths, true)? {
        let source = file.display().to_string();
        let text = match manifests::read(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e:#}");
                outcome.failed += 1;
                continue;
            }
        };
        let checked = manifests::check(
            &source,
            &text,
            Strictness::Strict,
            &ValidationConfig::default(),
        );
        for w in &checked.warnings {
            tracing::warn!("{w}");
        }
        for e in &checked.errors {
            tracing::error!("not applied: {e}");
        }
        outcome.failed += checked.errors.len();
        objects.extend(checked.valid);
    }
    objects.sort_by_key(|m| m.object.kind() != skiff_api::Kind::Namespace);
    for manifest in &objects {
        match apply_one(client, manifest).await {
            Ok(what) => {
                tracing::info!("{what} serverside-applied");
                outcome.applied += 1;
            }
            Err(e) => {
                tracing::error!(
                    "{}: document {} (1-based): {} {:?} not applied: {e}",
                    manifest.file,
                    manifest.document + 1,
                    manifest.object.info().name,
                    manifest.object.name()
                );
                outcome.failed += 1;
            }
        }
    }
    Ok(outcome)
}

/// Server-side applies one object (or creates it, when it has only a `generateName`) and
/// returns kubectl's name for it, e.g. `deployment.apps/hello`.
async fn apply_one(client: &kube::Client, manifest: &Manifest) -> Result<String, kube::Error> {
    let info = manifest.object.info();
    let resource = ApiResource {
        group: info.group.to_owned(),
        version: info.version.to_owned(),
        api_version: if info.group.is_empty() {
            info.version.to_owned()
        } else {
            format!("{}/{}", info.group, info.version)
        },
        kind: info.name.to_owned(),
        plural: info.plural.to_owned(),
    };
    let api: Api<DynamicObject> = if info.namespaced {
        let ns = manifest.object.namespace().unwrap_or("default");
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let mut kind = info.name.to_lowercase();
    if !info.group.is_empty() {
        kind = format!("{kind}.{}", info.group);
    }
    let name = manifest.object.name();
    if name.is_empty() {
        let object: DynamicObject =
            serde_json::from_value(manifest.raw.clone()).map_err(kube::Error::SerdeError)?;
        let created = api.create(&PostParams::default(), &object).await?;
        return Ok(format!(
            "{kind}/{}",
            created.metadata.name.unwrap_or_default()
        ));
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&manifest.raw))
        .await?;
    Ok(format!("{kind}/{name}"))
}
