//! The owner graph and the garbage collector's decisions on it: pure, from one snapshot of the cache to a list of actions.
//!
//! Mirrors upstream's garbage collector (`attemptToDeleteItem`, `processDeletingDependentsItem`,
//! `orphanDependents`): an owner reference is *solid* (owner present), *dangling* (owner gone:
//! verified against the API before acting) or *waiting* (owner being deleted in the
//! foreground). A dependent with no solid owner is deleted; one with a solid owner loses its
//! dangling and waiting references.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::cache::{CachedObject, ObjectRef};
use crate::resources::owner_kind;

pub const FINALIZER_ORPHAN: &str = "orphan";
pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";

/// `DeleteOptions.propagationPolicy` for the deletes the collector issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Background => "Background",
            Self::Foreground => "Foreground",
            Self::Orphan => "Orphan",
        }
    }
}

/// An owner the snapshot says is gone: the executor confirms it with the API first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsentOwner {
    pub owner: ObjectRef,
    pub uid: String,
}

/// One step the garbage collector takes.
#[derive(Debug, Clone, PartialEq)]
pub enum GcAction {
    /// Rewrite `object`'s ownerReferences without the owners in `remove`, at the
    /// resourceVersion it was seen at.
    RemoveOwnerReferences {
        object: ObjectRef,
        resource_version: String,
        remove: Vec<String>,
        remaining: Vec<OwnerReference>,
        verify_absent: Vec<AbsentOwner>,
    },
    /// Delete a dependent none of whose owners remain (uid precondition).
    Delete {
        object: ObjectRef,
        uid: String,
        policy: Propagation,
        verify_absent: Vec<AbsentOwner>,
    },
    /// Remove a GC finalizer from an owner whose dependents are dealt with.
    RemoveFinalizer {
        object: ObjectRef,
        resource_version: String,
        finalizer: &'static str,
        remaining: Vec<String>,
    },
}

impl GcAction {
    pub fn object(&self) -> &ObjectRef {
        match self {
            Self::RemoveOwnerReferences { object, .. }
            | Self::Delete { object, .. }
            | Self::RemoveFinalizer { object, .. } => object,
        }
    }
}

/// How one owner reference stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Solid,
    Dangling(AbsentOwner),
    Waiting,
}

/// The owner graph of one snapshot: objects by uid and dependents by owner uid.
#[derive(Debug)]
pub struct OwnerGraph<'a> {
    by_uid: HashMap<&'a str, &'a CachedObject>,
    dependents: HashMap<&'a str, Vec<&'a CachedObject>>,
}

impl<'a> OwnerGraph<'a> {
    pub fn new(objects: &'a [CachedObject]) -> Self {
        let mut by_uid = HashMap::new();
        let mut dependents: HashMap<&str, Vec<&CachedObject>> = HashMap::new();
        for o in objects {
            if !o.uid.is_empty() {
                by_uid.insert(o.uid.as_str(), o);
            }
            for r in &o.owner_references {
                dependents.entry(r.uid.as_str()).or_default().push(o);
            }
        }
        Self { by_uid, dependents }
    }

    fn dependents_of(&self, uid: &str) -> &[&'a CachedObject] {
        self.dependents.get(uid).map(Vec::as_slice).unwrap_or(&[])
    }

    fn classify(&self, dependent: &CachedObject, r: &OwnerReference) -> Reference {
        if let Some(owner) = self.by_uid.get(r.uid.as_str()) {
            return if owner.deleting && owner.finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
                Reference::Waiting
            } else {
                Reference::Solid
            };
        }
        // An owner of a kind skiff does not serve cannot be looked up: never collect on it.
        let Some(kind) = owner_kind(&r.api_version, &r.kind) else {
            return Reference::Solid;
        };
        let namespace = if kind.info().namespaced {
            match &dependent.object.namespace {
                Some(ns) => Some(ns.clone()),
                // A cluster-scoped dependent cannot name a namespaced owner: leave it alone.
                None => return Reference::Solid,
            }
        } else {
            None
        };
        Reference::Dangling(AbsentOwner {
            owner: ObjectRef {
                kind,
                namespace,
                name: r.name.clone(),
            },
            uid: r.uid.clone(),
        })
    }
}

