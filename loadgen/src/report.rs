//! A run's results: the JSON document (`--json`) and the terminal summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Protocol};
use crate::cpu::CpuTimes;

/// Achieved below this share of `--rate`: the run warns that the rate was not held.
const RATE_SHORTFALL: f64 = 0.95;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    /// e.g. `connect`, `tls`, `timeout`, `io`, `http 503`, `grpc 12 UNIMPLEMENTED`.
    pub by_kind: BTreeMap<String, u64>,
}

/// The client's own CPU use over the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientCpu {
    pub user_s: f64,
    pub sys_s: f64,
    /// (user + sys) / window: 100 is one core busy.
    pub percent: f64,
    /// Client CPU microseconds per answered request.
    pub us_per_request: f64,
    /// Worker threads of the client.
    pub threads: usize,
}

/// TLS handshakes of the whole run (warm-up and the first request included).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    pub full: u64,
    pub resumed: u64,
}

/// Everything `skiff bench --json` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub protocol: Protocol,
    /// dns only: `udp` or `tcp` (absent from other protocols' results and older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    pub target: String,
    /// `closed` (as fast as answers come) or `open` (fixed rate, coordinated omission corrected).
    pub mode: String,
    pub connections: usize,
    pub streams: usize,
    pub pipeline: usize,
    /// Requested rate (open loop), per second.
    pub rate: Option<f64>,
    pub new_conn: bool,
    pub warmup_s: f64,
    /// The measured window actually covered (shorter when interrupted).
    pub duration_s: f64,
    /// The run went the whole duration.
    pub completed: bool,
    pub interrupted: bool,
    /// Why the run stopped early or could not start.
    pub error: Option<String>,
    /// Answered requests in the window.
    pub requests: u64,
    /// Answered requests per second.
    pub throughput: f64,
    pub errors: Errors,
    pub latency_us: Latency,
    /// The percentile spectrum as `[percentile, microseconds]`, for plots.
    pub percentiles: Vec<[f64; 2]>,
    pub client_cpu: ClientCpu,
    /// Absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<TlsHandshakes>,
    pub warnings: Vec<String>,
}

