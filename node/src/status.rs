//! Pod status from what the kubelet knows of its containers: phase, the four conditions,
//! pod IPs and container statuses, as upstream's kubelet computes them.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One state of a container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated {
        exit_code: i32,
        signal: Option<i32>,
        reason: String,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
    },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> Self {
        State::Waiting {
            reason: reason.to_owned(),
            message,
        }
    }

    fn to_k8s(&self) -> K8sState {
        match self {
            State::Waiting { reason, message } => K8sState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            State::Running { started_at } => K8sState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            State::Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at,
            } => K8sState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    signal: *signal,
                    reason: Some(reason.clone()),
                    message: message.clone(),
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                    container_id: None,
                }),
                ..Default::default()
            },
        }
    }
}

/// What the kubelet tracks for one container (init or regular).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last_state: Option<State>,
    pub restart_count: i32,
    /// Readiness probe result (true without a readiness probe once running).
    pub ready: bool,
    /// Startup probe passed (true without a startup probe once running).
    pub started: bool,
    /// `skiff://<pod uid>/<name>/<restart>`: identifies the instance, for `kubectl describe`.
    pub container_id: Option<String>,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            state: State::waiting("ContainerCreating", None),
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            container_id: None,
        }
    }

    fn to_k8s(&self) -> ContainerStatus {
        let running = matches!(self.state, State::Running { .. });
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("skiff://{}", self.image),
            state: Some(self.state.to_k8s()),
            last_state: Some(
                self.last_state
                    .as_ref()
                    .map(State::to_k8s)
                    .unwrap_or_default(),
            ),
            restart_count: self.restart_count,
            ready: running && self.ready,
            started: Some(running && self.started),
            container_id: self.container_id.clone(),
            ..Default::default()
        }
    }
}

/// The pod as the kubelet sees it, to be turned into a `PodStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodRecord {
    pub init_containers: Vec<ContainerRecord>,
    pub containers: Vec<ContainerRecord>,
    pub pod_ips: Vec<IpAddr>,
    pub host_ips: Vec<IpAddr>,
    pub start_time: Option<Timestamp>,
    /// Set when the pod cannot run at all (e.g. its sandbox failed): phase stays Pending with
    /// this reason and message.
    pub sandbox_error: Option<String>,
}

