//! A StatefulSet replica's identity: ordinal names, revision hashes, and the pod built for an ordinal.
//!
//! Revisions are a hash of the pod template (no ControllerRevision objects): the revision
//! name `<set>-<hash>` is what `status.currentRevision`/`updateRevision` and each pod's
//! `controller-revision-hash` label hold, as upstream's names look.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Label with the pod's own name (upstream `apps.StatefulSetPodNameLabel`).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal (upstream `apps.PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// Label with the revision the pod was built from (upstream `apps.ControllerRevisionHashLabelKey`).
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// Annotation naming, for each per-replica volume, the claim it stands for:
/// `<volume>=<claim>[,<volume>=<claim>...]`. The kubelet backs such an emptyDir with the
/// directory of the claim on its node, which outlives the pod.
pub const PERSISTENT_VOLUMES_ANNOTATION: &str = "skiff.dev/persistent-volumes";

/// The ordinal of a pod named `<set>-<i>`, if it is one of this set's names.
pub fn ordinal(set_name: &str, pod_name: &str) -> Option<u32> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// The name of the revision the set's current template is: `<set>-<hash of template>`.
pub fn update_revision(set: &StatefulSet) -> String {
    let template = set.spec.as_ref().map(|s| &s.template);
    let bytes = serde_json::to_vec(&template).unwrap_or_default();
    format!(
        "{}-{}",
        set.metadata.name.as_deref().unwrap_or(""),
        fnv_hex(&bytes)
    )
}

/// FNV-1a, 10 hex digits: stable across processes and versions (unlike `DefaultHasher`).
fn fnv_hex(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// The revision a pod was built from.
pub fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

/// The claim name upstream would give the PVC of `template` for replica `pod_name`.
pub fn claim_name(template: &str, pod_name: &str) -> String {
    format!("{template}-{pod_name}")
}

/// The pod for ordinal `i` of `set` at revision `revision`.
pub fn new_pod(set: &StatefulSet, i: u32, revision: &str) -> Pod {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let name = format!("{set_name}-{i}");
    let spec = set.spec.clone().unwrap_or_default();
    let template = spec.template;
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_owned());
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    if let Some(service) = spec.service_name.filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(service);
    }
    let claims = claim_volumes(
        &mut pod_spec,
        spec.volume_claim_templates.iter().flatten(),
        &name,
    );
    if !claims.is_empty() {
        annotations.insert(PERSISTENT_VOLUMES_ANNOTATION.into(), claims.join(","));
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner_reference(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Maps each claim template to an emptyDir volume of the same name (replacing a template
/// volume of that name, as upstream replaces it with the PVC) and returns `volume=claim` pairs.
fn claim_volumes<'a>(
    pod_spec: &mut PodSpec,
    templates: impl Iterator<Item = &'a k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    pod_name: &str,
) -> Vec<String> {
    let mut pairs = Vec::new();
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for claim in templates {
        let Some(volume_name) = claim.metadata.name.clone() else {
            continue;
        };
        let size_limit = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned();
        volumes.retain(|v| v.name != volume_name);
        volumes.push(Volume {
            name: volume_name.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit,
            }),
            ..Volume::default()
        });
        pairs.push(format!(
            "{volume_name}={}",
            claim_name(&volume_name, pod_name)
        ));
    }
    if volumes.is_empty() {
        pod_spec.volumes = None;
    }
    pairs
}

/// The controller reference a set's pods carry.
pub fn owner_reference(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.metadata.name.clone().unwrap_or_default(),
        uid: set.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod is controlled by the set with this uid.
pub fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec,
    };

    fn set() -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]
            }
        }))
        .unwrap_or_default()
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-01"), None);
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web-"), None);
    }

    #[test]
    fn pod_identity_and_claims() {
        let s = set();
        let rev = update_revision(&s);
        assert!(rev.starts_with("web-"));
        let pod = new_pod(&s, 2, &rev);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[REVISION_LABEL], rev);
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.unwrap_or_default();
        assert_eq!(vols.len(), 1);
        assert_eq!(vols[0].name, "data");
        assert!(vols[0].empty_dir.is_some());
        assert_eq!(
            pod.metadata.annotations.clone().unwrap_or_default()[PERSISTENT_VOLUMES_ANNOTATION],
            "data=data-web-2"
        );
        assert!(controlled_by(&pod, "u1"));
    }

    #[test]
    fn revision_follows_the_template_only() {
        let a = set();
        let mut b = a.clone();
        if let Some(spec) = b.spec.as_mut() {
            spec.replicas = Some(7);
        }
        assert_eq!(update_revision(&a), update_revision(&b));
        let mut c = a.clone();
        c.spec = Some(StatefulSetSpec {
            template: PodTemplateSpec::default(),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                spec: Some(PersistentVolumeClaimSpec::default()),
                ..PersistentVolumeClaim::default()
            }]),
            ..a.spec.clone().unwrap_or_default()
        });
        assert_ne!(update_revision(&a), update_revision(&c));
    }
}
