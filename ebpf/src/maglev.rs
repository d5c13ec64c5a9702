//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): the lookup table the north-south
//! program indexes with a flow's hash.
//!
//! Each backend gets a permutation of the table's slots from two hashes of its address
//! (`offset`, `skip`); backends take turns claiming their next free preferred slot until the
//! table is full. The result depends only on the backends' addresses (not their order, not the
//! node), so every node maps a flow to the same backend, each backend gets an almost equal
//! share, and adding or removing one backend moves little more than that backend's share.

use std::net::SocketAddr;

use crate::abi;

/// The default table size: a prime well above 100 × the backends of a typical service (the
/// paper's rule for an even spread), and small enough (32 KiB of `u16`) to keep per frontend.
pub const DEFAULT_MAGLEV_SIZE: u32 = 16_381;

/// Whether `n` is prime (the table size must be, so that every `skip` is a full cycle).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// 64-bit FNV-1a then splitmix64's finaliser: a fixed, well-mixed hash, stable across
/// builds and machines (std's hashers promise neither).
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn identity(backend: SocketAddr) -> [u8; 18] {
    let mut id = [0u8; 18];
    id[..16].copy_from_slice(&abi::addr16(backend.ip()));
    id[16..].copy_from_slice(&backend.port().to_be_bytes());
    id
}

/// The lookup table of `size` entries (a prime, at least `backends.len()`), each the index of
/// a backend in `backends`. Empty when there is no backend.
pub fn table(backends: &[SocketAddr], size: u32) -> Vec<u16> {
    let n = backends.len();
    if n == 0 || size == 0 {
        return Vec::new();
    }
    let m = u64::from(size);
    // (offset, skip) per backend: its permutation is offset, offset+skip, ... mod m
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let id = identity(*b);
            let offset = hash(&id, 0x6f66_6673_6574) % m; // "offset"
            let skip = hash(&id, 0x736b_6970) % (m - 1).max(1) + 1; // "skip"
            (offset, skip)
        })
        .collect();
    // Sort the turn order by address: the table must not depend on the caller's order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| identity(backends[i]));
    let mut next = vec![0u64; n];
    let mut entry: Vec<Option<u16>> = vec![None; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for &i in &order {
            let (offset, skip) = perms[i];
            // at most m probes: a prime m makes every permutation visit every slot
            let mut c = ((offset + next[i] * skip) % m) as usize;
            while entry[c].is_some() {
                next[i] += 1;
                c = ((offset + next[i] * skip) % m) as usize;
            }
            entry[c] = Some(u16::try_from(i).unwrap_or(u16::MAX));
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    entry.into_iter().map(|e| e.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                format!("10.244.{}.{}:8080", i / 200, i % 200 + 2)
                    .parse()
                    .expect("addr")
            })
            .collect()
    }

    /// The backend address each table slot names.
    fn resolved(t: &[u16], b: &[SocketAddr]) -> Vec<SocketAddr> {
        t.iter().map(|&i| b[usize::from(i)]).collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(2) && is_prime(251) && is_prime(16_381) && is_prime(65_537));
        assert!(!is_prime(0) && !is_prime(1) && !is_prime(65_536) && !is_prime(16_383));
    }

    #[test]
    fn every_backend_gets_an_almost_equal_share() {
        let b = backends(10);
        let t = table(&b, 16_381);
        assert_eq!(t.len(), 16_381);
        let mut share = [0usize; 10];
        for i in &t {
            share[usize::from(*i)] += 1;
        }
        for s in share {
            // ideal 1638; Maglev stays within a few percent when m >> n
            assert!((1_550..=1_730).contains(&s), "shares {share:?}");
        }
    }

    #[test]
    fn the_table_depends_on_the_backends_not_their_order() {
        let b = backends(7);
        let mut r = b.clone();
        r.reverse();
        assert_eq!(resolved(&table(&b, 251), &b), resolved(&table(&r, 251), &r));
    }

    #[test]
    fn removing_a_backend_moves_few_other_flows() {
        let m = 65_537;
        let before = backends(10);
        let t0 = resolved(&table(&before, m), &before);
        let gone = before[3];
        let after: Vec<SocketAddr> = before.iter().copied().filter(|b| *b != gone).collect();
        let t1 = resolved(&table(&after, m), &after);
        let moved = t0
            .iter()
            .zip(&t1)
            .filter(|(a, b)| a != b && **a != gone)
            .count();
        let of_gone = t0.iter().filter(|a| **a == gone).count();
        // the removed backend's slots must move; of the others, only a sliver (the paper
        // reports ~1-2%; a modulo-hash balancer would move ~90% of them)
        assert!(t1.iter().all(|a| *a != gone));
        assert!(
            (moved as f64) < 0.03 * (t0.len() - of_gone) as f64,
            "{moved} of {} surviving flows moved",
            t0.len() - of_gone
        );
    }

    #[test]
    fn adding_a_backend_takes_about_its_share_and_no_more() {
        let m = 16_381;
        let before = backends(9);
        let t0 = resolved(&table(&before, m), &before);
        let after = backends(10);
        let t1 = resolved(&table(&after, m), &after);
        let moved = t0.iter().zip(&t1).filter(|(a, b)| a != b).count();
        let to_new = t1.iter().filter(|b| **b == after[9]).count();
        assert!(
            moved <= to_new + m as usize / 50,
            "{moved} moved, {to_new} to the new one"
        );
    }

    #[test]
    fn no_backend_no_table() {
        assert!(table(&[], 251).is_empty());
        assert_eq!(table(&backends(1), 251), vec![0u16; 251]);
    }
}
