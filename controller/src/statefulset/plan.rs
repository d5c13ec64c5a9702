//! What one StatefulSet reconcile does next, decided from the set and its pods alone (no I/O).
//!
//! Upstream's `defaultStatefulSetControl.updateStatefulSet`, cut down: OrderedReady creates the
//! lowest missing ordinal only once every lower one is Running and Ready and scales down from the
//! highest, one pod at a time; Parallel creates and deletes at once; RollingUpdate replaces pods
//! from the highest ordinal down to `partition`, one at a time, each only once the ones above
//! it are healthy at the new revision.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::identity::{self, pod_revision};
use crate::podutil;

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pod for this ordinal at the update revision.
    Create(u32),
    /// Delete this pod because it scaled away or is at an old revision.
    Delete(String),
    /// Delete this Failed/Succeeded pod so that it is created again.
    Recreate(String),
}

/// The steps to take and the status the set reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: StatefulSetStatus,
}

fn healthy(pod: &Pod) -> bool {
    podutil::is_running_and_ready(pod) && !podutil::is_terminating(pod)
}

/// Plans for `set` given the pods it controls (any others must be filtered out by the caller).
pub fn plan(set: &StatefulSet, pods: &[&Pod]) -> Plan {
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    let spec = set.spec.clone().unwrap_or_default();
    let replicas = u32::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.unwrap_or_default();
    let rolling = strategy.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let update_revision = identity::update_revision(set);

    let by_ordinal: BTreeMap<u32, &Pod> = pods
        .iter()
        .filter_map(|p| {
            let ord = identity::ordinal(set_name, p.metadata.name.as_deref()?)?;
            Some((ord, *p))
        })
        .collect();

    let steps = steps(
        &by_ordinal,
        replicas,
        parallel,
        rolling,
        partition,
        &update_revision,
    );
    let status = status(set, &by_ordinal, rolling, &update_revision);
    Plan { steps, status }
}

fn steps(
    pods: &BTreeMap<u32, &Pod>,
    replicas: u32,
    parallel: bool,
    rolling: bool,
    partition: u32,
    update_revision: &str,
) -> Vec<Step> {
    let mut steps = Vec::new();
    // Scale up (and replace failed pods) in ordinal order.
    for i in 0..replicas {
        match pods.get(&i) {
            None => {
                steps.push(Step::Create(i));
                if !parallel {
                    return steps;
                }
            }
            Some(pod) if podutil::is_terminal(pod) && !podutil::is_terminating(pod) => {
                steps.push(Step::Recreate(name(pod)));
                if !parallel {
                    return steps;
                }
            }
            Some(pod) if !healthy(pod) && !parallel => return steps,
            Some(_) => {}
        }
    }
    // Scale down from the highest ordinal.
    let condemned: Vec<&Pod> = pods.range(replicas..).rev().map(|(_, p)| *p).collect();
    for pod in &condemned {
        if podutil::is_terminating(pod) {
            if parallel {
                continue;
            }
            return steps;
        }
        steps.push(Step::Delete(name(pod)));
        if !parallel {
            return steps;
        }
    }
    if !rolling || !steps.is_empty() {
        return steps;
    }
    // Rolling update: highest ordinal first, down to the partition, one pod at a time.
    for i in (partition..replicas).rev() {
        let Some(pod) = pods.get(&i) else {
            return steps;
        };
        if pod_revision(pod) != Some(update_revision) && !podutil::is_terminating(pod) {
            steps.push(Step::Delete(name(pod)));
            return steps;
        }
        if !healthy(pod) {
            return steps;
        }
    }
    steps
}

