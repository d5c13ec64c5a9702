//! Cluster DNS programming cost (skiff-dns's control-plane work per change, no sockets), on the
//! benchmark cluster (`skiff_dns::fixtures::bench_cluster`: N Services over 100 namespaces,
//! every 5th headless with 3 endpoints):
//!
//! 1. `one_service_change/{1000,10000}`: one ClusterIP Service's address changes; the
//!    incremental `Index` recomputes that Service's records and hands out the next snapshot
//!    (copying only the shards it touched). The previous snapshot stays alive until the next
//!    change, as the served one does, so copy-on-write really copies.
//! 2. `one_slice_change/{1000,10000}`: one headless Service's EndpointSlice gains or loses an
//!    endpoint.
//! 3. `full_build/{1000,10000}`: `Snapshot::build` of everything (what every change cost
//!    before the index, and still the cost of the first sync).
//!
//! `cargo bench -p skiff-benches --bench dns_update -- --quick`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion};
use skiff_dns::fixtures::{self, BENCH_HEADLESS_EVERY};
use skiff_dns::model::{ServiceInfo, SliceInfo};
use skiff_dns::{Index, PodRecords, Snapshot, ZoneSettings};

fn bench(c: &mut Criterion) {
    let settings = ZoneSettings::new("cluster.local", 5, PodRecords::Insecure).unwrap();
    let mut group = c.benchmark_group("dns");
    for n in [1_000usize, 10_000] {
        let model = fixtures::bench_cluster(n);
        let mut index = Index::from_model(&settings, &model);
        let mut served = index.snapshot();

        // A ClusterIP Service in the middle (not a headless one).
        let i = n / 2 + 1;
        let ns = format!("ns-{}", i % 100);
        let addrs = [
            format!("10.200.0.{}", i % 250),
            format!("10.201.0.{}", i % 250),
        ];
        let infos: Vec<ServiceInfo> = addrs
            .iter()
            .map(|a| {
                let s = fixtures::service(
                    &ns,
                    &format!("svc-{i}"),
                    &[a.as_str()],
                    &[("http", "TCP", 80)],
                );
                ServiceInfo::from_service(&s).unwrap()
            })
            .collect();
        let mut flip = 0;
        group.bench_function(BenchmarkId::new("one_service_change", n), |b| {
            b.iter(|| {
                flip ^= 1;
                let info = infos[flip].clone();
                assert!(index.set_service(info.key.clone(), Some(info)));
                served = black_box(index.snapshot());
            })
        });

        // A headless Service's slice: 3 endpoints, then 4, then 3 again.
        let h = n / 2 / BENCH_HEADLESS_EVERY * BENCH_HEADLESS_EVERY;
        let ns = format!("ns-{}", h % 100);
        let name = format!("svc-{h}");
        let ips: Vec<String> = (0..4)
            .map(|e| format!("10.{}.{}.{}", 128 + e, (h / 256) % 256, h % 256))
            .collect();
        let slices: Vec<SliceInfo> = [3usize, 4]
            .iter()
            .map(|&k| {
                let eps: Vec<fixtures::Ep<'_>> =
                    ips[..k].iter().map(|a| (a.as_str(), None, true)).collect();
                let s = fixtures::slice(
                    &ns,
                    &format!("{name}-1"),
                    &name,
                    &eps,
                    &[("http", "TCP", 8080)],
                );
                SliceInfo::from_slice(&s).unwrap()
            })
            .collect();
        // Index 0 (3 endpoints) is what the index has; the first change grows the slice.
        let mut grown = 0;
        group.bench_function(BenchmarkId::new("one_slice_change", n), |b| {
            b.iter(|| {
                grown ^= 1;
                let info = slices[grown].clone();
                assert!(index.set_slice(info.key.clone(), Some(info)));
                served = black_box(index.snapshot());
            })
        });
        drop(served);

        group.sample_size(10);
        group.bench_function(BenchmarkId::new("full_build", n), |b| {
            b.iter(|| black_box(Snapshot::build(&settings, &model)))
        });
        group.sample_size(100);
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
