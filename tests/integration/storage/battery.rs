//! The storage battery: one suite of `Store` tests, run against every backend.
//!
//! A backend module instantiates it with `store_battery!(fixture_expr)`, where `fixture_expr`
//! (evaluated once per test, inside the async test body, so it may `.await`) yields something
//! implementing [`skiff_tests::StoreFixture`]. The fixture must open stores with an encryption
//! key (Secrets are only stored encrypted), and `open()` again must reopen the same data.
//!
//! Rules that keep the battery backend-neutral:
//! - every test uses its own resource names and namespaces (derived from the test's name), so
//!   a backend may share one server between fixtures;
//! - revisions are global to a server, so tests only assert relations between revisions
//!   (ordering, equality with what a write returned), never absolute numbers;
//! - the compaction test compacts history up to revisions it wrote: a backend whose fixtures
//!   share one server must give that test a server of its own (compaction is global).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_apiserver::storage::{
    EventType, ListResult, ObjectKey, Preconditions, ResourceName, Revision, Scope, Store,
    StoreError, WatchEvent, WatchStream, compactor,
};
use skiff_tests::StoreFixture;

/// Stamps out one `#[tokio::test]` per battery test, each with a fresh fixture.
macro_rules! store_battery {
    ($fixture:expr) => {
        $crate::storage::battery::store_battery!(@tests $fixture;
            create_get_and_errors,
            update_semantics,
            delete_semantics,
            revisions_strictly_increase,
            list_scopes_and_order,
            cluster_scoped_objects,
            list_is_a_consistent_snapshot,
            watch_from_list_revision,
            watch_from_older_history,
            watch_deleted_carries_last_state,
            watch_modified_carries_previous_state,
            watch_scope_filtering,
            concurrent_watchers_see_everything_once_in_order,
            slow_watcher_misses_nothing,
            concurrent_increments_lose_nothing,
            concurrent_creates_lose_nothing,
            restart_durability,
            compaction,
            compactor_runs_on_a_schedule,
            secret_round_trip,
        );
    };
    (@tests $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() -> anyhow::Result<()> {
                let fixture = $fixture;
                $crate::storage::battery::$name(&fixture, &stringify!($name).replace('_', "-")).await
            }
        )*
    };
}
pub(crate) use store_battery;

// ---------------------------------------------------------------------------------------------
// helpers

/// How long a test waits for an event it expects before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a watch must stay silent to count as "no further events".
const QUIET: Duration = Duration::from_millis(300);

/// A resource name unique to a test: `<plural>.<tag>.battery.test`.
fn resource(tag: &str, plural: &str) -> ResourceName {
    ResourceName::new(format!("{plural}.{tag}.battery.test")).unwrap()
}

fn key(resource: &ResourceName, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey::new(resource.clone(), namespace, name)
}

/// A namespace unique to a test.
fn ns(tag: &str, suffix: &str) -> String {
    format!("{tag}-{suffix}")
}

/// A ConfigMap-like object.
fn obj(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": name}, "data": {"value": value}})
}

fn rv(object: &Value) -> Revision {
    let s = object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.resourceVersion in {object}"));
    s.parse()
        .unwrap_or_else(|_| panic!("resourceVersion {s:?} is not a number"))
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn data(object: &Value) -> &str {
    object["data"]["value"].as_str().unwrap_or_default()
}

fn with_rv(mut object: Value, revision: Revision) -> Value {
    object["metadata"]["resourceVersion"] = Value::String(revision.to_string());
    object
}

fn no_pre() -> Preconditions {
    Preconditions::default()
}

/// Replaces the data of `stored`, keeping its metadata (so its resourceVersion is a precondition).
fn edit(stored: &Value, value: &str) -> Value {
    let mut next = stored.clone();
    next["data"]["value"] = Value::String(value.to_owned());
    next
}

async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent> {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Err(_) => bail!("no watch event within {EVENT_TIMEOUT:?}"),
        Ok(None) => bail!("the watch stream ended"),
        Ok(Some(event)) => event.context("the watch stream failed"),
    }
}

async fn take_events(stream: &mut WatchStream, n: usize) -> Result<Vec<WatchEvent>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let event = next_event(stream)
            .await
            .with_context(|| format!("after {} of {n} events", out.len()))?;
        out.push(event);
    }
    Ok(out)
}

/// Fails if the stream delivers anything within `QUIET`.
async fn assert_quiet(stream: &mut WatchStream) -> Result<()> {
    match tokio::time::timeout(QUIET, stream.next()).await {
        Err(_) => Ok(()),
        Ok(None) => bail!("the watch stream ended"),
        Ok(Some(Ok(event))) => bail!("unexpected extra event: {event:?}"),
        Ok(Some(Err(e))) => bail!("the watch stream failed: {e}"),
    }
}

/// Checks that events carry strictly increasing revisions, each equal to its object's RV.
fn check_order(events: &[WatchEvent]) -> Result<()> {
    for pair in events.windows(2) {
        ensure!(
            pair[0].revision < pair[1].revision,
            "events out of order: {} then {}",
            pair[0].revision,
            pair[1].revision
        );
    }
    for e in events {
        ensure!(
            rv(&e.object) == e.revision,
            "event at {} carries an object at resourceVersion {}",
            e.revision,
            rv(&e.object)
        );
    }
    Ok(())
}

fn summary(events: &[WatchEvent]) -> Vec<(EventType, String, Revision)> {
    events
        .iter()
        .map(|e| (e.kind, e.key.name.clone(), e.revision))
        .collect()
}

fn is_expired<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Expired { .. }))
}

fn is_conflict<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict { .. }))
}

fn is_not_found<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

fn is_invalid<T>(r: &Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Invalid(_)))
}

