//! Store benchmarks, generic over `Arc<dyn Store>` so every backend runs the same cases:
//!
//! 1. `creates`: durable creates with 64 in flight (criterion reports elements/s), plus a
//!    fixed run printed as creates/s.
//! 2. `watch_fanout_100`: one write at a time, timed until all 100 watchers received it; every
//!    delivery's latency (write issued → event received) goes into an HDR histogram, printed
//!    as p50/p99. A second, loaded run (64 writers in flight) prints the same figures.
//!
//! `cargo bench -p skiff-benches --bench store -- --quick`. Another backend plugs in with a
//! `bench_backend(c, "name", &open)` call in `main`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde_json::json;
use skiff_apiserver::storage::{
    Codec, EncryptionKey, EtcdStore, ObjectKey, ResourceName, Scope, SqliteStore, Store,
};
use tokio::runtime::Runtime;

/// Writes in flight for the throughput cases.
const IN_FLIGHT: usize = 64;
const WATCHERS: usize = 100;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn key(resource: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ResourceName::new(resource).unwrap(), Some("bench"), name)
}

fn object() -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"labels": {"app": "bench", "tier": "storage"}},
        "data": {"sent_ns": now_ns().to_string(), "payload": "x".repeat(256)},
    })
}

/// `n` creates with `IN_FLIGHT` concurrent writers; returns the elapsed time.
async fn creates(store: &Arc<dyn Store>, n: u64) -> Duration {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let store = store.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let name = unique("c");
                store
                    .create(&key("configmaps", &name), object())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// 100 watchers on one scope, each recording write→delivery latency and signalling receipt.
struct Watchers {
    histograms: Vec<Arc<Mutex<Histogram<u64>>>>,
    /// Deliveries so far, over all watchers; `notify` is signalled after each.
    delivered: Arc<AtomicU64>,
    notify: Arc<tokio::sync::Notify>,
    /// Deliveries already waited for.
    seen: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    async fn start(store: &Arc<dyn Store>, resource: &str) -> Self {
        let scope = Scope::all(ResourceName::new(resource).unwrap());
        let from = store.current_revision().await.unwrap();
        let delivered = Arc::new(AtomicU64::new(0));
        let notify = Arc::new(tokio::sync::Notify::new());
        let mut histograms = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..WATCHERS {
            let mut stream = store.watch(&scope, from).await.unwrap();
            let h = Arc::new(Mutex::new(
                Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap(),
            ));
            histograms.push(h.clone());
            let (delivered, notify) = (delivered.clone(), notify.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(event)) = stream.next().await {
                    let sent: u64 = event.object["data"]["sent_ns"]
                        .as_str()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    let latency = now_ns().saturating_sub(sent).max(1_000);
                    h.lock().unwrap().saturating_record(latency);
                    delivered.fetch_add(1, Ordering::AcqRel);
                    notify.notify_one();
                }
            }));
        }
        Self {
            histograms,
            delivered,
            notify,
            seen: 0,
            tasks,
        }
    }

    async fn wait(&mut self, deliveries: usize) {
        self.seen += deliveries as u64;
        while self.delivered.load(Ordering::Acquire) < self.seen {
            self.notify.notified().await;
        }
    }

    fn reset(&self) {
        for h in &self.histograms {
            h.lock().unwrap().reset();
        }
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
        for h in &self.histograms {
            all.add(&*h.lock().unwrap()).unwrap();
        }
        all
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

fn report(backend: &str, case: &str, h: &Histogram<u64>) {
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{backend}: watch latency, {case}, {WATCHERS} watchers, {} deliveries: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        h.len(),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
}

/// Runs every store case against one backend. `open` makes a fresh, empty store.
pub fn bench_backend(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    open: &dyn Fn() -> Arc<dyn Store>,
) {
    // 1. Durable creates.
    let store = open();
    let mut group = c.benchmark_group(format!("store/{name}"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("creates_64_in_flight", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            async move { creates(&store, iters).await }
        });
    });
    group.finish();
    let n = 20_000;
    let elapsed = rt.block_on(creates(&store, n));
    println!(
        "{name}: {n} durable creates ({IN_FLIGHT} in flight) in {:.2} s = {:.0} creates/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    drop(store);

    // 2. Watch delivery to 100 watchers, one write at a time.
    let store = open();
    let mut watchers = rt.block_on(Watchers::start(&store, "watched"));
    let watchers_cell = Mutex::new(Some(watchers));
    let mut group = c.benchmark_group(format!("store/{name}"));
    group.throughput(Throughput::Elements(WATCHERS as u64));
    group.bench_function("watch_fanout_100", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = store.clone();
            let mut w = watchers_cell.lock().unwrap().take().unwrap();
            let cell = &watchers_cell;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    store
                        .create(&key("watched", &unique("w")), object())
                        .await
                        .unwrap();
                    w.wait(WATCHERS).await;
                    total += start.elapsed();
                }
                *cell.lock().unwrap() = Some(w);
                total
            }
        });
    });
    group.finish();
    watchers = watchers_cell.lock().unwrap().take().unwrap();
    report(
        name,
        "one write at a time (criterion run)",
        &watchers.merged(),
    );

    // The same watchers under load: IN_FLIGHT concurrent writers.
    watchers.reset();
    let writes = 5_000u64;
    rt.block_on(async {
        let wait = async {
            watchers.wait(writes as usize * WATCHERS).await;
        };
        let write = async {
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..IN_FLIGHT {
                let store = store.clone();
                let next = next.clone();
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < writes {
                        store.create(&key("watched", &unique("l")), object()).await.unwrap();
                    }
                }));
            }
            let start = Instant::now();
            for t in tasks {
                t.await.unwrap();
            }
            start.elapsed()
        };
        let (elapsed, ()) = tokio::join!(write, wait);
        println!(
            "{name}: loaded watch run: {writes} creates from {IN_FLIGHT} writers in {:.2} s ({:.0} creates/s) while {WATCHERS} watchers followed",
            elapsed.as_secs_f64(),
            writes as f64 / elapsed.as_secs_f64()
        );
    });
    report(
        name,
        &format!("{IN_FLIGHT} writers in flight"),
        &watchers.merged(),
    );
    watchers.stop();
}

fn codec() -> Codec {
    Codec::new(Some(EncryptionKey::from_bytes(&[7u8; 32]).unwrap()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Our defaults first, so `--warm-up-time`/`--measurement-time` on the command line (as
    // `make bench BENCH_QUICK=1` passes them) override them.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let sqlite = || -> Arc<dyn Store> {
        let path = dir.path().join(unique("sqlite")).join("skiff.db");
        Arc::new(SqliteStore::open(&path, codec()).unwrap())
    };
    bench_backend(&mut c, &rt, "sqlite", &sqlite);

    // etcd: a real etcd 3.4 (Debian etcd-server) started for the run, on loopback, killed at
    // the end; each store gets its own key prefix.
    let etcd = skiff_tests::EtcdServer::start().unwrap();
    let etcd_open = || -> Arc<dyn Store> {
        let prefix = format!("/bench/{}", unique("etcd"));
        Arc::new(
            rt.block_on(EtcdStore::connect(&[etcd.endpoint()], &prefix, codec()))
                .unwrap(),
        )
    };
    bench_backend(&mut c, &rt, "etcd", &etcd_open);
    drop(etcd);

    c.final_summary();
}
