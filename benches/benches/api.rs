//! API server latency on loopback: a real server (HTTPS, bearer token, SQLite with fsync) driven
//! by the kube client, as controllers and kubectl drive it. Cases and the goals:
//!
//! 1. `get`: sequential GETs of one ConfigMap.
//! 2. `create`: ConfigMap creates on an open-loop schedule of 500/s; latency counts from the
//!    scheduled send time, so a stall delays every later request (no coordinated omission).
//!    Goal p99 ≤ 5 ms. The same schedule straight on the store (no HTTP, TLS, JSON or
//!    validation) is the in-run reference: API ÷ store is the figure to trust.
//! 3. `patch`: sequential merge patches of one object.
//! 4. `list`: 10,000 pods in one namespace, listed whole as JSON and as a kubectl Table.
//!    Goal ≤ 200 ms.
//! 5. `watch`: one write at a time, timed from the write's start until each of 100 watch
//!    streams (100 TLS connections) received it. Goal p99 ≤ 50 ms.
//!
//! `cargo bench -p skiff-benches --bench api`; `SKIFF_BENCH_QUICK=1` shrinks every case ~10×.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_apiserver::storage::{ObjectKey, ResourceName};
use skiff_benches::BenchServer;

const WATCHERS: usize = 100;
const CREATE_RATE: u64 = 500;

fn scale(n: u64) -> u64 {
    if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        (n / 10).max(10)
    } else {
        n
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).unwrap()
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn report(case: &str, h: &Histogram<u64>) {
    println!(
        "api: {case:<44} n={:<7} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        h.len(),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"sent_ns": now_ns().to_string(), "payload": "x".repeat(256)},
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {
            "nodeName": "node-1",
            "containers": [{
                "name": "app", "image": "registry.local/app:1",
                "ports": [{"containerPort": 8080}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            }],
        },
    }))
    .unwrap()
}

async fn bench_get(cms: &Api<ConfigMap>) {
    cms.create(&PostParams::default(), &config_map("get-me"))
        .await
        .unwrap();
    let mut h = histogram();
    for _ in 0..scale(2_000) {
        let t = Instant::now();
        cms.get("get-me").await.unwrap();
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    report("get ConfigMap (sequential)", &h);
}

/// Runs `n` calls of `op(i)` on a fixed schedule of `rate`/s; latency from the scheduled time.
async fn open_loop<F, Fut>(n: u64, rate: u64, op: F) -> Histogram<u64>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let h = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let fut = op(i);
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            fut.await;
            h.lock()
                .unwrap()
                .saturating_record(due.elapsed().as_nanos() as u64);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(h).unwrap().into_inner().unwrap()
}

async fn bench_create(s: &BenchServer, cms: &Api<ConfigMap>) {
    let n = scale(5_000);
    let h = open_loop(n, CREATE_RATE, |i| {
        let cms = cms.clone();
        async move {
            cms.create(&PostParams::default(), &config_map(&format!("c-{i}")))
                .await
                .unwrap();
        }
    })
    .await;
    report("create ConfigMap, 500/s open loop", &h);
    let store_h = open_loop(n, CREATE_RATE, |i| {
        let store = s.store.clone();
        async move {
            let key = ObjectKey::new(
                ResourceName::new("configmaps").unwrap(),
                Some("store-ref"),
                &format!("c-{i}"),
            );
            let object = serde_json::to_value(config_map(&format!("c-{i}"))).unwrap();
            store.create(&key, object).await.unwrap();
        }
    })
    .await;
    report("  reference: store create, 500/s", &store_h);
    println!(
        "api: create p99 API ÷ store = {:.2}",
        store_ratio(&h, &store_h)
    );
}

fn store_ratio(api: &Histogram<u64>, store: &Histogram<u64>) -> f64 {
    api.value_at_quantile(0.99) as f64 / store.value_at_quantile(0.99).max(1) as f64
}

