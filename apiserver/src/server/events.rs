//! Server-side aggregation of repeated core/v1 Events on create.
//!
//! Upstream aggregates in client-go's recorder (`EventCorrelator`): a repeat is sent as a PATCH
//! of the first Event's `count` and `lastTimestamp`. skiff also does it in the API server, so
//! clients that just POST every occurrence (simple controllers, scripts) do not flood the
//! store: a created Event matching a stored one on [`AggregationKey`] bumps the stored one's
//! `count`, `lastTimestamp` (and `series`, when the Event uses it) instead of being stored.
//! This goes beyond upstream, which stores every POSTed Event.
//!
//! Finding the stored match must not cost a scan of the namespace per Event (a scheduler
//! posting 1,000 Events would be quadratic): [`EventIndex`] remembers which stored Event holds
//! each key, filled by one scan per namespace after start and by every create since. The
//! store stays the truth: a remembered name is read back and its key compared before use.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use http::Response;
use serde_json::{Value, json};
use skiff_api::Strictness;

use super::handlers::{Body, Query, Write, json_response, prepare, scope};
use super::routes::ResourcePath;
use super::status::ApiError;
use super::{Ctx, dry_run};
use crate::storage::{Preconditions, StoreError};

/// How often aggregation re-reads after losing a race with another writer.
const ATTEMPTS: usize = 5;

/// What makes two Events "the same occurrence again" (client-go's aggregation key, with the
/// message included as its spam filter's exact-match key does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AggregationKey {
    namespace: String,
    object_kind: String,
    object_name: String,
    object_uid: String,
    field_path: String,
    reason: String,
    message: String,
    event_type: String,
    source_component: String,
    source_host: String,
    reporting_controller: String,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("").to_owned()
}

impl AggregationKey {
    pub(crate) fn of(event: &Value) -> Self {
        let obj = &event["involvedObject"];
        Self {
            namespace: text(&event["metadata"]["namespace"]),
            object_kind: text(&obj["kind"]),
            object_name: text(&obj["name"]),
            object_uid: text(&obj["uid"]),
            field_path: text(&obj["fieldPath"]),
            reason: text(&event["reason"]),
            message: text(&event["message"]),
            event_type: text(&event["type"]),
            source_component: text(&event["source"]["component"]),
            source_host: text(&event["source"]["host"]),
            reporting_controller: text(&event["reportingComponent"]),
        }
    }
}

/// Past this many remembered Events the index starts over (namespaces are scanned again).
const INDEX_CAPACITY: usize = 200_000;

/// Which stored Event holds each aggregation key, per API server.
#[derive(Debug, Default)]
pub(crate) struct EventIndex {
    inner: Mutex<IndexState>,
}

#[derive(Debug, Default)]
struct IndexState {
    /// Namespaces whose stored Events have been scanned into `names`.
    scanned: HashSet<String>,
    names: HashMap<AggregationKey, String>,
}

impl EventIndex {
    fn state(&self) -> std::sync::MutexGuard<'_, IndexState> {
        // The state is a cache: one left by a panicking holder is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a stored Event (after a create), so its repeats find it.
    pub(crate) fn remember(&self, event: &Value) {
        let name = text(&event["metadata"]["name"]);
        if name.is_empty() {
            return;
        }
        let mut state = self.state();
        if state.names.len() >= INDEX_CAPACITY {
            *state = IndexState::default();
        }
        state.names.insert(AggregationKey::of(event), name);
    }

    fn lookup(&self, key: &AggregationKey) -> Option<String> {
        self.state().names.get(key).cloned()
    }

    fn forget(&self, key: &AggregationKey) {
        self.state().names.remove(key);
    }

    fn scanned(&self, namespace: &str) -> bool {
        self.state().scanned.contains(namespace)
    }

    fn add_scan(&self, namespace: &str, events: &[Value]) {
        let mut state = self.state();
        for event in events {
            let name = text(&event["metadata"]["name"]);
            state.names.entry(AggregationKey::of(event)).or_insert(name);
        }
        state.scanned.insert(namespace.to_owned());
    }
}

/// `count` as stored (absent means one occurrence).
fn count_of(event: &Value) -> i64 {
    event["count"].as_i64().filter(|c| *c > 0).unwrap_or(1)
}

