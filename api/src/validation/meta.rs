//! `ObjectMeta` validation: names per kind, namespace scope, labels, annotations, finalizers.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::names;
use super::{FieldErrors, FieldPath};
use crate::kinds::Kind;
use crate::object::Object;

/// The name check upstream uses for each kind.
pub(crate) fn name_check(kind: Kind) -> fn(&str) -> Vec<String> {
    match kind {
        Kind::Namespace => names::dns1123_label,
        Kind::Service => names::dns1035_label,
        _ => names::dns1123_subdomain,
    }
}

pub(crate) fn object_meta(obj: &Object, errs: &mut FieldErrors) {
    let meta = obj.metadata();
    let path = FieldPath::new("metadata");
    let check = name_check(obj.kind());
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => errs.invalid_msgs(&path.child("name"), name, check(name)),
        _ => {
            if meta.generate_name.as_deref().is_none_or(str::is_empty) {
                errs.required(&path.child("name"), "name or generateName is required");
            }
        }
    }
    if let Some(gn) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        // generateName may end in '-': upstream checks the prefix with the last '-' removed.
        let trimmed = gn.strip_suffix('-').unwrap_or(gn);
        errs.invalid_msgs(&path.child("generateName"), gn, check(trimmed));
    }
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if obj.info().namespaced {
        // An empty namespace is filled from the request path by the API server (or "default").
        if !namespace.is_empty() {
            errs.invalid_msgs(
                &path.child("namespace"),
                namespace,
                names::dns1123_label(namespace),
            );
        }
    } else if !namespace.is_empty() {
        errs.forbidden(&path.child("namespace"), "not allowed on this type");
    }
    labels(meta.labels.as_ref(), &path.child("labels"), errs);
    annotations(meta.annotations.as_ref(), &path.child("annotations"), errs);
    for (i, f) in meta.finalizers.iter().flatten().enumerate() {
        errs.invalid_msgs(
            &path.child("finalizers").index(i),
            f.as_str(),
            names::qualified_name(f),
        );
    }
    owner_refs(meta, &path, errs);
}

fn owner_refs(meta: &ObjectMeta, path: &FieldPath, errs: &mut FieldErrors) {
    let mut controllers = 0;
    for (i, r) in meta.owner_references.iter().flatten().enumerate() {
        let p = path.child("ownerReferences").index(i);
        if r.api_version.is_empty() {
            errs.invalid(&p.child("apiVersion"), "", "version must not be empty");
        }
        if r.kind.is_empty() {
            errs.invalid(&p.child("kind"), "", "kind must not be empty");
        }
        if r.name.is_empty() {
            errs.invalid(&p.child("name"), "", "name must not be empty");
        }
        if r.uid.is_empty() {
            errs.invalid(&p.child("uid"), "", "uid must not be empty");
        }
        if r.controller == Some(true) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        errs.invalid(
            &path.child("ownerReferences"),
            controllers,
            "Only one reference can have Controller set to true",
        );
    }
}

/// Label keys are qualified names, values label values.
pub(crate) fn labels(
    labels: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
    errs: &mut FieldErrors,
) {
    for (k, v) in labels.into_iter().flatten() {
        errs.invalid_msgs(path, k.as_str(), names::qualified_name(k));
        errs.invalid_msgs(path, v.as_str(), names::label_value(v));
    }
}

/// Annotation keys are qualified names (lower-cased), total size at most 256 KiB.
pub(crate) fn annotations(
    ann: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
    errs: &mut FieldErrors,
) {
    let mut total = 0usize;
    for (k, v) in ann.into_iter().flatten() {
        errs.invalid_msgs(
            path,
            k.as_str(),
            names::qualified_name(&k.to_ascii_lowercase()),
        );
        total += k.len() + v.len();
    }
    if total > names::TOTAL_ANNOTATION_SIZE {
        errs.too_long(path, names::TOTAL_ANNOTATION_SIZE);
    }
}

/// A label selector's syntax (`matchLabels` and `matchExpressions`).
pub(crate) fn label_selector(sel: &LabelSelector, path: &FieldPath, errs: &mut FieldErrors) {
    labels(sel.match_labels.as_ref(), &path.child("matchLabels"), errs);
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = e.values.as_deref().unwrap_or(&[]);
        match e.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.required(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
            }
            other => errs.one_of(
                &p.child("operator"),
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
        errs.invalid_msgs(
            &p.child("key"),
            e.key.as_str(),
            names::qualified_name(&e.key),
        );
        for (j, v) in values.iter().enumerate() {
            errs.invalid_msgs(
                &p.child("values").index(j),
                v.as_str(),
                names::label_value(v),
            );
        }
    }
}

/// Does the selector select these labels? (Upstream `metav1.LabelSelectorAsSelector().Matches`.)
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let me = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => got.is_some_and(|g| values.contains(g)),
            "NotIn" => got.is_none_or(|g| !values.contains(g)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        }
    });
    ml && me
}

/// Is the selector empty (selects everything)?
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}
