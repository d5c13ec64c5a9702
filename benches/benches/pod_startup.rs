//! Pod startup latency through the whole stack: a real `skiff up` (release binary, as root),
//! 100 pods created through the API at once; each pod's latency counts from the start of its
//! create request until a watch sees it Running with the Ready condition True (scheduling,
//! sandbox with dual-stack addresses, cgroup, process start and status write included).
//!
//! Two rounds: `skiff.dev/pause` (Ready once running) and `skiff.dev/echo` with an HTTP
//! readiness probe on `/health` (Ready once the probe passes). Goal p99 ≤ 1 s (the upstream
//! SLO is 5 s).
//!
//! `cargo build --release -p skiff && cargo bench -p skiff-benches --bench pod_startup`
//! (`make bench` does both); `SKIFF_BENCH_QUICK=1` runs 20 pods.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use skiff_node::sandbox::list_netns;
use skiff_tests::skiff_up::SkiffUp;
use tokio::sync::Notify;

/// How many creates are in flight at once (a Deployment controller's burst is similar).
const IN_FLIGHT: usize = 32;

fn pods_per_round() -> usize {
    if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        20
    } else {
        100
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn ready(p: &Pod) -> bool {
    let Some(status) = p.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// When the watch first saw each pod Ready.
#[derive(Default)]
struct ReadyAt {
    at: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

/// One round: `count` pods from `template` created (`IN_FLIGHT` at a time), latencies
/// recorded, then all deleted and waited for.
async fn round(
    client: &kube::Client,
    netns_prefix: &str,
    label: &str,
    template: serde_json::Value,
    count: usize,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen = Arc::new(ReadyAt::default());
    let watch_seen = seen.clone();
    let watch_pods = pods.clone();
    let selector = format!("round={label}");
    let watch = tokio::spawn(async move {
        let mut stream = watcher(watch_pods, watcher::Config::default().labels(&selector))
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(pod)) = stream.next().await {
            if ready(&pod) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                watch_seen
                    .at
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_insert_with(Instant::now);
                watch_seen.changed.notify_waiters();
            }
        }
    });
    // Let the watch establish before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            let mut pod = template.clone();
            let name = format!("{label}-{i}");
            pod["metadata"] = json!({"name": name, "labels": {"round": label}});
            async move {
                let t = Instant::now();
                pods.create(
                    &PostParams::default(),
                    &serde_json::from_value(pod).unwrap(),
                )
                .await
                .unwrap();
                (name, t)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let all_created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let notified = seen.changed.notified();
        if seen.at.lock().unwrap().len() >= count {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} pods became Ready within 120 s",
            seen.at.lock().unwrap().len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
    }
    let all_ready = started.elapsed();
    let mut h = Histogram::<u64>::new_with_bounds(1_000, 600_000_000_000, 3).unwrap();
    {
        let at = seen.at.lock().unwrap();
        for (name, t) in &created {
            h.record(at[name].duration_since(*t).as_nanos() as u64)
                .unwrap();
        }
    }
    println!(
        "pod startup ({label}): {count} pods, created → Running and Ready: p50 {:.0} ms  \
         p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (all created in {:.2} s, all Ready after \
         {:.2} s; goal p99 ≤ 1000 ms)",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
        all_created.as_secs_f64(),
        all_ready.as_secs_f64(),
    );
    watch.abort();

    let lp = ListParams::default().labels(&format!("round={label}"));
    for (name, _) in &created {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    // The API forgets a pod at once; its sandbox goes after. The next round starts on a quiet
    // node: no pod objects and no pod network namespaces left.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&lp).await.unwrap().items.is_empty() || !list_netns(netns_prefix).is_empty() {
        assert!(Instant::now() < deadline, "pods not removed within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        println!("pod_startup: skipped, needs root (network namespaces, cgroups)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let name = format!("bench{}", std::process::id());
    // skiff up logs a few lines per pod: into a file (its path printed), not the bench output.
    let log = std::env::temp_dir().join("skiff-pod-startup.log");
    let _ = std::fs::remove_file(&log);
    println!("pod_startup: skiff up's log: {}", log.display());
    let mut up = SkiffUp::start_logging_to(&name, &dir.path().join("data"), &[], &log).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = up.client().await.unwrap();
        let count = pods_per_round();
        let grace = 1;
        let prefix = format!("skiff-{name}-pod-");
        round(
            &client,
            &prefix,
            "pause",
            json!({"spec": {"terminationGracePeriodSeconds": grace,
                "containers": [{"name": "c", "image": "skiff.dev/pause"}]}}),
            count,
        )
        .await;
        round(
            &client,
            &prefix,
            "echo",
            json!({"spec": {"terminationGracePeriodSeconds": grace,
                "containers": [{"name": "c", "image": "skiff.dev/echo",
                    "readinessProbe": {"httpGet": {"path": "/health", "port": 3000},
                        "periodSeconds": 1}}]}}),
            count,
        )
        .await;
    });
    let status = up.stop().unwrap();
    assert!(status.success(), "skiff up exited with {status}");
}