/// The stored Event `existing` after one more occurrence `sent`.
pub(crate) fn merge_repeat(existing: &Value, sent: &Value, now: &str, now_micro: &str) -> Value {
    let mut merged = existing.clone();
    let count = count_of(existing) + count_of(sent);
    let last = sent["lastTimestamp"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map_or_else(|| now.to_owned(), str::to_owned);
    if let Some(map) = merged.as_object_mut() {
        map.insert("count".into(), json!(count));
        map.insert("lastTimestamp".into(), json!(last));
        if existing["series"].is_object() || sent["series"].is_object() {
            map.insert(
                "series".into(),
                json!({"count": count, "lastObservedTime": now_micro}),
            );
        }
    }
    merged
}

/// A POSTed Event that repeats a stored one: bumps the stored one and answers it (201, as a
/// create would). `None` when there is nothing to aggregate with: the caller creates it.
pub(crate) async fn aggregate(
    ctx: &Ctx,
    path: &ResourcePath,
    sent: &Value,
    strictness: Strictness,
    query: &Query,
) -> Result<Option<Response<Body>>, ApiError> {
    let info = path.info;
    // Decoded, defaulted and validated exactly as a create: bad input fails the same way.
    let (event, _, warnings) = prepare(
        ctx,
        info,
        path.namespace.as_deref(),
        sent.clone(),
        strictness,
        Write::Create,
    )?;
    let key = AggregationKey::of(&event);
    let store = dry_run::store_for(ctx, query.dry_run);
    let namespace = path.namespace.clone().unwrap_or_default();
    if !ctx.events.scanned(&namespace) {
        let list = store
            .list(&scope(path)?)
            .await
            .map_err(|e| ApiError::from_store(info, "", e))?;
        ctx.events.add_scan(&namespace, &list.items);
    }
    let Some(name) = ctx.events.lookup(&key) else {
        return Ok(None);
    };
    let object_key = super::handlers::object_key(info, path.namespace.as_deref(), &name)?;
    for attempt in 1..=ATTEMPTS {
        let existing = match store.get(&object_key).await {
            Ok(existing) if AggregationKey::of(&existing) == key => existing,
            // Deleted, or replaced by another Event of that name: not a repeat after all.
            Ok(_) | Err(StoreError::NotFound(_)) => {
                ctx.events.forget(&key);
                return Ok(None);
            }
            Err(e) => return Err(ApiError::from_store(info, &name, e)),
        };
        let now = jiff::Timestamp::now();
        let merged = merge_repeat(
            &existing,
            &event,
            &now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            &now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string(),
        );
        // `merged` carries the resourceVersion read: the write is conditional on it.
        match store
            .update(&object_key, merged, &Preconditions::default())
            .await
        {
            Ok(stored) => {
                let stored = super::handlers::with_type_meta(info, stored);
                let mut resp = json_response(201, &stored);
                super::handlers::add_warnings(&mut resp, &warnings);
                return Ok(Some(resp));
            }
            Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {}
            Err(StoreError::NotFound(_)) => {
                ctx.events.forget(&key);
                return Ok(None);
            }
            Err(e) => return Err(ApiError::from_store(info, &name, e)),
        }
    }
    Err(ApiError::internal(
        "aggregating the event kept losing races with other writers",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, message: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "uid": "u1",
                               "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "message": message, "type": "Warning",
            "source": {"component": "kubelet", "host": "node-1"},
            "count": 1, "lastTimestamp": "2026-01-01T00:00:00Z",
        })
    }

    #[test]
    fn key_ignores_name_and_times_but_not_message() {
        let a = event("a", "restarting");
        let mut b = event("b", "restarting");
        b["lastTimestamp"] = json!("2026-01-02T00:00:00Z");
        assert_eq!(AggregationKey::of(&a), AggregationKey::of(&b));
        assert_ne!(
            AggregationKey::of(&a),
            AggregationKey::of(&event("c", "other"))
        );
        let mut other_host = event("d", "restarting");
        other_host["source"]["host"] = json!("node-2");
        assert_ne!(AggregationKey::of(&a), AggregationKey::of(&other_host));
        let mut other_uid = event("e", "restarting");
        other_uid["involvedObject"]["uid"] = json!("u2");
        assert_ne!(AggregationKey::of(&a), AggregationKey::of(&other_uid));
    }

    #[test]
    fn repeat_bumps_count_and_last_timestamp() {
        let stored = event("a", "m");
        let mut sent = event("b", "m");
        sent["lastTimestamp"] = json!("2026-01-03T00:00:00Z");
        let merged = merge_repeat(&stored, &sent, "NOW", "NOWµ");
        assert_eq!(merged["count"], 2);
        assert_eq!(merged["lastTimestamp"], "2026-01-03T00:00:00Z");
        assert_eq!(merged["metadata"]["name"], "a");
        assert!(merged.get("series").is_none());
        let mut with_series = stored.clone();
        with_series["series"] = json!({"count": 2, "lastObservedTime": "x"});
        with_series["count"] = json!(2);
        sent.as_object_mut().map(|m| m.remove("lastTimestamp"));
        let merged = merge_repeat(&with_series, &sent, "NOW", "NOWµ");
        assert_eq!(merged["count"], 3);
        assert_eq!(merged["lastTimestamp"], "NOW");
        assert_eq!(merged["series"]["count"], 3);
        assert_eq!(merged["series"]["lastObservedTime"], "NOWµ");
    }
}
