//! The storage battery against the SQLite backend, and SQLite-only tests: refusing a newer
//! schema without touching the file, and no Secret plaintext in the database files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;
use skiff_apiserver::storage::{
    Codec, EncryptionKey, ObjectKey, ResourceName, SqliteStore, Store, StoreError,
};
use skiff_tests::StoreFixture;

use super::battery::store_battery;

/// The next watch item, or a failure instead of a hang if a regression stops delivery.
async fn next_within(
    watch: &mut skiff_apiserver::storage::WatchStream,
) -> Option<skiff_apiserver::storage::Result<skiff_apiserver::storage::WatchEvent>> {
    use futures::StreamExt as _;
    tokio::time::timeout(std::time::Duration::from_secs(60), watch.next())
        .await
        .expect("no watch event within 60 s")
}

/// A SQLite store in a temporary directory, with a fixed encryption key.
pub struct SqliteFixture {
    dir: tempfile::TempDir,
    key: [u8; 32],
}

impl SqliteFixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        Self { dir, key }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("data").join("skiff.db")
    }

    pub fn codec(&self) -> Codec {
        Codec::new(Some(EncryptionKey::from_bytes(&self.key).unwrap()))
    }

    pub fn open_sqlite(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.path(), self.codec())
    }
}

#[async_trait::async_trait]
impl StoreFixture for SqliteFixture {
    async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(Arc::new(self.open_sqlite()?))
    }
}

store_battery!(SqliteFixture::new());

/// Every file SQLite keeps for the database: the file itself, its WAL and shared memory.
fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        files.push(PathBuf::from(p));
    }
    files
}

fn snapshot(path: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    database_files(path)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).ok();
            (p, bytes)
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn newer_schema_is_refused_and_the_file_left_identical() -> Result<()> {
    let fixture = SqliteFixture::new();
    let path = fixture.path();
    let k = ObjectKey::new(ResourceName::new("configmaps")?, Some("default"), "keep");
    {
        let store = fixture.open_sqlite()?;
        store
            .create(&k, json!({"metadata": {}, "data": {"a": "b"}}))
            .await?;
    }
    let newer = skiff_apiserver::storage::sqlite::schema::latest_version() + 1;
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'from the future', 'x')",
            [newer],
        )?;
        // Leave the database in rollback-journal mode, so that switching to WAL would be a change.
        let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        assert_eq!(mode, "delete");
    }
    let before = snapshot(&path);
    assert!(before[0].1.is_some());

    let err = fixture.open_sqlite().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    assert!(
        msg.contains(&path.display().to_string()),
        "the message names the file: {msg}"
    );
    assert!(
        msg.contains(&newer.to_string()),
        "the message names the file's version: {msg}"
    );
    assert!(
        msg.contains(&(newer - 1).to_string()),
        "the message names this build's version: {msg}"
    );
    assert!(
        msg.contains("upgrade") && msg.contains("backup"),
        "the message says what to do: {msg}"
    );

    assert_eq!(
        snapshot(&path),
        before,
        "refusing the database changed its files"
    );
    // And again: still refused, still identical.
    assert!(fixture.open_sqlite().is_err());
    assert_eq!(snapshot(&path), before);
    Ok(())
}

#[tokio::test]
async fn a_file_that_is_not_a_skiff_store_is_refused() -> Result<()> {
    let fixture = SqliteFixture::new();
    let path = fixture.path();
    std::fs::create_dir_all(path.parent().unwrap())?;
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch("CREATE TABLE other (x INTEGER)")?;
    }
    let before = snapshot(&path);
    let err = fixture.open_sqlite().unwrap_err();
    assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    assert_eq!(snapshot(&path), before);

    std::fs::write(
        &path,
        b"this is not a database at all, just some text that is long enough",
    )?;
    let before = snapshot(&path);
    let err = fixture.open_sqlite().unwrap_err();
    assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    assert_eq!(snapshot(&path), before);
    Ok(())
}

