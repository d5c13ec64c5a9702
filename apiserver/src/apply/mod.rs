//! Server-side apply as upstream's structured-merge-diff does it: per-manager field ownership in `metadata.managedFields`, merges, removals and conflicts.
//!
//! Pure: callers pass the live object, the configuration or new object, the manager and the
//! time. The API server decodes, defaults, validates and stores the result.

pub mod fieldset;
pub mod last_applied;
pub mod managed_fields;
pub mod schema;
pub mod walk;

use serde_json::{Value, json};
use skiff_api::Kind;

use fieldset::{FieldSet, PathElement, path_string};
use managed_fields::{Entry, ManagerId, Operation};
use walk::WalkError;

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration is unusable (not an object, sets managedFields, a list item without its
    /// keys): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Fields the apply changes are owned by other managers: 409, one cause per field.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// One field another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The owner as upstream prints it, e.g. `"kubectl-client-side-apply" using apps/v1`.
    pub manager: String,
    /// The field path as upstream prints it, e.g. `.spec.replicas`.
    pub field: String,
}

/// Upstream's `getConflictMessage`.
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [c] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.field
        );
    }
    let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    managers.sort_unstable();
    managers.dedup();
    let mut lines = Vec::new();
    for m in managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| c.manager == m) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// What every write needs to know to account for field ownership.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: Kind,
    /// The kind's `group/version`, recorded in the entries.
    pub api_version: &'a str,
    /// The field manager.
    pub manager: &'a str,
    /// `""` for the object itself, else `status` or `scale`.
    pub subresource: &'a str,
    /// The kind has a `status` subresource, so writes to the object itself own no status.
    pub status_is_separate: bool,
    /// The write's time (RFC 3339), for the manager's entry.
    pub now: &'a str,
}

impl Request<'_> {
    /// The part of `set` this write can own: never the fields the server sets (upstream
    /// `stripMeta`), and only what the addressed (sub)resource holds (upstream reset fields).
    fn scoped(&self, set: &FieldSet) -> FieldSet {
        let f = |name: &str| PathElement::Field(name.to_owned());
        let mut out = set.clone();
        for top in ["apiVersion", "kind"] {
            out.remove_subtree(&[f(top)]);
        }
        for meta in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            out.remove_subtree(&[f("metadata"), f(meta)]);
        }
        let keep_only = |set: &FieldSet, path: &[PathElement]| {
            let mut only = FieldSet::default();
            for p in set.paths() {
                if p.starts_with(path) {
                    only.insert(&p);
                }
            }
            only
        };
        match self.subresource {
            "status" => keep_only(&out, &[f("status")]),
            "scale" => keep_only(&out, &[f("spec"), f("replicas")]),
            _ if self.status_is_separate => {
                out.remove_subtree(&[f("status")]);
                out
            }
            _ => out,
        }
    }

    fn id(&self, operation: Operation) -> ManagerId {
        ManagerId {
            manager: self.manager.to_owned(),
            operation,
            subresource: self.subresource.to_owned(),
        }
    }
}

/// The result of an apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The object to store, with its new `managedFields`.
    pub object: Value,
    /// Whether anything but `managedFields` differs from the live object.
    pub changed: bool,
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    v
}

fn bad(kind: Kind, api_version: &str, e: WalkError) -> ApplyError {
    ApplyError::BadRequest(format!(
        "failed to create typed patch object ({api_version}, Kind={kind:?}): {e}"
    ))
}