fn policy_from_finalizers(finalizers: &[String]) -> Propagation {
    if finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
        Propagation::Orphan
    } else if finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
        Propagation::Foreground
    } else {
        Propagation::Background
    }
}

#[derive(Debug, Default)]
struct Removal {
    uids: Vec<String>,
    verify: Vec<AbsentOwner>,
}

/// Everything the garbage collector should do about this snapshot. Reference removals come
/// first, then deletes, then finalizer removals (each round sees the previous round's writes).
pub fn plan(objects: &[CachedObject]) -> Vec<GcAction> {
    let graph = OwnerGraph::new(objects);
    let mut removals: BTreeMap<&ObjectRef, (&CachedObject, Removal)> = BTreeMap::new();
    let mut deletes = Vec::new();
    let mut finalizers = Vec::new();

    for owner in objects.iter().filter(|o| o.deleting) {
        let dependents = graph.dependents_of(&owner.uid);
        if owner.finalizers.iter().any(|f| f == FINALIZER_ORPHAN) {
            for d in dependents {
                let entry = removals
                    .entry(&d.object)
                    .or_insert_with(|| (d, Removal::default()));
                entry.1.uids.push(owner.uid.clone());
            }
            if dependents.is_empty() {
                finalizers.push(remove_finalizer(owner, FINALIZER_ORPHAN));
            }
        }
        if owner.finalizers.iter().any(|f| f == FINALIZER_FOREGROUND) {
            let blocking = dependents.iter().any(|d| {
                d.owner_references
                    .iter()
                    .any(|r| r.uid == owner.uid && r.block_owner_deletion == Some(true))
            });
            if !blocking {
                finalizers.push(remove_finalizer(owner, FINALIZER_FOREGROUND));
            }
        }
    }

    for d in objects {
        if d.owner_references.is_empty() || d.deleting {
            continue;
        }
        let mut solid = 0;
        let mut waiting = Vec::new();
        let mut dangling = Vec::new();
        for r in &d.owner_references {
            match graph.classify(d, r) {
                Reference::Solid => solid += 1,
                Reference::Waiting => waiting.push(r.uid.clone()),
                Reference::Dangling(absent) => dangling.push(absent),
            }
        }
        if waiting.is_empty() && dangling.is_empty() {
            continue;
        }
        if solid > 0 {
            let entry = removals
                .entry(&d.object)
                .or_insert_with(|| (d, Removal::default()));
            entry.1.uids.extend(waiting);
            entry.1.uids.extend(dangling.iter().map(|a| a.uid.clone()));
            entry.1.verify.extend(dangling);
            continue;
        }
        let policy = if !waiting.is_empty() && !graph.dependents_of(&d.uid).is_empty() {
            Propagation::Foreground
        } else {
            policy_from_finalizers(&d.finalizers)
        };
        deletes.push(GcAction::Delete {
            object: d.object.clone(),
            uid: d.uid.clone(),
            policy,
            verify_absent: dangling,
        });
    }

    let mut actions: Vec<GcAction> = removals
        .into_values()
        .map(|(d, mut removal)| {
            removal.uids.sort();
            removal.uids.dedup();
            let remaining = d
                .owner_references
                .iter()
                .filter(|r| !removal.uids.contains(&r.uid))
                .cloned()
                .collect();
            GcAction::RemoveOwnerReferences {
                object: d.object.clone(),
                resource_version: d.resource_version.clone(),
                remove: removal.uids,
                remaining,
                verify_absent: removal.verify,
            }
        })
        .collect();
    actions.extend(deletes);
    actions.extend(finalizers);
    actions
}

fn remove_finalizer(owner: &CachedObject, finalizer: &'static str) -> GcAction {
    GcAction::RemoveFinalizer {
        object: owner.object.clone(),
        resource_version: owner.resource_version.clone(),
        finalizer,
        remaining: owner
            .finalizers
            .iter()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests;