#[tokio::test]
async fn opening_creates_parents_and_records_the_schema_version() -> Result<()> {
    let fixture = SqliteFixture::new();
    let store = fixture.open_sqlite()?;
    assert!(store.path().exists());
    let conn = rusqlite::Connection::open(fixture.path())?;
    let version: u32 =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    assert_eq!(
        version,
        skiff_apiserver::storage::sqlite::schema::latest_version()
    );
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    assert_eq!(mode, "wal");
    Ok(())
}

#[tokio::test]
async fn secret_values_never_reach_the_disk_in_plaintext() -> Result<()> {
    let fixture = SqliteFixture::new();
    let path = fixture.path();
    let plaintext = "correct-horse-battery-staple-4f1c9a";
    let in_base64 = "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZS00ZjFjOWE=";
    let k = ObjectKey::new(ResourceName::new("secrets")?, Some("default"), "creds");
    let store = fixture.open_sqlite()?;
    let created = store
        .create(
            &k,
            json!({
                "kind": "Secret",
                "metadata": {"name": "creds", "annotations": {"note": plaintext}},
                "data": {"password": in_base64},
                "stringData": {"plain": plaintext},
            }),
        )
        .await?;
    let mut next = created.clone();
    next["data"]["other"] = json!(in_base64);
    store.update(&k, next, &Default::default()).await?;
    // A ConfigMap with the same marker is stored in clear: the grep itself works.
    let cm = ObjectKey::new(ResourceName::new("configmaps")?, Some("default"), "visible");
    store
        .create(
            &cm,
            json!({"metadata": {}, "data": {"marker": "visible-marker-93b2"}}),
        )
        .await?;

    let check = |when: &str| {
        let mut seen_marker = false;
        for (file, bytes) in snapshot(&path) {
            let Some(bytes) = bytes else { continue };
            for needle in [plaintext, in_base64, "password"] {
                assert!(
                    !contains(&bytes, needle.as_bytes()),
                    "{when}: {} contains the secret {needle:?}",
                    file.display()
                );
            }
            seen_marker |= contains(&bytes, b"visible-marker-93b2");
        }
        assert!(
            seen_marker,
            "{when}: the ConfigMap marker is not on disk: the check reads the wrong files"
        );
    };
    // While open (data in the WAL) ...
    check("while open");
    assert_eq!(store.get(&k).await?["data"]["password"], in_base64);
    // ... and after closing (WAL checkpointed into the database file).
    drop(store);
    check("after close");

    // Without the key the Secret cannot be read, with a clear error.
    let keyless = SqliteStore::open(&path, Codec::new(None))?;
    let err = keyless.get(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto(_)), "{err:?}");
    assert!(keyless.get(&cm).await.is_ok());
    Ok(())
}

