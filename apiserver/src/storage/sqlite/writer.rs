//! The writer thread: the only connection that writes, with group commit.
//!
//! Callers send requests over a channel. The thread takes every request pending, applies them
//! in one transaction (each its own revision; a failed precondition fails only its request,
//! because preconditions are checked before anything is written), commits — one fsync for the
//! whole group — then publishes the events in revision order and answers each request.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use serde_json::Value;
use tokio::sync::{broadcast, oneshot};

use super::{Batch, Shared, event_code, ns_column};
use crate::storage::{EventType, ObjectKey, Preconditions, Revision, StoreError, WatchEvent, meta};

/// At most this many requests share one transaction.
const MAX_BATCH: usize = 2048;

#[derive(Debug)]
pub(super) enum Op {
    /// `object` is prepared (uid, timestamp) and `bytes` its encoding.
    Create {
        key: ObjectKey,
        object: Value,
        bytes: Vec<u8>,
    },
    Update {
        key: ObjectKey,
        object: Value,
        object_revision: Option<Revision>,
        pre: Preconditions,
    },
    Delete {
        key: ObjectKey,
        pre: Preconditions,
    },
    Compact {
        revision: Revision,
    },
}

#[derive(Debug)]
pub(super) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Value, StoreError>>,
}

/// What one applied request produced.
struct Applied {
    result: Result<Value, StoreError>,
    event: Option<WatchEvent>,
}

pub(super) struct Writer {
    pub path: PathBuf,
    pub conn: Connection,
    pub shared: Arc<Shared>,
    pub events: broadcast::Sender<Batch>,
    pub requests: mpsc::Receiver<Request>,
    /// The exclusive lock on `<db>.lock`, released after the connection closes (fields drop
    /// in declaration order).
    pub _lock: std::fs::File,
}

impl Writer {
    /// Runs until every sender is dropped.
    pub fn run(mut self) {
        let mut batch = Vec::new();
        while let Ok(first) = self.requests.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit_batch(std::mem::take(&mut batch));
        }
        tracing::debug!(path = %self.path.display(), "storage writer stopped");
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        match self.apply_all(ops) {
            Ok((applied, revision, compacted)) => {
                self.shared.revision.store(revision, Ordering::Release);
                self.shared.compacted.store(compacted, Ordering::Release);
                let mut results = Vec::with_capacity(applied.len());
                let mut events = Vec::new();
                for a in applied {
                    events.extend(a.event);
                    results.push(a.result);
                }
                if !events.is_empty() {
                    // No receivers is fine: nobody watches.
                    let _ = self.events.send(Arc::new(events));
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "storage write transaction failed");
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(format!(
                        "{}: {msg}",
                        self.path.display()
                    ))));
                }
            }
        }
    }

    /// Applies every op in one transaction. An `Err` means nothing was committed.
    fn apply_all(&mut self, ops: Vec<Op>) -> rusqlite::Result<(Vec<Applied>, Revision, Revision)> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (mut revision, mut compacted) = read_meta(&tx)?;
        let start = revision;
        let compacted_before = compacted;
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            let a = match op {
                Op::Create { key, object, bytes } => {
                    create(&tx, &mut revision, key, object, bytes)?
                }
                Op::Update {
                    key,
                    object,
                    object_revision,
                    pre,
                } => update(
                    &tx,
                    &self.shared,
                    &mut revision,
                    key,
                    object,
                    object_revision,
                    &pre,
                )?,
                Op::Delete { key, pre } => delete(&tx, &self.shared, &mut revision, key, &pre)?,
                Op::Compact { revision: target } => compact(&tx, revision, &mut compacted, target)?,
            };
            applied.push(a);
        }
        if revision != start {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'revision'")?
                .execute(params![revision as i64])?;
        }
        if compacted != compacted_before {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'compacted'")?
                .execute(params![compacted as i64])?;
        }
        tx.commit()?;
        Ok((applied, revision, compacted))
    }
}

pub(super) fn read_meta(conn: &Connection) -> rusqlite::Result<(Revision, Revision)> {
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM meta WHERE key IN ('revision', 'compacted')")?;
    let mut rows = stmt.query([])?;
    let (mut revision, mut compacted) = (0, 0);
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let value: i64 = row.get(1)?;
        match key.as_str() {
            "revision" => revision = value as Revision,
            _ => compacted = value as Revision,
        }
    }
    Ok((revision, compacted))
}

fn failed(e: StoreError) -> rusqlite::Result<Applied> {
    Ok(Applied {
        result: Err(e),
        event: None,
    })
}

