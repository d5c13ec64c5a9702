//! The per-container prober: startup first, then liveness and readiness, with upstream's
//! delays, periods, timeouts and thresholds; results go out on watch channels.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::debug;

use super::{ProbeEvent, ProbeKind, ProbeTarget, run_handler};

/// Events buffered for the worker; more are dropped (they are repeats of the same failure).
const EVENT_BUFFER: usize = 64;
/// The first quick retry of a readiness or startup probe that has not succeeded yet, in the
/// container's first period (doubling each time, up to `MAX_QUICK_RETRY`).
const FIRST_QUICK_RETRY: Duration = Duration::from_millis(10);
/// Retries stay this close together: with unbounded doubling, a process that started
/// listening just after a retry waited as long again (up to half a period) to be Ready,
/// which is what a busy node sees when many pods start at once.
const MAX_QUICK_RETRY: Duration = Duration::from_millis(50);

/// Tuning for tests: how long a probe "second" lasts (1s in production).
#[derive(Clone, Copy, Debug)]
pub struct ProberOptions {
    pub second: Duration,
}

impl Default for ProberOptions {
    fn default() -> Self {
        ProberOptions {
            second: Duration::from_secs(1),
        }
    }
}

/// Why the container must be restarted (its startup or liveness probe failed
/// `failureThreshold` times in a row). The message is upstream's Killing event text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub kind: ProbeKind,
    /// e.g. `Container app failed liveness probe, will be restarted`.
    pub message: String,
}

/// A running prober; dropping it stops the probes.
#[derive(Debug)]
pub struct ProbeHandle {
    /// The container's `ready`: false until the readiness probe succeeded `successThreshold`
    /// times (true once started when there is no readiness probe).
    pub ready: watch::Receiver<bool>,
    /// The container's `started`: true once the startup probe succeeded (or there is none).
    pub started: watch::Receiver<bool>,
    /// Becomes `Some` once when the container must be restarted; probing then stops.
    pub restart: watch::Receiver<Option<Restart>>,
    /// `Unhealthy` events, one per failed probe run.
    pub events: mpsc::Receiver<ProbeEvent>,
    task: JoinHandle<()>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the probes of one container instance (spawn a new one after each restart).
#[derive(Debug)]
pub struct Prober;

impl Prober {
    /// Probes `container` from now on (call it right after the process started).
    pub fn spawn(container: &Container, target: Arc<dyn ProbeTarget>) -> ProbeHandle {
        Prober::spawn_with(container, target, ProberOptions::default())
    }

