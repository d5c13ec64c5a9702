//! Network programming latency into the eBPF data plane (as root): N ClusterIP Services × 10
//! endpoints programmed into the socket load balancer's maps from empty (`full`), then 200
//! single-Service changes (one endpoint replaced), each timed from the table the compiler
//! hands over to the data plane's `apply` returning — the part of the proxy's
//! `network_programming_duration` after the watch, whose compile step `proxy_table` measures.
//!
//! The programs are attached (cgroup root) but act on no socket: no network namespace is
//! allowed, so nothing on the machine is touched. Maps are sized for each N.
//!
//! `cargo bench -p skiff-benches --bench proxy_dataplane` (`SKIFF_BENCH_QUICK=1`: 1k and 10k).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

#[path = "support/services.rs"]
mod services;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use services::{ENDPOINTS, node, objects, slice};
use skiff_ebpf::{SockLb, SockLbOptions};
use skiff_proxy::compiler::Compiler;
use skiff_proxy::ebpf::EbpfDataplane;
use skiff_proxy::{Dataplane, ServiceTable, TableDiff};

const CHANGES: usize = 200;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|uid| uid == "0")
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

async fn run(n: usize, handle: tokio::runtime::Handle) {
    let (svcs, slices) = objects(n);
    let mut compiler = Compiler::new(node());
    for s in &svcs {
        compiler.upsert_service(s);
    }
    for s in &slices {
        compiler.upsert_slice(s);
    }
    let (table, _) = compiler.build();
    let table: Arc<ServiceTable> = Arc::new(table);
    let room = (n as u32) + n as u32 / 4 + 1024;
    let lb = SockLb::load(SockLbOptions {
        max_services: room,
        max_backends: room * ENDPOINTS as u32,
        ..SockLbOptions::default()
    })
    .unwrap();
    let dataplane = EbpfDataplane::new(Arc::new(Mutex::new(lb)), handle);

    let started = Instant::now();
    dataplane
        .apply(&table, &TableDiff::full(&table))
        .await
        .unwrap();
    let full = started.elapsed();

    let mut h = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).unwrap();
    let versions = [slice(n / 2, n * ENDPOINTS), slice(n / 2, 0)];
    for i in 0..CHANGES {
        compiler.upsert_slice(&versions[i % 2]);
        let (next, diff) = compiler.build();
        assert_eq!(diff.changed.len(), 1);
        let next = Arc::new(next);
        let t = Instant::now();
        dataplane.apply(&next, &diff).await.unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    println!(
        "ebpf data plane, {n} services × {ENDPOINTS} endpoints: full program {:.1} ms; \
         one change p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms ({CHANGES} changes)",
        full.as_secs_f64() * 1e3,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max()),
    );
    dataplane.shutdown().await.unwrap();
}

fn main() {
    if !is_root() {
        println!("proxy_dataplane: skipped, needs root (BPF)");
        return;
    }
    let sizes: &[usize] = if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    for &n in sizes {
        let handle = rt.handle().clone();
        rt.block_on(run(n, handle));
    }
}
