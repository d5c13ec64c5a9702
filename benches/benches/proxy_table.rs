//! Service table compile and diff (skiff-proxy's control-plane cost, no data plane):
//!
//! 1. `compile/{1000,10000,100000}`: N ClusterIP Services × 10 ready endpoints, from k8s-openapi
//!    objects to a `ServiceTable` (validation, policies, ids).
//! 2. `one_endpoint_change/{1000,10000,100000}`: what the watch loop does per change: one
//!    Service's EndpointSlice has one endpoint replaced, handed to the incremental `Compiler`
//!    (re-validated), which recompiles that Service and returns the next table and its diff.
//! 3. `whole_rebuild_one_change/10000`: the same change the old way, `ServiceTable::build` of
//!    everything with the previous table plus `TableDiff::between` (for comparison).
//!
//! `cargo bench -p skiff-benches --bench proxy_table -- --quick`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use skiff_proxy::compiler::Compiler;
use skiff_proxy::{ServiceTable, TableDiff};

#[path = "support/services.rs"]
mod services;

use services::{ENDPOINTS, node, objects, slice};

fn bench(c: &mut Criterion) {
    let node = node();
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for n in [1_000, 10_000, 100_000] {
        let (services, slices) = objects(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(ServiceTable::build(&node, &services, &slices, None)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("one_endpoint_change");
    for n in [1_000, 10_000, 100_000] {
        let (services, slices) = objects(n);
        let mut compiler = Compiler::new(node.clone());
        for s in &services {
            compiler.upsert_service(s);
        }
        for s in &slices {
            compiler.upsert_slice(s);
        }
        let (table, _) = compiler.build();
        assert_eq!(table.ports().len(), n);
        // One endpoint of one Service replaced by another address, and back: every iteration
        // is a real change.
        let versions = [slice(n / 2, n * ENDPOINTS), slice(n / 2, 0)];
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                compiler.upsert_slice(&versions[i % 2]);
                i += 1;
                let (table, diff) = compiler.build();
                assert_eq!(diff.changed.len(), 1);
                black_box((table, diff))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("whole_rebuild_one_change");
    group.sample_size(10);
    let n = 10_000;
    let (services, mut slices) = objects(n);
    let before = ServiceTable::build(&node, &services, &slices, None);
    slices[n / 2] = slice(n / 2, n * ENDPOINTS);
    group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
        b.iter(|| {
            let after = ServiceTable::build(&node, &services, &slices, Some(&before));
            let diff = TableDiff::between(&before, &after);
            assert_eq!(diff.changed.len(), 1);
            black_box(diff)
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