fn status(
    set: &StatefulSet,
    pods: &BTreeMap<u32, &Pod>,
    rolling: bool,
    update_revision: &str,
) -> StatefulSetStatus {
    let previous = set.status.clone().unwrap_or_default();
    let mut current_revision = previous
        .current_revision
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.to_owned());
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.values().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let replicas = count(&|_| true);
    let ready = count(&podutil::is_ready);
    let available = count(&healthy);
    let updated = count(&|p| pod_revision(p) == Some(update_revision));
    let mut current = count(&|p| pod_revision(p) == Some(current_revision.as_str()));
    let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    // Upstream `completeRollingUpdate`: once every pod is updated and ready, the update
    // revision becomes the current one.
    if rolling && updated == replicas && ready == replicas && replicas == desired {
        current_revision = update_revision.to_owned();
        current = updated;
    }
    StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision.to_owned()),
        collision_count: previous.collision_count.or(Some(0)),
        conditions: previous.conditions,
    }
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(replicas: i32, policy: &str, partition: i32) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "serviceName": "web",
                "podManagementPolicy": policy,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        }))
        .unwrap_or_default()
    }

    fn pod(set: &StatefulSet, i: u32, ready: bool) -> Pod {
        let mut pod = identity::new_pod(set, i, &identity::update_revision(set));
        pod.status = serde_json::from_value(json!({
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]
        }))
        .ok();
        pod
    }

    fn old(mut pod: Pod) -> Pod {
        if let Some(l) = pod.metadata.labels.as_mut() {
            l.insert(identity::REVISION_LABEL.into(), "web-old".into());
        }
        pod
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time() {
        let s = set(3, "OrderedReady", 0);
        assert_eq!(plan(&s, &[]).steps, vec![Step::Create(0)]);
        let p0 = pod(&s, 0, false);
        assert_eq!(plan(&s, &[&p0]).steps, vec![]);
        let p0 = pod(&s, 0, true);
        assert_eq!(plan(&s, &[&p0]).steps, vec![Step::Create(1)]);
    }

    #[test]
    fn parallel_creates_all() {
        let s = set(3, "Parallel", 0);
        assert_eq!(
            plan(&s, &[]).steps,
            vec![Step::Create(0), Step::Create(1), Step::Create(2)]
        );
    }

    #[test]
    fn scale_down_highest_first_one_at_a_time() {
        let s = set(1, "OrderedReady", 0);
        let pods: Vec<Pod> = (0..3).map(|i| pod(&s, i, true)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&s, &refs).steps, vec![Step::Delete("web-2".into())]);
        let p = Plan {
            steps: vec![],
            status: plan(&s, &refs).status,
        };
        assert_eq!(p.status.replicas, 3);
        let s = set(1, "Parallel", 0);
        assert_eq!(
            plan(&s, &refs).steps,
            vec![Step::Delete("web-2".into()), Step::Delete("web-1".into())]
        );
    }

    #[test]
    fn rolling_update_highest_first_respecting_partition() {
        let s = set(3, "OrderedReady", 1);
        let pods: Vec<Pod> = (0..3).map(|i| old(pod(&s, i, true))).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&s, &refs).steps, vec![Step::Delete("web-2".into())]);
        let pods = [
            old(pod(&s, 0, true)),
            old(pod(&s, 1, true)),
            pod(&s, 2, false),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&s, &refs).steps, vec![], "waits for web-2 to be ready");
        let pods = [
            old(pod(&s, 0, true)),
            old(pod(&s, 1, true)),
            pod(&s, 2, true),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        assert_eq!(plan(&s, &refs).steps, vec![Step::Delete("web-1".into())]);
        let pods = [old(pod(&s, 0, true)), pod(&s, 1, true), pod(&s, 2, true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let p = plan(&s, &refs);
        assert_eq!(p.steps, vec![], "web-0 is below the partition");
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.ready_replicas, Some(3));
    }

    #[test]
    fn failed_pods_are_recreated() {
        let s = set(1, "OrderedReady", 0);
        let mut p0 = pod(&s, 0, false);
        if let Some(st) = p0.status.as_mut() {
            st.phase = Some("Failed".into());
        }
        assert_eq!(plan(&s, &[&p0]).steps, vec![Step::Recreate("web-0".into())]);
    }

    #[test]
    fn revision_completes_when_all_updated_and_ready() {
        let s = set(2, "OrderedReady", 0);
        let pods = [pod(&s, 0, true), pod(&s, 1, true)];
        let refs: Vec<&Pod> = pods.iter().collect();
        let st = plan(&s, &refs).status;
        assert_eq!(st.current_revision, st.update_revision);
        assert_eq!(st.current_replicas, Some(2));
        assert_eq!(st.available_replicas, Some(2));
    }
}