#[tokio::test]
async fn compacting_to_a_future_revision_is_invalid() -> Result<()> {
    let fixture = SqliteFixture::new();
    let store = fixture.open_sqlite()?;
    let now = store.current_revision().await?;
    assert!(matches!(
        store.compact(now + 10).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.compacted_revision().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_whose_history_was_compacted_ends_with_expired() -> Result<()> {
    let fixture = SqliteFixture::new();
    let store = Arc::new(fixture.open_sqlite()?);
    let r = ResourceName::new("configmaps")?;
    let first = ObjectKey::new(r.clone(), Some("default"), "first");
    store.create(&first, json!({"metadata": {}})).await?;
    let mut watch = store
        .watch(&skiff_apiserver::storage::Scope::all(r.clone()), 0)
        .await?;
    // The watcher has caught up and follows live events ...
    assert!(matches!(next_within(&mut watch).await, Some(Ok(_))));
    // ... then stops reading while far more commits than the broadcast buffer holds happen
    // (one write per commit), and the history it would need is compacted.
    let mut last = 0;
    for i in 0..1500 {
        let k = ObjectKey::new(r.clone(), Some("default"), &format!("o{i}"));
        let o = store.create(&k, json!({"metadata": {}})).await?;
        last = o["metadata"]["resourceVersion"].as_str().unwrap().parse()?;
    }
    store.compact(last).await?;
    let mut seen = 0;
    loop {
        match next_within(&mut watch).await {
            Some(Ok(_)) => seen += 1,
            Some(Err(StoreError::Expired { .. })) => break,
            other => panic!("after {seen} events: {other:?}"),
        }
    }
    assert!(seen < 1500, "saw {seen} events");
    assert!(
        next_within(&mut watch).await.is_none(),
        "the stream ends after Expired"
    );
    Ok(())
}

#[tokio::test]
async fn newer_schema_in_wal_mode_is_refused_and_the_database_left_identical() -> Result<()> {
    let fixture = SqliteFixture::new();
    let path = fixture.path();
    {
        let store = fixture.open_sqlite()?;
        let k = ObjectKey::new(ResourceName::new("configmaps")?, Some("default"), "keep");
        store.create(&k, json!({"metadata": {}})).await?;
    }
    let newer = skiff_apiserver::storage::sqlite::schema::latest_version() + 7;
    {
        // A newer skiff, still in WAL mode, with its last write only in the WAL (not checkpointed).
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, 'from the future', 'x')",
            [newer],
        )?;
        let before = snapshot(&path);
        let err = fixture.open_sqlite().unwrap_err();
        assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
        assert!(err.to_string().contains(&newer.to_string()), "{err}");
        assert_eq!(
            snapshot(&path)[..2],
            before[..2],
            "database or WAL changed while the newer skiff runs"
        );
    }
    // After the newer skiff closed cleanly (WAL checkpointed).
    let before = snapshot(&path);
    let err = fixture.open_sqlite().unwrap_err();
    assert!(matches!(err, StoreError::Incompatible(_)), "{err:?}");
    assert_eq!(before[0], snapshot(&path)[0], "the database file changed");
    Ok(())
}

/// Creates `n` objects one commit at a time in `namespace`; returns the last revision.
async fn create_one_by_one(store: &SqliteStore, namespace: &str, n: usize) -> Result<u64> {
    let r = ResourceName::new("configmaps")?;
    let mut last = 0;
    for i in 0..n {
        let k = ObjectKey::new(r.clone(), Some(namespace), &format!("o{i}"));
        let o = store.create(&k, json!({"metadata": {}})).await?;
        last = o["metadata"]["resourceVersion"].as_str().unwrap().parse()?;
    }
    Ok(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_catches_up_from_history_missing_nothing() -> Result<()> {
    let fixture = SqliteFixture::new();
    let store = fixture.open_sqlite()?;
    let scope = skiff_apiserver::storage::Scope::all(ResourceName::new("configmaps")?);
    let from = store.current_revision().await?;
    let mut watch = store.watch(&scope, from).await?;
    // The watcher reads nothing while more commits than the broadcast buffer holds happen.
    let n = 1500;
    create_one_by_one(&store, "lag", n).await?;
    let mut previous = from;
    for i in 0..n {
        let event = next_within(&mut watch).await.unwrap()?;
        assert!(event.revision > previous, "out of order at event {i}");
        assert_eq!(event.key.name, format!("o{i}"));
        previous = event.revision;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_quiet_scope_is_not_expired_by_compaction_elsewhere() -> Result<()> {
    let fixture = SqliteFixture::new();
    let store = fixture.open_sqlite()?;
    let r = ResourceName::new("configmaps")?;
    let mut watch = store
        .watch(
            &skiff_apiserver::storage::Scope::namespace(r.clone(), "quiet"),
            0,
        )
        .await?;
    // The watcher is read (it follows the broadcast) while other namespaces change ...
    for i in 0..300 {
        let k = ObjectKey::new(r.clone(), Some("busy"), &format!("a{i}"));
        store.create(&k, json!({"metadata": {}})).await?;
        let pending = tokio::time::timeout(std::time::Duration::from_millis(1), {
            use futures::StreamExt as _;
            watch.next()
        });
        assert!(
            pending.await.is_err(),
            "an out-of-scope event was delivered"
        );
    }
    let followed = store.current_revision().await?;
    // ... then falls behind the broadcast while history up to where it had followed is
    // compacted: it needs none of that history, so it must not be told it expired.
    create_one_by_one(&store, "busy2", 1500).await?;
    store.compact(followed).await?;
    let k = ObjectKey::new(r.clone(), Some("quiet"), "finally");
    store.create(&k, json!({"metadata": {}})).await?;
    let event = next_within(&mut watch).await.unwrap()?;
    assert_eq!(event.key.name, "finally");
    Ok(())
}