/// The phase upstream's kubelet would report (`getPhase`).
pub fn phase(restart_policy: &str, record: &PodRecord) -> &'static str {
    let init_failed = record.init_containers.iter().any(|c| {
        matches!(c.state, State::Terminated { exit_code, .. } if exit_code != 0)
            && restart_policy == "Never"
    });
    if init_failed {
        return "Failed";
    }
    let init_done = record
        .init_containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated { exit_code: 0, .. }));
    if !init_done || record.containers.is_empty() {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &record.containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } => {
                if c.last_state.is_some() {
                    // Waiting to restart: it has run before.
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    let total = record.containers.len();
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == total {
        return match restart_policy {
            "Always" => "Running",
            "OnFailure" if succeeded == total => "Succeeded",
            "OnFailure" => "Running",
            _ if succeeded == total => "Succeeded",
            _ => "Failed",
        };
    }
    "Pending"
}

/// The pod's new status. Conditions whose status did not change keep the transition time of
/// the stored status.
pub fn pod_status(pod: &Pod, record: &PodRecord, now: Timestamp) -> PodStatus {
    let spec = pod.spec.as_ref();
    let restart_policy = spec
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    let previous = pod.status.as_ref();
    let phase = if record.sandbox_error.is_some() {
        "Pending"
    } else {
        phase(&restart_policy, record)
    };
    let initialized = record
        .init_containers
        .iter()
        .all(|c| matches!(c.state, State::Terminated { exit_code: 0, .. }));
    let containers_ready = !record.containers.is_empty()
        && record
            .containers
            .iter()
            .all(|c| matches!(c.state, State::Running { .. }) && c.ready && c.started);
    let not_ready = || {
        record
            .containers
            .iter()
            .filter(|c| !(matches!(c.state, State::Running { .. }) && c.ready))
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
    };
    let unready_message =
        |names: Vec<&str>| format!("containers with unready status: [{}]", names.join(" "));
    let pending_init: Vec<&str> = record
        .init_containers
        .iter()
        .filter(|c| !matches!(c.state, State::Terminated { exit_code: 0, .. }))
        .map(|c| c.name.as_str())
        .collect();
    // A finished pod is not ready; upstream says PodCompleted.
    let completed = matches!(phase, "Succeeded" | "Failed");
    let mut conditions = vec![
        condition("PodScheduled", true, None, None),
        if initialized {
            condition(
                "Initialized",
                true,
                completed.then_some("PodCompleted"),
                None,
            )
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                )),
            )
        },
    ];
    for kind in ["ContainersReady", "Ready"] {
        conditions.push(if containers_ready && !completed {
            condition(kind, true, None, None)
        } else if completed {
            condition(kind, false, Some("PodCompleted"), None)
        } else {
            condition(
                kind,
                false,
                Some("ContainersNotReady"),
                Some(unready_message(not_ready())),
            )
        });
    }
    for c in &mut conditions {
        let kept = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_))
            .filter(|p| p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or(Time(now)));
    }
    let ip_list = |ips: &[IpAddr]| ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>();
    let pod_ips = ip_list(&record.pod_ips);
    let host_ips = ip_list(&record.host_ips);
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        host_ip: host_ips.first().cloned(),
        host_ips: (!host_ips.is_empty()).then(|| {
            host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        start_time: record.start_time.map(Time),
        init_container_statuses: (!record.init_containers.is_empty()).then(|| {
            record
                .init_containers
                .iter()
                .map(ContainerRecord::to_k8s)
                .collect()
        }),
        container_statuses: Some(
            record
                .containers
                .iter()
                .map(ContainerRecord::to_k8s)
                .collect(),
        ),
        qos_class: previous.and_then(|p| p.qos_class.clone()),
        reason: record
            .sandbox_error
            .as_ref()
            .map(|_| "SandboxCreationFailed".to_owned()),
        message: record.sandbox_error.clone(),
        ..Default::default()
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        ..Default::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running(name: &str, ready: bool) -> ContainerRecord {
        ContainerRecord {
            state: State::Running { started_at: ts(1) },
            ready,
            started: true,
            ..ContainerRecord::new(name, "skiff.dev/echo")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRecord {
        ContainerRecord {
            state: State::Terminated {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(ts(1)),
                finished_at: ts(2),
            },
            ..ContainerRecord::new(name, "skiff.dev/echo")
        }
    }

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": policy, "containers": [{"name": "a"}]}})).unwrap()
    }

    fn cond<'a>(status: &'a PodStatus, kind: &str) -> &'a PodCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn phases_follow_upstream() {
        let rec = |containers| PodRecord {
            containers,
            ..Default::default()
        };
        assert_eq!(
            phase("Always", &rec(vec![ContainerRecord::new("a", "i")])),
            "Pending"
        );
        assert_eq!(phase("Always", &rec(vec![running("a", false)])), "Running");
        assert_eq!(phase("Never", &rec(vec![exited("a", 0)])), "Succeeded");
        assert_eq!(
            phase("Never", &rec(vec![exited("a", 0), exited("b", 1)])),
            "Failed"
        );
        assert_eq!(phase("OnFailure", &rec(vec![exited("a", 1)])), "Running");
        assert_eq!(phase("Always", &rec(vec![exited("a", 0)])), "Running");
        let mut backing_off = ContainerRecord::new("a", "i");
        backing_off.state = State::waiting("CrashLoopBackOff", None);
        backing_off.last_state = Some(exited("a", 1).state);
        assert_eq!(phase("Always", &rec(vec![backing_off])), "Running");
        let init_running = PodRecord {
            init_containers: vec![running("init", false)],
            containers: vec![ContainerRecord::new("a", "i")],
            ..Default::default()
        };
        assert_eq!(phase("Always", &init_running), "Pending");
        let init_failed = PodRecord {
            init_containers: vec![exited("init", 2)],
            containers: vec![ContainerRecord::new("a", "i")],
            ..Default::default()
        };
        assert_eq!(phase("Never", &init_failed), "Failed");
        assert_eq!(phase("Always", &init_failed), "Pending");
    }

    #[test]
    fn conditions_and_transition_times() {
        let record = PodRecord {
            containers: vec![running("a", false)],
            pod_ips: vec!["10.244.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            host_ips: vec!["10.0.0.1".parse().unwrap()],
            start_time: Some(ts(0)),
            ..Default::default()
        };
        let mut p = pod("Always");
        let s1 = pod_status(&p, &record, ts(10));
        assert_eq!(s1.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s1, "Ready").status, "False");
        assert_eq!(
            cond(&s1, "Ready").message.as_deref(),
            Some("containers with unready status: [a]")
        );
        assert_eq!(cond(&s1, "Initialized").status, "True");
        assert_eq!(s1.pod_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(s1.pod_ips.as_ref().unwrap().len(), 2);
        p.status = Some(s1.clone());

        let ready = PodRecord {
            containers: vec![running("a", true)],
            ..record.clone()
        };
        let s2 = pod_status(&p, &ready, ts(20));
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(Time(ts(20))));
        assert_eq!(
            cond(&s2, "PodScheduled").last_transition_time,
            Some(Time(ts(10))),
            "an unchanged condition keeps its time"
        );
        let cs = &s2.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));
    }

    #[test]
    fn completed_and_sandbox_failure() {
        let done = PodRecord {
            containers: vec![exited("a", 0)],
            ..Default::default()
        };
        let s = pod_status(&pod("Never"), &done, ts(5));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));

        let broken = PodRecord {
            containers: vec![ContainerRecord::new("a", "i")],
            sandbox_error: Some("no address left in 10.244.0.0/24".into()),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &broken, ts(5));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(
            s.message.as_deref(),
            Some("no address left in 10.244.0.0/24")
        );
    }
}
