//! Running the load: a preflight request, one task per connection, each driving its lanes in
//! closed loop or on a fixed-rate schedule, a monitor for progress, the end and interrupts.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::Error;
use crate::config::{Config, Protocol};
use crate::cpu::CpuTimes;
use crate::proto::{
    Failure, Proto, dns::Dns, dns_tcp::DnsTcp, h2::H2, http1::Http1, tcp::Tcp, udp::Udp,
};
use crate::record::{Recorder, Shared};
use crate::report::{Outcome, Report};

/// Requests in flight when the run ends get this long (at most `--timeout`) to finish.
const END_GRACE: Duration = Duration::from_secs(1);
/// Reconnect backoff after a failed connection attempt, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Once a second during a run.
#[derive(Clone, Debug)]
pub struct Progress {
    pub elapsed: Duration,
    pub warmup: Duration,
    pub total: Duration,
    /// Answers per second over the last interval.
    pub rate: f64,
    pub errors: u64,
}

impl Progress {
    /// `[=====>    ] 3.0s/11.0s  45123 req/s  0 errors (warm-up)`.
    pub fn line(&self) -> String {
        const WIDTH: usize = 20;
        let share = if self.total.is_zero() {
            1.0
        } else {
            (self.elapsed.as_secs_f64() / self.total.as_secs_f64()).min(1.0)
        };
        let filled = (share * WIDTH as f64) as usize;
        let bar: String = (0..WIDTH)
            .map(|i| match i.cmp(&filled) {
                std::cmp::Ordering::Less => '=',
                std::cmp::Ordering::Equal => '>',
                std::cmp::Ordering::Greater => ' ',
            })
            .collect();
        format!(
            "[{bar}] {:.1}s/{:.1}s  {:.0} req/s  {} errors{}",
            self.elapsed.as_secs_f64(),
            self.total.as_secs_f64(),
            self.rate,
            self.errors,
            if self.elapsed < self.warmup {
                " (warm-up)"
            } else {
                ""
            }
        )
    }
}

/// Run `config` until its duration is over or `stop` resolves (an interrupt: the report is then
/// partial). `Err` only when the run cannot be set up; a target that cannot be reached or
/// answers wrongly gives a report with `completed: false` and the reason in `error`.
pub async fn run(
    config: Config,
    stop: impl Future<Output = ()> + Send,
    progress: impl FnMut(&Progress) + Send,
) -> Result<Report, Error> {
    config.validate()?;
    match config.protocol {
        Protocol::Http => drive(Http1::new(&config).await?, config, stop, progress).await,
        Protocol::H2 | Protocol::Grpc => {
            drive(H2::new(&config).await?, config, stop, progress).await
        }
        Protocol::Tcp => drive(Tcp::new(&config).await?, config, stop, progress).await,
        Protocol::Udp => drive(Udp::new(&config).await?, config, stop, progress).await,
        Protocol::Dns if config.dns_tcp => {
            drive(DnsTcp::new(&config).await?, config, stop, progress).await
        }
        Protocol::Dns => drive(Dns::new(&config).await?, config, stop, progress).await,
    }
}

