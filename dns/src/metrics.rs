//! Counters and histograms of the DNS server, rendered in the Prometheus text format (the
//! controllers' approach: atomics, no registry; the caller serves `render()` on `/metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::{
    Rcode, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT,
};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over fixed bucket bounds (seconds), cumulative when rendered.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const QUERY_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5,
];
const PROGRAMMING_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const QTYPES: [(u16, &str); 9] = [
    (TYPE_A, "A"),
    (TYPE_AAAA, "AAAA"),
    (TYPE_SRV, "SRV"),
    (TYPE_PTR, "PTR"),
    (TYPE_TXT, "TXT"),
    (TYPE_CNAME, "CNAME"),
    (TYPE_SOA, "SOA"),
    (TYPE_ANY, "ANY"),
    (0, "other"),
];
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "dropped",
];

fn qtype_index(qtype: u16) -> usize {
    QTYPES
        .iter()
        .position(|&(t, _)| t == qtype)
        .unwrap_or(QTYPES.len() - 1)
}

fn rcode_index(rcode: Option<Rcode>) -> usize {
    match rcode {
        Some(Rcode::NoError) => 0,
        Some(Rcode::FormErr) => 1,
        Some(Rcode::ServFail) => 2,
        Some(Rcode::NxDomain) => 3,
        Some(Rcode::NotImp) => 4,
        Some(Rcode::Refused) => 5,
        Some(Rcode::BadVers) => 6,
        None => 7,
    }
}

/// Everything the DNS server counts.
#[derive(Debug)]
pub struct Metrics {
    /// [qtype][rcode] query counts.
    queries: Vec<Counter>,
    pub query_latency: Histogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub upstream_errors: Counter,
    /// Forwarded questions that waited for the same question already asked upstream.
    pub upstream_merged: Counter,
    pub snapshot_builds: Counter,
    /// Object change seen by the watch → snapshot with it swapped in.
    pub programming_latency: Histogram,
    /// Names in the current snapshot.
    pub snapshot_names: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            queries: (0..QTYPES.len() * RCODES.len())
                .map(|_| Counter::default())
                .collect(),
            query_latency: Histogram::new(QUERY_BUCKETS),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            upstream_errors: Counter::default(),
            upstream_merged: Counter::default(),
            snapshot_builds: Counter::default(),
            programming_latency: Histogram::new(PROGRAMMING_BUCKETS),
            snapshot_names: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one query (`None`: dropped without an answer) and its latency.
    pub fn query(&self, qtype: u16, rcode: Option<Rcode>, latency: Duration) {
        self.queries[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].inc();
        self.query_latency.observe(latency);
    }

    /// Queries counted for this type and rcode (tests).
    pub fn queries(&self, qtype: u16, rcode: Option<Rcode>) -> u64 {
        self.queries[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)].get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP skiff_dns_queries_total DNS queries answered, by query type and response code.\n\
             # TYPE skiff_dns_queries_total counter"
        );
        for (ti, (_, tname)) in QTYPES.iter().enumerate() {
            for (ri, rname) in RCODES.iter().enumerate() {
                let v = self.queries[ti * RCODES.len() + ri].get();
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "skiff_dns_queries_total{{type=\"{tname}\",rcode=\"{rname}\"}} {v}"
                    );
                }
            }
        }
        self.query_latency.render(
            &mut out,
            "skiff_dns_query_duration_seconds",
            "Time from a query read to its answer written.",
        );
        for (name, help, c) in [
            (
                "skiff_dns_cache_hits_total",
                "Forwarded questions answered from the cache.",
                &self.cache_hits,
            ),
            (
                "skiff_dns_cache_misses_total",
                "Forwarded questions not in the cache (sent upstream, or merged with one in flight).",
                &self.cache_misses,
            ),
            (
                "skiff_dns_upstream_errors_total",
                "Upstream exchanges that failed or timed out.",
                &self.upstream_errors,
            ),
            (
                "skiff_dns_upstream_merged_total",
                "Forwarded questions answered by an identical question already in flight upstream.",
                &self.upstream_merged,
            ),
            (
                "skiff_dns_snapshot_builds_total",
                "Cluster record snapshots swapped in (first sync and each debounced update).",
                &self.snapshot_builds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP skiff_dns_snapshot_names Names in the serving snapshot.\n# TYPE skiff_dns_snapshot_names gauge\nskiff_dns_snapshot_names {}",
            self.snapshot_names.load(Ordering::Relaxed)
        );
        self.programming_latency.render(
            &mut out,
            "skiff_dns_programming_duration_seconds",
            "From a Service, EndpointSlice or Pod change seen by the watch to the snapshot answering with it.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.query(TYPE_A, Some(Rcode::NxDomain), Duration::from_micros(20));
        m.cache_hits.inc();
        m.programming_latency.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("skiff_dns_queries_total{type=\"A\",rcode=\"NXDOMAIN\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("skiff_dns_query_duration_seconds_bucket{le=\"0.000025\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("skiff_dns_cache_hits_total 1\n"));
        assert!(text.contains("skiff_dns_programming_duration_seconds_count 1\n"));
    }
}
