//! Backend choice for one new connection or UDP session: round-robin, or ClientIP affinity by
//! rendezvous hashing, so no lock or shared table is touched per connection.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fixed seed: affinity must map a client to the same backend across restarts of the proxy.
const SEED: std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
    std::hash::BuildHasherDefault::new();

/// The backend with the highest hash of (client, backend): a client stays on its backend
/// while that backend exists, and a change moves only the clients of the backends that changed.
pub fn by_client(client: IpAddr, backends: &[SocketAddr]) -> Option<SocketAddr> {
    backends.iter().copied().max_by_key(|b| {
        let mut h = SEED.build_hasher();
        client.hash(&mut h);
        b.hash(&mut h);
        h.finish()
    })
}

/// Round-robin over the current backends, starting anywhere.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl RoundRobin {
    pub fn next(&self, backends: &[SocketAddr]) -> Option<SocketAddr> {
        if backends.is_empty() {
            return None;
        }
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        backends.get(i % backends.len()).copied()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 244, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn affinity_is_stable_and_moves_few_clients_when_a_backend_goes() {
        let all = addrs(5);
        let fewer: Vec<_> = all[..4].to_vec();
        let mut moved = 0;
        for c in 0..1000u32 {
            let client = IpAddr::from(c.to_be_bytes());
            let a = by_client(client, &all).unwrap();
            assert_eq!(by_client(client, &all), Some(a));
            let b = by_client(client, &fewer).unwrap();
            if a != b {
                // Only clients of the removed backend may move.
                assert_eq!(a, all[4]);
                moved += 1;
            }
        }
        assert!(moved > 0 && moved < 400, "moved {moved}");
        assert_eq!(by_client(IpAddr::from([1, 2, 3, 4]), &[]), None);
    }

    #[test]
    fn round_robin_visits_every_backend() {
        let rr = RoundRobin::default();
        let b = addrs(3);
        let mut seen: Vec<_> = (0..3).map(|_| rr.next(&b).unwrap()).collect();
        seen.sort();
        assert_eq!(seen, b);
        assert_eq!(rr.next(&[]), None);
    }
}
