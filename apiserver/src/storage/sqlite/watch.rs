//! Watch streams: history first, then live events, with nothing missed or repeated.
//!
//! A stream is subscribed to the writer's broadcast before it reads anything from the
//! `history` table, so every commit is either in what it read or still ahead in the broadcast;
//! events at or below the last revision it delivered are skipped. A stream that falls behind
//! the broadcast (`Lagged`) catches up from the history table again, or ends with `Expired`
//! if that history was compacted meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Batch, Shared, event_kind, ns_column, writer};
use crate::storage::{
    EventType, ObjectKey, Result, Revision, Scope, StoreError, WatchEvent, WatchStream, meta,
};

/// History rows read per catch-up query.
const PAGE: usize = 1000;

struct State {
    shared: Arc<Shared>,
    scope: Scope,
    live: broadcast::Receiver<Batch>,
    /// The newest revision delivered (or the revision the watch started after).
    last: Revision,
    pending: VecDeque<WatchEvent>,
    catching_up: bool,
    done: bool,
}

pub(super) fn stream(
    shared: Arc<Shared>,
    scope: Scope,
    after: Revision,
    live: broadcast::Receiver<Batch>,
) -> WatchStream {
    let state = State {
        shared,
        scope,
        live,
        last: after,
        pending: VecDeque::new(),
        catching_up: true,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

impl State {
    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.catching_up {
                if let Err(e) = self.catch_up().await {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    // Batches arrive complete and in global revision order, so every revision
                    // seen here — in scope or not — is one this watcher no longer needs from
                    // history: a watcher on a quiet scope must not look stale after a lag.
                    for event in batch.iter() {
                        if event.revision > self.last {
                            self.last = event.revision;
                            if self.scope.contains(&event.key) {
                                self.pending.push_back(event.clone());
                            }
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        after = self.last,
                        "watcher fell behind; catching up from history"
                    );
                    self.catching_up = true;
                }
                // The store was dropped: no more events will come.
                Err(RecvError::Closed) => self.done = true,
            }
        }
    }

    /// Reads one page of history after `last`; clears `catching_up` once the history is done.
    async fn catch_up(&mut self) -> Result<()> {
        let scope = self.scope.clone();
        let after = self.last;
        let (events, snapshot) = self
            .shared
            .read(move |shared, conn| read_history(shared, conn, &scope, after))
            .await?;
        if let Some(last) = events.last() {
            self.last = last.revision;
        }
        self.pending.extend(events);
        if let Some(snapshot) = snapshot {
            // Everything in scope up to the snapshot was read: later catch-ups start there.
            self.last = self.last.max(snapshot);
            self.catching_up = false;
        }
        Ok(())
    }
}

/// The state of `key` just before `revision`, if the history still holds it.
fn previous_state(
    shared: &Shared,
    conn: &Connection,
    key: &ObjectKey,
    revision: Revision,
) -> Result<Option<Value>> {
    let found: Option<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT revision, value FROM history
             WHERE resource = ?1 AND namespace = ?2 AND name = ?3 AND revision < ?4
             ORDER BY revision DESC LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    key.resource.as_str(),
                    ns_column(key),
                    key.name,
                    revision as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .map_err(|e| shared.sql(e))?;
    let Some((prev_revision, bytes)) = found else {
        return Ok(None);
    };
    let mut object = shared.codec.decode(key, &bytes)?;
    meta::set_revision(&mut object, prev_revision as Revision);
    Ok(Some(object))
}

/// Up to `PAGE` changes in `scope` after `after`, and — if that was all of them — the revision
/// of the snapshot they were read at.
fn read_history(
    shared: &Shared,
    conn: &mut Connection,
    scope: &Scope,
    after: Revision,
) -> Result<(Vec<WatchEvent>, Option<Revision>)> {
    let tx = conn.transaction().map_err(|e| shared.sql(e))?;
    let (snapshot, compacted) = writer::read_meta(&tx).map_err(|e| shared.sql(e))?;
    if after < compacted {
        return Err(StoreError::Expired {
            requested: after,
            compacted,
        });
    }
    let mut events = Vec::new();
    {
        let resource = scope.resource.as_str();
        let limit = PAGE as i64;
        let after = after as i64;
        let mut stmt;
        let mut rows = match &scope.namespace {
            Some(ns) => {
                stmt = tx
                    .prepare_cached(
                        "SELECT revision, namespace, name, event, value FROM history
                         WHERE resource = ?1 AND revision > ?2 AND namespace = ?3
                         ORDER BY revision LIMIT ?4",
                    )
                    .map_err(|e| shared.sql(e))?;
                stmt.query(params![resource, after, ns, limit])
            }
            None => {
                stmt = tx
                    .prepare_cached(
                        "SELECT revision, namespace, name, event, value FROM history
                         WHERE resource = ?1 AND revision > ?2
                         ORDER BY revision LIMIT ?3",
                    )
                    .map_err(|e| shared.sql(e))?;
                stmt.query(params![resource, after, limit])
            }
        }
        .map_err(|e| shared.sql(e))?;
        while let Some(row) = rows.next().map_err(|e| shared.sql(e))? {
            let fields = (|| -> rusqlite::Result<(i64, String, String, i64, Vec<u8>)> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })()
            .map_err(|e| shared.sql(e))?;
            let (revision, namespace, name, code, bytes) = fields;
            let revision = revision as Revision;
            let key = ObjectKey {
                resource: scope.resource.clone(),
                namespace: (!namespace.is_empty()).then_some(namespace),
                name,
            };
            let kind: EventType = event_kind(code).ok_or_else(|| {
                StoreError::Incompatible(format!(
                    "{key}: unknown event type {code} in history at revision {revision}"
                ))
            })?;
            let mut object = shared.codec.decode(&key, &bytes)?;
            meta::set_revision(&mut object, revision);
            let prev_object = match kind {
                EventType::Modified => previous_state(shared, &tx, &key, revision)?,
                EventType::Added | EventType::Deleted => None,
            };
            events.push(WatchEvent::new(kind, key, revision, object, prev_object));
        }
    }
    tx.finish().map_err(|e| shared.sql(e))?;
    let complete = events.len() < PAGE;
    Ok((events, complete.then_some(snapshot)))
}