async fn drive<P: Proto>(
    proto: P,
    config: Config,
    stop: impl Future<Output = ()> + Send,
    mut progress: impl FnMut(&Progress) + Send,
) -> Result<Report, Error> {
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let proto = Arc::new(proto);
    let config = Arc::new(config);
    tokio::pin!(stop);

    // One request first: a target that is down, speaks another protocol or refuses the TLS
    // handshake fails here with its own message, not as a table of error counts.
    let preflight = async {
        let mut lanes = proto.open(1).await?;
        let mut done = Vec::new();
        match lanes.first_mut() {
            Some(lane) => proto.call(lane, 1, &mut done).await,
            None => Ok(()),
        }
    };
    let preflight = tokio::select! {
        r = tokio::time::timeout(config.timeout, preflight) => Some(r),
        () = &mut stop => None,
    };
    let failed = |error: String, interrupted: bool| {
        let mut report = Report::failed(&config, error);
        report.interrupted = interrupted;
        report.client_cpu.threads = threads;
        report
    };
    match preflight {
        None => return Ok(failed("interrupted before the run started".into(), true)),
        Some(Err(_)) => {
            return Ok(failed(
                format!(
                    "no answer from {} within {:?} (--timeout) to the first request",
                    config.target, config.timeout
                ),
                false,
            ));
        }
        Some(Ok(Err(failure))) => return Ok(failed(failure.message, false)),
        Some(Ok(Ok(()))) => {}
    }

    let origin = Instant::now();
    let shared = Arc::new(Shared::new(
        origin,
        config.warmup,
        config.duration,
        threads.max(1) * 2,
    ));
    let lanes_per_conn = match config.protocol {
        Protocol::H2 | Protocol::Grpc => config.streams,
        _ => 1,
    };
    let mut workers = JoinSet::new();
    for index in 0..config.connections {
        workers.spawn(worker(
            proto.clone(),
            shared.clone(),
            config.clone(),
            index,
            lanes_per_conn,
            origin,
        ));
    }

    // Monitor: progress each second, CPU at the window's edges, the end or an interrupt.
    let total = config.warmup + config.duration;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(origin + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cpu_start = if config.warmup.is_zero() {
        Some(CpuTimes::now())
    } else {
        None
    };
    let (mut last_ok, mut last_at) = (0u64, origin);
    let mut interrupted = false;
    loop {
        let end = tokio::time::Instant::from_std(shared.end());
        tokio::select! {
            () = &mut stop => {
                shared.end_at(Instant::now());
                interrupted = true;
                break;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(shared.measure_from)), if cpu_start.is_none() => {
                cpu_start = Some(CpuTimes::now());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let ok = shared.live_ok.load(Ordering::Relaxed);
                let secs = now.duration_since(last_at).as_secs_f64().max(1e-9);
                progress(&Progress {
                    elapsed: now.duration_since(origin),
                    warmup: config.warmup,
                    total,
                    rate: (ok - last_ok) as f64 / secs,
                    errors: shared.live_errors.load(Ordering::Relaxed),
                });
                (last_ok, last_at) = (ok, now);
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    let cpu_end = CpuTimes::now();
    let grace = END_GRACE.min(config.timeout);
    let _ = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    // Aborting drops each worker's recorders, which flush what they hold.
    workers.shutdown().await;

    let tally = shared.collect();
    let window_s = shared
        .end()
        .saturating_duration_since(shared.measure_from)
        .as_secs_f64();
    let cpu = cpu_start
        .map(|start| cpu_end.since(start))
        .unwrap_or_default();
    let mut report = Report::build(Outcome {
        config: &config,
        histogram: &tally.histogram,
        errors: tally.errors,
        window_s,
        completed: !interrupted,
        interrupted,
        error: None,
        cpu,
        threads,
    });
    report.tls_handshakes = proto
        .tls_handshakes()
        .map(|(full, resumed)| crate::report::TlsHandshakes { full, resumed });
    Ok(report)
}

/// When a lane sends.
#[derive(Debug)]
enum Schedule {
    /// As soon as the previous answer is in.
    Closed,
    /// At `next`, then every `interval`: the latency counts from these instants.
    Open { next: Instant, interval: Duration },
}

impl Schedule {
    /// Lane `lane` of `lanes` shares `rate` evenly, lanes staggered across one interval.
    fn new(rate: Option<f64>, lanes: usize, lane: usize, origin: Instant) -> Schedule {
        match rate {
            None => Schedule::Closed,
            Some(rate) => {
                let interval = Duration::from_secs_f64(lanes as f64 / rate);
                let offset = interval.mul_f64(lane as f64 / lanes as f64);
                Schedule::Open {
                    next: origin + offset,
                    interval,
                }
            }
        }
    }
}

/// One connection: open it (again after failures) and drive its lanes until the end.
async fn worker<P: Proto>(
    proto: Arc<P>,
    shared: Arc<Shared>,
    config: Arc<Config>,
    index: usize,
    lanes: usize,
    origin: Instant,
) {
    let total_lanes = config.connections * lanes;
    let mut schedules: Vec<Schedule> = (0..lanes)
        .map(|l| Schedule::new(config.rate, total_lanes, index * lanes + l, origin))
        .collect();
    let mut recorders: Vec<Recorder> = (0..lanes)
        .map(|l| Recorder::new(shared.clone(), index * lanes + l))
        .collect();
    // Validated: only HTTP/1.1 and DNS over TCP take a pipeline above 1.
    let depth = config.pipeline;
    let mut backoff = BACKOFF_MIN;
    while Instant::now() < shared.end() {
        let opened = match tokio::time::timeout(config.timeout, proto.open(lanes)).await {
            Ok(Ok(opened)) => opened,
            Ok(Err(failure)) => {
                recorders[0].error(Instant::now(), &failure.kind);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                recorders[0].error(Instant::now(), "timeout");
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let runs = opened
            .into_iter()
            .zip(schedules.iter_mut())
            .zip(recorders.iter_mut())
            .map(|((lane, schedule), recorder)| {
                lane_loop(&*proto, lane, schedule, recorder, &config, depth)
            });
        futures::future::join_all(runs).await;
    }
}

/// Requests on one lane until the end or until its connection breaks.
async fn lane_loop<P: Proto>(
    proto: &P,
    mut lane: P::Lane,
    schedule: &mut Schedule,
    recorder: &mut Recorder,
    config: &Config,
    depth: usize,
) {
    let mut done = Vec::with_capacity(depth);
    // When the previous answer was in: a slot that came while the lane was still waiting for it
    // was delayed by the target and counts from the slot; one that came while the lane was idle
    // counts from the send, so the timer's millisecond granularity is not charged to the target.
    let mut free_at = Instant::now();
    loop {
        let end = recorder.shared().end();
        let (first, interval, n) = match schedule {
            Schedule::Closed => {
                let now = Instant::now();
                if now >= end {
                    return;
                }
                (now, Duration::ZERO, depth)
            }
            Schedule::Open { next, interval } => {
                if *next >= end {
                    return;
                }
                if *next > Instant::now() {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(*next)).await;
                    if *next >= recorder.shared().end() {
                        return;
                    }
                }
                // Behind schedule (a stall): every slot already due goes out now, pipelined
                // where the protocol can, each timed from its own slot.
                let late = Instant::now().saturating_duration_since(*next);
                let due = 1 + (late.as_nanos() / interval.as_nanos().max(1)) as usize;
                let n = due.min(depth);
                let first = *next;
                *next += interval.saturating_mul(n as u32);
                (first, *interval, n)
            }
        };
        let sent = Instant::now();
        done.clear();
        let result =
            tokio::time::timeout(config.timeout, proto.call(&mut lane, n, &mut done)).await;
        for (j, &at) in done.iter().enumerate() {
            let slot = first + interval.saturating_mul(j as u32);
            let start = if free_at > slot { slot } else { sent.max(slot) };
            recorder.ok(at, at.saturating_duration_since(start));
        }
        free_at = Instant::now();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                record_failure(recorder, &failure);
                if failure.reconnect {
                    return;
                }
            }
            Err(_) => {
                recorder.error(Instant::now(), "timeout");
                return;
            }
        }
    }
}

fn record_failure(recorder: &mut Recorder, failure: &Failure) {
    let now = Instant::now();
    for _ in 0..failure.count.max(1) {
        recorder.error(now, &failure.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_lanes_share_the_rate_staggered() {
        let origin = Instant::now();
        let Schedule::Open { next, interval } = Schedule::new(Some(1000.0), 4, 1, origin) else {
            panic!("not open")
        };
        assert_eq!(interval, Duration::from_millis(4));
        assert_eq!(next - origin, Duration::from_millis(1));
        assert!(matches!(
            Schedule::new(None, 4, 1, origin),
            Schedule::Closed
        ));
    }

    #[test]
    fn the_progress_line_shows_the_phase() {
        let p = Progress {
            elapsed: Duration::from_millis(500),
            warmup: Duration::from_secs(1),
            total: Duration::from_secs(11),
            rate: 1234.4,
            errors: 2,
        };
        let line = p.line();
        assert!(
            line.contains("1234 req/s") && line.contains("warm-up"),
            "{line}"
        );
    }
}
