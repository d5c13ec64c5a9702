//! The etcd backend: the shared battery against a real etcd, plus what only etcd has —
//! several API servers (processes) sharing one cluster, and etcd going away.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use serde_json::{Value, json};
use skiff_apiserver::storage::{
    Codec, EtcdOptions, EtcdStore, EventType, ObjectKey, Preconditions, ResourceName, Scope, Store,
    StoreError, WatchEvent, WatchStream,
};
use skiff_tests::{EtcdFixture, EtcdServer};

// Every battery test gets an etcd of its own: the compaction tests compact the whole cluster.
super::battery::store_battery!(EtcdFixture::start()?);

const TIMEOUT: Duration = Duration::from_secs(20);

fn key(resource: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
    ObjectKey::new(ResourceName::new(resource).unwrap(), namespace, name)
}

fn obj(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"value": value}})
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn next_event(watch: &mut WatchStream) -> Result<WatchEvent> {
    match tokio::time::timeout(TIMEOUT, watch.next()).await {
        Err(_) => bail!("no watch event within {TIMEOUT:?}"),
        Ok(None) => bail!("the watch ended"),
        Ok(Some(e)) => Ok(e?),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_see_each_others_writes_and_watches() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let (a, b) = (fixture.connect().await?, fixture.connect().await?);
    let scope = Scope::namespace(ResourceName::new("configmaps")?, "default");
    let start = a.current_revision().await?;
    let mut watch_a = a.watch(&scope, start).await?;
    let mut watch_b = b.watch(&scope, start).await?;

    let k1 = key("configmaps", Some("default"), "one");
    let created = a.create(&k1, obj("one", "1")).await?;
    assert_eq!(b.get(&k1).await?, created, "b does not see a's create");
    let updated = b
        .update(&k1, obj("one", "2"), &Preconditions::default())
        .await?;
    assert_eq!(a.get(&k1).await?, updated, "a does not see b's update");
    // a's view is stale now: optimistic concurrency holds across servers.
    let stale = a
        .update(&k1, created.clone(), &Preconditions::default())
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let deleted = a.delete(&k1, &Preconditions::default()).await?;

    for watch in [&mut watch_a, &mut watch_b] {
        let mut got = vec![];
        for _ in 0..3 {
            let e = next_event(watch).await?;
            got.push((e.kind, e.revision));
        }
        assert_eq!(
            got,
            vec![
                (EventType::Added, rv(&created)),
                (EventType::Modified, rv(&updated)),
                (EventType::Deleted, rv(&deleted)),
            ]
        );
    }
    assert_eq!(a.list(&scope).await?.items, Vec::<Value>::new());
    assert_eq!(b.list(&scope).await?.items, Vec::<Value>::new());
    Ok(())
}

/// The env var that turns `child_process_role` from a no-op into the other API server.
const CHILD_ENV: &str = "SKIFF_ETCD_TEST_CHILD";

/// Run by `another_process_sees_writes_and_its_writes_are_watched` as a separate process
/// (this test binary re-executed); a no-op in a normal test run.
#[tokio::test]
async fn child_process_role() -> Result<()> {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return Ok(());
    };
    let (endpoint, prefix) = spec.split_once('|').context("bad child spec")?;
    let store = EtcdStore::connect(&[endpoint.to_owned()], prefix, EtcdFixture::codec()?).await?;
    // The parent's write is visible here...
    let parent = store
        .get(&key("configmaps", Some("default"), "from-parent"))
        .await?;
    ensure!(
        parent["data"]["value"] == "hello",
        "unexpected parent object {parent}"
    );
    // ...and the parent watches ours.
    let k = key("configmaps", Some("default"), "from-child");
    let created = store.create(&k, obj("from-child", "1")).await?;
    store
        .update(&k, obj("from-child", "2"), &Preconditions::default())
        .await?;
    ensure!(rv(&created) > rv(&parent));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_writes_and_its_writes_are_watched() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let store = fixture.connect().await?;
    let parent = store
        .create(
            &key("configmaps", Some("default"), "from-parent"),
            obj("from-parent", "hello"),
        )
        .await?;
    let mut watch = store
        .watch(
            &Scope::namespace(ResourceName::new("configmaps")?, "default"),
            rv(&parent),
        )
        .await?;

    let exe = std::env::current_exe()?;
    let output = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "storage::etcd::child_process_role",
            "--test-threads",
            "1",
            "--nocapture",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{}", fixture.endpoints[0], fixture.prefix),
        )
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output).await??;
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(output.status.success(), "the child process failed:\n{log}");
    ensure!(
        log.contains("1 passed"),
        "the child did not run its role:\n{log}"
    );

    let added = next_event(&mut watch).await?;
    let modified = next_event(&mut watch).await?;
    assert_eq!(
        (added.kind, added.key.name.as_str()),
        (EventType::Added, "from-child")
    );
    assert_eq!(
        (modified.kind, modified.object["data"]["value"].as_str()),
        (EventType::Modified, Some("2"))
    );
    assert!(modified.revision > added.revision && added.revision > rv(&parent));
    Ok(())
}

