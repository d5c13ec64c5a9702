//! The SQLite backend (the default): one database file in WAL mode, durable on commit.
//!
//! - **Writes** go to one writer thread that owns the write connection and commits every
//!   pending request in one transaction (group commit: one fsync for many writes). See
//!   [`writer`].
//! - **Reads** (get, list, watch catch-up) run on a small pool of read-only connections inside
//!   `spawn_blocking`; a list is one read transaction, so its items and revision agree.
//! - **Watch** events fan out in-process through a broadcast channel the writer publishes to
//!   after each commit, backed by the `history` table for watchers that start from an older
//!   revision or fall behind. See [`watch`].
//!
//! Architecture invariant: only one `SqliteStore` writes a file at a time — enforced by an
//! exclusive lock on `<db>.lock`, because another writer's changes would never reach this
//! store's watchers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::{
    Codec, EventType, ListResult, ObjectKey, Preconditions, RawList, RawObject, Result, Revision,
    Scope, Store, StoreError, WatchEvent, WatchStream, meta,
};

pub mod schema;
mod watch;
mod writer;

use schema::backend;
use writer::{Op, Request};

/// The events of one commit, in revision order.
type Batch = Arc<Vec<WatchEvent>>;

/// How many commits a watcher may fall behind live events before it catches up from history.
const EVENT_BUFFER: usize = 1024;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;

/// State shared by the store handle, the writer thread and watch streams.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    codec: Codec,
    /// The newest committed revision.
    revision: AtomicU64,
    /// History is dropped up to and including this revision.
    compacted: AtomicU64,
    readers: Mutex<Vec<Connection>>,
}

impl Shared {
    /// Runs `f` on a pooled read connection, off the async runtime.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Shared, &mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = shared.readers.lock().map_err(|_| poisoned())?.pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => schema::open_reader(&shared.path)?,
            };
            let out = f(&shared, &mut conn);
            let mut idle = shared.readers.lock().map_err(|_| poisoned())?;
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("storage read task failed: {e}")))?
    }

    fn sql(&self, e: rusqlite::Error) -> StoreError {
        backend(&self.path, e)
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("storage read pool lock poisoned".into())
}

/// The `namespace` column: '' for cluster-scoped objects.
fn ns_column(key: &ObjectKey) -> &str {
    key.namespace.as_deref().unwrap_or("")
}

fn event_code(kind: EventType) -> i64 {
    match kind {
        EventType::Added => 0,
        EventType::Modified => 1,
        EventType::Deleted => 2,
    }
}

fn event_kind(code: i64) -> Option<EventType> {
    match code {
        0 => Some(EventType::Added),
        1 => Some(EventType::Modified),
        2 => Some(EventType::Deleted),
        _ => None,
    }
}

/// The SQLite store. Cheap to share behind an `Arc`; dropping the last handle waits for the
/// writer thread to finish the writes already sent to it and close the database.
#[derive(Debug)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    writes: Option<mpsc::Sender<Request>>,
    events: broadcast::Sender<Batch>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop; joining makes "dropped" mean "closed",
        // so the same file can be reopened at once (a restart) without racing the checkpoint.
        self.writes = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.shared.path.display(), "the storage writer thread panicked");
        }
    }
}