/// What the driver hands over at the end.
pub(crate) struct Outcome<'a> {
    pub config: &'a Config,
    pub histogram: &'a Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub window_s: f64,
    pub completed: bool,
    pub interrupted: bool,
    pub error: Option<String>,
    pub cpu: CpuTimes,
    pub threads: usize,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Report {
    pub(crate) fn build(o: Outcome<'_>) -> Report {
        let h = o.histogram;
        let requests = h.len();
        let throughput = if o.window_s > 0.0 {
            requests as f64 / o.window_s
        } else {
            0.0
        };
        let latency = if requests == 0 {
            Latency::default()
        } else {
            Latency {
                min: us(h.min()),
                mean: h.mean() / 1000.0,
                stdev: h.stdev() / 1000.0,
                p50: us(h.value_at_quantile(0.50)),
                p90: us(h.value_at_quantile(0.90)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
            }
        };
        let mut percentiles: Vec<[f64; 2]> = Vec::new();
        if requests > 0 {
            for v in h.iter_quantiles(4) {
                let point = [v.quantile_iterated_to() * 100.0, us(v.value_iterated_to())];
                if percentiles.last() != Some(&point) {
                    percentiles.push(point);
                }
            }
        }
        let cpu_s = o.cpu.user + o.cpu.sys;
        let client_cpu = ClientCpu {
            user_s: o.cpu.user,
            sys_s: o.cpu.sys,
            percent: if o.window_s > 0.0 {
                cpu_s / o.window_s * 100.0
            } else {
                0.0
            },
            us_per_request: if requests > 0 {
                cpu_s * 1e6 / requests as f64
            } else {
                0.0
            },
            threads: o.threads,
        };
        let mut warnings = Vec::new();
        if let Some(rate) = o.config.rate
            && o.completed
            && throughput + (o.errors.values().sum::<u64>() as f64 / o.window_s.max(1e-9))
                < rate * RATE_SHORTFALL
        {
            warnings.push(format!(
                "the requested rate was not held: achieved {throughput:.0} req/s of {rate:.0} req/s ({:.0}%); the client or the target could not keep up, and latencies (measured from the intended send times) include the backlog",
                throughput / rate * 100.0
            ));
        }
        if client_cpu.percent > 90.0 * o.threads as f64 {
            warnings.push(format!(
                "the client was saturated ({:.0}% CPU on {} thread(s)): the numbers may measure the client, not the target",
                client_cpu.percent, o.threads
            ));
        }
        let config = o.config;
        Report {
            tool: format!("skiff bench {}", env!("CARGO_PKG_VERSION")),
            protocol: config.protocol,
            transport: (config.protocol == Protocol::Dns)
                .then(|| if config.dns_tcp { "tcp" } else { "udp" }.to_owned()),
            target: config.target.clone(),
            mode: if config.rate.is_some() {
                "open".into()
            } else {
                "closed".into()
            },
            connections: config.connections,
            streams: config.streams,
            pipeline: config.pipeline,
            rate: config.rate,
            new_conn: config.new_conn,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s: o.window_s,
            completed: o.completed,
            interrupted: o.interrupted,
            error: o.error,
            requests,
            throughput,
            errors: Errors {
                total: o.errors.values().sum(),
                by_kind: o.errors,
            },
            latency_us: latency,
            percentiles,
            client_cpu,
            tls_handshakes: None,
            warnings,
        }
    }

    /// The report of a run that could not start (for `--json` whatever happened).
    pub fn failed(config: &Config, error: String) -> Report {
        let empty = crate::record::Tally::new();
        Report::build(Outcome {
            config,
            histogram: &empty.histogram,
            errors: BTreeMap::new(),
            window_s: 0.0,
            completed: false,
            interrupted: false,
            error: Some(error),
            cpu: CpuTimes::default(),
            threads: 0,
        })
    }

    /// Pretty JSON into `path`.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// A report written by [`Report::write_json`].
    pub fn read_json(path: &Path) -> Result<Report, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a `skiff bench --json` result: {e}",
                path.display()
            )
        })
    }

    /// The human summary (several lines, no trailing newline).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} req/s"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            s,
            "{}{} {}: {load}, {} connection(s){}{}{}, {:.2}s measured after {:.2}s warm-up",
            self.protocol.name(),
            self.transport
                .as_deref()
                .map(|t| format!(" over {t}"))
                .unwrap_or_default(),
            self.target,
            self.connections,
            if self.streams > 1 {
                format!(" x {} streams", self.streams)
            } else {
                String::new()
            },
            if self.pipeline > 1 {
                format!(", pipeline {}", self.pipeline)
            } else {
                String::new()
            },
            if self.new_conn {
                ", new connection per request"
            } else {
                ""
            },
            self.duration_s,
            self.warmup_s
        );
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "  requests {}  throughput {:.1} req/s  errors {}",
            self.requests, self.throughput, self.errors.total
        );
        let _ = writeln!(
            s,
            "  latency  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {} ± {})",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean),
            fmt_us(l.stdev)
        );
        for (kind, n) in &self.errors.by_kind {
            let _ = writeln!(s, "  error    {kind}: {n}");
        }
        let c = &self.client_cpu;
        if let Some(t) = &self.tls_handshakes {
            let _ = writeln!(
                s,
                "  tls      {} full handshake(s), {} resumed",
                t.full, t.resumed
            );
        }
        let _ = write!(
            s,
            "  client   CPU {:.1}% ({:.2}s user, {:.2}s sys, {} thread(s)), {:.2} µs CPU per request",
            c.percent, c.user_s, c.sys_s, c.threads, c.us_per_request
        );
        for w in &self.warnings {
            let _ = write!(s, "\n  warning: {w}");
        }
        if let Some(e) = &self.error {
            let _ = write!(s, "\n  run incomplete: {e}");
        } else if self.interrupted {
            let _ = write!(s, "\n  run interrupted: partial results");
        }
        s
    }
}

/// `850µs`, `12.3ms`, `1.20s`.
pub(crate) fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outcome_report(rate: Option<f64>, samples: &[u64], window_s: f64) -> Report {
        let mut config = Config::new(Protocol::Http, "http://127.0.0.1:1/");
        config.rate = rate;
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for &ns in samples {
            h.record(ns).unwrap();
        }
        Report::build(Outcome {
            config: &config,
            histogram: &h,
            errors: BTreeMap::from([("io".to_owned(), 2)]),
            window_s,
            completed: true,
            interrupted: false,
            error: None,
            cpu: CpuTimes {
                user: 0.5,
                sys: 0.25,
            },
            threads: 1,
        })
    }

    #[test]
    fn percentiles_are_microseconds_and_json_round_trips() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect(); // 1µs..1ms
        let r = outcome_report(None, &samples, 1.0);
        assert_eq!(r.requests, 1000);
        assert_eq!(r.throughput, 1000.0);
        assert!(
            (r.latency_us.p50 - 500.0).abs() < 1.0,
            "{}",
            r.latency_us.p50
        );
        assert!((r.latency_us.max - 1000.0).abs() < 1.0);
        assert_eq!(r.errors.total, 2);
        assert_eq!(r.client_cpu.percent, 75.0);
        assert_eq!(r.client_cpu.us_per_request, 750.0);
        assert!(r.percentiles.windows(2).all(|w| w[0][0] <= w[1][0]));
        let json = serde_json::to_value(&r).unwrap();
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_us"][key].is_number(), "{key}");
        }
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn a_rate_not_held_is_a_warning_with_the_numbers() {
        let r = outcome_report(Some(10_000.0), &[1000; 100], 1.0);
        let w = r.warnings.join("\n");
        assert!(w.contains("achieved 100 req/s of 10000 req/s"), "{w}");
        assert!(r.summary().contains("warning"));
    }
}