#[tokio::test]
async fn keys_live_under_the_prefix_and_secrets_are_sealed_in_etcd() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let store = fixture.connect().await?;
    let mut raw = store.client();
    let p = &fixture.prefix;

    let cm = store
        .create(&key("configmaps", Some("ns1"), "c"), obj("c", "plain"))
        .await?;
    store
        .create(&key("namespaces", None, "ns1"), json!({"metadata": {}}))
        .await?;
    let secret =
        json!({"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}});
    store
        .create(&key("secrets", Some("ns1"), "s"), secret)
        .await?;

    let got = raw.get(format!("{p}/configmaps/ns1/c"), None).await?;
    let kv = &got.kvs()[0];
    assert_eq!(kv.mod_revision() as u64, rv(&cm));
    let stored: Value = serde_json::from_slice(kv.value())?;
    assert_eq!(stored["data"]["value"], "plain");
    assert!(
        stored["metadata"].get("resourceVersion").is_none(),
        "resourceVersion was stored: {stored}"
    );
    assert_eq!(
        raw.get(format!("{p}/namespaces/ns1"), None)
            .await?
            .kvs()
            .len(),
        1
    );
    let sealed = raw.get(format!("{p}/secrets/ns1/s"), None).await?;
    let bytes = sealed.kvs()[0].value();
    assert!(
        bytes.starts_with(b"k8s:enc:aesgcm:v1:"),
        "{}",
        String::from_utf8_lossy(bytes)
    );
    assert!(!String::from_utf8_lossy(bytes).contains("aHVudGVyMg"));

    // A value written by another etcd client is read like ours (resourceVersion from etcd).
    let put = raw
        .put(
            format!("{p}/configmaps/ns1/raw"),
            serde_json::to_vec(&obj("raw", "r"))?,
            None,
        )
        .await?;
    let rawobj = store.get(&key("configmaps", Some("ns1"), "raw")).await?;
    assert_eq!(rv(&rawobj), put.header().unwrap().revision() as u64);
    Ok(())
}

#[tokio::test]
async fn scopes_are_prefix_safe_and_lists_sort_by_namespace_then_name() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let store = fixture.connect().await?;
    // `pods` must not match `podsx`, nor namespace `a` match `ab`; and etcd's byte order
    // ("a-b/" < "a/") is not the contract's (namespace, name) order.
    for (res, ns, name) in [
        ("pods", "a-b", "x"),
        ("pods", "a", "z"),
        ("pods", "a", "y"),
        ("pods", "ab", "x"),
        ("podsx", "a", "x"),
        ("pods.apps", "a", "x"),
    ] {
        store
            .create(&key(res, Some(ns), name), obj(name, res))
            .await?;
    }
    let pods = ResourceName::new("pods")?;
    let names = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let all = store.list(&Scope::all(pods.clone())).await?;
    assert_eq!(names(&all.items), ["a/y", "a/z", "a-b/x", "ab/x"]);
    let in_a = store.list(&Scope::namespace(pods.clone(), "a")).await?;
    assert_eq!(names(&in_a.items), ["a/y", "a/z"]);

    // Names that cannot be one key segment are refused, not stored somewhere surprising.
    for bad in ["x/y", "..", ""] {
        let r = store
            .create(&key("pods", Some("a"), bad), json!({"metadata": {}}))
            .await;
        assert!(
            matches!(r, Err(StoreError::Invalid(_))),
            "name {bad:?}: {r:?}"
        );
    }
    let r = store
        .create(&key("pods", Some("a/b"), "x"), json!({"metadata": {}}))
        .await;
    assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    Ok(())
}

