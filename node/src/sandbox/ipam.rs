//! IPAM: one address per pod CIDR per pod uid, held in memory.
//!
//! The sandbox records are the persistent truth: a record carries its pod's addresses and is
//! written before the sandbox counts as made, so start-up rebuilds the allocations from the
//! records of the sandboxes that survived ([`Ipam::adopt`]). A separate allocation file was
//! one more file created per pod start and stop, under the IPAM lock.
//!
//! Addresses are handed out round-robin after the last one given (as CNI host-local does), so
//! a released address is not reused at once while stale conntrack or DNS entries may name it.
//! After a restart the round continues after the highest address adopted.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use super::cidr::IpCidr;
use super::error::{Result, SandboxError};

/// The highest offset IPAM scans in a prefix: more than any node runs pods, and it keeps a
/// `/64` scan bounded.
const MAX_SCAN: u128 = 1 << 16;

/// The node's pod address allocator.
#[derive(Debug)]
pub struct Ipam {
    cidrs: Vec<IpCidr>,
    /// Per CIDR (index into `cidrs`), the last address handed out.
    last: Vec<Option<IpAddr>>,
    /// Per pod uid, its addresses (one per CIDR, in CIDR order).
    allocations: BTreeMap<String, Vec<IpAddr>>,
}

impl Ipam {
    /// An allocator for `cidrs` with nothing allocated.
    pub fn new(cidrs: &[IpCidr]) -> Result<Self> {
        for c in cidrs {
            if c.gateway().is_none() || c.size() < 4 {
                return Err(SandboxError::Cidr {
                    value: c.to_string(),
                    reason: "too small for a network, a gateway and pods".into(),
                });
            }
        }
        Ok(Ipam {
            cidrs: cidrs.to_vec(),
            last: vec![None; cidrs.len()],
            allocations: BTreeMap::new(),
        })
    }

    /// Records that `uid` holds `ips` (a sandbox found at start-up). Addresses outside
    /// today's CIDRs (the node's CIDR changed) are dropped.
    pub fn adopt(&mut self, uid: &str, ips: &[IpAddr]) {
        let ips: Vec<IpAddr> = ips
            .iter()
            .filter(|ip| self.cidrs.iter().any(|c| c.contains(ip)))
            .copied()
            .collect();
        for ip in &ips {
            if let Some(i) = self.cidrs.iter().position(|c| c.contains(ip)) {
                let offset = |a: &IpAddr| self.cidrs[i].offset_of(a).unwrap_or(0);
                if self.last[i].is_none_or(|l| offset(ip) > offset(&l)) {
                    self.last[i] = Some(*ip);
                }
            }
        }
        if !ips.is_empty() {
            self.allocations.insert(uid.to_string(), ips);
        }
    }

    /// The CIDRs this allocator hands out from.
    pub fn cidrs(&self) -> &[IpCidr] {
        &self.cidrs
    }

    /// The addresses of `uid`, if it has some.
    pub fn get(&self, uid: &str) -> Option<&[IpAddr]> {
        self.allocations.get(uid).map(Vec::as_slice)
    }

    /// Every uid holding addresses.
    pub fn uids(&self) -> Vec<String> {
        self.allocations.keys().cloned().collect()
    }

    /// One address per CIDR for `uid`: the same ones again if it already has them.
    pub fn allocate(&mut self, uid: &str) -> Result<Vec<IpAddr>> {
        if let Some(ips) = self.allocations.get(uid)
            && ips.len() == self.cidrs.len()
        {
            return Ok(ips.clone());
        }
        let used: HashSet<IpAddr> = self
            .allocations
            .iter()
            .filter(|(u, _)| u.as_str() != uid)
            .flat_map(|(_, ips)| ips.iter().copied())
            .collect();
        let mut ips = Vec::with_capacity(self.cidrs.len());
        for (i, cidr) in self.cidrs.iter().enumerate() {
            let previous = self
                .allocations
                .get(uid)
                .and_then(|v| v.iter().find(|ip| cidr.contains(ip)).copied());
            let ip = match previous {
                Some(ip) => ip,
                None => {
                    next_free(cidr, self.last[i], &used).ok_or_else(|| SandboxError::Exhausted {
                        cidr: cidr.to_string(),
                        in_use: used.iter().filter(|ip| cidr.contains(ip)).count(),
                    })?
                }
            };
            ips.push(ip);
        }
        for (i, ip) in ips.iter().enumerate() {
            self.last[i] = Some(*ip);
        }
        self.allocations.insert(uid.to_string(), ips.clone());
        Ok(ips)
    }

