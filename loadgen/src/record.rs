//! Recording outcomes: each lane buffers its samples and folds them into one of a few shared
//! histograms every few hundred requests, so the hot path takes no lock per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, 3 significant digits, up to an hour.
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// Samples a lane buffers before taking its shard's lock.
const FLUSH_EVERY: usize = 512;

/// What all lanes of a run share: the measuring window, live counters and the histogram shards.
#[derive(Debug)]
pub(crate) struct Shared {
    origin: Instant,
    /// Samples completing before this are warm-up and not recorded.
    pub measure_from: Instant,
    /// Nanoseconds after `origin` when the run ends (moved earlier by an interrupt).
    end_ns: AtomicU64,
    /// All completions and errors so far, warm-up included (progress line only).
    pub live_ok: AtomicU64,
    pub live_errors: AtomicU64,
    shards: Vec<Mutex<Tally>>,
}

/// Outcomes in the measuring window.
#[derive(Debug)]
pub(crate) struct Tally {
    pub histogram: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, HIGHEST_NS, 3)
                .expect("constant histogram bounds are valid"),
            errors: BTreeMap::new(),
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }
}

impl Shared {
    pub fn new(origin: Instant, warmup: Duration, duration: Duration, shards: usize) -> Shared {
        let end = warmup + duration;
        Shared {
            origin,
            measure_from: origin + warmup,
            end_ns: AtomicU64::new(u64::try_from(end.as_nanos()).unwrap_or(u64::MAX)),
            live_ok: AtomicU64::new(0),
            live_errors: AtomicU64::new(0),
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Tally::new()))
                .collect(),
        }
    }

    pub fn end(&self) -> Instant {
        self.origin + Duration::from_nanos(self.end_ns.load(Ordering::Relaxed))
    }

    /// End the run at `at` if that is earlier than planned (interrupt).
    pub fn end_at(&self, at: Instant) {
        let ns =
            u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX);
        self.end_ns.fetch_min(ns, Ordering::Relaxed);
    }

    /// Every shard folded into one.
    pub fn collect(&self) -> Tally {
        let mut all = Tally::new();
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner));
        }
        all
    }
}

/// One lane's recorder. Flushes into its shard when its buffer fills and when dropped (also when
/// the lane's task is aborted at the end of the run).
#[derive(Debug)]
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    shard: usize,
    samples: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new(shared: Arc<Shared>, lane: usize) -> Recorder {
        let shard = lane % shared.shards.len();
        Recorder {
            shared,
            shard,
            samples: Vec::with_capacity(FLUSH_EVERY),
            errors: BTreeMap::new(),
        }
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.shared.measure_from && at <= self.shared.end()
    }

    /// A request answered at `done` after `latency`.
    pub fn ok(&mut self, done: Instant, latency: Duration) {
        self.shared.live_ok.fetch_add(1, Ordering::Relaxed);
        if !self.in_window(done) {
            return;
        }
        self.samples
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        if self.samples.len() >= FLUSH_EVERY {
            self.flush();
        }
    }

    /// A request (or connection) failed at `at`.
    pub fn error(&mut self, at: Instant, kind: &str) {
        self.shared.live_errors.fetch_add(1, Ordering::Relaxed);
        if !self.in_window(at) {
            return;
        }
        match self.errors.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(kind.to_owned(), 1);
            }
        }
    }

    pub fn flush(&mut self) {
        if self.samples.is_empty() && self.errors.is_empty() {
            return;
        }
        let mut tally = self.shared.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &ns in &self.samples {
            tally.histogram.saturating_record(ns.max(1));
        }
        for (kind, n) in std::mem::take(&mut self.errors) {
            *tally.errors.entry(kind).or_default() += n;
        }
        self.samples.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measuring_window_is_recorded_and_drop_flushes() {
        let origin = Instant::now();
        let shared = Arc::new(Shared::new(
            origin,
            Duration::from_secs(1),
            Duration::from_secs(2),
            2,
        ));
        let mut a = Recorder::new(shared.clone(), 0);
        let mut b = Recorder::new(shared.clone(), 1);
        a.ok(
            origin + Duration::from_millis(500),
            Duration::from_millis(1),
        ); // warm-up
        a.ok(
            origin + Duration::from_millis(1500),
            Duration::from_millis(2),
        );
        b.ok(
            origin + Duration::from_millis(2500),
            Duration::from_millis(3),
        );
        b.error(origin + Duration::from_millis(2600), "io");
        b.error(origin + Duration::from_millis(200), "connect"); // warm-up
        shared.end_at(origin + Duration::from_millis(2700));
        b.ok(
            origin + Duration::from_millis(2800),
            Duration::from_millis(4),
        ); // after the end
        drop((a, b));
        let tally = shared.collect();
        assert_eq!(tally.histogram.len(), 2);
        assert_eq!(tally.histogram.max() / 1_000_000, 3);
        assert_eq!(tally.errors.get("io"), Some(&1));
        assert_eq!(tally.errors.get("connect"), None);
        assert_eq!(shared.live_ok.load(Ordering::Relaxed), 4);
    }
}
