//! Byte layouts of the north-south maps, the twins of `bpf/skiff_nodeport.h` (keys shared with
//! `skiff_lb.h`, a frontend key and a `{u32, u32}` key, come from [`crate::abi`]).

use std::net::{IpAddr, SocketAddr};

use crate::abi::{addr16, ip_from16};

/// `struct ns_svc_value`.
pub(crate) type NsSvcValue = [u8; 16];
/// `struct maglev_chunk`: `MAGLEV_CHUNK` native-endian `u16` backend indexes.
pub(crate) type MaglevChunk = [u8; 512];
/// `struct ns_tuple`.
pub(crate) type Tuple = [u8; 40];
/// `struct ns_flow`.
pub(crate) type Flow = [u8; 44];
/// `struct ns_reply`.
pub(crate) type Reply = [u8; 40];
/// `struct ns_snat_addr`.
pub(crate) type SnatAddr = [u8; 16];
/// `struct ns_counters`.
pub(crate) type Counters = [u8; 32];

/// `MAGLEV_CHUNK`: table entries per map element.
pub(crate) const MAGLEV_CHUNK: usize = 256;

/// `NS_F_SNAT`, `NS_F_AFFINITY`.
pub(crate) const NS_F_SNAT: u8 = 0x1;
pub(crate) const NS_F_AFFINITY: u8 = 0x2;

fn take<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NsSvc {
    pub slot: u32,
    pub set: u32,
    pub count: u16,
    pub flags: u8,
    /// The size of the set's Maglev table (for the loader adopting pinned maps; the program
    /// uses its own constant).
    pub maglev_size: u32,
}

impl NsSvc {
    pub(crate) fn encode(&self) -> NsSvcValue {
        let mut v = [0u8; 16];
        v[0..4].copy_from_slice(&self.slot.to_ne_bytes());
        v[4..8].copy_from_slice(&self.set.to_ne_bytes());
        v[8..10].copy_from_slice(&self.count.to_ne_bytes());
        v[10] = self.flags;
        v[12..16].copy_from_slice(&self.maglev_size.to_ne_bytes());
        v
    }

    pub(crate) fn decode(v: &NsSvcValue) -> Self {
        Self {
            slot: u32::from_ne_bytes(take(v, 0)),
            set: u32::from_ne_bytes(take(v, 4)),
            count: u16::from_ne_bytes(take(v, 8)),
            flags: v[10],
            maglev_size: u32::from_ne_bytes(take(v, 12)),
        }
    }
}

/// One chunk of a Maglev table (`entries` at most [`MAGLEV_CHUNK`]; the rest stays 0).
pub(crate) fn maglev_chunk(entries: &[u16]) -> MaglevChunk {
    let mut c = [0u8; 512];
    for (i, e) in entries.iter().take(MAGLEV_CHUNK).enumerate() {
        c[2 * i..2 * i + 2].copy_from_slice(&e.to_ne_bytes());
    }
    c
}

/// (source, destination, protocol number).
pub(crate) fn parse_tuple(t: &Tuple) -> (SocketAddr, SocketAddr, u8) {
    (
        SocketAddr::new(ip_from16(take(t, 0)), u16::from_be_bytes(take(t, 32))),
        SocketAddr::new(ip_from16(take(t, 16)), u16::from_be_bytes(take(t, 34))),
        t[36],
    )
}

#[cfg(test)]
pub(crate) fn tuple(src: SocketAddr, dst: SocketAddr, proto: u8) -> Tuple {
    let mut t = [0u8; 40];
    t[0..16].copy_from_slice(&addr16(src.ip()));
    t[16..32].copy_from_slice(&addr16(dst.ip()));
    t[32..34].copy_from_slice(&src.port().to_be_bytes());
    t[34..36].copy_from_slice(&dst.port().to_be_bytes());
    t[36] = proto;
    t
}

/// (backend, SNAT source or `None` when the client address is kept, slot).
pub(crate) fn parse_flow(f: &Flow) -> (SocketAddr, Option<SocketAddr>, u32) {
    let backend = SocketAddr::new(ip_from16(take(f, 0)), u16::from_be_bytes(take(f, 16)));
    let nat_port = u16::from_be_bytes(take(f, 18));
    let nat_addr: [u8; 16] = take(f, 20);
    let nat = (nat_addr != [0u8; 16]).then(|| SocketAddr::new(ip_from16(nat_addr), nat_port));
    (backend, nat, u32::from_ne_bytes(take(f, 36)))
}

/// (new source = the frontend, new destination = the client, slot).
pub(crate) fn parse_reply(r: &Reply) -> (SocketAddr, SocketAddr, u32) {
    (
        SocketAddr::new(ip_from16(take(r, 0)), u16::from_be_bytes(take(r, 32))),
        SocketAddr::new(ip_from16(take(r, 16)), u16::from_be_bytes(take(r, 34))),
        u32::from_ne_bytes(take(r, 36)),
    )
}

/// (slot, backend) of a `struct ns_member_key`.
pub(crate) fn parse_member_key(k: &crate::abi::MemberKey) -> (u32, SocketAddr) {
    (
        u32::from_ne_bytes(take(k, 0)),
        SocketAddr::new(ip_from16(take(k, 4)), u16::from_be_bytes(take(k, 20))),
    )
}

/// The SNAT source of one family; `None` = all zero (no SNAT).
pub(crate) fn snat_addr(ip: Option<IpAddr>) -> SnatAddr {
    ip.map_or([0u8; 16], addr16)
}

pub(crate) fn parse_snat_addr(a: &SnatAddr) -> Option<IpAddr> {
    (*a != [0u8; 16]).then(|| ip_from16(*a))
}

/// (packets, replies, flows, no_backend).
pub(crate) fn parse_counters(v: &Counters) -> (u64, u64, u64, u64) {
    (
        u64::from_ne_bytes(take(v, 0)),
        u64::from_ne_bytes(take(v, 8)),
        u64::from_ne_bytes(take(v, 16)),
        u64::from_ne_bytes(take(v, 24)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let v = NsSvc {
            slot: 3,
            set: 77,
            count: 2,
            flags: NS_F_SNAT | NS_F_AFFINITY,
            maglev_size: 16381,
        };
        assert_eq!(NsSvc::decode(&v.encode()), v);
        let src: SocketAddr = "10.250.7.2:40000".parse().expect("addr");
        let dst: SocketAddr = "[fd00::1]:30080".parse().expect("addr");
        let t = tuple(src, dst, 6);
        assert_eq!(parse_tuple(&t), (src, dst, 6));
        assert_eq!(
            &t[32..34],
            &40000u16.to_be_bytes(),
            "ports in network order"
        );
        let c = maglev_chunk(&[5, 1]);
        assert_eq!(u16::from_ne_bytes([c[0], c[1]]), 5);
        assert_eq!(u16::from_ne_bytes([c[2], c[3]]), 1);
        assert_eq!(parse_snat_addr(&snat_addr(None)), None);
        let b: SocketAddr = "[fd00:250::2]:8080".parse().expect("addr");
        assert_eq!(
            parse_member_key(&crate::abi::member_key(7, b)),
            (7, b),
            "member keys round trip"
        );
        let ip: IpAddr = "10.250.7.1".parse().expect("ip");
        assert_eq!(parse_snat_addr(&snat_addr(Some(ip))), Some(ip));
    }
}
