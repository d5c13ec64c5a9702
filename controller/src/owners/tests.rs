use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use skiff_api::Kind;

use super::*;

fn cm(name: &str, uid: &str) -> CachedObject {
    CachedObject {
        object: ObjectRef {
            kind: Kind::ConfigMap,
            namespace: Some("default".into()),
            name: name.into(),
        },
        uid: uid.into(),
        resource_version: "1".into(),
        owner_references: Vec::new(),
        finalizers: Vec::new(),
        deleting: false,
        spec_finalizers: Vec::new(),
    }
}

fn owned_by(mut o: CachedObject, owner: &str, owner_uid: &str, block: bool) -> CachedObject {
    o.owner_references.push(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.into(),
        uid: owner_uid.into(),
        block_owner_deletion: block.then_some(true),
        controller: None,
    });
    o
}

fn deleting(mut o: CachedObject, finalizer: &str) -> CachedObject {
    o.deleting = true;
    o.finalizers.push(finalizer.into());
    o
}

#[test]
fn live_owner_means_nothing_to_do() {
    let objects = vec![
        cm("owner", "u1"),
        owned_by(cm("dep", "u2"), "owner", "u1", false),
    ];
    assert!(plan(&objects).is_empty());
}

#[test]
fn dependent_of_a_missing_owner_is_deleted_after_verification() {
    let objects = vec![owned_by(cm("dep", "u2"), "owner", "u1", false)];
    let actions = plan(&objects);
    assert_eq!(actions.len(), 1);
    let GcAction::Delete {
        object,
        policy,
        verify_absent,
        uid,
    } = &actions[0]
    else {
        panic!("{actions:?}");
    };
    assert_eq!(object.name, "dep");
    assert_eq!(uid, "u2");
    assert_eq!(*policy, Propagation::Background);
    assert_eq!(verify_absent[0].owner.name, "owner");
    assert_eq!(verify_absent[0].uid, "u1");
}

#[test]
fn a_solid_owner_keeps_the_dependent_and_drops_the_dangling_reference() {
    let dep = owned_by(
        owned_by(cm("dep", "u2"), "gone", "u9", false),
        "owner",
        "u1",
        false,
    );
    let objects = vec![cm("owner", "u1"), dep];
    let actions = plan(&objects);
    let [
        GcAction::RemoveOwnerReferences {
            remove, remaining, ..
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(remove, &vec!["u9".to_owned()]);
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0].uid, "u1");
}

#[test]
fn orphan_strips_references_then_releases_the_owner() {
    let owner = deleting(cm("owner", "u1"), FINALIZER_ORPHAN);
    let objects = vec![
        owner.clone(),
        owned_by(cm("dep", "u2"), "owner", "u1", true),
    ];
    let actions = plan(&objects);
    assert!(
        matches!(&actions[..], [GcAction::RemoveOwnerReferences { remove, remaining, .. }]
            if remove == &vec!["u1".to_owned()] && remaining.is_empty()),
        "{actions:?}"
    );
    // Once no dependent refers to it, the orphan finalizer goes.
    let actions = plan(&[owner, cm("dep", "u2")]);
    assert!(
        matches!(&actions[..], [GcAction::RemoveFinalizer { finalizer, remaining, .. }]
            if *finalizer == FINALIZER_ORPHAN && remaining.is_empty()),
        "{actions:?}"
    );
}

#[test]
fn foreground_deletes_dependents_before_releasing_the_owner() {
    let owner = deleting(cm("owner", "u1"), FINALIZER_FOREGROUND);
    let child = owned_by(cm("child", "u2"), "owner", "u1", true);
    let grandchild = owned_by(cm("grandchild", "u3"), "child", "u2", true);
    let actions = plan(&[owner.clone(), child.clone(), grandchild.clone()]);
    // The child has dependents of its own: it is deleted in the foreground too; the owner
    // keeps its finalizer while a blocking dependent exists.
    assert!(
        matches!(&actions[..], [GcAction::Delete { object, policy: Propagation::Foreground, .. }]
            if object.name == "child"),
        "{actions:?}"
    );
    // A non-blocking dependent does not hold the owner.
    let loose = owned_by(cm("loose", "u4"), "owner", "u1", false);
    let actions = plan(&[owner, loose]);
    assert!(actions.iter().any(|a| matches!(a,
        GcAction::RemoveFinalizer { finalizer, .. } if *finalizer == FINALIZER_FOREGROUND)));
    assert!(actions.iter().any(|a| matches!(a,
        GcAction::Delete { object, policy: Propagation::Background, .. } if object.name == "loose")));
}

#[test]
fn unknown_owner_kinds_are_never_collected() {
    let mut dep = cm("dep", "u2");
    dep.owner_references.push(OwnerReference {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        name: "w".into(),
        uid: "u7".into(),
        block_owner_deletion: None,
        controller: None,
    });
    assert!(plan(&[dep]).is_empty());
}
