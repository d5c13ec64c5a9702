//! Byte layouts of the map keys and values, the twins of `bpf/skiff_lb.h`.
//!
//! Keys and values travel as plain byte arrays (aya implements `Pod` for `[u8; N]`), encoded and
//! decoded here field by field: the layout is spelled out once, byte offsets and byte order are
//! explicit, and no `unsafe impl Pod` is needed. Multi-byte host-order fields are native-endian
//! (the kernel and this process share a CPU); addresses and ports are network order.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `struct svc_key`.
pub(crate) type SvcKey = [u8; 20];
/// `struct svc_value`.
pub(crate) type SvcValue = [u8; 16];
/// `struct backend_key`.
pub(crate) type BackendKey = [u8; 8];
/// `struct backend_value`.
pub(crate) type BackendValue = [u8; 20];
/// `struct affinity_key`.
pub(crate) type AffinityKey = [u8; 16];
/// `struct affinity_value`.
pub(crate) type AffinityValue = [u8; 40];
/// `struct member_key`.
pub(crate) type MemberKey = [u8; 24];
/// `struct revnat_key`.
pub(crate) type RevNatKey = [u8; 32];
/// `struct revnat_value`.
pub(crate) type RevNatValue = [u8; 20];
/// `struct svc_counters`.
pub(crate) type Counters = [u8; 24];

/// `SVC_F_AFFINITY`.
pub(crate) const SVC_F_AFFINITY: u8 = 0x1;

/// IANA protocol numbers, as `bpf_sock_addr.protocol` reports them.
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// 16-byte form: IPv4 v4-mapped, so one key format serves both families and dual-stack sockets.
pub(crate) fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Inverse of [`addr16`]: v4-mapped addresses come back as IPv4.
pub(crate) fn ip_from16(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn take<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

pub(crate) fn svc_key(ip: IpAddr, port: u16, proto: u8) -> SvcKey {
    let mut k = [0u8; 20];
    k[0..16].copy_from_slice(&addr16(ip));
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k[18] = proto;
    k
}

/// (address, port, protocol number).
pub(crate) fn parse_svc_key(k: &SvcKey) -> (IpAddr, u16, u8) {
    (
        ip_from16(take(k, 0)),
        u16::from_be_bytes(take(k, 16)),
        k[18],
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SvcVal {
    pub slot: u32,
    pub set: u32,
    pub count: u16,
    pub flags: u8,
    pub affinity_timeout: u32,
}

impl SvcVal {
    pub(crate) fn encode(&self) -> SvcValue {
        let mut v = [0u8; 16];
        v[0..4].copy_from_slice(&self.slot.to_ne_bytes());
        v[4..8].copy_from_slice(&self.set.to_ne_bytes());
        v[8..10].copy_from_slice(&self.count.to_ne_bytes());
        v[10] = self.flags;
        v[12..16].copy_from_slice(&self.affinity_timeout.to_ne_bytes());
        v
    }

    pub(crate) fn decode(v: &SvcValue) -> Self {
        Self {
            slot: u32::from_ne_bytes(take(v, 0)),
            set: u32::from_ne_bytes(take(v, 4)),
            count: u16::from_ne_bytes(take(v, 8)),
            flags: v[10],
            affinity_timeout: u32::from_ne_bytes(take(v, 12)),
        }
    }
}

pub(crate) fn backend_key(set: u32, index: u32) -> BackendKey {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&set.to_ne_bytes());
    k[4..8].copy_from_slice(&index.to_ne_bytes());
    k
}

/// (set, index).
pub(crate) fn parse_backend_key(k: &BackendKey) -> (u32, u32) {
    (
        u32::from_ne_bytes(take(k, 0)),
        u32::from_ne_bytes(take(k, 4)),
    )
}

/// `backend_value` and `revnat_value` share one layout: address, port, padding.
pub(crate) fn sockaddr_value(addr: SocketAddr) -> BackendValue {
    let mut v = [0u8; 20];
    v[0..16].copy_from_slice(&addr16(addr.ip()));
    v[16..18].copy_from_slice(&addr.port().to_be_bytes());
    v
}

pub(crate) fn parse_sockaddr_value(v: &BackendValue) -> SocketAddr {
    SocketAddr::new(ip_from16(take(v, 0)), u16::from_be_bytes(take(v, 16)))
}

/// (socket cookie, backend address).
pub(crate) fn parse_revnat_key(k: &RevNatKey) -> (u64, SocketAddr) {
    (
        u64::from_ne_bytes(take(k, 0)),
        SocketAddr::new(ip_from16(take(k, 8)), u16::from_be_bytes(take(k, 24))),
    )
}

/// (netns cookie, service slot).
pub(crate) fn parse_affinity_key(k: &AffinityKey) -> (u64, u32) {
    (
        u64::from_ne_bytes(take(k, 0)),
        u32::from_ne_bytes(take(k, 8)),
    )
}

/// (last used, monotonic ns; set; index; backend).
pub(crate) fn parse_affinity_value(v: &AffinityValue) -> (u64, u32, u32, SocketAddr) {
    (
        u64::from_ne_bytes(take(v, 0)),
        u32::from_ne_bytes(take(v, 8)),
        u32::from_ne_bytes(take(v, 12)),
        SocketAddr::new(ip_from16(take(v, 16)), u16::from_be_bytes(take(v, 32))),
    )
}

pub(crate) fn member_key(set: u32, backend: SocketAddr) -> MemberKey {
    let mut k = [0u8; 24];
    k[0..4].copy_from_slice(&set.to_ne_bytes());
    k[4..20].copy_from_slice(&addr16(backend.ip()));
    k[20..22].copy_from_slice(&backend.port().to_be_bytes());
    k
}

/// The set of a member key.
pub(crate) fn member_key_set(k: &MemberKey) -> u32 {
    u32::from_ne_bytes(take(k, 0))
}

/// (connects, datagrams, rejected).
pub(crate) fn parse_counters(v: &Counters) -> (u64, u64, u64) {
    (
        u64::from_ne_bytes(take(v, 0)),
        u64::from_ne_bytes(take(v, 8)),
        u64::from_ne_bytes(take(v, 16)),
    )
}

/// Whether `ip` is IPv4 (v4-mapped IPv6 counts as IPv4, as the programs see it).
pub(crate) fn is_v4(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_keys_are_v4_mapped_and_round_trip() {
        let ip: IpAddr = "10.96.200.1".parse().expect("ip");
        let k = svc_key(ip, 80, IPPROTO_TCP);
        assert_eq!(&k[0..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[12..16], &[10, 96, 200, 1]);
        assert_eq!(&k[16..18], &[0, 80], "port in network order");
        assert_eq!(parse_svc_key(&k), (ip, 80, IPPROTO_TCP));
    }

    #[test]
    fn values_round_trip() {
        let v = SvcVal {
            slot: 7,
            set: 9,
            count: 3,
            flags: SVC_F_AFFINITY,
            affinity_timeout: 10800,
        };
        assert_eq!(SvcVal::decode(&v.encode()), v);
        let b: SocketAddr = "[fd00:250::2]:8080".parse().expect("addr");
        assert_eq!(parse_sockaddr_value(&sockaddr_value(b)), b);
        assert_eq!(parse_backend_key(&backend_key(4, 2)), (4, 2));
    }
}
