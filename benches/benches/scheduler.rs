//! Scheduling throughput: an in-process API server (HTTPS, SQLite with fsync) and skiff's
//! scheduler as its client; 50 Ready Nodes, then 1,000 pods created (32 requests in flight) and
//! timed from the first create until a watch has seen every pod bound. Goal ≥ 500 pods/s.
//!
//! `cargo bench -p skiff-benches --bench scheduler`; `SKIFF_BENCH_QUICK=1` schedules 100 pods.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use skiff_benches::BenchServer;
use tokio::sync::oneshot;

const NODES: usize = 50;
const IN_FLIGHT: usize = 32;

fn pods_to_schedule() -> usize {
    if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        100
    } else {
        1_000
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bench = BenchServer::start().await.unwrap();
        let client = bench.client.clone();

        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..NODES {
            let name = format!("node-{i:02}");
            let node = serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}}}))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
            let status = json!({"status": {
                "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}});
            nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
        let scheduler = tokio::spawn(skiff_controller::scheduler::run(client.clone()));

        let total = pods_to_schedule();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let bound_watch = watcher::watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields("spec.nodeName!="),
        );
        let (all_bound_tx, all_bound) = oneshot::channel::<(Instant, BTreeMap<String, usize>)>();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut per_node = BTreeMap::<String, usize>::new();
            let mut events = bound_watch.boxed();
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event
                    && seen.insert(p.metadata.name.clone().unwrap())
                {
                    let node = p.spec.and_then(|s| s.node_name).unwrap();
                    *per_node.entry(node).or_default() += 1;
                    if seen.len() == total {
                        let _ = all_bound_tx.send((Instant::now(), per_node));
                        return;
                    }
                }
            }
        });
        // Let the scheduler and the watch list before the clock starts.
        tokio::time::sleep(Duration::from_millis(500)).await;

        let start = Instant::now();
        futures::stream::iter(0..total)
            .for_each_concurrent(IN_FLIGHT, |i| {
                let pods = pods.clone();
                async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("pod-{i:04}")},
                        "spec": {"containers": [{"name": "c", "image": "skiff.dev/pause",
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}
                    }))
                    .unwrap();
                    pods.create(&PostParams::default(), &pod).await.unwrap();
                }
            })
            .await;
        let created = start.elapsed();
        let (done, per_node) = tokio::time::timeout(Duration::from_secs(300), all_bound)
            .await
            .expect("every pod bound within 5 minutes")
            .unwrap();
        let elapsed = done.duration_since(start);
        let (min, max) = (
            per_node.values().min().copied().unwrap_or(0),
            per_node.values().max().copied().unwrap_or(0),
        );
        println!(
            "scheduler: {total} pods onto {NODES} nodes: all created in {:.2} s, all bound in \
             {:.2} s = {:.0} pods/s (goal >= 500); pods per node {min}..{max}",
            created.as_secs_f64(),
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
        );
        scheduler.abort();
        bench.stop().await;
    });
}
