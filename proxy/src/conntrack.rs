//! The kernel's connection tracking table over ctnetlink (NETLINK_NETFILTER): listing entries
//! and deleting the UDP ones whose replies come from a backend that was removed.
//!
//! Why: UDP has no connection to close. A conntrack entry whose reply source is a removed
//! backend keeps steering a client's datagrams (a NAT binding made by a netfilter rule on the
//! node) to an address that no longer serves, until the entry times out; kube-proxy deletes
//! such entries when an endpoint goes, and so does the eBPF data plane. A socket belongs to
//! the network namespace of the thread that opened it, so open it on the node's.

use std::io::{self, Read as _};
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

// linux/netlink.h, linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
const NETLINK_NETFILTER: libc::c_int = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// What went wrong talking to ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// A socket call failed, or the kernel answered with an error.
    #[error("ctnetlink {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel sent something this parser does not understand.
    #[error("ctnetlink: malformed reply: {0}")]
    Malformed(&'static str),
    /// An entry that cannot be encoded (mixed address families).
    #[error("conntrack entry {0}: source and destination of one tuple differ in family")]
    MixedFamilies(String),
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> ConntrackError {
    move |source| ConntrackError::Io { what, source }
}

/// One direction of a tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A conntrack entry: the flow as the client sent it and as the reply comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// IANA protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub orig: Tuple,
    pub reply: Tuple,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being built: netlink header, nfgenmsg, attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, family: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set in `finish`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        // nfgenmsg: family, version NFNETLINK_V0, resource id 0
        buf.extend_from_slice(&[family, 0, 0, 0]);
        Message { buf }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) {
        self.buf
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn begin_nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind | NLA_F_NESTED, &[]);
        at
    }

    fn end_nest(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn tuple(&mut self, kind: u16, proto: u8, t: &Tuple) {
        let outer = self.begin_nest(kind);
        let ip = self.begin_nest(CTA_TUPLE_IP);
        match (t.src.ip(), t.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                self.attr(CTA_IP_V4_SRC, &s.octets());
                self.attr(CTA_IP_V4_DST, &d.octets());
            }
            (s, d) => {
                self.attr(CTA_IP_V6_SRC, &v6_octets(s));
                self.attr(CTA_IP_V6_DST, &v6_octets(d));
            }
        }
        self.end_nest(ip);
        let p = self.begin_nest(CTA_TUPLE_PROTO);
        self.attr(CTA_PROTO_NUM, &[proto]);
        self.attr(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes());
        self.attr(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes());
        self.end_nest(p);
        self.end_nest(outer);
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn family_of(entry: &Entry) -> Result<u8, ConntrackError> {
    let v4 = entry.orig.src.is_ipv4();
    let same = [entry.orig.dst, entry.reply.src, entry.reply.dst]
        .iter()
        .all(|a| a.is_ipv4() == v4);
    if !same {
        return Err(ConntrackError::MixedFamilies(format!("{entry:?}")));
    }
    Ok(if v4 {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    })
}

/// Attributes of a payload (after the nfgenmsg header): (type without flags, data).
fn attrs(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let value = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, value))
    })
}

fn parse_tuple(data: &[u8]) -> Option<(u8, Tuple)> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0u16, 0u16);
    for (kind, value) in attrs(data) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(value) {
                    let ip = match v.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(v).ok()?),
                        16 => IpAddr::from(<[u8; 16]>::try_from(v).ok()?),
                        _ => continue,
                    };
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(ip),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(ip),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(value) {
                    match (k, v) {
                        (CTA_PROTO_NUM, [n, ..]) => proto = Some(*n),
                        (CTA_PROTO_SRC_PORT, [a, b, ..]) => sport = u16::from_be_bytes([*a, *b]),
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => dport = u16::from_be_bytes([*a, *b]),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        proto?,
        Tuple {
            src: SocketAddr::new(src?, sport),
            dst: SocketAddr::new(dst?, dport),
        },
    ))
}

/// Parses one CT_NEW message payload (nfgenmsg onwards) into an entry.
fn parse_entry(payload: &[u8]) -> Option<Entry> {
    let body = payload.get(NFGENMSG_LEN..)?;
    let (mut orig, mut reply) = (None, None);
    for (kind, value) in attrs(body) {
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(value),
            CTA_TUPLE_REPLY => reply = parse_tuple(value),
            _ => {}
        }
    }
    let (proto, orig) = orig?;
    let (_, reply) = reply?;
    Some(Entry { proto, orig, reply })
}

