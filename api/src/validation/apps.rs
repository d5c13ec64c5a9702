//! Validation of apps/v1 kinds: Deployment, ReplicaSet, StatefulSet (selectors, templates, strategies).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::{label_selector, labels, selector_is_empty, selector_matches};
use super::{FieldErrors, FieldPath};

fn non_negative(v: Option<i32>, path: &FieldPath, errs: &mut FieldErrors) {
    if let Some(v) = v.filter(|v| *v < 0) {
        errs.invalid(path, v, "must be greater than or equal to 0");
    }
}

/// Selector required and non-empty, template labels matched by it, template spec valid with
/// `restartPolicy: Always`.
fn selector_and_template(
    selector: Option<&LabelSelector>,
    template: Option<&PodTemplateSpec>,
    kind: &str,
    spec: &FieldPath,
    errs: &mut FieldErrors,
) {
    let sp = spec.child("selector");
    // k8s-openapi cannot tell a missing selector from an empty one: both are reported as
    // upstream reports a missing one.
    match selector {
        Some(sel) if !selector_is_empty(sel) => label_selector(sel, &sp, errs),
        _ => errs.required(&sp, format!("empty selector is invalid for {kind}")),
    }
    let tp = spec.child("template");
    let Some(template) = template else {
        errs.required(&tp, "");
        return;
    };
    let tm = tp.child("metadata");
    let empty = Default::default();
    let tlabels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&empty);
    labels(Some(tlabels), &tm.child("labels"), errs);
    if let Some(sel) = selector.filter(|s| !selector_is_empty(s))
        && !selector_matches(sel, tlabels)
    {
        errs.invalid(
            &tm.child("labels"),
            tlabels,
            "`selector` does not match template `labels`",
        );
    }
    let ts = tp.child("spec");
    match &template.spec {
        Some(ps) => {
            super::core::pod_spec(ps, &ts, errs);
            if let Some(rp) = ps.restart_policy.as_deref() {
                errs.one_of(&ts.child("restartPolicy"), rp, &["Always"]);
            }
            if ps.active_deadline_seconds.is_some() {
                errs.forbidden(
                    &ts.child("activeDeadlineSeconds"),
                    "activeDeadlineSeconds in ReplicaSet is not Supported",
                );
            }
        }
        None => errs.required(&ts, ""),
    }
}