#[tokio::test]
async fn unreachable_etcd_fails_fast_with_a_clear_error() -> Result<()> {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let options = EtcdOptions {
        connect_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let result = EtcdStore::connect_with(
        std::slice::from_ref(&endpoint),
        "/registry",
        Codec::new(None),
        options,
    )
    .await;
    let elapsed = started.elapsed();
    let err = result.err().context("connect to a closed port succeeded")?;
    let text = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(
        text.contains(&endpoint),
        "the error does not name the endpoint: {text}"
    );
    assert!(
        text.contains("etcd://HOST:PORT"),
        "the error does not say what to do: {text}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "connect took {elapsed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_etcd_ends_watches_with_an_error_and_calls_fail() -> Result<()> {
    let mut server = EtcdServer::start()?;
    let options = EtcdOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        ..EtcdOptions::default()
    };
    let store =
        EtcdStore::connect_with(&[server.endpoint()], "/registry", Codec::new(None), options)
            .await?;
    let k = key("configmaps", Some("default"), "a");
    let created = store.create(&k, obj("a", "1")).await?;
    let scope = k.scope();
    let mut watch = store.watch(&scope, rv(&created)).await?;
    let mut idle = store
        .watch(&Scope::all(ResourceName::new("nothing")?), rv(&created))
        .await?;
    store
        .update(&k, obj("a", "2"), &Preconditions::default())
        .await?;
    assert_eq!(next_event(&mut watch).await?.kind, EventType::Modified);

    server.kill()?;
    for w in [&mut watch, &mut idle] {
        match tokio::time::timeout(TIMEOUT, w.next()).await {
            Err(_) => bail!("the watch hung after etcd died"),
            Ok(None) => bail!("the watch ended without an error"),
            Ok(Some(Ok(e))) => bail!("an event after etcd died: {e:?}"),
            Ok(Some(Err(StoreError::Backend(msg)))) => {
                assert!(msg.contains(&server.endpoint()), "{msg}");
            }
            Ok(Some(Err(e))) => bail!("unexpected error kind: {e:?}"),
        }
        assert!(
            w.next().await.is_none(),
            "the stream goes on after its error"
        );
    }
    let started = Instant::now();
    let r = store.get(&k).await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a call took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_seen_by_every_server() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let (a, b) = (fixture.connect().await?, fixture.connect().await?);
    let k = key("configmaps", Some("default"), "a");
    let v1 = a.create(&k, obj("a", "1")).await?;
    let v2 = a
        .update(&k, obj("a", "2"), &Preconditions::default())
        .await?;
    assert_eq!(b.compacted_revision().await?, 0);
    a.compact(rv(&v2)).await?;
    assert_eq!(b.compacted_revision().await?, rv(&v2));
    assert!(matches!(
        b.watch(&k.scope(), rv(&v1)).await,
        Err(StoreError::Expired { .. })
    ));
    // Compacting again (from the other server, or to an older revision) is harmless.
    b.compact(rv(&v1)).await?;
    b.compact(rv(&v2)).await?;
    assert_eq!(a.compacted_revision().await?, rv(&v2));
    // Compacting to a future revision is refused.
    let future = a.current_revision().await? + 1000;
    assert!(matches!(
        a.compact(future).await,
        Err(StoreError::Invalid(_))
    ));
    Ok(())
}

/// Every watch is its own etcd watch stream on one connection: check that many of them still
/// get a write promptly. (Timing goals live in benchmarks; this only reports the figure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_all_get_each_write() -> Result<()> {
    const WATCHERS: usize = 200;
    let fixture = EtcdFixture::start()?;
    let store: Arc<dyn Store> = Arc::new(fixture.connect().await?);
    let scope = Scope::namespace(ResourceName::new("configmaps")?, "many");
    let start = store.current_revision().await?;
    let mut watches = Vec::with_capacity(WATCHERS);
    let opened = Instant::now();
    for _ in 0..WATCHERS {
        watches.push(store.watch(&scope, start).await?);
    }
    let open_time = opened.elapsed();
    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let name = format!("o{round}");
        let written = Instant::now();
        let o = store
            .create(&key("configmaps", Some("many"), &name), obj(&name, "x"))
            .await?;
        let waits = watches.iter_mut().map(|w| async move {
            let e = next_event(w).await?;
            anyhow::Ok((e.revision, Instant::now()))
        });
        for (revision, at) in futures::future::try_join_all(waits).await? {
            assert_eq!(revision, rv(&o));
            worst = worst.max(at - written);
        }
    }
    eprintln!(
        "{WATCHERS} etcd watches opened in {open_time:?}; slowest delivery of a write to all: {worst:?}"
    );
    Ok(())
}

/// The request timeout bounds calls, never a watch that is simply quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_watches_outlive_the_request_timeout() -> Result<()> {
    // Its own etcd, so that its data dir goes with it when the test ends.
    let server = Arc::new(EtcdServer::start()?);
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let prefix = EtcdFixture::on(server.clone()).prefix;
    let store =
        EtcdStore::connect_with(&[server.endpoint()], &prefix, Codec::new(None), options).await?;
    let k = key("configmaps", Some("quiet"), "a");
    let mut watch = store
        .watch(&k.scope(), store.current_revision().await?)
        .await?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let created = store.create(&k, obj("a", "1")).await?;
    let e = next_event(&mut watch).await?;
    assert_eq!((e.kind, e.revision), (EventType::Added, rv(&created)));
    Ok(())
}

/// A watcher replaying history of large objects gets responses far above the gRPC client's
/// 4 MB default (etcd batches up to 1000 revisions, each with its previous value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_history_of_large_objects_works() -> Result<()> {
    let fixture = EtcdFixture::start()?;
    let store: Arc<dyn Store> = Arc::new(fixture.connect().await?);
    let scope = Scope::namespace(ResourceName::new("configmaps")?, "large");
    let k = key("configmaps", Some("large"), "big");
    let start = store.current_revision().await?;
    let value = "x".repeat(10 * 1024);
    let mut object = store.create(&k, obj("big", &value)).await?;
    let updates = 800;
    for _ in 0..updates {
        object = store.update(&k, object, &Preconditions::default()).await?;
    }
    let mut watch = store.watch(&scope, start).await?;
    let mut previous = start;
    for i in 0..=updates {
        let event = next_event(&mut watch)
            .await
            .with_context(|| format!("event {i}"))?;
        ensure!(event.revision > previous, "event {i} out of order");
        ensure!(event.object["data"]["value"].as_str().map(str::len) == Some(value.len()));
        previous = event.revision;
    }
    Ok(())
}
