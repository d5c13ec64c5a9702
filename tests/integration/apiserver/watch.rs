//! Watch: synthetic ADDED from RV 0, resume from a list RV, 410 as an ERROR event, single-object
//! watches, bookmarks and timeoutSeconds.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use super::TestServer;

fn config_map(name: &str, value: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": value},
    }))?)
}

fn describe(ev: &WatchEvent<ConfigMap>) -> String {
    match ev {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => {
            format!("MODIFIED {}", o.metadata.name.clone().unwrap_or_default())
        }
        WatchEvent::Deleted(o) => {
            format!("DELETED {}", o.metadata.name.clone().unwrap_or_default())
        }
        WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

async fn next<S>(stream: &mut S) -> anyhow::Result<String>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await??
            .ok_or_else(|| anyhow::anyhow!("watch ended"))?;
        let text = describe(&ev);
        if !text.starts_with("BOOKMARK") {
            return Ok(text);
        }
    }
}

#[tokio::test]
async fn watch_semantics() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &config_map("a", "1")?)
        .await?;
    cms.create(&PostParams::default(), &config_map("b", "1")?)
        .await?;

    // RV 0: synthetic ADDED for what exists, then live changes.
    let mut from_zero = cms
        .watch(&WatchParams::default().timeout(30), "0")
        .await?
        .boxed();
    assert_eq!(next(&mut from_zero).await?, "ADDED a");
    assert_eq!(next(&mut from_zero).await?, "ADDED b");

    // From a list's RV: only later changes.
    let list = cms.list(&ListParams::default()).await?;
    let rv = list.metadata.resource_version.clone().unwrap_or_default();
    let mut from_list = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await?
        .boxed();
    // A single-object watch, as kubectl delete/wait does.
    let mut only_b = cms
        .watch(
            &WatchParams::default().fields("metadata.name=b").timeout(30),
            &rv,
        )
        .await?
        .boxed();
    cms.create(&PostParams::default(), &config_map("c", "1")?)
        .await?;
    let mut b = cms.get("b").await?;
    b.data = Some([("k".to_owned(), "2".to_owned())].into());
    cms.replace("b", &PostParams::default(), &b).await?;
    assert_eq!(next(&mut from_list).await?, "ADDED c");
    assert_eq!(next(&mut from_list).await?, "MODIFIED b");
    assert_eq!(next(&mut from_zero).await?, "ADDED c");
    assert_eq!(next(&mut only_b).await?, "MODIFIED b");
    cms.delete("b", &Default::default()).await?;
    assert_eq!(next(&mut only_b).await?, "DELETED b");

    // Single-object watch from RV 0 starts with the object itself.
    let mut only_a = cms
        .watch(
            &WatchParams::default().fields("metadata.name=a").timeout(30),
            "0",
        )
        .await?
        .boxed();
    assert_eq!(next(&mut only_a).await?, "ADDED a");

    // Bookmarks (the test server sends one every 300 ms).
    let mut bookmarks = cms
        .watch(&WatchParams::default().timeout(30), &rv)
        .await?
        .boxed();
    let mut saw_bookmark = false;
    for _ in 0..10 {
        let ev = tokio::time::timeout(Duration::from_secs(5), bookmarks.try_next()).await??;
        if let Some(WatchEvent::Bookmark(b)) = ev {
            assert!(b.metadata.resource_version.parse::<u64>().is_ok());
            saw_bookmark = true;
            break;
        }
    }
    assert!(saw_bookmark);

    // timeoutSeconds ends the stream.
    let started = std::time::Instant::now();
    let mut short = cms
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await?
        .boxed();
    let mut count = 0;
    while tokio::time::timeout(Duration::from_secs(10), short.next())
        .await?
        .is_some()
    {
        count += 1;
    }
    assert!(count >= 1, "the changes after rv");
    assert!(started.elapsed() < Duration::from_secs(5));

    // After compaction, an old RV gets a 410 Expired ERROR event.
    let current = ts.store.current_revision().await?;
    ts.store.compact(current).await?;
    let mut expired = cms.watch(&WatchParams::default(), "1").await?.boxed();
    let ev = tokio::time::timeout(Duration::from_secs(10), expired.try_next()).await??;
    match ev {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => anyhow::bail!("expected a 410 ERROR event, got {other:?}"),
    }
    ts.stop().await;
    Ok(())
}

/// An object labelled into a selector arrives as ADDED, one labelled out of it as DELETED, and
/// changes outside the selector are not sent — both live and replayed from history.
#[tokio::test]
async fn label_selector_watch_sees_objects_enter_and_leave() -> anyhow::Result<()> {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await?, "default");
    let start = cms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let params = WatchParams::default().labels("app=web");
    let mut live = cms.watch(&params, &start).await?.boxed();

    let label = |value: Option<&str>| json!({"metadata": {"labels": {"app": value}}});
    let pp = PatchParams::default();
    cms.create(&PostParams::default(), &config_map("x", "1")?)
        .await?;
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "2"}})))
        .await?;
    cms.patch("x", &pp, &Patch::Merge(label(Some("web"))))
        .await?;
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "3"}})))
        .await?;
    cms.patch("x", &pp, &Patch::Merge(label(Some("db"))))
        .await?;
    cms.patch("x", &pp, &Patch::Merge(json!({"data": {"k": "4"}})))
        .await?;
    cms.delete("x", &DeleteParams::default()).await?;
    // A marker that matches, so the test knows nothing else is coming.
    let mut marker = config_map("marker", "1")?;
    marker.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    cms.create(&PostParams::default(), &marker).await?;

    let expected = ["ADDED x", "MODIFIED x", "DELETED x", "ADDED marker"];
    let mut seen = Vec::new();
    for _ in expected {
        seen.push(next(&mut live).await?);
    }
    assert_eq!(seen, expected);
    let mut replay = cms.watch(&params, &start).await?.boxed();
    let mut replayed = Vec::new();
    for _ in expected {
        replayed.push(next(&mut replay).await?);
    }
    assert_eq!(replayed, expected);
    ts.stop().await;
    Ok(())
}
