//! Watch: newline-delimited JSON events over a chunked (or HTTP/2 streamed) response.
//!
//! `resourceVersion` absent or `"0"`: synthetic ADDED events for the current objects (from one
//! list), then changes after that list's revision. `resourceVersion=N`: changes after N. A
//! compacted N: one `ERROR` event carrying a 410 Expired Status, then the stream ends.
//! With label or field selectors, an object modified into the selection arrives as ADDED and one
//! modified out of it as DELETED, as with upstream's watch cache.
//! `allowWatchBookmarks=true`: a BOOKMARK every `bookmark_interval`, carrying the revision of
//! the last change this stream has processed (never one it has not yet delivered, so a client
//! resuming from it misses nothing). `timeoutSeconds` (default 1800) ends the stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use skiff_api::KindInfo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Ctx;
use super::filter::{Filter, matches_selectors};
use super::handlers::{Body, Query, object_table, scope, with_type_meta};
use super::routes::ResourcePath;
use super::status::ApiError;
use crate::storage::{EventType, Revision, StoreError, WatchEvent, WatchStream};

/// Upstream's `--min-request-timeout`: the default watch length.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest `timeoutSeconds` honoured.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn event(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(info: &KindInfo, revision: Revision) -> Bytes {
    event(
        "BOOKMARK",
        &json!({
            "kind": info.name,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }),
    )
}

/// The event type a watcher with `filter` sees for `ev`, as upstream's watch cache does it: an
/// object modified into the selector arrives as ADDED, one modified out of it as DELETED
/// (carrying its new state), and changes wholly outside it are not sent. When the previous
/// state is unknown (compacted history), a matching change is a plain MODIFIED.
fn filtered_event_type(filter: &Filter, ev: &WatchEvent) -> Option<&'static str> {
    let now = matches_selectors(filter, &ev.object);
    match ev.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            let before = ev
                .prev_object
                .as_ref()
                .map(|p| matches_selectors(filter, p));
            match (before, now) {
                (Some(true) | None, true) => Some("MODIFIED"),
                (Some(false), true) => Some("ADDED"),
                (Some(true), false) => Some("DELETED"),
                (Some(false) | None, false) => None,
            }
        }
    }
}

/// Answers a watch request: validates it, opens the store watch, and streams events.
pub(crate) async fn watch(
    ctx: &Arc<Ctx>,
    path: &ResourcePath,
    mut filter: Filter,
    query: &Query,
    // Held for as long as the stream runs (the per-user watch cap).
    permit: Option<super::limits::WatchPermit>,
) -> Result<Response<Body>, ApiError> {
    let info = path.info;
    let scope = scope(path)?;
    if let Some(name) = &path.name {
        filter.name = Some(name.clone());
    }
    let timeout = query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT);

    let mut initial: Vec<Value> = Vec::new();
    let start: Revision = match query.resource_version.as_deref() {
        None | Some("") | Some("0") => {
            let list = ctx
                .store
                .list(&scope)
                .await
                .map_err(|e| ApiError::from_store(info, "", e))?;
            initial = list
                .items
                .into_iter()
                .filter(|o| matches_selectors(&filter, o))
                .collect();
            list.revision
        }
        Some(rv) => rv.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not a number"))
        })?,
    };

    let opened: Result<WatchStream, ApiError> = match ctx.store.watch(&scope, start).await {
        Ok(stream) => Ok(stream),
        Err(StoreError::Expired {
            requested,
            compacted,
        }) => Err(ApiError::expired(requested, compacted)),
        Err(e) => return Err(ApiError::from_store(info, "", e)),
    };

    // With a Table Accept every object travels as a one-row Table (kubectl get -w).
    let table_query = query.as_table.then(|| query.clone());
    let encode = move |kind: &str, object: Value| match &table_query {
        Some(q) => event(kind, &object_table(info, object, q)),
        None => event(kind, &object),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = ctx.shutdown.clone();
    let interval = ctx.bookmark_interval;
    let allow_bookmarks = query.allow_bookmarks;
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(expired) => {
                let _ = tx.send(event("ERROR", &expired.to_status())).await;
                return;
            }
        };
        for object in initial {
            if tx
                .send(encode("ADDED", with_type_meta(info, object)))
                .await
                .is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut last = start;
        loop {
            let line = tokio::select! {
                () = &mut deadline => break,
                _ = shutdown.changed() => break,
                () = tx.closed() => break,
                _ = ticker.tick(), if allow_bookmarks => bookmark(info, last),
                next = stream.next() => match next {
                    None => break,
                    Some(Ok(ev)) => {
                        last = ev.revision;
                        let Some(kind) = filtered_event_type(&filter, &ev) else {
                            continue;
                        };
                        encode(kind, with_type_meta(info, ev.object))
                    }
                    Some(Err(e)) => {
                        let err = ApiError::from_store(info, "", e);
                        let _ = tx.send(event("ERROR", &err.to_status())).await;
                        break;
                    }
                },
            };
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });

    let body = StreamBody::new(
        ReceiverStream::new(rx).map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))),
    );
    let mut resp = Response::new(BodyExt::boxed(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
