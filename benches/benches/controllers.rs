//! Controller latency on loopback: a real API server (HTTPS, SQLite with fsync) with the
//! controllers running, as `skiff server` runs them.
//!
//! `endpoints`: 50 selected pods, not ready; one at a time turns Ready through `/status` (as a
//! kubelet reports it). Latency counts from the `/status` write's start until a watch on the
//! Service's EndpointSlices shows that pod's endpoint ready. Each pod is turned back to not
//! ready (unmeasured) before the next sample. Goal p99 ≤ 100 ms.
//!
//! `cargo bench -p skiff-benches --bench controllers`; `SKIFF_BENCH_QUICK=1` shrinks it ~10×.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use skiff_benches::BenchServer;
use tokio::sync::{Notify, oneshot};

const PODS: usize = 50;

fn samples() -> usize {
    if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        50
    } else {
        500
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// IP → ready, as the EndpointSlice watch last showed it.
#[derive(Default)]
struct Seen {
    ready: Mutex<BTreeMap<String, bool>>,
    changed: Notify,
}

impl Seen {
    async fn wait_for(&self, ip: &str, ready: bool) {
        loop {
            let notified = self.changed.notified();
            if self.ready.lock().unwrap().get(ip) == Some(&ready) {
                return;
            }
            tokio::time::timeout(Duration::from_secs(30), notified)
                .await
                .expect("the EndpointSlice never showed the change");
        }
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bench = BenchServer::start().await.unwrap();
        let client = bench.client.clone();
        let (stop_controllers, controllers_rx) = oneshot::channel::<()>();
        let controllers = tokio::spawn(skiff_controller::run(client.clone(), async move {
            let _ = controllers_rx.await;
        }));

        let pp = PostParams::default();
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let svc = json!({"metadata": {"name": "bench"}, "spec": {"selector": {"app": "bench"},
            "ipFamilies": ["IPv4"], "ports": [{"port": 80, "targetPort": 8080}]}});
        services
            .create(&pp, &serde_json::from_value(svc).unwrap())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut names = Vec::new();
        for i in 0..PODS {
            let name = format!("bench-{i}");
            let pod = json!({"metadata": {"name": name, "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "skiff.dev/echo"}]}});
            pods.create(&pp, &serde_json::from_value(pod).unwrap())
                .await
                .unwrap();
            let ip = format!("10.244.0.{}", i + 10);
            set_ready(&pods, &name, &ip, false).await;
            names.push((name, ip));
        }

        let seen = Arc::new(Seen::default());
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
        let watch_seen = seen.clone();
        let watch = tokio::spawn(async move {
            let wc = watcher::Config::default().labels("kubernetes.io/service-name=bench");
            let mut stream = watcher(slices, wc)
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(slice)) = stream.next().await {
                let mut ready = watch_seen.ready.lock().unwrap();
                for e in &slice.endpoints {
                    let r = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                    for a in &e.addresses {
                        ready.insert(a.clone(), r);
                    }
                }
                drop(ready);
                watch_seen.changed.notify_waiters();
            }
        });
        for (_, ip) in &names {
            seen.wait_for(ip, false).await;
        }

        let mut h = Histogram::<u64>::new_with_bounds(1_000, 120_000_000_000, 3).unwrap();
        for i in 0..samples() {
            let (name, ip) = &names[i % PODS];
            let t = Instant::now();
            set_ready(&pods, name, ip, true).await;
            seen.wait_for(ip, true).await;
            h.record(t.elapsed().as_nanos() as u64).unwrap();
            set_ready(&pods, name, ip, false).await;
            seen.wait_for(ip, false).await;
        }
        println!(
            "endpoints: pod Ready → EndpointSlice ready, {} samples over {PODS} pods: \
             p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (goal p99 ≤ 100 ms)",
            h.len(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        );

        watch.abort();
        let _ = stop_controllers.send(());
        controllers.await.unwrap();
        bench.stop().await;
    });
}