/// `maxSurge`/`maxUnavailable`: a non-negative int or a percentage.
fn int_or_percent(v: &IntOrString, path: &FieldPath, errs: &mut FieldErrors) -> Option<i64> {
    match v {
        IntOrString::Int(i) => {
            non_negative(Some(*i), path, errs);
            Some(i64::from(*i))
        }
        IntOrString::String(s) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if n >= 0 => Some(n),
            _ => {
                errs.invalid(path, s.as_str(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
                None
            }
        },
    }
}

pub(crate) fn deployment(d: &Deployment, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &d.spec else {
        errs.required(&path, "");
        return;
    };
    non_negative(spec.replicas, &path.child("replicas"), errs);
    selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        "deployment",
        &path,
        errs,
    );
    if let Some(st) = &spec.strategy {
        let sp = path.child("strategy");
        let ty = st.type_.as_deref().unwrap_or("RollingUpdate");
        errs.one_of(&sp.child("type"), ty, &["Recreate", "RollingUpdate"]);
        match (ty, &st.rolling_update) {
            ("Recreate", Some(_)) => {
                errs.forbidden(
                    &sp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
            ("RollingUpdate", Some(ru)) => {
                let rp = sp.child("rollingUpdate");
                let surge = ru
                    .max_surge
                    .as_ref()
                    .and_then(|v| int_or_percent(v, &rp.child("maxSurge"), errs));
                let unavail = ru
                    .max_unavailable
                    .as_ref()
                    .and_then(|v| int_or_percent(v, &rp.child("maxUnavailable"), errs));
                if let Some(IntOrString::String(_)) = &ru.max_unavailable
                    && unavail.is_some_and(|u| u > 100)
                {
                    errs.invalid(
                        &rp.child("maxUnavailable"),
                        ru.max_unavailable.as_ref(),
                        "must not be greater than 100%",
                    );
                }
                if surge == Some(0) && unavail == Some(0) {
                    errs.invalid(
                        &rp.child("maxUnavailable"),
                        ru.max_unavailable.as_ref(),
                        "may not be 0 when `maxSurge` is 0",
                    );
                }
            }
            _ => {}
        }
    }
    non_negative(
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
        errs,
    );
    non_negative(spec.min_ready_seconds, &path.child("minReadySeconds"), errs);
    if let Some(pd) = spec.progress_deadline_seconds {
        non_negative(Some(pd), &path.child("progressDeadlineSeconds"), errs);
        if pd <= spec.min_ready_seconds.unwrap_or(0) {
            errs.invalid(
                &path.child("progressDeadlineSeconds"),
                pd,
                "must be greater than minReadySeconds",
            );
        }
    }
}

pub(crate) fn replica_set(rs: &ReplicaSet, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &rs.spec else {
        errs.required(&path, "");
        return;
    };
    non_negative(spec.replicas, &path.child("replicas"), errs);
    non_negative(spec.min_ready_seconds, &path.child("minReadySeconds"), errs);
    selector_and_template(
        Some(&spec.selector),
        spec.template.as_ref(),
        "replicaset",
        &path,
        errs,
    );
}

pub(crate) fn stateful_set(s: &StatefulSet, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &s.spec else {
        errs.required(&path, "");
        return;
    };
    non_negative(spec.replicas, &path.child("replicas"), errs);
    non_negative(spec.min_ready_seconds, &path.child("minReadySeconds"), errs);
    non_negative(
        spec.revision_history_limit,
        &path.child("revisionHistoryLimit"),
        errs,
    );
    if let Some(p) = spec.pod_management_policy.as_deref() {
        errs.one_of(
            &path.child("podManagementPolicy"),
            p,
            &["OrderedReady", "Parallel"],
        );
    }
    if let Some(us) = &spec.update_strategy {
        let up = path.child("updateStrategy");
        let ty = us.type_.as_deref().unwrap_or("RollingUpdate");
        errs.one_of(&up.child("type"), ty, &["RollingUpdate", "OnDelete"]);
        match (ty, &us.rolling_update) {
            ("OnDelete", Some(_)) => {
                errs.invalid(
                    &up.child("rollingUpdate"),
                    "",
                    "only allowed for updateStrategy 'RollingUpdate'",
                );
            }
            ("RollingUpdate", Some(ru)) => {
                non_negative(
                    ru.partition,
                    &up.child("rollingUpdate").child("partition"),
                    errs,
                );
            }
            _ => {}
        }
    }
    if let Some(p) = &spec.persistent_volume_claim_retention_policy {
        let pp = path.child("persistentVolumeClaimRetentionPolicy");
        for (field, v) in [
            ("whenDeleted", &p.when_deleted),
            ("whenScaled", &p.when_scaled),
        ] {
            if let Some(v) = v.as_deref() {
                errs.one_of(&pp.child(field), v, &["Retain", "Delete"]);
            }
        }
    }
    if let Some(sn) = spec.service_name.as_deref().filter(|s| !s.is_empty()) {
        errs.invalid_msgs(
            &path.child("serviceName"),
            sn,
            super::names::dns1035_label(sn),
        );
    }
    for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let np = path
            .child("volumeClaimTemplates")
            .index(i)
            .child("metadata")
            .child("name");
        match t.metadata.name.as_deref() {
            Some(n) if !n.is_empty() => {
                errs.invalid_msgs(&np, n, super::names::dns1123_subdomain(n))
            }
            _ => errs.required(&np, ""),
        }
    }
    selector_and_template(
        Some(&spec.selector),
        Some(&spec.template),
        "statefulset",
        &path,
        errs,
    );
}