    /// Frees the addresses of `uid`; true if it had some.
    pub fn release(&mut self, uid: &str) -> bool {
        self.allocations.remove(uid).is_some()
    }
}

/// The usable host offsets of a prefix: never the network address, the gateway (offset 1)
/// or the IPv4 broadcast address.
fn usable_range(cidr: &IpCidr) -> (u128, u128) {
    let end = if cidr.is_ipv6() {
        cidr.size()
    } else {
        cidr.size() - 1
    };
    (2, end.min(MAX_SCAN))
}

/// The first free address after `last` (wrapping around), or `None` if all are taken.
fn next_free(cidr: &IpCidr, last: Option<IpAddr>, used: &HashSet<IpAddr>) -> Option<IpAddr> {
    let (lo, hi) = usable_range(cidr);
    if hi <= lo {
        return None;
    }
    let span = hi - lo;
    let start = match last.and_then(|ip| cidr.offset_of(&ip)) {
        Some(off) if off >= lo && off < hi => off + 1 - lo,
        _ => 0,
    };
    (0..span)
        .map(|i| lo + (start + i) % span)
        .filter_map(|off| cidr.nth(off))
        .find(|ip| !used.contains(ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cidrs() -> Vec<IpCidr> {
        vec![
            "10.244.0.0/24".parse().unwrap(),
            "fd00:10:244::/64".parse().unwrap(),
        ]
    }

    #[test]
    fn allocates_one_per_family_and_the_same_again() {
        let mut ipam = Ipam::new(&cidrs()).unwrap();
        let a = ipam.allocate("uid-a").unwrap();
        assert_eq!(a[0].to_string(), "10.244.0.2");
        assert_eq!(a[1].to_string(), "fd00:10:244::2");
        let b = ipam.allocate("uid-b").unwrap();
        assert_eq!(b[0].to_string(), "10.244.0.3");
        assert_eq!(ipam.allocate("uid-a").unwrap(), a);
        assert_eq!(ipam.get("uid-b").unwrap(), b.as_slice());
    }

    #[test]
    fn released_addresses_are_reused_only_after_a_full_round() {
        let mut ipam = Ipam::new(&["10.0.0.0/29".parse().unwrap()]).unwrap();
        // /29: network .0, gateway .1, broadcast .7: pods .2 to .6.
        let got: Vec<String> = (0..5)
            .map(|i| ipam.allocate(&format!("p{i}")).unwrap()[0].to_string())
            .collect();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let err = ipam.allocate("p5").unwrap_err().to_string();
        assert!(err.contains("10.0.0.0/29"), "{err}");
        assert!(ipam.release("p1"));
        assert!(!ipam.release("p1"));
        assert_eq!(ipam.allocate("p5").unwrap()[0].to_string(), "10.0.0.3");
        assert!(ipam.get("p1").is_none());
        assert_eq!(ipam.uids().len(), 5);
    }

    #[test]
    fn adopted_addresses_are_taken_and_the_round_continues_after_them() {
        let mut ipam = Ipam::new(&cidrs()).unwrap();
        ipam.adopt(
            "old",
            &[
                "10.244.0.7".parse().unwrap(),
                "fd00:10:244::7".parse().unwrap(),
            ],
        );
        ipam.adopt("moved", &["10.9.0.5".parse().unwrap()]);
        assert!(
            ipam.get("moved").is_none(),
            "outside today's CIDRs: dropped"
        );
        assert_eq!(ipam.allocate("old").unwrap()[0].to_string(), "10.244.0.7");
        let new = ipam.allocate("new").unwrap();
        assert_eq!(new[0].to_string(), "10.244.0.8");
        assert_eq!(new[1].to_string(), "fd00:10:244::8");
    }

    #[test]
    fn rejects_prefixes_too_small_for_pods() {
        let err = Ipam::new(&["10.0.0.0/31".parse().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/31"), "{err}");
    }
}
