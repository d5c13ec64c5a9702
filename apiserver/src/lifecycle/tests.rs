#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;

const NOW: &str = "2026-11-23T07:00:00Z";

fn opts(policy: Option<PropagationPolicy>) -> DeleteOptions {
    DeleteOptions {
        propagation_policy: policy,
        ..DeleteOptions::default()
    }
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn options_from_body_and_query() {
    let o = DeleteOptions::parse(
        Some(&json!({"propagationPolicy": "Foreground", "preconditions": {"uid": "u"}})),
        &q(&[("propagationPolicy", "Orphan")]),
    )
    .unwrap();
    // The body wins: the query is read only without one.
    assert_eq!(o.propagation_policy, Some(PropagationPolicy::Foreground));
    assert_eq!(o.precondition_uid.as_deref(), Some("u"));
    let o = DeleteOptions::parse(None, &q(&[("propagationPolicy", "Orphan")])).unwrap();
    assert_eq!(o.propagation_policy, Some(PropagationPolicy::Orphan));
    assert_eq!(
        DeleteOptions::parse(None, &[]).unwrap(),
        DeleteOptions::default()
    );
}

#[test]
fn invalid_policy_is_422_naming_the_value() {
    let err =
        DeleteOptions::parse(Some(&json!({"propagationPolicy": "Sideways"})), &[]).unwrap_err();
    assert_eq!((err.code, err.reason), (422, "Invalid"));
    assert!(err.message.contains("\"Sideways\""), "{}", err.message);
    assert!(err.message.contains("propagationPolicy"), "{}", err.message);
    let err = DeleteOptions::parse(None, &q(&[("propagationPolicy", "x")])).unwrap_err();
    assert_eq!(err.code, 422);
    let err = DeleteOptions::parse(
        Some(&json!({"propagationPolicy": "Orphan", "orphanDependents": true})),
        &[],
    )
    .unwrap_err();
    assert_eq!(err.code, 422);
    let err = DeleteOptions::parse(Some(&json!({"propagationPolicy": 3})), &[]).unwrap_err();
    assert_eq!(err.code, 400);
}

#[test]
fn gc_finalizers_follow_policy_then_existing() {
    let none: Vec<String> = vec![];
    assert_eq!(gc_finalizers(&none, &opts(None)), None);
    assert_eq!(
        gc_finalizers(&none, &opts(Some(PropagationPolicy::Background))),
        None
    );
    assert_eq!(
        gc_finalizers(&none, &opts(Some(PropagationPolicy::Orphan))),
        Some(vec!["orphan".to_owned()])
    );
    let fg = vec!["a".to_owned(), "foregroundDeletion".to_owned()];
    // No policy: the finalizer already there decides.
    assert_eq!(gc_finalizers(&fg, &opts(None)), None);
    assert_eq!(
        gc_finalizers(&fg, &opts(Some(PropagationPolicy::Orphan))),
        Some(vec!["a".to_owned(), "orphan".to_owned()])
    );
    assert_eq!(
        gc_finalizers(&fg, &opts(Some(PropagationPolicy::Background))),
        Some(vec!["a".to_owned()])
    );
    let legacy = DeleteOptions {
        orphan_dependents: Some(true),
        ..DeleteOptions::default()
    };
    assert_eq!(
        gc_finalizers(&none, &legacy),
        Some(vec!["orphan".to_owned()])
    );
}

#[test]
fn delete_plans() {
    let plain = json!({"metadata": {"name": "a"}});
    assert_eq!(plan_delete(&plain, &opts(None), NOW), DeletePlan::Now);
    let DeletePlan::Update(next) =
        plan_delete(&plain, &opts(Some(PropagationPolicy::Foreground)), NOW)
    else {
        panic!("foreground keeps the object");
    };
    assert_eq!(
        next["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert_eq!(next["metadata"]["deletionTimestamp"], NOW);
    assert_eq!(next["metadata"]["deletionGracePeriodSeconds"], 0);

    let held = json!({"metadata": {"name": "a", "generation": 2, "finalizers": ["x/y"]}});
    let DeletePlan::Update(next) = plan_delete(&held, &opts(None), NOW) else {
        panic!("a finalizer keeps the object");
    };
    assert_eq!(next["metadata"]["generation"], 3);
    // Repeating the DELETE changes nothing.
    assert_eq!(
        plan_delete(&next, &opts(None), "2030-01-01T00:00:00Z"),
        DeletePlan::Unchanged
    );
    // Background on an object whose only finalizer is foregroundDeletion deletes it.
    let fg = json!({"metadata": {"name": "a", "finalizers": ["foregroundDeletion"],
                    "deletionTimestamp": NOW}});
    assert_eq!(
        plan_delete(&fg, &opts(Some(PropagationPolicy::Background)), NOW),
        DeletePlan::Now
    );
}

#[test]
fn namespace_termination() {
    let mut ns = json!({"metadata": {"name": "x"}, "spec": {}, "status": {"phase": "Active"}});
    prepare_create(Kind::Namespace, &mut ns);
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    let DeletePlan::Update(term) = plan_namespace_delete(&ns, &opts(None), NOW) else {
        panic!("the first delete marks it Terminating");
    };
    assert_eq!(term["status"]["phase"], "Terminating");
    assert_eq!(term["metadata"]["deletionTimestamp"], NOW);
    assert!(namespace_terminating(&term));
    assert_eq!(
        plan_namespace_delete(&term, &opts(None), NOW),
        DeletePlan::Unchanged
    );
    // /finalize emptying spec.finalizers removes it.
    let sent =
        json!({"metadata": {"name": "x", "resourceVersion": "7"}, "spec": {"finalizers": []}});
    let mut fin = merge_finalize(&term, &sent);
    assert_eq!(fin["metadata"]["resourceVersion"], "7");
    assert_eq!(
        check_update(Kind::Namespace, &term, &mut fin, true).unwrap(),
        UpdateOutcome::Delete
    );
    // A plain update cannot touch spec.finalizers.
    let mut edit = term.clone();
    edit["spec"]["finalizers"] = json!([]);
    assert_eq!(
        check_update(Kind::Namespace, &term, &mut edit, false).unwrap(),
        UpdateOutcome::Store
    );
    assert_eq!(edit["spec"]["finalizers"], json!(["kubernetes"]));
}

#[test]
fn update_rules_for_deleting_objects() {
    let live = json!({"metadata": {"name": "a", "finalizers": ["x/y"]}});
    let mut forged = live.clone();
    forged["metadata"]["deletionTimestamp"] = json!(NOW);
    let errs = check_update(Kind::ConfigMap, &live, &mut forged, false).unwrap_err();
    assert!(errs.has_field("metadata.deletionTimestamp"), "{errs}");

    let deleting = json!({"metadata": {"name": "a", "finalizers": ["x/y"],
                         "deletionTimestamp": NOW, "deletionGracePeriodSeconds": 0}});
    let mut added = deleting.clone();
    added["metadata"]["finalizers"] = json!(["x/y", "z/w"]);
    let errs = check_update(Kind::ConfigMap, &deleting, &mut added, false).unwrap_err();
    assert!(errs.has_field("metadata.finalizers"), "{errs}");
    assert!(errs.to_string().contains("\"z/w\""), "{errs}");

    // Clearing deletionTimestamp is ignored; keeping a finalizer stores.
    let mut cleared = deleting.clone();
    cleared["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    assert_eq!(
        check_update(Kind::ConfigMap, &deleting, &mut cleared, false).unwrap(),
        UpdateOutcome::Store
    );
    assert_eq!(cleared["metadata"]["deletionTimestamp"], NOW);

    let mut emptied = deleting.clone();
    emptied["metadata"]["finalizers"] = json!([]);
    assert_eq!(
        check_update(Kind::ConfigMap, &deleting, &mut emptied, false).unwrap(),
        UpdateOutcome::Delete
    );
    // Without a deletion in progress, removing finalizers just stores.
    let mut live_emptied = live.clone();
    live_emptied["metadata"]["finalizers"] = json!([]);
    assert_eq!(
        check_update(Kind::ConfigMap, &live, &mut live_emptied, false).unwrap(),
        UpdateOutcome::Store
    );
}

#[test]
fn create_drops_deletion_fields() {
    let mut obj = json!({"metadata": {"name": "a", "deletionTimestamp": NOW,
                         "deletionGracePeriodSeconds": 5}});
    prepare_create(Kind::ConfigMap, &mut obj);
    assert!(obj["metadata"].get("deletionTimestamp").is_none());
    assert!(obj["metadata"].get("deletionGracePeriodSeconds").is_none());
}
