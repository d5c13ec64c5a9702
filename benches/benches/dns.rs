//! Cluster DNS answer path on a 10,000-service snapshot (8,000 ClusterIP with a named port,
//! 2,000 headless with 3 endpoints each): snapshot build time, the synchronous answer path
//! (`skiff_dns::respond`: parse, lookup, encode) per query type with HDR percentiles and
//! single-core throughput, then a UDP round trip over loopback (one client socket, 64 queries in
//! flight) against the real server. The goal is ≥ 100k QPS per core on cluster names;
//! the side-by-side with Knot and `dnsperf` is a separate script.
//!
//! `cargo bench -p skiff-benches --bench dns`; `SKIFF_BENCH_QUICK=1` runs fewer queries.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use skiff_dns::fixtures::{BENCH_HEADLESS_EVERY as HEADLESS_EVERY, bench_cluster};
use skiff_dns::{DnsConfig, DnsServer, Model, PodRecords, Snapshot, ZoneSettings};

const SERVICES: usize = 10_000;

fn queries() -> usize {
    if std::env::var_os("SKIFF_BENCH_QUICK").is_some() {
        100_000
    } else {
        2_000_000
    }
}

fn model() -> Model {
    bench_cluster(SERVICES)
}

/// Makes the query packet for the i-th service.
type PacketMaker = Box<dyn Fn(usize) -> Vec<u8>>;

fn packet(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

fn main() {
    let model = model();
    let settings = ZoneSettings::new("cluster.local", 5, PodRecords::Insecure).unwrap();
    let mut builds = Histogram::<u64>::new(3).unwrap();
    let mut snap = None;
    for _ in 0..5 {
        let t = Instant::now();
        let built = Snapshot::build(&settings, &model);
        builds.record(t.elapsed().as_micros() as u64).unwrap();
        // The previous snapshot is dropped outside the timing (the server drops old snapshots
        // off the rebuild path too, when the last reader lets go).
        snap = Some(built);
    }
    let snap = snap.unwrap();
    println!(
        "snapshot: {} services → {} names; build p50 {:.1} ms, max {:.1} ms",
        SERVICES,
        snap.len(),
        builds.value_at_quantile(0.5) as f64 / 1000.0,
        builds.max() as f64 / 1000.0
    );

    let n = queries();
    let kinds: [(&str, PacketMaker); 5] = [
        (
            "A ClusterIP",
            Box::new(|i| {
                packet(
                    &format!("svc-{}.ns-{}.svc.cluster.local.", i, i % 100),
                    RecordType::A,
                )
            }),
        ),
        (
            "A headless (3)",
            Box::new(|i| {
                let i = i / HEADLESS_EVERY * HEADLESS_EVERY;
                packet(
                    &format!("svc-{}.ns-{}.svc.cluster.local.", i, i % 100),
                    RecordType::A,
                )
            }),
        ),
        (
            "SRV",
            Box::new(|i| {
                packet(
                    &format!("_http._tcp.svc-{}.ns-{}.svc.cluster.local.", i, i % 100),
                    RecordType::SRV,
                )
            }),
        ),
        (
            "NXDOMAIN",
            Box::new(|i| packet(&format!("nope-{i}.ns-1.svc.cluster.local."), RecordType::A)),
        ),
        (
            "PTR",
            Box::new(|i| {
                packet(
                    &format!("{}.{}.96.10.in-addr.arpa.", i % 256, (i / 256) % 40),
                    RecordType::PTR,
                )
            }),
        ),
    ];
    for (label, make) in &kinds {
        let packets: Vec<Vec<u8>> = (0..1024).map(|i| make((i * 7919) % SERVICES)).collect();
        let mut out = Vec::with_capacity(2048);
        let mut hist = Histogram::<u64>::new(3).unwrap();
        let start = Instant::now();
        let mut answered = 0usize;
        for i in 0..n {
            let t = Instant::now();
            answered += usize::from(skiff_dns::respond(
                &snap,
                &packets[i % packets.len()],
                &mut out,
            ));
            hist.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        assert!(answered > n / 2, "{label}: most queries answered");
        println!(
            "answer path {label:>15}: {:>5.0}k q/s on one core; ns p50 {} p99 {} p999 {} max {}",
            n as f64 / secs / 1000.0,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(udp_round_trips(model, n / 4));
}

async fn udp_round_trips(model: Model, n: usize) {
    let config = DnsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        udp_sockets: 1,
        ..DnsConfig::default()
    };
    let server = DnsServer::bind(config).await.unwrap();
    server.install(&model);
    let addr = server.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    let packets: Vec<Vec<u8>> = (0..1024)
        .map(|i| {
            let i = (i * 7919) % SERVICES;
            let mut p = packet(
                &format!("svc-{}.ns-{}.svc.cluster.local.", i, i % 100),
                RecordType::A,
            );
            p[0..2].copy_from_slice(&(i as u16).to_be_bytes());
            p
        })
        .collect();
    const IN_FLIGHT: usize = 64;
    let mut buf = vec![0u8; 2048];
    let start = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    while sent < IN_FLIGHT {
        sock.send(&packets[sent % packets.len()]).await.unwrap();
        sent += 1;
    }
    while received < n {
        // A lost datagram (timeout): put another in flight all the same.
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await
        {
            received += 1;
        }
        if sent < n + IN_FLIGHT {
            sock.send(&packets[sent % packets.len()]).await.unwrap();
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "UDP loopback, 1 client socket, {IN_FLIGHT} in flight, client and server on 2 cores: {:.0}k q/s",
        received as f64 / secs / 1000.0
    );
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}
