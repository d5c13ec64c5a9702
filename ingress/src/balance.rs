//! Per-request endpoint choice: power of two choices over peak-EWMA latency (as linkerd2-proxy
//! and Finagle do). State is atomics inside each [`Endpoint`], kept across route-table swaps,
//! so the request path takes no lock.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How fast an old latency peak is forgotten.
const DECAY: Duration = Duration::from_secs(10);
/// Assumed latency of an endpoint never measured: none, so new pods are tried (and measured)
/// at once; outstanding requests still count through [`RTT_FLOOR_NS`].
const DEFAULT_RTT_NS: f64 = 0.0;
/// Added to every latency estimate: differences well under a millisecond are noise between
/// pods of one Service, so they share sequential traffic, while a queued request (cost × 2) or
/// a pod slower by milliseconds still loses.
const RTT_FLOOR_NS: f64 = 1_000_000.0;

/// Failures in a row that eject an endpoint.
pub const EJECT_AFTER: u32 = 3;
/// How long an ejected endpoint is left out.
pub const EJECT_FOR: Duration = Duration::from_secs(10);
/// How much cheaper the second choice must be to win over the first.
const TIE_MARGIN: f64 = 1.25;

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One pod address and its load estimate.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Peak-EWMA latency in ns (f64 bits).
    rtt: AtomicU64,
    /// When `rtt` was last updated (ns since the process epoch).
    stamp: AtomicU64,
    /// Requests sent and not finished.
    pending: AtomicU32,
    /// Failures in a row (connect errors, broken responses).
    failures: AtomicU32,
    /// Until when (ns since the process epoch) it is left out of picks.
    ejected_until: AtomicU64,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            rtt: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp: AtomicU64::new(now_ns()),
            pending: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// Passively ejected: it failed [`EJECT_AFTER`] times in a row less than [`EJECT_FOR`] ago.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ns()
    }

    fn decayed_rtt(&self, now: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        rtt * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    /// The expected cost of one more request: (latency + floor) × (outstanding + 1).
    pub fn cost(&self) -> f64 {
        let pending = f64::from(self.pending.load(Ordering::Relaxed));
        (self.decayed_rtt(now_ns()) + RTT_FLOOR_NS) * (pending + 1.0)
    }

    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// A request was sent to this endpoint; pair with [`Endpoint::finish`].
    pub fn start(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        // Saturating: a lost race must not wrap the counter to u32::MAX.
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
    }

    /// Records a latency sample: a peak is taken at once, lower values are averaged in.
    /// Races between samples lose one of them, which an estimate can afford.
    pub fn observe(&self, rtt: Duration) {
        let now = now_ns();
        let sample = rtt.as_nanos() as f64;
        let old = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        let next = if sample > old {
            sample
        } else {
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// A failure counts as a slow answer, so traffic moves away until it recovers; after
    /// [`EJECT_AFTER`] in a row the endpoint is left out for [`EJECT_FOR`].
    pub fn penalize(&self) {
        self.observe(Duration::from_secs(1));
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= EJECT_AFTER {
            self.failures.store(0, Ordering::Relaxed);
            let until = now_ns().saturating_add(EJECT_FOR.as_nanos() as u64);
            self.ejected_until.store(until, Ordering::Relaxed);
        }
    }

    /// A response arrived: the failure streak ends.
    pub fn succeed(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }
}

/// 64 random bits from a per-thread xorshift generator: choosing between endpoints needs
/// speed, not cryptographic randomness (and no extra `rand` version).
pub fn random_u64() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            // Each thread's stack address differs, so threads do not share a sequence.
            let local = 0u8;
            let addr = std::ptr::addr_of!(local) as u64;
            (now_ns() ^ addr.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// An index below `n` (multiply-shift: no modulo bias worth caring for).
fn random_below(n: usize) -> usize {
    ((u128::from(random_u64()) * n as u128) >> 64) as usize
}

/// Power of two choices: the cheaper of two distinct random endpoints.
pub fn pick<T: AsRef<Endpoint>>(endpoints: &[T]) -> Option<&T> {
    match endpoints.len() {
        0 => None,
        1 => endpoints.first(),
        n => {
            let a = random_below(n);
            let b = (a + 1 + random_below(n - 1)) % n;
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            // Ejected endpoints only when every endpoint is ejected (fail open).
            match (ea.as_ref().is_ejected(), eb.as_ref().is_ejected()) {
                (false, true) => return Some(ea),
                (true, false) => return Some(eb),
                (true, true) => {
                    return endpoints
                        .iter()
                        .find(|e| !e.as_ref().is_ejected())
                        .or(Some(ea));
                }
                (false, false) => {}
            }
            // `a` is already a uniform choice: keep it unless `b` is clearly cheaper, so
            // endpoints of nearly equal latency share sequential traffic instead of the one
            // measured a few microseconds faster taking all of it.
            Some(if eb.as_ref().cost() * TIE_MARGIN < ea.as_ref().cost() {
                eb
            } else {
                ea
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| Arc::new(Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 80 + i)))))
            .collect()
    }

    #[test]
    fn spreads_over_every_endpoint_when_equal() {
        let eps = eps(10);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            seen.insert(pick(&eps).map(|e| e.addr));
        }
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn avoids_slow_and_busy_endpoints() {
        let eps = eps(2);
        eps[0].observe(Duration::from_millis(500));
        for _ in 0..100 {
            assert_eq!(pick(&eps).map(|e| e.addr), Some(eps[1].addr));
        }
        let eps2 = self::eps(2);
        for _ in 0..5 {
            eps2[1].start();
        }
        assert_eq!(pick(&eps2).map(|e| e.addr), Some(eps2[0].addr));
        for _ in 0..6 {
            eps2[1].finish();
        }
        assert_eq!(eps2[1].pending(), 0, "finish saturates at zero");
    }

    #[test]
    fn sub_millisecond_noise_still_spreads_but_slow_pods_lose() {
        let eps = eps(4);
        for (e, us) in eps.iter().zip([100, 150, 300, 5000]) {
            e.observe(Duration::from_micros(us));
        }
        let mut counts = std::collections::HashMap::new();
        for _ in 0..3000 {
            if let Some(e) = pick(&eps) {
                *counts.entry(e.addr).or_insert(0u32) += 1;
            }
        }
        for e in &eps[..3] {
            assert!(counts.get(&e.addr).is_some_and(|c| *c > 100), "{counts:?}");
        }
        assert_eq!(counts.get(&eps[3].addr), None, "{counts:?}");
    }

    #[test]
    fn lower_samples_pull_the_estimate_down_over_time() {
        let e = Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 80)));
        e.observe(Duration::from_millis(100));
        let peak = e.cost();
        assert!(peak >= 99_000_000.0, "peak taken at once: {peak}");
        e.observe(Duration::from_millis(1));
        assert!(e.cost() <= peak);
    }

    #[test]
    fn failing_endpoints_are_ejected_then_used_when_nothing_else_is_left() {
        let eps = eps(3);
        for _ in 0..EJECT_AFTER - 1 {
            eps[0].penalize();
        }
        eps[0].succeed();
        eps[0].penalize();
        assert!(!eps[0].is_ejected(), "a success resets the streak");
        for _ in 0..EJECT_AFTER {
            eps[0].penalize();
        }
        assert!(eps[0].is_ejected());
        // Make it the cheapest by far: still never picked while ejected.
        for e in &eps[1..] {
            for _ in 0..50 {
                e.start();
            }
        }
        for _ in 0..200 {
            assert_ne!(pick(&eps).map(|e| e.addr), Some(eps[0].addr));
        }
        for e in &eps[1..] {
            for _ in 0..EJECT_AFTER {
                e.penalize();
            }
        }
        assert!(pick(&eps).is_some(), "all ejected: fail open");
    }

    #[test]
    fn empty_and_single() {
        assert!(pick::<Arc<Endpoint>>(&[]).is_none());
        let one = eps(1);
        assert_eq!(pick(&one).map(|e| e.addr), Some(one[0].addr));
    }
}
