//! Pure decisions of the node controller: which condition taints a node should carry, and when a pod on a NoExecute-tainted node is evicted.

use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use skiff_api::admission::{TAINT_NOT_READY, TAINT_UNREACHABLE};

use crate::scheduler::node_match::tolerates;

/// The taints this controller owns; every other taint is left as it is.
fn managed(t: &Taint) -> bool {
    (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE)
        && (t.effect == "NoSchedule" || t.effect == "NoExecute")
}

/// The node's taints with the condition taints set for its state: `unreachable` while its
/// heartbeat is stale, `not-ready` while its Ready condition is False. A taint already present
/// keeps its `timeAdded` (evictions count from it). `None` when nothing changes.
pub fn desired_taints(
    current: &[Taint],
    stale: bool,
    ready_false: bool,
    now: jiff::Timestamp,
) -> Option<Vec<Taint>> {
    let key = if stale {
        Some(TAINT_UNREACHABLE)
    } else if ready_false {
        Some(TAINT_NOT_READY)
    } else {
        None
    };
    let mut out: Vec<Taint> = current.iter().filter(|t| !managed(t)).cloned().collect();
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            let existing = current
                .iter()
                .find(|t| t.key == key && t.effect == effect)
                .cloned();
            out.push(existing.unwrap_or_else(|| Taint {
                key: key.to_owned(),
                effect: effect.to_owned(),
                value: None,
                time_added: Some(Time(now)),
            }));
        }
    }
    let same = out.len() == current.len() && out.iter().all(|t| current.contains(t));
    (!same).then_some(out)
}

/// When a pod on a node with `taints` is to be evicted: `None` never (no NoExecute taint, or
/// tolerated forever), otherwise the instant (already past for an untolerated taint). The
/// toleration time counts from the newest NoExecute taint, so a restart never evicts early.
pub fn eviction_time(taints: &[Taint], tolerations: &[Toleration]) -> Option<jiff::Timestamp> {
    let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    let start = no_execute
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .max()?;
    // Upstream's `getMinTolerationTime`: the shortest `tolerationSeconds` among the
    // tolerations used; none with seconds means tolerated forever.
    let mut min_seconds: Option<i64> = None;
    for taint in &no_execute {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(jiff::Timestamp::MIN);
        }
        for s in matching.iter().filter_map(|t| t.toleration_seconds) {
            let s = s.max(0);
            min_seconds = Some(min_seconds.map_or(s, |m| m.min(s)));
        }
    }
    let seconds = min_seconds?;
    start
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn stale_nodes_get_unreachable_taints_and_lose_them_on_recovery() {
        let now = ts("2025-01-01T00:00:00Z");
        let other: Taint =
            serde_json::from_value(json!({"key": "k", "effect": "NoSchedule"})).unwrap();
        let tainted = desired_taints(std::slice::from_ref(&other), true, false, now).unwrap();
        assert_eq!(tainted.len(), 3);
        assert!(
            tainted
                .iter()
                .any(|t| t.key == TAINT_UNREACHABLE && t.effect == "NoExecute")
        );
        // Idempotent: nothing to change the next time round, timeAdded kept.
        assert_eq!(
            desired_taints(&tainted, true, false, ts("2025-01-01T00:01:00Z")),
            None
        );
        assert_eq!(
            desired_taints(&tainted, false, false, now),
            Some(vec![other.clone()])
        );
        let not_ready = desired_taints(&tainted, false, true, now).unwrap();
        assert!(not_ready.iter().any(|t| t.key == TAINT_NOT_READY));
        assert!(!not_ready.iter().any(|t| t.key == TAINT_UNREACHABLE));
    }

    #[test]
    fn eviction_follows_the_shortest_toleration() {
        let taints: Vec<Taint> = serde_json::from_value(json!([
            {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2025-01-01T00:00:00Z"},
            {"key": TAINT_UNREACHABLE, "effect": "NoSchedule", "timeAdded": "2025-01-01T00:00:00Z"}
        ]))
        .unwrap();
        let tol = |v: serde_json::Value| -> Vec<Toleration> { serde_json::from_value(v).unwrap() };
        assert_eq!(eviction_time(&taints, &[]), Some(jiff::Timestamp::MIN));
        assert_eq!(
            eviction_time(
                &taints,
                &tol(json!([
                    {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
                ]))
            ),
            Some(ts("2025-01-01T00:00:05Z"))
        );
        assert_eq!(
            eviction_time(&taints, &tol(json!([{"operator": "Exists"}]))),
            None
        );
        assert_eq!(eviction_time(&taints[1..], &[]), None);
    }
}