/// Updates `k` with retries on conflict, applying `f` to the current object each time.
async fn update_with_retry(
    store: &dyn Store,
    k: &ObjectKey,
    f: impl Fn(&Value) -> Value,
) -> Result<Value> {
    for _ in 0..10_000 {
        let current = store.get(k).await?;
        match store.update(k, f(&current), &no_pre()).await {
            Ok(v) => return Ok(v),
            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{k}: too many conflicts")
}

// ---------------------------------------------------------------------------------------------
// create / get / update / delete

pub async fn create_get_and_errors(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "a");

    let before = store.current_revision().await?;
    let mut input = obj("a", "v1");
    input["metadata"]["uid"] = json!("forged-uid");
    let created = store.create(&k, input).await?;
    let rv1 = rv(&created);
    assert!(
        rv1 > before,
        "create at {rv1} is not after the current revision {before}"
    );
    assert_eq!(created["metadata"]["name"], "a");
    assert_eq!(created["metadata"]["namespace"], ns.as_str());
    assert_eq!(data(&created), "v1");
    assert_eq!(created["kind"], "Widget");
    let u = uid(&created);
    assert!(
        !u.is_empty() && u != "forged-uid",
        "uid not assigned: {u:?}"
    );
    let ts = created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ts.len() == 20 && ts.ends_with('Z'),
        "creationTimestamp {ts:?}"
    );
    assert!(store.current_revision().await? >= rv1);

    assert_eq!(store.get(&k).await?, created);

    // A name without a namespace in the input gets the key's namespace filled in.
    let k2 = key(&r, Some(&ns), "b");
    let b = store
        .create(&k2, json!({"metadata": {}, "data": {"value": "b"}}))
        .await?;
    assert_eq!(b["metadata"]["name"], "b");
    assert_eq!(b["metadata"]["namespace"], ns.as_str());
    assert!(rv(&b) > rv1);
    assert_ne!(uid(&b), u, "two objects share a uid");

    match store.create(&k, obj("a", "v2")).await {
        Err(StoreError::AlreadyExists(got)) => assert_eq!(got, k),
        other => panic!("create of an existing key: {other:?}"),
    }
    assert_eq!(
        store.get(&k).await?,
        created,
        "a failed create changed the object"
    );

    let missing = key(&r, Some(&ns), "missing");
    match store.get(&missing).await {
        Err(StoreError::NotFound(got)) => assert_eq!(got, missing),
        other => panic!("get of a missing key: {other:?}"),
    }
    // Same name, other namespace: a different object.
    assert!(is_not_found(
        &store.get(&key(&r, Some(&ns_other(tag)), "a")).await
    ));

    // Invalid input.
    let c = key(&r, Some(&ns), "c");
    assert!(is_invalid(
        &store.create(&c, with_rv(obj("c", "x"), 5)).await
    ));
    assert!(is_invalid(&store.create(&c, obj("not-c", "x")).await));
    assert!(is_invalid(
        &store.create(&c, json!(["not", "an", "object"])).await
    ));
    let mut wrong_ns = obj("c", "x");
    wrong_ns["metadata"]["namespace"] = json!("elsewhere");
    assert!(is_invalid(&store.create(&c, wrong_ns).await));
    assert!(
        is_not_found(&store.get(&c).await),
        "an invalid create stored something"
    );
    Ok(())
}

fn ns_other(tag: &str) -> String {
    ns(tag, "other")
}

