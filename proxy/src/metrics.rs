//! The proxy's metrics in the Prometheus text format (the same hand-rolled approach as
//! `skiff-controller::metrics`: atomics, no metrics crate; the crates may not depend on each
//! other, so the few lines are repeated here).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histogram buckets, as kube-proxy's
/// `network_programming_duration_seconds` spans: 1 ms to 1 min.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket, plus one for +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {}", self.count());
    }
}

/// What the service proxy has done.
#[derive(Debug, Default)]
pub struct Metrics {
    /// A change observed (watch event) → the data plane's `apply` returned.
    pub programming_latency: Histogram,
    pub syncs: Counter,
    pub sync_errors: Counter,
    pub watch_errors: Counter,
    pub services: Gauge,
    pub service_ports: Gauge,
    pub backends: Gauge,
    pub problems: Gauge,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.programming_latency.render(
            &mut out,
            "skiff_proxy_network_programming_duration_seconds",
            "From a Service or EndpointSlice change observed to the data plane programmed.",
        );
        for (name, help, c) in [
            (
                "skiff_proxy_syncs_total",
                "Tables applied to the data plane.",
                &self.syncs,
            ),
            (
                "skiff_proxy_sync_errors_total",
                "Data plane applies that failed (retried with a full resync).",
                &self.sync_errors,
            ),
            (
                "skiff_proxy_watch_errors_total",
                "Errors from the Service/EndpointSlice watches (retried with backoff).",
                &self.watch_errors,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        for (name, help, g) in [
            (
                "skiff_proxy_services",
                "Services with at least one programmed port.",
                &self.services,
            ),
            (
                "skiff_proxy_service_ports",
                "Service ports in the programmed table.",
                &self.service_ports,
            ),
            (
                "skiff_proxy_backends",
                "Backends (address:port per service port) in the programmed table.",
                &self.backends,
            ),
            (
                "skiff_proxy_problems",
                "Objects or fields skipped as invalid in the current table.",
                &self.problems,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_cumulative_histogram() {
        let m = Metrics::default();
        m.programming_latency.observe(Duration::from_micros(1500));
        m.programming_latency.observe(Duration::from_secs(100));
        m.services.set(3);
        let text = m.render();
        assert!(
            text.contains(
                "skiff_proxy_network_programming_duration_seconds_bucket{le=\"0.001\"} 0\n"
            )
        );
        assert!(
            text.contains(
                "skiff_proxy_network_programming_duration_seconds_bucket{le=\"0.002\"} 1\n"
            )
        );
        assert!(
            text.contains("skiff_proxy_network_programming_duration_seconds_bucket{le=\"60\"} 1\n")
        );
        assert!(
            text.contains(
                "skiff_proxy_network_programming_duration_seconds_bucket{le=\"+Inf\"} 2\n"
            )
        );
        assert!(text.contains("skiff_proxy_network_programming_duration_seconds_count 2\n"));
        assert!(text.contains("# TYPE skiff_proxy_services gauge\nskiff_proxy_services 3\n"));
    }
}