fn stored(conn: &Connection, key: &ObjectKey) -> rusqlite::Result<Option<(Revision, Vec<u8>)>> {
    conn.prepare_cached(
        "SELECT revision, value FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
    )?
    .query_row(
        params![key.resource.as_str(), ns_column(key), key.name],
        |r| Ok((r.get::<_, i64>(0)? as Revision, r.get(1)?)),
    )
    .optional()
}

fn record(
    conn: &Connection,
    revision: Revision,
    key: &ObjectKey,
    kind: EventType,
    bytes: &[u8],
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO history (revision, resource, namespace, name, event, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        revision as i64,
        key.resource.as_str(),
        ns_column(key),
        key.name,
        event_code(kind),
        bytes
    ])?;
    Ok(())
}

fn applied(
    key: ObjectKey,
    kind: EventType,
    revision: Revision,
    mut object: Value,
    prev_object: Option<Value>,
) -> Applied {
    meta::set_revision(&mut object, revision);
    Applied {
        result: Ok(object.clone()),
        event: Some(WatchEvent::new(kind, key, revision, object, prev_object)),
    }
}

fn create(
    tx: &Connection,
    revision: &mut Revision,
    key: ObjectKey,
    object: Value,
    bytes: Vec<u8>,
) -> rusqlite::Result<Applied> {
    let next = *revision + 1;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO objects (resource, namespace, name, revision, value) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![key.resource.as_str(), ns_column(&key), key.name, next as i64, bytes])?;
    if inserted == 0 {
        return failed(StoreError::AlreadyExists(key));
    }
    record(tx, next, &key, EventType::Added, &bytes)?;
    *revision = next;
    Ok(applied(key, EventType::Added, next, object, None))
}

fn update(
    tx: &Connection,
    shared: &Shared,
    revision: &mut Revision,
    key: ObjectKey,
    mut object: Value,
    object_revision: Option<Revision>,
    pre: &Preconditions,
) -> rusqlite::Result<Applied> {
    let Some((stored_revision, stored_bytes)) = stored(tx, &key)? else {
        return failed(StoreError::NotFound(key));
    };
    let current = match shared.codec.decode(&key, &stored_bytes) {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    if let Err(e) = meta::check_preconditions(&key, stored_revision, &current, object_revision, pre)
    {
        return failed(e);
    }
    if let Err(e) = meta::prepare_update(&key, &mut object, &current) {
        return failed(e);
    }
    let bytes = match shared.codec.encode(&key, &object) {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let next = *revision + 1;
    tx.prepare_cached(
        "UPDATE objects SET revision = ?4, value = ?5 WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
    )?
    .execute(params![key.resource.as_str(), ns_column(&key), key.name, next as i64, bytes])?;
    record(tx, next, &key, EventType::Modified, &bytes)?;
    *revision = next;
    Ok(applied(
        key,
        EventType::Modified,
        next,
        object,
        Some(current),
    ))
}

fn delete(
    tx: &Connection,
    shared: &Shared,
    revision: &mut Revision,
    key: ObjectKey,
    pre: &Preconditions,
) -> rusqlite::Result<Applied> {
    let Some((stored_revision, stored_bytes)) = stored(tx, &key)? else {
        return failed(StoreError::NotFound(key));
    };
    let current = match shared.codec.decode(&key, &stored_bytes) {
        Ok(v) => v,
        Err(e) => return failed(e),
    };
    if let Err(e) = meta::check_preconditions(&key, stored_revision, &current, None, pre) {
        return failed(e);
    }
    let next = *revision + 1;
    tx.prepare_cached("DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3")?
        .execute(params![key.resource.as_str(), ns_column(&key), key.name])?;
    // The history keeps the last state, already encoded.
    record(tx, next, &key, EventType::Deleted, &stored_bytes)?;
    *revision = next;
    Ok(applied(key, EventType::Deleted, next, current, None))
}

fn compact(
    tx: &Connection,
    revision: Revision,
    compacted: &mut Revision,
    target: Revision,
) -> rusqlite::Result<Applied> {
    if target > revision {
        return failed(StoreError::Invalid(format!(
            "cannot compact to revision {target}: the newest revision is {revision}"
        )));
    }
    if target > *compacted {
        tx.prepare_cached("DELETE FROM history WHERE revision <= ?1")?
            .execute(params![target as i64])?;
        *compacted = target;
    }
    Ok(Applied {
        result: Ok(Value::Null),
        event: None,
    })
}