/// Applies `config` (the manager's whole intent) to `live` (`None`: the object is created).
///
/// The manager then owns exactly the fields of `config`; fields it owned before and no longer
/// sets are removed unless another manager owns them. A change to a field another manager owns
/// is a conflict, unless `force`, which takes the field over.
pub fn apply(
    req: &Request<'_>,
    live: Option<&Value>,
    config: &Value,
    force: bool,
) -> Result<Applied, ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::BadRequest(
            "the apply configuration must be a JSON or YAML object".to_owned(),
        ));
    }
    if config["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".to_owned(),
        ));
    }
    let bad = |e| bad(req.kind, req.api_version, e);
    let mut config = without_managed_fields(config);
    walk::strip_nulls(&mut config);
    if req.subresource.is_empty()
        && req.status_is_separate
        && let Some(map) = config.as_object_mut()
    {
        map.remove("status");
    }
    let live_full = live.cloned().unwrap_or_else(|| json!({}));
    let live_obj = without_managed_fields(&live_full);
    // Broken stored entries are dropped, as upstream resets undecodable managed fields.
    let mut entries = managed_fields::decode(&live_full).unwrap_or_default();
    let id = req.id(Operation::Apply);
    let applied_set = req.scoped(&walk::field_set(req.kind, &config).map_err(bad)?);
    let mut merged = walk::merge(req.kind, &live_obj, &config).map_err(bad)?;

    let position = entries.iter().position(|e| e.id == id);
    let last_set = position
        .map(|i| entries[i].fields.clone())
        .unwrap_or_default();
    match position {
        Some(i) => entries[i].fields = applied_set,
        None => entries.push(Entry {
            id: id.clone(),
            api_version: req.api_version.to_owned(),
            time: None,
            fields: applied_set,
        }),
    }

    // Fields this manager dropped from its configuration, and nobody else owns.
    let owned = entries
        .iter()
        .fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
    let mut removable = FieldSet::default();
    for p in last_set.paths() {
        if !owned.contains_at_or_below(&p) {
            removable.insert(&p);
        }
    }
    walk::remove_paths(req.kind, &mut merged, &removable, &owned);

    let diff = walk::compare(req.kind, &live_obj, &merged).map_err(bad)?;
    let touched = req.scoped(&diff.modified.union(&diff.added));
    let removed = req.scoped(&diff.removed);
    let mut conflicts = Vec::new();
    let mut allowed = None;
    for e in entries.iter().filter(|e| e.id != id) {
        let mut clash = e.fields.intersection(&touched);
        if !force && !clash.is_empty() && req.manager == last_applied::KUBECTL {
            let allowed =
                allowed.get_or_insert_with(|| last_applied::allowed_conflicts(req.kind, &live_obj));
            clash = clash.difference(allowed);
        }
        for p in clash.paths() {
            conflicts.push(Conflict {
                manager: e.id.describe(&e.api_version),
                field: path_string(&p),
            });
        }
    }
    if !force && !conflicts.is_empty() {
        conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
        return Err(ApplyError::Conflicts(conflicts));
    }
    for e in entries.iter_mut().filter(|e| e.id != id) {
        e.fields = e.fields.difference(&touched).difference(&removed);
    }
    let changed = merged != live_obj;
    if let Some(e) = entries.iter_mut().find(|e| e.id == id)
        && (changed || e.time.is_none())
    {
        e.time = Some(req.now.to_owned());
        e.api_version = req.api_version.to_owned();
    }
    if req.manager == last_applied::KUBECTL {
        last_applied::sync(&live_obj, &config, &mut merged);
    }
    managed_fields::set(&mut merged, &entries);
    Ok(Applied {
        object: merged,
        changed,
    })
}

/// Records a non-apply write (create, PUT, PATCH, `/status`, `/scale`) of `new` over `live`
/// (`None`: a create) in `new`'s `managedFields`: the fields it changed move to the manager's
/// `Update` entry, fields it removed leave every entry.
///
/// A write to the object itself that sends its own non-empty `managedFields` starts from those
/// (clients may rewrite ownership, as kubectl's migration to server-side apply does); otherwise
/// from the live object's.
pub fn record_update(req: &Request<'_>, live: Option<&Value>, new: &mut Value) {
    let from_request = match managed_fields::decode(new) {
        Ok(e) if !e.is_empty() && req.subresource.is_empty() => Some(e),
        _ => None,
    };
    let mut entries = from_request.unwrap_or_else(|| {
        live.map(|l| managed_fields::decode(l).unwrap_or_default())
            .unwrap_or_default()
    });
    let old = live
        .map(without_managed_fields)
        .unwrap_or_else(|| json!({}));
    if let Ok(diff) = walk::compare(req.kind, &old, &without_managed_fields(new)) {
        let changed = req.scoped(&diff.modified.union(&diff.added));
        let removed = req.scoped(&diff.removed);
        for e in &mut entries {
            e.fields = e.fields.difference(&changed).difference(&removed);
        }
        if !changed.is_empty() {
            let id = req.id(Operation::Update);
            match entries.iter_mut().find(|e| e.id == id) {
                Some(e) => {
                    e.fields = e.fields.union(&changed);
                    e.time = Some(req.now.to_owned());
                    e.api_version = req.api_version.to_owned();
                }
                None => entries.push(Entry {
                    id,
                    api_version: req.api_version.to_owned(),
                    time: Some(req.now.to_owned()),
                    fields: changed,
                }),
            }
        }
    }
    managed_fields::set(new, &entries);
}

/// The manager of a non-apply write: `?fieldManager=`, else the User-Agent up to its first `/`
/// (upstream `managerOrUserAgent`), at most 128 characters.
pub fn manager_or_user_agent(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    let name = match field_manager.filter(|m| !m.is_empty()) {
        Some(m) => m,
        None => user_agent.unwrap_or("").split('/').next().unwrap_or(""),
    };
    name.chars().take(128).collect()
}

/// Upstream `ValidateFieldManager`: at most 128 printable characters.
pub fn validate_field_manager(name: &str) -> Result<(), String> {
    if name.chars().count() > 128 {
        return Err("fieldManager: Too long: may not be more than 128 bytes".to_owned());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "fieldManager: Invalid value: {name:?}: invalid characters in fieldManager ({c:?}); \
             only printable characters are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