async fn bench_patch(cms: &Api<ConfigMap>) {
    cms.create(&PostParams::default(), &config_map("patch-me"))
        .await
        .unwrap();
    let mut h = histogram();
    for i in 0..scale(2_000) {
        let patch = json!({"data": {"counter": i.to_string()}});
        let t = Instant::now();
        cms.patch("patch-me", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    report("merge patch ConfigMap (sequential)", &h);
}

async fn bench_list(s: &BenchServer) {
    let n = scale(10_000);
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let t = Instant::now();
    let mut creates = futures::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(&format!("pod-{i:05}")))
                    .await
            }
        })
        .buffer_unordered(64);
    while let Some(created) = creates.next().await {
        created.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "api: created {n} pods with 64 in flight: {:.0} creates/s",
        n as f64 / secs
    );
    let mut json_h = histogram();
    for _ in 0..10 {
        let t = Instant::now();
        let list = pods.list(&ListParams::default()).await.unwrap();
        json_h.saturating_record(t.elapsed().as_nanos() as u64);
        assert_eq!(list.items.len() as u64, n);
    }
    report(
        &format!("list {n} pods as JSON (kube client, decoded)"),
        &json_h,
    );
    // The same answer received but not decoded: the server's share of the time.
    let mut bytes_h = histogram();
    for _ in 0..10 {
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .body(Vec::new())
            .unwrap();
        let t = Instant::now();
        let text = s.client.request_text(req).await.unwrap();
        bytes_h.saturating_record(t.elapsed().as_nanos() as u64);
        assert!(
            text.len() as u64 > n * 100,
            "short list: {} bytes",
            text.len()
        );
    }
    report(
        &format!("list {n} pods as JSON (received, not decoded)"),
        &bytes_h,
    );
    // In-run reference: a selector every pod matches takes the path that decodes each stored
    // object and serialises the list again (the only path before stored bytes were spliced).
    let mut decoding_h = histogram();
    for _ in 0..10 {
        let req = http::Request::get(
            "/api/v1/namespaces/default/pods?labelSelector=skiff-bench-absent!%3Dx",
        )
        .body(Vec::new())
        .unwrap();
        let t = Instant::now();
        let text = s.client.request_text(req).await.unwrap();
        decoding_h.saturating_record(t.elapsed().as_nanos() as u64);
        assert!(
            text.len() as u64 > n * 100,
            "short list: {} bytes",
            text.len()
        );
    }
    report(
        &format!("list {n} pods as JSON through the decoding path (received, not decoded)"),
        &decoding_h,
    );
    let mut table_h = histogram();
    for _ in 0..10 {
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .header(
                "accept",
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )
            .body(Vec::new())
            .unwrap();
        let t = Instant::now();
        let table: serde_json::Value = s.client.request(req).await.unwrap();
        table_h.saturating_record(t.elapsed().as_nanos() as u64);
        assert_eq!(table["rows"].as_array().map(Vec::len), Some(n as usize));
    }
    report(&format!("list {n} pods as a Table (kubectl get)"), &table_h);
}

async fn bench_watch(s: &BenchServer) {
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "watched");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_default();
    let delivered = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let histograms: Vec<_> = (0..WATCHERS)
        .map(|_| Arc::new(Mutex::new(histogram())))
        .collect();
    let mut tasks = Vec::new();
    for h in &histograms {
        let mut stream = cms
            .watch(&WatchParams::default().timeout(290), &rv)
            .await
            .unwrap()
            .boxed();
        let (h, delivered, notify) = (h.clone(), delivered.clone(), notify.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Added(cm) | WatchEvent::Modified(cm) = event {
                    let sent: u64 = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("sent_ns"))
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    h.lock()
                        .unwrap()
                        .saturating_record(now_ns().saturating_sub(sent).max(1_000));
                    delivered.fetch_add(1, Ordering::AcqRel);
                    notify.notify_one();
                }
            }
        }));
    }
    // The watch requests are in flight once a first write reaches every stream.
    let n = scale(500);
    let mut expected = 0;
    for i in 0..=n {
        cms.create(&PostParams::default(), &config_map(&format!("w-{i}")))
            .await
            .unwrap();
        expected += WATCHERS as u64;
        while delivered.load(Ordering::Acquire) < expected {
            notify.notified().await;
        }
        if i == 0 {
            for h in &histograms {
                h.lock().unwrap().reset();
            }
        }
    }
    let mut all = histogram();
    for h in &histograms {
        all.add(&*h.lock().unwrap()).unwrap();
    }
    report(
        &format!("watch event to {WATCHERS} watchers (write start →)"),
        &all,
    );
    for t in tasks {
        t.abort();
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = BenchServer::start().await.unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
        for ns in ["store-ref", "watched"] {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(s.client.clone());
            let ns = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            api.create(&PostParams::default(), &ns).await.unwrap();
        }
        bench_get(&cms).await;
        bench_create(&s, &cms).await;
        bench_patch(&cms).await;
        bench_list(&s).await;
        bench_watch(&s).await;
        s.stop().await;
    });
}
