//! IPAM: one address per pod CIDR per pod uid, persisted atomically as JSON in the state dir.
//!
//! Addresses are handed out round-robin after the last one given (as CNI host-local does), so
//! a released address is not reused at once while stale conntrack or DNS entries may name it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cidr::IpCidr;
use super::error::{Result, SandboxError};
use super::fsutil::write_atomic;

/// The highest offset IPAM scans in a prefix: more than any node runs pods, and it keeps a
/// `/64` scan bounded.
const MAX_SCAN: u128 = 1 << 16;

#[derive(Debug, Default, Serialize, Deserialize)]
struct IpamFile {
    /// Per CIDR (its string form), the last address handed out.
    #[serde(default)]
    last: BTreeMap<String, IpAddr>,
    /// Per pod uid, its addresses (one per CIDR, in CIDR order).
    #[serde(default)]
    allocations: BTreeMap<String, Vec<IpAddr>>,
}

/// The node's pod address allocator.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    cidrs: Vec<IpCidr>,
    file: IpamFile,
}

impl Ipam {
    /// Loads the allocations in `path` (none if the file does not exist). Addresses outside
    /// today's `cidrs` (the node's CIDR changed) are dropped.
    pub fn load(path: &Path, cidrs: &[IpCidr]) -> Result<Self> {
        for c in cidrs {
            if c.gateway().is_none() || c.size() < 4 {
                return Err(SandboxError::Cidr {
                    value: c.to_string(),
                    reason: "too small for a network, a gateway and pods".into(),
                });
            }
        }
        let mut file: IpamFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SandboxError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => IpamFile::default(),
            Err(e) => return Err(SandboxError::io("read", path, e)),
        };
        for ips in file.allocations.values_mut() {
            ips.retain(|ip| cidrs.iter().any(|c| c.contains(ip)));
        }
        file.allocations.retain(|_, ips| !ips.is_empty());
        Ok(Ipam {
            path: path.to_path_buf(),
            cidrs: cidrs.to_vec(),
            file,
        })
    }

    /// The CIDRs this allocator hands out from.
    pub fn cidrs(&self) -> &[IpCidr] {
        &self.cidrs
    }

    /// The addresses of `uid`, if it has some.
    pub fn get(&self, uid: &str) -> Option<&[IpAddr]> {
        self.file.allocations.get(uid).map(Vec::as_slice)
    }

    /// Every uid holding addresses.
    pub fn uids(&self) -> Vec<String> {
        self.file.allocations.keys().cloned().collect()
    }

    /// One address per CIDR for `uid`: the same ones again if it already has them.
    pub fn allocate(&mut self, uid: &str) -> Result<Vec<IpAddr>> {
        if let Some(ips) = self.file.allocations.get(uid)
            && ips.len() == self.cidrs.len()
        {
            return Ok(ips.clone());
        }
        let used: HashSet<IpAddr> = self
            .file
            .allocations
            .iter()
            .filter(|(u, _)| u.as_str() != uid)
            .flat_map(|(_, ips)| ips.iter().copied())
            .collect();
        let mut ips = Vec::with_capacity(self.cidrs.len());
        for cidr in &self.cidrs {
            let previous = self
                .file
                .allocations
                .get(uid)
                .and_then(|v| v.iter().find(|ip| cidr.contains(ip)).copied());
            let ip = match previous {
                Some(ip) => ip,
                None => {
                    let last = self.file.last.get(&cidr.to_string()).copied();
                    next_free(cidr, last, &used).ok_or_else(|| SandboxError::Exhausted {
                        cidr: cidr.to_string(),
                        in_use: used.iter().filter(|ip| cidr.contains(ip)).count(),
                    })?
                }
            };
            self.file.last.insert(cidr.to_string(), ip);
            ips.push(ip);
        }
        self.file.allocations.insert(uid.to_string(), ips.clone());
        self.save()?;
        Ok(ips)
    }

    /// Frees the addresses of `uid`; true if it had some.
    pub fn release(&mut self, uid: &str) -> Result<bool> {
        if self.file.allocations.remove(uid).is_none() {
            return Ok(false);
        }
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(|e| SandboxError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&self.path, &bytes)
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
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::load(&path, &cidrs()).unwrap();
        let a = ipam.allocate("uid-a").unwrap();
        assert_eq!(a[0].to_string(), "10.244.0.2");
        assert_eq!(a[1].to_string(), "fd00:10:244::2");
        let b = ipam.allocate("uid-b").unwrap();
        assert_eq!(b[0].to_string(), "10.244.0.3");
        assert_eq!(ipam.allocate("uid-a").unwrap(), a);
        // Persisted: a reload hands out the same addresses.
        let mut again = Ipam::load(&path, &cidrs()).unwrap();
        assert_eq!(again.allocate("uid-a").unwrap(), a);
        assert_eq!(again.get("uid-b").unwrap(), b.as_slice());
    }

    #[test]
    fn released_addresses_are_reused_only_after_a_full_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::load(&path, &["10.0.0.0/29".parse().unwrap()]).unwrap();
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
        assert!(ipam.release("p1").unwrap());
        assert!(!ipam.release("p1").unwrap());
        assert_eq!(ipam.allocate("p5").unwrap()[0].to_string(), "10.0.0.3");
        let reloaded = Ipam::load(&path, &["10.0.0.0/29".parse().unwrap()]).unwrap();
        assert!(reloaded.get("p1").is_none());
        assert_eq!(reloaded.uids().len(), 5);
    }

    #[test]
    fn drops_addresses_outside_new_cidrs_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let mut ipam = Ipam::load(&path, &cidrs()).unwrap();
        ipam.allocate("a").unwrap();
        let other = Ipam::load(&path, &["10.9.0.0/24".parse().unwrap()]).unwrap();
        assert!(other.get("a").is_none());
        std::fs::write(&path, b"{not json").unwrap();
        let err = Ipam::load(&path, &cidrs()).unwrap_err().to_string();
        assert!(err.contains("ipam.json"), "{err}");
        assert!(Ipam::load(&path, &["10.0.0.0/31".parse().unwrap()]).is_err());
    }
}