/// A ctnetlink socket in the network namespace it was opened in.
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    seq: u32,
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ConntrackError> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(NETLINK_NETFILTER)),
        )
        .map_err(io_err("socket"))?;
        Ok(Conntrack { socket, seq: 0 })
    }

    /// Sends `msg`; returns the payloads of the replies before the ACK or NLMSG_DONE.
    fn request(
        &mut self,
        what: &'static str,
        msg: &mut Message,
    ) -> Result<Vec<Vec<u8>>, ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.socket.send(msg.finish(seq)).map_err(io_err(what))?;
        let mut replies = Vec::new();
        // dumps come in multi-part batches of up to a few pages each
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(what)(e)),
            };
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(ConntrackError::Malformed("truncated message"));
                }
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let got_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                let payload = &rest[NLMSG_HDRLEN..len];
                if got_seq == seq {
                    match kind {
                        NLMSG_ERROR => {
                            let code = payload
                                .get(0..4)
                                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                                .unwrap_or(-libc::EPROTO);
                            return if code == 0 {
                                Ok(replies)
                            } else {
                                Err(io_err(what)(io::Error::from_raw_os_error(-code)))
                            };
                        }
                        NLMSG_DONE => return Ok(replies),
                        _ => replies.push(payload.to_vec()),
                    }
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }

    /// Every entry of both families (ICMP and other port-less protocols are skipped).
    pub fn entries(&mut self) -> Result<Vec<Entry>, ConntrackError> {
        let mut msg = Message::new(IPCTNL_MSG_CT_GET, NLM_F_DUMP, libc::AF_UNSPEC as u8);
        let replies = self.request("dump", &mut msg)?;
        Ok(replies.iter().filter_map(|p| parse_entry(p)).collect())
    }

    /// Adds an entry that expires after `timeout_secs` (for tests and tools: the kernel makes
    /// entries for real traffic itself).
    pub fn insert(&mut self, entry: &Entry, timeout_secs: u32) -> Result<(), ConntrackError> {
        let family = family_of(entry)?;
        let mut msg = Message::new(
            IPCTNL_MSG_CT_NEW,
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
            family,
        );
        msg.tuple(CTA_TUPLE_ORIG, entry.proto, &entry.orig);
        msg.tuple(CTA_TUPLE_REPLY, entry.proto, &entry.reply);
        msg.attr(CTA_TIMEOUT, &timeout_secs.to_be_bytes());
        self.request("insert", &mut msg).map(drop)
    }

    /// Deletes an entry by its original tuple; false when it was already gone.
    pub fn delete(&mut self, entry: &Entry) -> Result<bool, ConntrackError> {
        let family = family_of(entry)?;
        let mut msg = Message::new(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, family);
        msg.tuple(CTA_TUPLE_ORIG, entry.proto, &entry.orig);
        match self.request("delete", &mut msg) {
            Ok(_) => Ok(true),
            Err(ConntrackError::Io { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every UDP entry whose reply comes from one of `backends`; returns how many.
    pub fn flush_udp_backends(&mut self, backends: &[SocketAddr]) -> Result<usize, ConntrackError> {
        if backends.is_empty() {
            return Ok(0);
        }
        let mut deleted = 0;
        for entry in self.entries()? {
            if entry.proto == IPPROTO_UDP
                && backends.contains(&entry.reply.src)
                && self.delete(&entry)?
            {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            proto: IPPROTO_UDP,
            orig: Tuple {
                src: "10.250.9.2:5000".parse().unwrap(),
                dst: "10.96.0.53:53".parse().unwrap(),
            },
            reply: Tuple {
                src: "10.244.0.7:8053".parse().unwrap(),
                dst: "10.250.9.2:5000".parse().unwrap(),
            },
        }
    }

    #[test]
    fn a_new_message_parses_back_into_its_entry() {
        let e = entry();
        let mut msg = Message::new(IPCTNL_MSG_CT_NEW, 0, libc::AF_INET as u8);
        msg.tuple(CTA_TUPLE_ORIG, e.proto, &e.orig);
        msg.tuple(CTA_TUPLE_REPLY, e.proto, &e.reply);
        msg.attr(CTA_TIMEOUT, &30u32.to_be_bytes());
        let bytes = msg.finish(1).to_vec();
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(parse_entry(&bytes[NLMSG_HDRLEN..]), Some(e));
    }

    #[test]
    fn ipv6_tuples_round_trip_and_mixed_families_are_refused() {
        let mut e = entry();
        e.orig.src = "[fd00::2]:5000".parse().unwrap();
        assert!(matches!(
            family_of(&e),
            Err(ConntrackError::MixedFamilies(_))
        ));
        let v6 = Entry {
            proto: IPPROTO_UDP,
            orig: Tuple {
                src: "[fd00::2]:5000".parse().unwrap(),
                dst: "[fd00:10:96::53]:53".parse().unwrap(),
            },
            reply: Tuple {
                src: "[fd00:10:244::7]:8053".parse().unwrap(),
                dst: "[fd00::2]:5000".parse().unwrap(),
            },
        };
        let mut msg = Message::new(IPCTNL_MSG_CT_NEW, 0, family_of(&v6).unwrap());
        msg.tuple(CTA_TUPLE_ORIG, v6.proto, &v6.orig);
        msg.tuple(CTA_TUPLE_REPLY, v6.proto, &v6.reply);
        let bytes = msg.finish(1).to_vec();
        assert_eq!(parse_entry(&bytes[NLMSG_HDRLEN..]), Some(v6));
    }

    #[test]
    fn garbage_is_not_an_entry() {
        assert_eq!(parse_entry(&[]), None);
        assert_eq!(parse_entry(&[2, 0, 0, 0, 0xff, 0xff, 1]), None);
    }
}
