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

/// One watch line around an encoded object: `{"type":KIND,"object":OBJECT}` and a newline.
fn line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + kind.len() + 24);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn event(kind: &str, object: &Value) -> Bytes {
    line(kind, &serde_json::to_vec(object).unwrap_or_default())
}

/// A stored object as it goes out, with `apiVersion` and `kind` first — what
/// `with_type_meta` gives, encoded straight from the shared object instead of a copy.
struct TypedObject<'a> {
    api_version: &'a str,
    kind: &'a str,
    object: &'a Value,
}

impl serde::Serialize for TypedObject<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let Value::Object(fields) = self.object else {
            return self.object.serialize(s);
        };
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("apiVersion", self.api_version)?;
        map.serialize_entry("kind", self.kind)?;
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// The object of `ev` encoded for watchers of `info`, once per change for all of them.
fn shared_object(info: &KindInfo, api_version: &str, ev: &WatchEvent) -> Bytes {
    ev.encoded.get_or_make(api_version, || {
        let typed = TypedObject {
            api_version,
            kind: info.name,
            object: &ev.object,
        };
        Bytes::from(serde_json::to_vec(&typed).unwrap_or_default())
    })
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
    let api_version = info.api_version();
    let encode = move |kind: &str, ev: &WatchEvent| match &table_query {
        Some(q) => event(
            kind,
            &object_table(info, with_type_meta(info, (*ev.object).clone()), q),
        ),
        None => line(kind, &shared_object(info, &api_version, ev)),
    };
    let encode_initial = {
        let table_query = query.as_table.then(|| query.clone());
        move |object: Value| {
            let object = with_type_meta(info, object);
            match &table_query {
                Some(q) => event("ADDED", &object_table(info, object, q)),
                None => event("ADDED", &object),
            }
        }
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
            if tx.send(encode_initial(object)).await.is_err() {
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
                        encode(kind, &ev)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::{ObjectKey, ResourceName};

    fn pod_event(object: Value) -> WatchEvent {
        let key = ObjectKey::new(ResourceName::new("pods").unwrap(), Some("default"), "p");
        WatchEvent::new(EventType::Modified, key, 7, object, None)
    }

    #[test]
    fn shared_encoding_is_the_type_meta_object_once_for_every_watcher() {
        let info = skiff_api::kinds::by_resource("", "pods").unwrap();
        let object = json!({"metadata": {"name": "p"}, "kind": "Stale", "spec": {"x": 1}});
        let ev = pod_event(object.clone());
        let first = line("MODIFIED", &shared_object(info, &info.api_version(), &ev));
        let expected = json!({"type": "MODIFIED", "object": with_type_meta(info, object)});
        let parsed: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(parsed, expected);
        assert!(first.ends_with(b"}\n"));
        // A clone of the event (another watcher) reuses the same bytes.
        let again = shared_object(info, &info.api_version(), &ev.clone());
        let cached = ev.encoded.get_or_make(&info.api_version(), Bytes::new);
        assert_eq!(again, cached);
        assert!(!cached.is_empty());
        // Another API version of the resource gets its own encoding, not the cached one.
        let other = shared_object(info, "v2", &ev);
        let parsed: Value = serde_json::from_slice(&other).unwrap();
        assert_eq!(parsed["apiVersion"], "v2");
    }
}
