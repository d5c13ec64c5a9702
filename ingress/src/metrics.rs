//! Prometheus metrics of the proxy: requests by status class and a latency histogram, overall
//! and per (Ingress, service), all atomics (no lock on the request path), plus the route
//! table's size. Per-route counters live in the route table and are handed to the next one.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::table::{Route, RouteTable};

/// Histogram upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests of one (Ingress, backend) by status class, with a latency histogram.
#[derive(Debug, Default)]
pub struct RouteStats {
    by_class: [AtomicU64; 6],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl RouteStats {
    fn record(&self, status: u16, elapsed: Duration) {
        self.by_class[usize::from(status / 100).min(CLASSES.len() - 1)]
            .fetch_add(1, Ordering::Relaxed);
        observe(&self.buckets, &self.count, &self.sum_us, elapsed);
    }
}

fn observe(buckets: &[AtomicU64], count: &AtomicU64, sum_us: &AtomicU64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    for (b, le) in buckets.iter().zip(BUCKETS) {
        if secs <= le {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
    count.fetch_add(1, Ordering::Relaxed);
    sum_us.fetch_add(
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    h: (&[AtomicU64], &AtomicU64, &AtomicU64),
) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let sep = if labels.is_empty() { "" } else { "," };
    for (le, b) in BUCKETS.iter().zip(h.0) {
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {}", get(b));
    }
    let count = get(h.1);
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n{name}_sum{braces} {}\n{name}_count{braces} {count}",
        get(h.2) as f64 / 1e6
    );
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Index: status / 100 (0 when no response was written).
    by_class: [AtomicU64; 6],
    /// Requests answered locally because no rule matched.
    not_found: AtomicU64,
    /// Requests answered 503 because a Service had no ready endpoint.
    no_endpoints: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    /// Set by the control loop.
    pub rules: AtomicU64,
    pub rebuilds: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: Option<&Route>, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).min(CLASSES.len() - 1);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        match (route, status) {
            (None, 404) => {
                self.not_found.fetch_add(1, Ordering::Relaxed);
            }
            (Some(r), 503) if r.backend.endpoints.is_empty() => {
                self.no_endpoints.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if let Some(r) = route {
            r.stats.record(status, elapsed);
        }
        observe(&self.buckets, &self.count, &self.sum_us, elapsed);
    }

    /// Prometheus text exposition, with per-(Ingress, service) series from `table`.
    pub fn render_with(&self, table: &RouteTable) -> String {
        let mut out = self.render();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut series: Vec<_> = table.stats().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str("# TYPE skiff_ingress_route_requests_total counter\n");
        for ((ing, backend), s) in &series {
            let ing = ing.as_ref().map_or_else(String::new, ToString::to_string);
            for (c, a) in CLASSES.iter().zip(&s.by_class) {
                let _ = writeln!(
                    out,
                    "skiff_ingress_route_requests_total{{ingress=\"{ing}\",service=\"{backend}\",code=\"{c}\"}} {}",
                    get(a)
                );
            }
        }
        out.push_str("# TYPE skiff_ingress_route_duration_seconds histogram\n");
        for ((ing, backend), s) in &series {
            let ing = ing.as_ref().map_or_else(String::new, ToString::to_string);
            let labels = format!("ingress=\"{ing}\",service=\"{backend}\"");
            histogram(
                &mut out,
                "skiff_ingress_route_duration_seconds",
                &labels,
                (&s.buckets, &s.count, &s.sum_us),
            );
        }
        out
    }

    /// Prometheus text exposition of the controller-wide series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# TYPE skiff_ingress_requests_total counter\n");
        for (c, a) in CLASSES.iter().zip(&self.by_class) {
            let _ = writeln!(
                out,
                "skiff_ingress_requests_total{{code=\"{c}\"}} {}",
                get(a)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE skiff_ingress_not_found_total counter\nskiff_ingress_not_found_total {}",
            get(&self.not_found)
        );
        let _ = writeln!(
            out,
            "# TYPE skiff_ingress_no_endpoints_total counter\nskiff_ingress_no_endpoints_total {}",
            get(&self.no_endpoints)
        );
        out.push_str("# TYPE skiff_ingress_request_duration_seconds histogram\n");
        histogram(
            &mut out,
            "skiff_ingress_request_duration_seconds",
            "",
            (&self.buckets, &self.count, &self.sum_us),
        );
        let _ = writeln!(
            out,
            "# TYPE skiff_ingress_rules gauge\nskiff_ingress_rules {}\n\
             # TYPE skiff_ingress_rebuilds_total counter\nskiff_ingress_rebuilds_total {}",
            get(&self.rules),
            get(&self.rebuilds)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.record(None, 404, Duration::from_millis(2));
        m.record(None, 200, Duration::from_secs(10));
        let text = m.render();
        for line in [
            "skiff_ingress_requests_total{code=\"4xx\"} 1",
            "skiff_ingress_requests_total{code=\"2xx\"} 1",
            "skiff_ingress_not_found_total 1",
            "skiff_ingress_request_duration_seconds_bucket{le=\"0.0025\"} 1",
            "skiff_ingress_request_duration_seconds_bucket{le=\"5\"} 1",
            "skiff_ingress_request_duration_seconds_bucket{le=\"+Inf\"} 2",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