    pub fn spawn_with(
        container: &Container,
        target: Arc<dyn ProbeTarget>,
        options: ProberOptions,
    ) -> ProbeHandle {
        let (ready_tx, ready) = watch::channel(false);
        let (started_tx, started) = watch::channel(container.startup_probe.is_none());
        let (restart_tx, restart) = watch::channel(None);
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let run = Run {
            container: container.clone(),
            target,
            options,
            start: Instant::now(),
            events: events_tx,
        };
        let task = tokio::spawn(async move {
            run.run(ready_tx, started_tx, restart_tx).await;
        });
        ProbeHandle {
            ready,
            started,
            restart,
            events,
            task,
        }
    }
}

struct Run {
    container: Container,
    target: Arc<dyn ProbeTarget>,
    options: ProberOptions,
    /// When the container started: initialDelaySeconds counts from here.
    start: Instant,
    events: mpsc::Sender<ProbeEvent>,
}

/// How a probe loop ended.
enum End {
    /// The startup probe succeeded.
    Started,
    /// failureThreshold consecutive failures (startup or liveness).
    Failed,
}

impl Run {
    async fn run(
        &self,
        ready: watch::Sender<bool>,
        started: watch::Sender<bool>,
        restart: watch::Sender<Option<Restart>>,
    ) {
        if let Some(probe) = &self.container.startup_probe {
            match self.probe_loop(probe, ProbeKind::Startup, &ready).await {
                End::Started => {
                    let _ = started.send(true);
                }
                End::Failed => {
                    self.restart(&restart, ProbeKind::Startup);
                    return;
                }
            }
        }
        if self.container.readiness_probe.is_none() {
            let _ = ready.send(true);
        }
        let liveness = async {
            match &self.container.liveness_probe {
                Some(p) => self.probe_loop(p, ProbeKind::Liveness, &ready).await,
                None => std::future::pending().await,
            }
        };
        let readiness = async {
            match &self.container.readiness_probe {
                Some(p) => self.probe_loop(p, ProbeKind::Readiness, &ready).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = liveness => {}
            _ = readiness => {}
        }
        // Only liveness ends (readiness loops forever): the container is going away.
        let _ = ready.send(false);
        self.restart(&restart, ProbeKind::Liveness);
    }

    fn restart(&self, restart: &watch::Sender<Option<Restart>>, kind: ProbeKind) {
        let message = format!(
            "Container {} failed {} probe, will be restarted",
            self.container.name,
            kind.title().to_lowercase()
        );
        let _ = restart.send(Some(Restart { kind, message }));
    }

    async fn probe_loop(&self, probe: &Probe, kind: ProbeKind, ready: &watch::Sender<bool>) -> End {
        let second = self.options.second;
        let secs = |v: Option<i32>, default: u32| {
            second * v.and_then(|v| u32::try_from(v).ok()).unwrap_or(default)
        };
        let delay = secs(probe.initial_delay_seconds, 0);
        let period = secs(probe.period_seconds.filter(|p| *p > 0), 10);
        let timeout = secs(probe.timeout_seconds.filter(|t| *t > 0), 1);
        let threshold = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        // Startup and liveness probes must have successThreshold 1 (validation enforces it).
        let success_threshold = match kind {
            ProbeKind::Readiness => threshold(probe.success_threshold, 1),
            _ => 1,
        };
        let failure_threshold = threshold(probe.failure_threshold, 3);
        tokio::time::sleep_until(self.start + delay).await;
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let (mut successes, mut failures) = (0u32, 0u32);
        // A process usually starts listening a few milliseconds after its first probe: until
        // the first period ends, a readiness or startup probe that has never succeeded is also
        // tried between ticks (network probes only; an exec probe starts a process each time).
        // These extra runs count only when they succeed; failures are counted, and reported,
        // at the ticks alone, as upstream does, so thresholds keep their meaning while a pod
        // becomes Ready as soon as it serves instead of one period later.
        let first_period_ends = Instant::now() + period;
        let quick_kind = matches!(kind, ProbeKind::Readiness | ProbeKind::Startup);
        let mut quick = (quick_kind && probe.exec.is_none()).then_some(FIRST_QUICK_RETRY);
        loop {
            let counted = match quick {
                Some(wait) if successes == 0 && Instant::now() + wait < first_period_ends => {
                    tokio::select! {
                        _ = ticks.tick() => true,
                        () = tokio::time::sleep(wait) => false,
                    }
                }
                _ => {
                    ticks.tick().await;
                    true
                }
            };
            let outcome = run_handler(probe, &self.container, self.target.as_ref(), timeout).await;
            if !counted && outcome.is_err() {
                quick = quick.map(|q| (q * 2).min(MAX_QUICK_RETRY));
                continue;
            }
            if outcome.is_ok() {
                quick = None;
            }
            match outcome {
                Ok(()) => {
                    failures = 0;
                    successes = successes.saturating_add(1);
                    if successes >= success_threshold {
                        match kind {
                            ProbeKind::Startup => return End::Started,
                            ProbeKind::Readiness => {
                                ready.send_if_modified(|r| !std::mem::replace(r, true));
                            }
                            ProbeKind::Liveness => {}
                        }
                    }
                }
                Err(text) => {
                    successes = 0;
                    failures = failures.saturating_add(1);
                    let message = format!("{} probe failed: {text}", kind.title());
                    debug!(container = %self.container.name, %message, failures, "probe failed");
                    let _ = self.events.try_send(ProbeEvent {
                        container: self.container.name.clone(),
                        kind,
                        reason: "Unhealthy",
                        message,
                    });
                    if failures >= failure_threshold {
                        match kind {
                            ProbeKind::Readiness => {
                                ready.send_if_modified(|r| std::mem::replace(r, false));
                            }
                            ProbeKind::Startup | ProbeKind::Liveness => return End::Failed,
                        }
                    }
                }
            }
        }
    }
}
