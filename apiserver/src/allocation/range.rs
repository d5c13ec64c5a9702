//! Address and port ranges as upstream's allocators see them: which members are allocatable, and the order dynamic allocation tries them in.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

/// An IP family, named as `spec.ipFamilies` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX, e.g. 10.96.0.0/12")]
pub struct CidrError(pub String);

/// A CIDR block addresses are handed out from (`--service-cidr`, `--lb-pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX`; host bits are cleared, as Go's `net.ParseCIDR` does.
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = bits(Family::of(&addr));
        if prefix > bits {
            return Err(bad());
        }
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (bits - prefix)
        };
        let base = from_u128(Family::of(&addr), to_u128(&addr) & mask);
        Ok(Self { base, prefix })
    }

    pub fn family(&self) -> Family {
        Family::of(&self.base)
    }

    fn host_bits(&self) -> u8 {
        bits(self.family()) - self.prefix
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family()
            && (self.host_bits() >= 128
                || (to_u128(ip) >> self.host_bits()) == (to_u128(&self.base) >> self.host_bits()))
    }

    /// How many addresses are allocatable: IPv4 loses the network and broadcast addresses,
    /// IPv6 the subnet-router anycast address (upstream `ipallocator`). Capped at 2^64.
    pub fn size(&self) -> u128 {
        let total = 1u128 << self.host_bits().min(64);
        match self.family() {
            Family::V4 if total > 2 => total - 2,
            Family::V6 if total > 1 => total - 1,
            _ => 0,
        }
    }

    /// The allocatable address at `offset` (0-based, from network+1).
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        (offset < self.size()).then(|| from_u128(self.family(), to_u128(&self.base) + 1 + offset))
    }

    /// The offset of `ip` among the allocatable addresses, if it is one of them.
    pub fn offset_of(&self, ip: &IpAddr) -> Option<u128> {
        if !self.contains(ip) {
            return None;
        }
        let offset = to_u128(ip).checked_sub(to_u128(&self.base) + 1)?;
        (offset < self.size()).then_some(offset)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn bits(family: Family) -> u8 {
    match family {
        Family::V4 => 32,
        Family::V6 => 128,
    }
}

fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// The size of the low band that dynamic allocation avoids while the rest has room, so
/// statically requested values rarely collide with dynamic ones (KEP-3070 for ClusterIPs:
/// `min(max(16, size/16), 256)`; KEP-3668 for NodePorts: `min(max(16, size/32), 128)`).
pub fn static_band(size: u128, step: u128, max: u128) -> u128 {
    const MIN: u128 = 16;
    if size < MIN {
        return 0;
    }
    (size / step).clamp(MIN, max)
}

/// Offsets in `0..size` in the order dynamic allocation tries them: the upper band from a
/// random start (wrapping inside the band), then the static band the same way. Lazy, so a
/// huge IPv6 range costs nothing until walked.
pub fn dynamic_order(size: u128, band: u128, seed: u64) -> impl Iterator<Item = u128> {
    let upper = size.saturating_sub(band);
    let walk = |start: u128, len: u128, seed: u64| {
        let first = if len == 0 { 0 } else { u128::from(seed) % len };
        (0..len).map(move |i| start + (first + i) % len)
    };
    walk(band, upper, seed).chain(walk(0, band.min(size), seed.rotate_left(17)))
}

/// The first offset in dynamic order whose value is not `taken`, trying at most `limit`.
pub fn pick_ip(cidr: &Cidr, taken: &HashSet<IpAddr>, seed: u64, limit: usize) -> Option<IpAddr> {
    let band = static_band(cidr.size(), 16, 256);
    dynamic_order(cidr.size(), band, seed)
        .take(limit)
        .filter_map(|o| cidr.nth(o))
        .find(|ip| !taken.contains(ip))
}

/// A free port of `range` in dynamic order, or None when every port is `taken`.
pub fn pick_port(range: &RangeInclusive<u16>, taken: &HashSet<u16>, seed: u64) -> Option<u16> {
    let start = u128::from(*range.start());
    let size = (u128::from(*range.end()) + 1).saturating_sub(start);
    let band = static_band(size, 32, 128);
    dynamic_order(size, band, seed)
        .filter_map(|o| u16::try_from(start + o).ok())
        .find(|p| !taken.contains(p))
}

/// A random seed (dynamic allocation starts at a random place, as upstream).
pub fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // Without randomness the walk just starts at the band's beginning: still correct.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_clears_host_bits() {
        let c = Cidr::parse("10.96.1.2/12").unwrap();
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert_eq!(c.family(), Family::V4);
        assert!(Cidr::parse("10.96.0.0").is_err());
        assert!(Cidr::parse("10.96.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/129").is_err());
    }

    #[test]
    fn ipv4_excludes_network_and_broadcast() {
        let c = Cidr::parse("10.0.0.0/29").unwrap();
        assert_eq!(c.size(), 6);
        assert_eq!(c.nth(0), Some(ip("10.0.0.1")));
        assert_eq!(c.nth(5), Some(ip("10.0.0.6")));
        assert_eq!(c.nth(6), None);
        assert_eq!(c.offset_of(&ip("10.0.0.0")), None);
        assert_eq!(c.offset_of(&ip("10.0.0.7")), None);
        assert_eq!(c.offset_of(&ip("10.0.0.3")), Some(2));
        assert!(!c.contains(&ip("10.0.0.8")));
        assert!(!c.contains(&ip("fd00::1")));
    }

    #[test]
    fn ipv6_excludes_only_the_anycast_address() {
        let c = Cidr::parse("fd00:10:96::/112").unwrap();
        assert_eq!(c.size(), 65535);
        assert_eq!(c.nth(0), Some(ip("fd00:10:96::1")));
        assert_eq!(c.offset_of(&ip("fd00:10:96::ffff")), Some(65534));
        assert!(!c.contains(&ip("fd00:10:97::1")));
    }

    #[test]
    fn dynamic_allocation_prefers_the_upper_band() {
        let c = Cidr::parse("10.96.0.0/24").unwrap();
        let band = static_band(c.size(), 16, 256);
        assert_eq!(band, 16);
        let order: Vec<u128> = dynamic_order(c.size(), band, 7).collect();
        assert_eq!(order.len() as u128, c.size());
        assert!(
            order[..(c.size() - band) as usize]
                .iter()
                .all(|o| *o >= band)
        );
        let unique: HashSet<u128> = order.iter().copied().collect();
        assert_eq!(unique.len() as u128, c.size());
    }

    #[test]
    fn picks_skip_taken_and_fill_the_range() {
        let c = Cidr::parse("10.0.0.0/29").unwrap();
        let mut taken = HashSet::new();
        for _ in 0..6 {
            let got = pick_ip(&c, &taken, 3, 100).unwrap();
            assert!(c.contains(&got));
            assert!(taken.insert(got));
        }
        assert_eq!(pick_ip(&c, &taken, 3, 100), None);

        let range = 30000..=30003;
        let mut ports = HashSet::new();
        for _ in 0..4 {
            assert!(ports.insert(pick_port(&range, &ports, 9).unwrap()));
        }
        assert_eq!(pick_port(&range, &ports, 9), None);
    }

    #[test]
    fn node_port_band() {
        // 30000-32767: 2768 ports, band min(max(16, 86), 128) = 86.
        assert_eq!(static_band(2768, 32, 128), 86);
        assert_eq!(static_band(10, 32, 128), 0);
    }
}
