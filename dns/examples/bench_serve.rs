//! The benchmark side of `benches/dns/run.sh`: the benchmark cluster
//! (`skiff_dns::fixtures::bench_cluster`) as skiff-dns serves it, without an API server.
//!
//! ```text
//! bench_serve zone  --services N --out DIR      # DIR/cluster.local.zone (RFC 1035 master file
//!                                                # of every record in the zone, for Knot) and
//!                                                # DIR/queries.txt (dnsperf input)
//! bench_serve serve --services N --listen ADDR --threads T
//! bench_serve updates --services N              # one-change programming cost, p50/p99
//! bench_serve answers --services N              # the answer path alone on queries.txt's mix
//! ```
//!
//! Built in release for the measurement only:
//! `cargo build --release -p skiff-dns --example bench_serve`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use skiff_dns::fixtures::{self, BENCH_HEADLESS_EVERY};
use skiff_dns::model::ServiceInfo;
use skiff_dns::names::to_dotted;
use skiff_dns::wire::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_SOA, TYPE_SRV, TYPE_TXT};
use skiff_dns::{DnsConfig, DnsServer, ForwardConfig, Index, PodRecords, Snapshot, ZoneSettings};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            bail!("unexpected argument {flag:?}");
        };
        let value = args
            .next()
            .with_context(|| format!("--{name} needs a value"))?;
        opts.insert(name.to_string(), value);
    }
    let services: usize = opts
        .get("services")
        .map(|s| s.parse())
        .transpose()
        .context("--services")?
        .unwrap_or(10_000);
    let settings = ZoneSettings::new("cluster.local", 5, PodRecords::Insecure)?;
    let mut model = fixtures::bench_cluster(services);
    // The nameserver's own Service, so `ns.dns.<zone>` (the apex NS) has an address.
    let kube_dns = fixtures::service(
        "kube-system",
        "kube-dns",
        &["10.96.0.10"],
        &[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
    );
    if let Some(info) = ServiceInfo::from_service(&kube_dns) {
        model.services.insert(info.key.clone(), info);
    }
    match command.as_str() {
        "zone" => {
            let out = opts.get("out").context("--out DIR")?;
            let snap = Snapshot::build(&settings, &model);
            std::fs::write(format!("{out}/cluster.local.zone"), zone_file(&snap))?;
            std::fs::write(format!("{out}/queries.txt"), queries(services))?;
            Ok(())
        }
        "serve" => {
            let listen: SocketAddr = opts
                .get("listen")
                .map(|s| s.parse())
                .transpose()
                .context("--listen")?
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5300)));
            let threads: usize = opts
                .get("threads")
                .map(|s| s.parse())
                .transpose()
                .context("--threads")?
                .unwrap_or(1);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?;
            rt.block_on(serve(settings, model, listen, threads))
        }
        "updates" => {
            updates(&settings, &model, services);
            Ok(())
        }
        "answers" => answers(&settings, &model, services),
        other => bail!("unknown command {other:?}: zone, serve, updates or answers"),
    }
}

async fn serve(
    settings: ZoneSettings,
    model: skiff_dns::Model,
    listen: SocketAddr,
    threads: usize,
) -> Result<()> {
    let config = DnsConfig {
        zone: "cluster.local".into(),
        ttl: settings.ttl,
        listen: vec![listen],
        pods: settings.pods,
        udp_sockets: threads,
        forward: ForwardConfig::default(),
        ..DnsConfig::default()
    };
    let server = DnsServer::bind(config).await?;
    // What the watch holds: the index (cut-down objects and the shards), not the model.
    let services = model.services.len();
    let mut index = Index::from_model(&settings, &model);
    drop(model);
    server.install_snapshot(index.snapshot());
    println!("serving {services} Services on {}", server.local_addrs()[0]);
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(index);
    Ok(())
}