pub async fn update_semantics(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "a");
    let created = store.create(&k, obj("a", "v1")).await?;

    // Update at the current resourceVersion.
    let v2 = store.update(&k, edit(&created, "v2"), &no_pre()).await?;
    assert!(rv(&v2) > rv(&created));
    assert_eq!(data(&v2), "v2");
    assert_eq!(uid(&v2), uid(&created));
    assert_eq!(
        v2["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(store.get(&k).await?, v2);

    // Stale resourceVersion in the object: conflict, nothing changes.
    let stale = store.update(&k, edit(&created, "stale"), &no_pre()).await;
    assert!(
        is_conflict(&stale),
        "update at a stale resourceVersion: {stale:?}"
    );
    assert_eq!(store.get(&k).await?, v2);

    // Stale resourceVersion as a precondition.
    let pre = Preconditions {
        resource_version: Some(rv(&created)),
        uid: None,
    };
    let mut unversioned = edit(&v2, "stale");
    unversioned["metadata"]["resourceVersion"] = json!("");
    assert!(is_conflict(
        &store.update(&k, unversioned.clone(), &pre).await
    ));
    // Wrong uid precondition.
    let pre = Preconditions {
        resource_version: None,
        uid: Some("not-the-uid".into()),
    };
    assert!(is_conflict(
        &store.update(&k, unversioned.clone(), &pre).await
    ));
    assert_eq!(store.get(&k).await?, v2);

    // Matching preconditions.
    let pre = Preconditions {
        resource_version: Some(rv(&v2)),
        uid: Some(uid(&v2)),
    };
    let v3 = store.update(&k, edit(&v2, "v3"), &pre).await?;
    assert!(rv(&v3) > rv(&v2));

    // An unconditional update (no resourceVersion) applies; uid and creationTimestamp are
    // carried over whatever the caller sends.
    let mut forged = obj("a", "v4");
    forged["metadata"]["uid"] = json!("forged");
    forged["metadata"]["creationTimestamp"] = json!("1999-01-01T00:00:00Z");
    let v4 = store.update(&k, forged, &no_pre()).await?;
    assert!(rv(&v4) > rv(&v3));
    assert_eq!(data(&v4), "v4");
    assert_eq!(uid(&v4), uid(&created));
    assert_eq!(
        v4["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert_eq!(store.get(&k).await?, v4);

    // Errors.
    let missing = key(&r, Some(&ns), "missing");
    assert!(is_not_found(
        &store.update(&missing, obj("missing", "x"), &no_pre()).await
    ));
    assert!(
        is_not_found(&store.get(&missing).await),
        "update created an object"
    );
    assert!(is_invalid(
        &store.update(&k, obj("b", "x"), &no_pre()).await
    ));
    let mut bad_rv = obj("a", "x");
    bad_rv["metadata"]["resourceVersion"] = json!("not-a-number");
    assert!(is_invalid(&store.update(&k, bad_rv, &no_pre()).await));
    assert_eq!(store.get(&k).await?, v4);
    Ok(())
}

pub async fn delete_semantics(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "a");
    let created = store.create(&k, obj("a", "v1")).await?;
    let last = store.update(&k, edit(&created, "last"), &no_pre()).await?;

    let pre = Preconditions {
        resource_version: Some(rv(&created)),
        uid: None,
    };
    assert!(
        is_conflict(&store.delete(&k, &pre).await),
        "delete at a stale resourceVersion"
    );
    let pre = Preconditions {
        resource_version: None,
        uid: Some("not-the-uid".into()),
    };
    assert!(
        is_conflict(&store.delete(&k, &pre).await),
        "delete with a wrong uid"
    );
    assert_eq!(store.get(&k).await?, last);

    let pre = Preconditions {
        resource_version: Some(rv(&last)),
        uid: Some(uid(&last)),
    };
    let deleted = store.delete(&k, &pre).await?;
    assert!(
        rv(&deleted) > rv(&last),
        "the deletion has its own, newer revision"
    );
    assert_eq!(data(&deleted), "last");
    assert_eq!(uid(&deleted), uid(&created));
    assert!(store.current_revision().await? >= rv(&deleted));
    assert!(is_not_found(&store.get(&k).await));
    assert!(is_not_found(&store.delete(&k, &no_pre()).await));
    assert!(is_not_found(
        &store.delete(&key(&r, Some(&ns), "never"), &no_pre()).await
    ));

    // Re-creating the key makes a new object.
    let again = store.create(&k, obj("a", "again")).await?;
    assert!(rv(&again) > rv(&deleted));
    assert_ne!(uid(&again), uid(&created));
    // An unconditional delete.
    let gone = store.delete(&k, &no_pre()).await?;
    assert_eq!(data(&gone), "again");
    assert!(is_not_found(&store.get(&k).await));
    Ok(())
}

pub async fn revisions_strictly_increase(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let other = resource(tag, "gadgets");
    let mut last = store.current_revision().await?;
    for i in 0..10 {
        let ns = ns(tag, &format!("n{}", i % 3));
        let name = format!("o{i}");
        let res = if i % 2 == 0 { &r } else { &other };
        let k = key(res, Some(&ns), &name);
        let mut revs = vec![];
        let c = store.create(&k, obj(&name, "1")).await?;
        revs.push(rv(&c));
        let u = store.update(&k, edit(&c, "2"), &no_pre()).await?;
        revs.push(rv(&u));
        if i % 3 == 0 {
            revs.push(rv(&store.delete(&k, &no_pre()).await?));
        }
        for rev in revs {
            assert!(rev > last, "revision {rev} is not after {last}");
            last = rev;
        }
        assert!(store.current_revision().await? >= last);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// list

fn names(items: &[Value]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

pub async fn list_scopes_and_order(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let r2 = resource(tag, "gadgets");
    let (na, nb) = (ns(tag, "a"), ns(tag, "b"));

    let empty_before = store.current_revision().await?;
    let empty = store.list(&Scope::all(r.clone())).await?;
    assert!(empty.items.is_empty());
    assert!(empty.revision >= empty_before);

    let mut written = BTreeMap::new();
    for (n, name) in [(&nb, "a"), (&na, "c"), (&na, "a"), (&na, "b")] {
        let o = store
            .create(&key(&r, Some(n), name), obj(name, name))
            .await?;
        written.insert((n.clone(), name.to_owned()), o);
    }
    store
        .create(&key(&r2, Some(&na), "x"), obj("x", "x"))
        .await?;
    // One object updated, so the items carry different resourceVersions.
    let ab = key(&r, Some(&na), "b");
    let b2 = store.update(&ab, obj("b", "b2"), &no_pre()).await?;
    written.insert((na.clone(), "b".into()), b2);
    let max_rv = written.values().map(rv).max().unwrap_or_default();

    let current = store.current_revision().await?;
    let in_a = store.list(&Scope::namespace(r.clone(), &na)).await?;
    assert!(
        in_a.revision >= current,
        "list at {} is older than {current}",
        in_a.revision
    );
    assert_eq!(
        names(&in_a.items),
        vec![
            (na.clone(), "a".into()),
            (na.clone(), "b".into()),
            (na.clone(), "c".into())
        ]
    );
    for item in &in_a.items {
        let k = (
            na.clone(),
            item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        assert_eq!(
            Some(item),
            written.get(&k),
            "listed item differs from what was written"
        );
    }

    let all = store.list(&Scope::all(r.clone())).await?;
    assert!(all.revision >= max_rv);
    assert_eq!(
        names(&all.items),
        vec![
            (na.clone(), "a".into()),
            (na.clone(), "b".into()),
            (na.clone(), "c".into()),
            (nb.clone(), "a".into()),
        ]
    );
    for item in &all.items {
        assert!(rv(item) <= all.revision, "an item is newer than its list");
    }
    raw_list_matches(store.as_ref(), &Scope::all(r.clone()), &all).await?;
    let in_b = store.list(&Scope::namespace(r.clone(), &nb)).await?;
    assert_eq!(names(&in_b.items), vec![(nb.clone(), "a".into())]);
    raw_list_matches(store.as_ref(), &Scope::namespace(r.clone(), &nb), &in_b).await?;
    let other = store.list(&Scope::all(r2.clone())).await?;
    assert_eq!(names(&other.items), vec![(na.clone(), "x".into())]);
    let nowhere = store
        .list(&Scope::namespace(r.clone(), &ns(tag, "none")))
        .await?;
    assert!(nowhere.items.is_empty());

    store.delete(&key(&r, Some(&na), "a"), &no_pre()).await?;
    let after = store.list(&Scope::namespace(r.clone(), &na)).await?;
    assert_eq!(
        names(&after.items),
        vec![(na.clone(), "b".into()), (na.clone(), "c".into())]
    );
    assert!(after.revision > all.revision);
    Ok(())
}

pub async fn cluster_scoped_objects(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "clusterwidgets");
    let scope = Scope::all(r.clone());
    let start = store.current_revision().await?;
    let mut watch = store.watch(&scope, start).await?;

    let kb = key(&r, None, "b");
    let b = store.create(&kb, obj("b", "b")).await?;
    assert!(
        b["metadata"].get("namespace").is_none(),
        "cluster-scoped object got a namespace: {b}"
    );
    let mut empty_ns = obj("a", "a");
    empty_ns["metadata"]["namespace"] = json!("");
    let ka = key(&r, None, "a");
    let a = store.create(&ka, empty_ns).await?;
    assert!(a["metadata"].get("namespace").is_none());
    let mut with_ns = obj("c", "c");
    with_ns["metadata"]["namespace"] = json!("default");
    assert!(is_invalid(
        &store.create(&key(&r, None, "c"), with_ns).await
    ));

    assert_eq!(store.get(&ka).await?, a);
    // The same name in a namespace is another key.
    assert!(is_not_found(
        &store.get(&key(&r, Some(&ns(tag, "a")), "a")).await
    ));
    let list = store.list(&scope).await?;
    assert_eq!(list.items, vec![a.clone(), b.clone()]);

    let a2 = store.update(&ka, edit(&a, "a2"), &no_pre()).await?;
    let gone = store.delete(&kb, &no_pre()).await?;
    let events = take_events(&mut watch, 4).await?;
    check_order(&events)?;
    assert_eq!(
        summary(&events),
        vec![
            (EventType::Added, "b".into(), rv(&b)),
            (EventType::Added, "a".into(), rv(&a)),
            (EventType::Modified, "a".into(), rv(&a2)),
            (EventType::Deleted, "b".into(), rv(&gone)),
        ]
    );
    assert!(events.iter().all(|e| e.key.namespace.is_none()));
    assert_quiet(&mut watch).await
}

pub async fn list_is_a_consistent_snapshot(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let scope = Scope::all(r.clone());

    // Writers create, update and delete in several namespaces while lists are taken.
    let mut writers = vec![];
    for w in 0..4 {
        let store = store.clone();
        let r = r.clone();
        let ns = ns(tag, &format!("w{w}"));
        writers.push(tokio::spawn(async move {
            for i in 0..40u32 {
                let name = format!("o{}", i % 8);
                let k = key(&r, Some(&ns), &name);
                let res = match i % 3 {
                    0 => store.create(&k, obj(&name, &i.to_string())).await.map(drop),
                    1 => store
                        .update(&k, obj(&name, &i.to_string()), &no_pre())
                        .await
                        .map(drop),
                    _ => store.delete(&k, &no_pre()).await.map(drop),
                };
                match res {
                    Ok(()) | Err(StoreError::AlreadyExists(_) | StoreError::NotFound(_)) => {}
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
            Ok(())
        }));
    }

    // Snapshots taken mid-flight: each one plus the watch from its revision must add up to
    // the final state.
    let mut snapshots = vec![];
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let list = store.list(&scope).await?;
        for item in &list.items {
            ensure!(rv(item) <= list.revision, "item newer than its list");
        }
        let watch = store.watch(&scope, list.revision).await?;
        snapshots.push((list, watch));
    }
    for w in writers {
        w.await??;
    }
    // A marker write, so each watch knows when it has seen everything.
    let marker_ns = ns(tag, "zz-marker");
    let marker = store
        .create(&key(&r, Some(&marker_ns), "marker"), obj("marker", "m"))
        .await?;
    let fin = store.list(&scope).await?;
    ensure!(fin.revision >= rv(&marker));
    let by_key = |items: &[Value]| -> BTreeMap<(String, String), Value> {
        names(items)
            .into_iter()
            .zip(items.iter().cloned())
            .collect()
    };
    let expected = by_key(&fin.items);

    for (list, mut watch) in snapshots {
        let mut state = by_key(&list.items);
        let mut events = vec![];
        loop {
            let e = next_event(&mut watch).await?;
            ensure!(
                e.revision > list.revision,
                "watch from {} delivered {}",
                list.revision,
                e.revision
            );
            let done = e.revision == rv(&marker);
            events.push(e);
            if done {
                break;
            }
        }
        check_order(&events)?;
        for e in events {
            let k = (
                e.key.namespace.clone().unwrap_or_default(),
                e.key.name.clone(),
            );
            match e.kind {
                EventType::Added => {
                    ensure!(
                        !state.contains_key(&k),
                        "Added for an object already in the list: {k:?}"
                    );
                    state.insert(k, (*e.object).clone());
                }
                EventType::Modified => {
                    ensure!(
                        state.contains_key(&k),
                        "Modified for an object not in the list: {k:?}"
                    );
                    state.insert(k, (*e.object).clone());
                }
                EventType::Deleted => {
                    ensure!(
                        state.remove(&k).is_some(),
                        "Deleted for an object not in the list: {k:?}"
                    );
                }
            }
        }
        ensure!(
            state == expected,
            "list at {} + watch does not add up to the final list",
            list.revision
        );
        assert_quiet(&mut watch).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// watch

pub async fn watch_from_list_revision(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let a = store
        .create(&key(&r, Some(&ns), "a"), obj("a", "1"))
        .await?;
    let list = store.list(&scope).await?;
    assert_eq!(list.items, vec![a.clone()]);

    // Writes after the list, before the watch starts: replayed from history.
    let b = store
        .create(&key(&r, Some(&ns), "b"), obj("b", "1"))
        .await?;
    let a2 = store
        .update(&key(&r, Some(&ns), "a"), edit(&a, "2"), &no_pre())
        .await?;
    let mut watch = store.watch(&scope, list.revision).await?;
    // Writes after the watch started: delivered live.
    let bd = store.delete(&key(&r, Some(&ns), "b"), &no_pre()).await?;
    let c = store
        .create(&key(&r, Some(&ns), "c"), obj("c", "1"))
        .await?;

    let events = take_events(&mut watch, 4).await?;
    check_order(&events)?;
    assert_eq!(
        summary(&events),
        vec![
            (EventType::Added, "b".into(), rv(&b)),
            (EventType::Modified, "a".into(), rv(&a2)),
            (EventType::Deleted, "b".into(), rv(&bd)),
            (EventType::Added, "c".into(), rv(&c)),
        ]
    );
    assert_eq!(*events[0].object, b);
    assert_eq!(*events[1].object, a2);
    assert_eq!(*events[2].object, bd);
    assert_eq!(*events[3].object, c);
    assert_eq!(events[3].key, key(&r, Some(&ns), "c"));
    assert_quiet(&mut watch).await?;

    // Watching from the newest revision yields only later changes.
    let now = store.current_revision().await?;
    let mut live = store.watch(&scope, now).await?;
    assert_quiet(&mut live).await?;
    let d = store
        .create(&key(&r, Some(&ns), "d"), obj("d", "1"))
        .await?;
    let e = next_event(&mut live).await?;
    assert_eq!(
        (e.kind, e.revision, (*e.object).clone()),
        (EventType::Added, rv(&d), d)
    );
    assert_quiet(&mut live).await
}

pub async fn watch_from_older_history(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let ka = key(&r, Some(&ns), "a");
    let a1 = store.create(&ka, obj("a", "1")).await?;
    let a2 = store.update(&ka, edit(&a1, "2"), &no_pre()).await?;
    let b = store
        .create(&key(&r, Some(&ns), "b"), obj("b", "1"))
        .await?;
    let ad = store.delete(&ka, &no_pre()).await?;
    let all = [
        (EventType::Added, "a".to_owned(), rv(&a1)),
        (EventType::Modified, "a".into(), rv(&a2)),
        (EventType::Added, "b".into(), rv(&b)),
        (EventType::Deleted, "a".into(), rv(&ad)),
    ];
    for (start, after) in [rv(&a1) - 1, rv(&a1), rv(&a2), rv(&b), rv(&ad)]
        .into_iter()
        .enumerate()
    {
        let mut watch = store.watch(&scope, after).await?;
        let events = take_events(&mut watch, all.len() - start).await?;
        check_order(&events)?;
        assert_eq!(
            summary(&events),
            all[start..].to_vec(),
            "watch from {after}"
        );
        assert_quiet(&mut watch).await?;
    }
    let mut watch = store.watch(&scope, rv(&a1)).await?;
    let events = take_events(&mut watch, 3).await?;
    assert_eq!(*events[0].object, a2);
    assert_eq!(*events[1].object, b);
    assert_eq!(*events[2].object, ad);
    Ok(())
}

pub async fn watch_deleted_carries_last_state(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let mut watch = store.watch(&scope, store.current_revision().await?).await?;
    let created = store.create(&k, obj("a", "first")).await?;
    let last = store
        .update(&k, edit(&created, "last state"), &no_pre())
        .await?;
    let deleted = store.delete(&k, &no_pre()).await?;
    assert!(rv(&deleted) > rv(&last));
    // The returned object is the last state with the deletion's revision.
    assert_eq!(deleted, with_rv(last.clone(), rv(&deleted)));

    let events = take_events(&mut watch, 3).await?;
    check_order(&events)?;
    let del = &events[2];
    assert_eq!(del.kind, EventType::Deleted);
    assert_eq!(del.key, k);
    assert_eq!(del.revision, rv(&deleted));
    assert_eq!(*del.object, deleted);
    assert_eq!(data(&del.object), "last state");
    assert_eq!(uid(&del.object), uid(&created));
    // The same from history.
    let mut replay = store.watch(&scope, rv(&last)).await?;
    let e = next_event(&mut replay).await?;
    assert_eq!(&e, del);
    assert_quiet(&mut replay).await
}

pub async fn watch_modified_carries_previous_state(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let mut watch = store.watch(&scope, store.current_revision().await?).await?;
    let v1 = store.create(&k, obj("a", "1")).await?;
    let v2 = store.update(&k, edit(&v1, "2"), &no_pre()).await?;
    let v3 = store.update(&k, edit(&v2, "3"), &no_pre()).await?;
    let gone = store.delete(&k, &no_pre()).await?;
    let expected = [None, Some(v1.clone()), Some(v2.clone()), None];
    let live = take_events(&mut watch, 4).await?;
    assert_eq!(
        live.iter()
            .map(|e| e.prev_object.as_deref().cloned())
            .collect::<Vec<_>>(),
        expected,
        "live events"
    );
    assert_eq!(*live[2].object, v3);
    assert_eq!(*live[3].object, gone);
    // The same read back from history.
    let mut replay = store.watch(&scope, rv(&v1) - 1).await?;
    let replayed = take_events(&mut replay, 4).await?;
    assert_eq!(replayed, live);
    assert_quiet(&mut replay).await
}

pub async fn watch_scope_filtering(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let r2 = resource(tag, "gadgets");
    let (n1, n2) = (ns(tag, "one"), ns(tag, "two"));
    let start = store.current_revision().await?;
    let mut w_n1 = store
        .watch(&Scope::namespace(r.clone(), &n1), start)
        .await?;
    let mut w_all = store.watch(&Scope::all(r.clone()), start).await?;
    let mut w_r2 = store
        .watch(&Scope::namespace(r2.clone(), &n1), start)
        .await?;
    let mut w_n2 = store
        .watch(&Scope::namespace(r.clone(), &n2), start)
        .await?;

    let mut expect_n1 = vec![];
    let mut expect_all = vec![];
    let mut expect_r2 = vec![];
    let mut expect_n2 = vec![];
    for i in 0..6 {
        let name = format!("o{i}");
        let (res, n) = match i % 3 {
            0 => (&r, &n1),
            1 => (&r, &n2),
            _ => (&r2, &n1),
        };
        let o = store
            .create(&key(res, Some(n), &name), obj(&name, "x"))
            .await?;
        let entry = (EventType::Added, name.clone(), rv(&o));
        match i % 3 {
            0 => {
                expect_n1.push(entry.clone());
                expect_all.push(entry);
            }
            1 => {
                expect_n2.push(entry.clone());
                expect_all.push(entry);
            }
            _ => expect_r2.push(entry),
        }
    }
    for (watch, expected) in [
        (&mut w_n1, expect_n1),
        (&mut w_all, expect_all),
        (&mut w_r2, expect_r2),
        (&mut w_n2, expect_n2),
    ] {
        let events = take_events(watch, expected.len()).await?;
        check_order(&events)?;
        assert_eq!(summary(&events), expected);
        assert_quiet(watch).await?;
    }
    // A history replay filters the same way.
    let mut replay = store
        .watch(&Scope::namespace(r.clone(), &n2), start)
        .await?;
    let events = take_events(&mut replay, 2).await?;
    assert!(
        events
            .iter()
            .all(|e| e.key.namespace.as_deref() == Some(n2.as_str()) && e.key.resource == r)
    );
    assert_quiet(&mut replay).await
}

/// Writers run while watchers start at different moments from the same revision: the hand-off
/// from history to live events must neither drop nor repeat anything.
pub async fn concurrent_watchers_see_everything_once_in_order(
    f: &dyn StoreFixture,
    tag: &str,
) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let scope = Scope::all(r.clone());
    let start = store.current_revision().await?;
    let mut early = vec![];
    for _ in 0..4 {
        early.push(store.watch(&scope, start).await?);
    }

    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    let mut writers = vec![];
    for w in 0..WRITERS {
        let store = store.clone();
        let r = r.clone();
        let ns = ns(tag, &format!("w{w}"));
        writers.push(tokio::spawn(async move {
            let mut revs = vec![];
            for i in 0..PER_WRITER {
                let k = key(&r, Some(&ns), &format!("o{}", i / 2));
                let o = if i % 2 == 0 {
                    store.create(&k, obj(&k.name, "0")).await?
                } else {
                    store.update(&k, obj(&k.name, "1"), &no_pre()).await?
                };
                revs.push(rv(&o));
            }
            anyhow::Ok(revs)
        }));
    }
    // Watchers that start while the writers run, from the same starting revision.
    let mut late = vec![];
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        late.push(store.watch(&scope, start).await?);
    }
    let mut written = BTreeSet::new();
    for w in writers {
        written.extend(w.await??);
    }
    assert_eq!(
        written.len(),
        WRITERS * PER_WRITER,
        "two writes share a revision"
    );
    let expected: Vec<Revision> = written.into_iter().collect();

    let mut sequences = vec![];
    for mut watch in early.into_iter().chain(late) {
        let events = take_events(&mut watch, expected.len()).await?;
        check_order(&events)?;
        let revs: Vec<Revision> = events.iter().map(|e| e.revision).collect();
        assert_eq!(revs, expected, "a watcher missed or repeated an event");
        assert_quiet(&mut watch).await?;
        sequences.push(summary(&events));
    }
    for s in &sequences[1..] {
        assert_eq!(s, &sequences[0]);
    }
    Ok(())
}

/// A watcher that does not read while thousands of writes happen still gets every event.
pub async fn slow_watcher_misses_nothing(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let scope = Scope::all(r.clone());
    let mut watch = store.watch(&scope, store.current_revision().await?).await?;
    let mut writers = vec![];
    for w in 0..32 {
        let store = store.clone();
        let k = key(&r, Some(&ns), &format!("o{w}"));
        writers.push(tokio::spawn(async move {
            let mut revs = vec![rv(&store.create(&k, obj(&k.name, "0")).await?)];
            for i in 1..100 {
                revs.push(rv(&store
                    .update(&k, obj(&k.name, &i.to_string()), &no_pre())
                    .await?));
            }
            anyhow::Ok(revs)
        }));
    }
    let mut expected = BTreeSet::new();
    for w in writers {
        expected.extend(w.await??);
    }
    let expected: Vec<Revision> = expected.into_iter().collect();
    let events = take_events(&mut watch, expected.len()).await?;
    check_order(&events)?;
    let revs: Vec<Revision> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revs, expected);
    assert_quiet(&mut watch).await
}

// ---------------------------------------------------------------------------------------------
// concurrency

pub async fn concurrent_increments_lose_nothing(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "counters");
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "counter");
    let created = store
        .create(&k, json!({"metadata": {"name": "counter"}, "count": 0}))
        .await?;
    let mut watch = store.watch(&k.scope(), rv(&created)).await?;

    const TASKS: u64 = 16;
    const INCREMENTS: u64 = 25;
    let mut tasks = vec![];
    for _ in 0..TASKS {
        let store = store.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            let mut revs = vec![];
            for _ in 0..INCREMENTS {
                loop {
                    let current = store.get(&k).await?;
                    let mut next = current.clone();
                    next["count"] = json!(current["count"].as_u64().unwrap_or(0) + 1);
                    match store.update(&k, next, &no_pre()).await {
                        Ok(v) => {
                            revs.push(rv(&v));
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
            }
            anyhow::Ok((revs, conflicts))
        }));
    }
    let mut revs = BTreeSet::new();
    let mut conflicts = 0;
    for t in tasks {
        let (r, c) = t.await??;
        revs.extend(r);
        conflicts += c;
    }
    let total = TASKS * INCREMENTS;
    let stored = store.get(&k).await?;
    assert_eq!(
        stored["count"],
        json!(total),
        "lost updates ({conflicts} conflicts retried)"
    );
    assert_eq!(revs.len() as u64, total);
    assert_eq!(revs.last().copied(), Some(rv(&stored)));

    // Every increment is one Modified event, in order: counts 1, 2, 3, ...
    let events = take_events(&mut watch, total as usize).await?;
    check_order(&events)?;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.kind, EventType::Modified);
        assert_eq!(
            e.object["count"],
            json!(i as u64 + 1),
            "event {i} at {}",
            e.revision
        );
    }
    assert_quiet(&mut watch).await?;

    // A helper with retries converges too.
    let v = update_with_retry(store.as_ref(), &k, |cur| {
        let mut next = cur.clone();
        next["count"] = json!(cur["count"].as_u64().unwrap_or(0) + 1);
        next
    })
    .await?;
    assert_eq!(v["count"], json!(total + 1));
    Ok(())
}

pub async fn concurrent_creates_lose_nothing(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    let mut tasks = vec![];
    for t in 0..TASKS {
        let store = store.clone();
        let r = r.clone();
        let ns = ns(tag, &format!("n{}", t % 4));
        tasks.push(tokio::spawn(async move {
            let mut made = vec![];
            for i in 0..PER_TASK {
                let name = format!("t{t}-o{i}");
                let o = store
                    .create(&key(&r, Some(&ns), &name), obj(&name, "x"))
                    .await?;
                made.push(o);
            }
            anyhow::Ok(made)
        }));
    }
    let mut made = vec![];
    for t in tasks {
        made.extend(t.await??);
    }
    let revs: BTreeSet<Revision> = made.iter().map(rv).collect();
    assert_eq!(revs.len(), TASKS * PER_TASK, "two creates share a revision");
    let uids: BTreeSet<String> = made.iter().map(uid).collect();
    assert_eq!(uids.len(), TASKS * PER_TASK, "two objects share a uid");
    let list = store.list(&Scope::all(r.clone())).await?;
    assert_eq!(list.items.len(), TASKS * PER_TASK);
    let listed: BTreeSet<Revision> = list.items.iter().map(rv).collect();
    assert_eq!(listed, revs);

    // Racing creates of one key: exactly one wins.
    let k = key(&r, Some(&ns(tag, "race")), "contested");
    let mut racers = vec![];
    for i in 0..16 {
        let store = store.clone();
        let k = k.clone();
        racers.push(tokio::spawn(async move {
            store.create(&k, obj("contested", &i.to_string())).await
        }));
    }
    let mut won = vec![];
    for racer in racers {
        match racer.await? {
            Ok(v) => won.push(v),
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => bail!("racing create: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "racing creates: {} won", won.len());
    assert_eq!(store.get(&k).await?, won[0]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// durability and compaction

pub async fn restart_durability(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let (ka, kb) = (key(&r, Some(&ns), "a"), key(&r, Some(&ns), "b"));
    let (before, a1, a2, b, bd);
    {
        let store = f.open().await?;
        before = store.current_revision().await?;
        a1 = store.create(&ka, obj("a", "1")).await?;
        b = store.create(&kb, obj("b", "1")).await?;
        a2 = store.update(&ka, edit(&a1, "2"), &no_pre()).await?;
        bd = store.delete(&kb, &no_pre()).await?;
    }
    // Give a backend that closes asynchronously a moment; the data must not depend on it.
    tokio::task::yield_now().await;
    let store = f.open().await?;
    assert_eq!(store.get(&ka).await?, a2);
    assert!(is_not_found(&store.get(&kb).await));
    let last = rv(&bd);
    assert!(store.current_revision().await? >= last);
    let list = store.list(&scope).await?;
    assert_eq!(list.items, vec![a2.clone()]);
    assert!(list.revision >= last);

    // History survived the restart.
    let mut watch = store.watch(&scope, before).await?;
    let events = take_events(&mut watch, 4).await?;
    check_order(&events)?;
    assert_eq!(
        summary(&events),
        vec![
            (EventType::Added, "a".into(), rv(&a1)),
            (EventType::Added, "b".into(), rv(&b)),
            (EventType::Modified, "a".into(), rv(&a2)),
            (EventType::Deleted, "b".into(), rv(&bd)),
        ]
    );
    assert_eq!(*events[3].object, bd);

    // Revisions keep increasing after the restart; the optimistic concurrency still holds.
    assert!(is_conflict(
        &store.update(&ka, edit(&a1, "stale"), &no_pre()).await
    ));
    let a3 = store.update(&ka, edit(&a2, "3"), &no_pre()).await?;
    assert!(rv(&a3) > last);
    let e = next_event(&mut watch).await?;
    assert_eq!((e.kind, e.revision), (EventType::Modified, rv(&a3)));
    drop(watch);
    drop(store);

    // And once more.
    let store = f.open().await?;
    assert_eq!(store.get(&ka).await?, a3);
    let c = store.create(&kb, obj("b", "again")).await?;
    assert!(rv(&c) > rv(&a3));
    assert_ne!(uid(&c), uid(&b));
    Ok(())
}

pub async fn compaction(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let ns = ns(tag, "a");
    let scope = Scope::namespace(r.clone(), &ns);
    let (ka, kb, kc) = (
        key(&r, Some(&ns), "a"),
        key(&r, Some(&ns), "b"),
        key(&r, Some(&ns), "c"),
    );
    let a1 = store.create(&ka, obj("a", "1")).await?;
    let c = store.create(&kc, obj("c", "1")).await?;
    let a2 = store.update(&ka, edit(&a1, "2"), &no_pre()).await?;
    let a3 = store.update(&ka, edit(&a2, "3"), &no_pre()).await?;
    let cd = store.delete(&kc, &no_pre()).await?;
    let a4 = store.update(&ka, edit(&a3, "4"), &no_pre()).await?;
    let b = store.create(&kb, obj("b", "1")).await?;
    assert!(rv(&c) < rv(&cd));

    // A watcher started before compaction that has already caught up keeps working.
    let mut running = store.watch(&scope, rv(&b)).await?;
    assert_quiet(&mut running).await?;

    let target = rv(&a3);
    store.compact(target).await?;
    let compacted = store.compacted_revision().await?;
    assert!(
        compacted >= target,
        "compacted to {compacted}, asked for {target}"
    );
    assert!(compacted <= rv(&b));

    // Older than the compacted history: Expired, naming both revisions.
    for after in [rv(&a1) - 1, rv(&a1), rv(&a2), target - 1] {
        match store.watch(&scope, after).await {
            Err(StoreError::Expired {
                requested,
                compacted: c,
            }) => {
                assert_eq!(requested, after);
                assert!(c >= target);
            }
            Err(e) => bail!("watch from {after} after compaction to {target}: {e}"),
            Ok(_) => bail!("watch from {after} after compaction to {target} succeeded"),
        }
    }
    // From the compacted revision on: works.
    let mut watch = store.watch(&scope, target).await?;
    let events = take_events(&mut watch, 3).await?;
    check_order(&events)?;
    assert_eq!(
        summary(&events),
        vec![
            (EventType::Deleted, "c".into(), rv(&cd)),
            (EventType::Modified, "a".into(), rv(&a4)),
            (EventType::Added, "b".into(), rv(&b)),
        ]
    );
    assert_quiet(&mut watch).await?;

    // Current objects are untouched, including ones last written before the compaction point.
    assert_eq!(store.get(&ka).await?, a4);
    assert_eq!(store.get(&kb).await?, b);
    let kd = key(&r, Some(&ns), "d");
    let d = store.create(&kd, obj("d", "old")).await?;
    store.compact(rv(&d)).await?;
    assert_eq!(store.get(&kd).await?, d);
    assert_eq!(
        store.list(&scope).await?.items,
        vec![a4.clone(), b.clone(), d.clone()]
    );
    let d2 = store.update(&kd, edit(&d, "new"), &no_pre()).await?;
    assert!(rv(&d2) > rv(&d));
    assert!(is_conflict(
        &store.update(&kd, edit(&d, "stale"), &no_pre()).await
    ));

    // Live watchers keep going across compactions.
    let events = take_events(&mut running, 2).await?;
    assert_eq!(
        summary(&events),
        vec![
            (EventType::Added, "d".into(), rv(&d)),
            (EventType::Modified, "d".into(), rv(&d2))
        ]
    );
    // A watch from the newest compaction point sees only the later write.
    let mut fresh = store.watch(&scope, rv(&d)).await?;
    let e = next_event(&mut fresh).await?;
    assert_eq!((e.kind, e.revision), (EventType::Modified, rv(&d2)));

    // Compacting to an older revision does not roll anything back; the compactor's helper is
    // a no-op when history is already compacted that far.
    compactor::compact_once(store.as_ref(), target).await?;
    assert!(store.compacted_revision().await? >= rv(&d));
    assert!(is_expired(&store.watch(&scope, rv(&d) - 1).await));

    // The compacted revision survives a restart.
    drop((watch, fresh, running));
    drop(store);
    let store = f.open().await?;
    assert!(store.compacted_revision().await? >= rv(&d));
    assert!(is_expired(&store.watch(&scope, target).await));
    assert_eq!(store.get(&kd).await?, d2);
    Ok(())
}

pub async fn compactor_runs_on_a_schedule(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = resource(tag, "widgets");
    let k = key(&r, Some(&ns(tag, "a")), "a");
    let created = store.create(&k, obj("a", "1")).await?;
    let handle = compactor::spawn_compactor(store.clone(), Duration::from_millis(50));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let compacted = loop {
        let c = store.compacted_revision().await?;
        if c >= rv(&created) {
            break c;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the compactor did not compact within 10s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    handle.abort();
    assert!(compacted <= store.current_revision().await?);
    assert!(is_expired(&store.watch(&k.scope(), rv(&created) - 1).await));
    assert_eq!(store.get(&k).await?, created);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// encryption at rest

/// `list_raw` gives the same objects as `list` (decrypted, without resourceVersion, which is
/// carried beside each one), assuming nothing was written in between.
async fn raw_list_matches(store: &dyn Store, scope: &Scope, list: &ListResult) -> Result<()> {
    let raw = store.list_raw(scope).await?;
    assert_eq!(raw.revision, list.revision, "raw list at another revision");
    let decoded: Vec<Value> = raw
        .items
        .iter()
        .map(|item| {
            let mut object: Value = serde_json::from_slice(&item.json)?;
            assert!(
                object["metadata"].get("resourceVersion").is_none(),
                "raw JSON carries a resourceVersion"
            );
            object["metadata"]["resourceVersion"] = json!(item.revision.to_string());
            Ok(object)
        })
        .collect::<Result<_>>()?;
    assert_eq!(decoded, list.items, "list_raw differs from list");
    Ok(())
}

pub async fn secret_round_trip(f: &dyn StoreFixture, tag: &str) -> Result<()> {
    let store = f.open().await?;
    let r = ResourceName::new("secrets")?;
    let ns = ns(tag, "a");
    let k = key(&r, Some(&ns), "creds");
    let mut watch = store
        .watch(&k.scope(), store.current_revision().await?)
        .await?;
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
        "stringData": {"token": format!("token-{tag}")},
    });
    let created = store.create(&k, secret).await?;
    assert_eq!(created["data"]["password"], "aHVudGVyMg==");
    assert_eq!(store.get(&k).await?, created);
    let list = store.list(&k.scope()).await?;
    assert_eq!(list.items, vec![created.clone()]);
    raw_list_matches(store.as_ref(), &k.scope(), &list).await?;
    let mut next = created.clone();
    next["data"]["password"] = json!("c3dvcmRmaXNo");
    let updated = store.update(&k, next, &no_pre()).await?;
    assert_eq!(store.get(&k).await?["data"]["password"], "c3dvcmRmaXNo");
    let events = take_events(&mut watch, 2).await?;
    assert_eq!(*events[0].object, created);
    assert_eq!(*events[1].object, updated);
    drop(store);
    let store: Arc<dyn Store> = f.open().await?;
    assert_eq!(store.get(&k).await?, updated);
    Ok(())
}
