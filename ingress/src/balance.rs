//! Per-request endpoint choice: power of two choices over peak-EWMA latency (as linkerd2-proxy
//! and Finagle do). State is atomics inside each [`Endpoint`], kept across route-table swaps,
//! so the request path takes no lock.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How fast an old latency peak is forgotten.
const DECAY: Duration = Duration::from_secs(10);
/// Assumed latency of an endpoint never measured: low enough that new pods get traffic soon,
/// not zero so that queue length still counts.
const DEFAULT_RTT_NS: f64 = 1_000_000.0;

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
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            rtt: AtomicU64::new(DEFAULT_RTT_NS.to_bits()),
            stamp: AtomicU64::new(now_ns()),
            pending: AtomicU32::new(0),
        }
    }

    fn decayed_rtt(&self, now: u64) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        rtt * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    /// The expected cost of one more request: latency × (outstanding + 1).
    pub fn cost(&self) -> f64 {
        let pending = f64::from(self.pending.load(Ordering::Relaxed));
        self.decayed_rtt(now_ns()) * (pending + 1.0)
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

    /// A failure counts as a slow answer, so traffic moves away until it recovers.
    pub fn penalize(&self) {
        self.observe(Duration::from_secs(1));
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
    fn lower_samples_pull_the_estimate_down_over_time() {
        let e = Endpoint::new(SocketAddr::from(([10, 0, 0, 1], 80)));
        e.observe(Duration::from_millis(100));
        let peak = e.cost();
        assert!(peak >= 99_000_000.0, "peak taken at once: {peak}");
        e.observe(Duration::from_millis(1));
        assert!(e.cost() <= peak);
    }

    #[test]
    fn empty_and_single() {
        assert!(pick::<Arc<Endpoint>>(&[]).is_none());
        let one = eps(1);
        assert_eq!(pick(&one).map(|e| e.addr), Some(one[0].addr));
    }
}