/// Takes the exclusive lock that makes this process the database's only writer.
fn lock(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Backend(format!(
                "cannot open the lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "the database {} is in use by another skiff (its lock {} is held): stop that process, or give this one another --data-dir or --datastore",
            path.display(),
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Backend(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if missing) the database at `path`,
    /// migrating its schema to this build's. A database written by a newer schema is refused
    /// with `Incompatible` and left untouched.
    pub fn open(path: &Path, codec: Codec) -> Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Backend(format!(
                    "cannot create the data directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        // Before changing anything (even the journal mode): is this a file we may write?
        let exists = std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        if exists && let Some(found) = schema::read_version(path)? {
            schema::check_version(path, found)?;
        }
        let lock = lock(path)?;
        let (conn, found) = schema::open_writer(path)?;
        let (revision, compacted) = writer::read_meta(&conn).map_err(|e| backend(path, e))?;
        tracing::info!(
            path = %path.display(),
            schema_version = schema::latest_version(),
            migrated_from = found,
            revision,
            compacted,
            "opened SQLite store"
        );

        let shared = Arc::new(Shared {
            path: path.to_owned(),
            codec,
            revision: AtomicU64::new(revision),
            compacted: AtomicU64::new(compacted),
            readers: Mutex::new(Vec::new()),
        });
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (writes, requests) = mpsc::channel();
        let w = writer::Writer {
            path: path.to_owned(),
            conn,
            shared: shared.clone(),
            events: events.clone(),
            requests,
            _lock: lock,
        };
        let writer = std::thread::Builder::new()
            .name("skiff-sqlite-writer".into())
            .spawn(move || w.run())
            .map_err(|e| {
                StoreError::Backend(format!("cannot start the storage writer thread: {e}"))
            })?;
        Ok(SqliteStore {
            shared,
            writes: Some(writes),
            events,
            writer: Some(writer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn write(&self, op: Op) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the storage writer thread has stopped".into());
        self.writes
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { op, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| {
            StoreError::Backend("the storage writer thread stopped before answering".into())
        })?
    }
}

impl SqliteStore {
    /// Every row of `scope` in key order, mapped by `each`, in one read transaction, with the
    /// store revision of that snapshot.
    async fn scan<T: Send + 'static>(
        &self,
        scope: &Scope,
        each: impl Fn(&Shared, ObjectKey, Revision, Vec<u8>) -> Result<T> + Send + 'static,
    ) -> Result<(Vec<T>, Revision)> {
        let scope = scope.clone();
        self.shared
            .read(move |shared, conn| {
                let tx = conn.transaction().map_err(|e| shared.sql(e))?;
                let (revision, _) = writer::read_meta(&tx).map_err(|e| shared.sql(e))?;
                let mut items = Vec::new();
                {
                    let resource = scope.resource.as_str();
                    let mut stmt;
                    let mut rows = match &scope.namespace {
                        Some(ns) => {
                            stmt = tx
                                .prepare_cached(
                                    "SELECT namespace, name, revision, value FROM objects
                                     WHERE resource = ?1 AND namespace = ?2 ORDER BY namespace, name",
                                )
                                .map_err(|e| shared.sql(e))?;
                            stmt.query(params![resource, ns])
                        }
                        None => {
                            stmt = tx
                                .prepare_cached(
                                    "SELECT namespace, name, revision, value FROM objects
                                     WHERE resource = ?1 ORDER BY namespace, name",
                                )
                                .map_err(|e| shared.sql(e))?;
                            stmt.query(params![resource])
                        }
                    }
                    .map_err(|e| shared.sql(e))?;
                    while let Some(row) = rows.next().map_err(|e| shared.sql(e))? {
                        let (namespace, name, rev, bytes) = row_fields(row).map_err(|e| shared.sql(e))?;
                        let key = ObjectKey {
                            resource: scope.resource.clone(),
                            namespace: (!namespace.is_empty()).then_some(namespace),
                            name,
                        };
                        items.push(each(shared, key, rev, bytes)?);
                    }
                }
                tx.finish().map_err(|e| shared.sql(e))?;
                Ok((items, revision))
            })
            .await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &ObjectKey, mut object: Value) -> Result<Value> {
        key.validate()?;
        meta::prepare_create(key, &mut object)?;
        let bytes = self.shared.codec.encode(key, &object)?;
        self.write(Op::Create {
            key: key.clone(),
            object,
            bytes,
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Value> {
        key.validate()?;
        let key = key.clone();
        self.shared
            .read(move |shared, conn| {
                let row: Option<(i64, Vec<u8>)> = conn
                    .prepare_cached(
                        "SELECT revision, value FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![key.resource.as_str(), ns_column(&key), key.name], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()
                    })
                    .map_err(|e| shared.sql(e))?;
                let Some((revision, bytes)) = row else {
                    return Err(StoreError::NotFound(key));
                };
                let mut object = shared.codec.decode(&key, &bytes)?;
                meta::set_revision(&mut object, revision as Revision);
                Ok(object)
            })
            .await
    }

    async fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        preconditions: &Preconditions,
    ) -> Result<Value> {
        key.validate()?;
        let object_revision = meta::revision_of(key, &object)?;
        if !object.is_object() {
            return Err(StoreError::Invalid(format!(
                "{key}: the stored value must be a JSON object"
            )));
        }
        self.write(Op::Update {
            key: key.clone(),
            object,
            object_revision,
            pre: preconditions.clone(),
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey, preconditions: &Preconditions) -> Result<Value> {
        key.validate()?;
        self.write(Op::Delete {
            key: key.clone(),
            pre: preconditions.clone(),
        })
        .await
    }

    async fn list(&self, scope: &Scope) -> Result<ListResult> {
        let (items, revision) = self
            .scan(scope, |shared, key, revision, bytes| {
                let mut object = shared.codec.decode(&key, &bytes)?;
                meta::set_revision(&mut object, revision);
                Ok(object)
            })
            .await?;
        Ok(ListResult { items, revision })
    }

    async fn list_raw(&self, scope: &Scope) -> Result<RawList> {
        let (items, revision) = self
            .scan(scope, |shared, key, revision, bytes| {
                let json = shared.codec.plain_json(&key, bytes)?;
                Ok(RawObject { revision, json })
            })
            .await?;
        Ok(RawList { items, revision })
    }

    async fn watch(&self, scope: &Scope, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading history: every commit after this point is in `live`.
        let live = self.events.subscribe();
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                compacted,
            });
        }
        Ok(watch::stream(
            self.shared.clone(),
            scope.clone(),
            after,
            live,
        ))
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.write(Op::Compact { revision }).await.map(drop)
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}

fn row_fields(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Revision, Vec<u8>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get::<_, i64>(2)? as Revision,
        row.get(3)?,
    ))
}
