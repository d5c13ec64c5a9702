//! `IpCidr`: a parsed IPv4/IPv6 prefix with the address arithmetic IPAM needs (pure).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::error::SandboxError;

/// A network prefix such as `10.244.0.0/24`; host bits are cleared on parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpCidr {
    network: IpAddr,
    prefix: u8,
}

impl IpCidr {
    /// Builds a prefix from an address (host bits are cleared) and a prefix length.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, SandboxError> {
        let bits = bits_of(&addr);
        if prefix > bits {
            return Err(SandboxError::Cidr {
                value: format!("{addr}/{prefix}"),
                reason: format!("prefix length must be at most {bits}"),
            });
        }
        let mask = if prefix == 0 {
            0
        } else {
            (!0u128) << (bits - prefix) & max_of(bits)
        };
        Ok(IpCidr {
            network: from_u128(&addr, to_u128(&addr) & mask),
            prefix,
        })
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.network.is_ipv6()
    }

    /// How many addresses the prefix spans (saturating at `u128::MAX` for `/0` IPv6).
    pub fn size(&self) -> u128 {
        let host_bits = bits_of(&self.network) - self.prefix;
        if host_bits >= 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        }
    }

    /// The address at `offset` from the network address, if inside the prefix.
    pub fn nth(&self, offset: u128) -> Option<IpAddr> {
        if offset >= self.size() {
            return None;
        }
        Some(from_u128(&self.network, to_u128(&self.network) + offset))
    }

    /// The offset of `ip` from the network address, if `ip` is inside the prefix.
    pub fn offset_of(&self, ip: &IpAddr) -> Option<u128> {
        if ip.is_ipv6() != self.is_ipv6() {
            return None;
        }
        let off = to_u128(ip).checked_sub(to_u128(&self.network))?;
        (off < self.size()).then_some(off)
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// The gateway: the first address after the network address (`.1`, `::1`).
    pub fn gateway(&self) -> Option<IpAddr> {
        (self.size() >= 4).then(|| self.nth(1)).flatten()
    }
}

impl FromStr for IpCidr {
    type Err = SandboxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| SandboxError::Cidr {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("missing /prefix"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IP address before the /"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("prefix length is not a number"))?;
        IpCidr::new(addr, prefix)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl serde::Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn bits_of(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn max_of(bits: u8) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

fn to_u128(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_u128(like: &IpAddr, v: u128) -> IpAddr {
    match like {
        // Callers stay inside a v4 prefix, so the value fits in 32 bits.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: IpCidr = "10.244.1.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.size(), 256);
        assert_eq!(c.gateway().unwrap().to_string(), "10.244.1.1");
        assert_eq!(c.nth(255).unwrap().to_string(), "10.244.1.255");
        assert!(c.nth(256).is_none());
        let v6: IpCidr = "fd00:10:244:1::5/64".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00:10:244:1::/64");
        assert_eq!(v6.gateway().unwrap().to_string(), "fd00:10:244:1::1");
        assert!(v6.contains(&"fd00:10:244:1::ffff".parse().unwrap()));
        assert!(!v6.contains(&"fd00:10:244:2::1".parse().unwrap()));
        assert!(!v6.contains(&"10.244.1.1".parse().unwrap()));
        assert_eq!(
            v6.offset_of(&"fd00:10:244:1::10".parse().unwrap()),
            Some(16)
        );
    }

    #[test]
    fn rejects_bad_input_with_the_value() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/x", "::/129"] {
            let err = bad.parse::<IpCidr>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn tiny_prefixes_have_no_gateway() {
        let c: IpCidr = "10.0.0.0/31".parse().unwrap();
        assert!(c.gateway().is_none());
        let all: IpCidr = "::/0".parse().unwrap();
        assert_eq!(all.size(), u128::MAX);
    }
}