/// The zone's records (PTRs live in the reverse zones and are left out) as a master file.
fn zone_file(snap: &Snapshot) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (name, rtype, rdata) in snap.records() {
        let owner = to_dotted(name);
        let ttl = snap.settings.ttl;
        let text = match rtype {
            TYPE_A | TYPE_AAAA => {
                let ip = if rtype == TYPE_A {
                    <[u8; 4]>::try_from(rdata).map(IpAddr::from).ok()
                } else {
                    <[u8; 16]>::try_from(rdata).map(IpAddr::from).ok()
                };
                let Some(ip) = ip else { continue };
                format!("{} {ip}", if rtype == TYPE_A { "A" } else { "AAAA" })
            }
            TYPE_SRV if rdata.len() > 6 => format!(
                "SRV {} {} {} {}",
                u16::from_be_bytes([rdata[0], rdata[1]]),
                u16::from_be_bytes([rdata[2], rdata[3]]),
                u16::from_be_bytes([rdata[4], rdata[5]]),
                to_dotted(&rdata[6..])
            ),
            TYPE_CNAME => format!("CNAME {}", to_dotted(rdata)),
            TYPE_NS => format!("NS {}", to_dotted(rdata)),
            TYPE_TXT if !rdata.is_empty() => {
                format!("TXT \"{}\"", String::from_utf8_lossy(&rdata[1..]))
            }
            TYPE_SOA => {
                let mname_end = name_end(rdata, 0);
                let rname_end = name_end(rdata, mname_end);
                let nums: Vec<u32> = rdata[rname_end..]
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let mut s = format!(
                    "SOA {} {}",
                    to_dotted(&rdata[..mname_end]),
                    to_dotted(&rdata[mname_end..rname_end])
                );
                for n in nums {
                    let _ = write!(s, " {n}");
                }
                s
            }
            _ => continue,
        };
        if owner.ends_with(".arpa.") {
            continue;
        }
        lines.push(format!("{owner} {ttl} IN {text}"));
    }
    // The SOA first, as master files want it.
    lines.sort_by_key(|l| (!l.contains(" IN SOA "), l.clone()));
    lines.join("\n") + "\n"
}

/// Where the uncompressed wire name starting at `at` ends.
fn name_end(wire: &[u8], mut at: usize) -> usize {
    while let Some(&len) = wire.get(at) {
        at += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    at.min(wire.len())
}

/// dnsperf input: a deterministic mix over every Service — 40% A of ClusterIP Services, 20% A
/// of headless ones (3 addresses), 20% SRV, 10% AAAA (NODATA), 10% NXDOMAIN.
fn queries(services: usize) -> String {
    let mut out = String::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for q in 0..100_000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % services as u64) as usize;
        let name = |i: usize| format!("svc-{i}.ns-{}.svc.cluster.local", i % 100);
        let clusterip = if i.is_multiple_of(BENCH_HEADLESS_EVERY) {
            i + 1
        } else {
            i
        } % services;
        let headless = i / BENCH_HEADLESS_EVERY * BENCH_HEADLESS_EVERY;
        let line = match q % 10 {
            0..=3 => format!("{} A", name(clusterip)),
            4 | 5 => format!("{} A", name(headless)),
            6 | 7 => format!("_http._tcp.{} SRV", name(i)),
            8 => format!("{} AAAA", name(clusterip)),
            _ => format!("nope-{i}.ns-{}.svc.cluster.local A", i % 100),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The programming cost of one Service change on this cluster (what the watch does after the
/// debounce), and of a full build, in microseconds.
fn updates(settings: &ZoneSettings, model: &skiff_dns::Model, services: usize) {
    let rss0 = rss_mib();
    let t = Instant::now();
    let mut index = Index::from_model(settings, model);
    let mut served = index.snapshot();
    let full_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "RSS: model {rss0:.1} MiB, + index and snapshot {:.1} MiB",
        rss_mib()
    );
    let i = services / 2 + 1;
    let ns = format!("ns-{}", i % 100);
    let mut times = Vec::new();
    for round in 0..2000 {
        let addr = format!("10.{}.0.{}", 200 + round % 2, i % 250);
        let svc = fixtures::service(&ns, &format!("svc-{i}"), &[&addr], &[("http", "TCP", 80)]);
        let Some(info) = ServiceInfo::from_service(&svc) else {
            continue;
        };
        let t = Instant::now();
        index.set_service(info.key.clone(), Some(info));
        served = index.snapshot();
        times.push(t.elapsed().as_micros() as u64);
    }
    drop(served);
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{services} services: full build {full_ms:.1} ms; one Service change → new snapshot: p50 {} µs, p99 {} µs, max {} µs",
        at(0.5),
        at(0.99),
        times.last().copied().unwrap_or(0)
    );
}

/// This process's resident memory.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The synchronous answer path (`skiff_dns::respond`: parse, lookup, encode) on the dnsperf
/// query mix, one core, no sockets.
fn answers(settings: &ZoneSettings, model: &skiff_dns::Model, services: usize) -> Result<()> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let snap = Snapshot::build(settings, model);
    let packets: Vec<Vec<u8>> = queries(services)
        .lines()
        .map(|line| {
            let (name, rtype) = line.split_once(' ').context("query line")?;
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii(name)?,
                RecordType::from(rtype.parse::<u16>().unwrap_or(match rtype {
                    "AAAA" => 28,
                    "SRV" => 33,
                    _ => 1,
                })),
            ));
            Ok(m.to_vec()?)
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(2048);
    let rounds = 20;
    let start = Instant::now();
    let mut answered = 0usize;
    for _ in 0..rounds {
        for p in &packets {
            answered += usize::from(skiff_dns::respond(&snap, p, &mut out));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "answer path: {:.0}k queries/s on one core ({answered} of {} answered)",
        (rounds * packets.len()) as f64 / secs / 1000.0,
        rounds * packets.len()
    );
    Ok(())
}
