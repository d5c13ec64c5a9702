//! A minimal rtnetlink client for pod networking — veth pairs, bridge ports, addresses and
//! default routes — so that building a sandbox costs a few syscalls instead of `ip` processes.
//!
//! A socket belongs to the network namespace it was created in; every request is sent with
//! an ACK and waits for it, so an error comes back on the request that caused it.

use std::io::{self, Read as _};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::{Domain, Protocol, Socket, Type};

// Message types and flags (linux/netlink.h, linux/rtnetlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// Link attributes (linux/if_link.h, linux/veth.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_AF_SPEC: u16 = 26;
const AF_INET6: u16 = 10;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFF_UP: u32 = 0x1;
// Address and route attributes (linux/if_addr.h, linux/rtnetlink.h).
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One request being built: the netlink header, the family header, then attributes.
struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set in `finish`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Message { buf }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    /// Opens a nested attribute; `end_nest` with the returned offset closes it.
    fn begin_nest(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.attr(kind, &[]);
        at
    }

    fn end_nest(&mut self, at: usize) -> &mut Self {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Appends raw bytes (a family header inside a nested attribute).
    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = family;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// A NETLINK_ROUTE socket in the network namespace it was opened in.
#[derive(Debug)]
pub(crate) struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends `msg` and reads until its ACK; returns the payloads (family header onwards) of
    /// the messages that came before it (replies to a get).
    fn request(&mut self, msg: &mut Message) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.socket.send(msg.finish(seq))?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
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
                                Err(io::Error::from_raw_os_error(-code))
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

    /// The index of the link called `name`, if there is one.
    pub(crate) fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut msg = Message::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        match self.request(&mut msg) {
            Ok(replies) => Ok(replies.first().and_then(|r| {
                r.get(4..8)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u32)
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the link called `name`; no such link is `ENODEV`, as the kernel says it.
    pub(crate) fn require_index(&mut self, name: &str) -> io::Result<u32> {
        self.link_index(name)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// `ip link add <name> type veth peer name <peer> netns <peer_netns>`.
    pub(crate) fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut msg = Message::new(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0, 0),
        );
        msg.attr_str(IFLA_IFNAME, name);
        let info = msg.begin_nest(IFLA_LINKINFO);
        msg.attr_str(IFLA_INFO_KIND, "veth");
        let data = msg.begin_nest(IFLA_INFO_DATA);
        let peer_at = msg.begin_nest(VETH_INFO_PEER);
        msg.raw(&ifinfomsg(0, 0, 0, 0));
        msg.attr_str(IFLA_IFNAME, peer);
        msg.attr(IFLA_NET_NS_FD, &peer_netns.as_raw_fd().to_ne_bytes());
        msg.end_nest(peer_at);
        msg.end_nest(data);
        msg.end_nest(info);
        self.request(&mut msg).map(drop)
    }

    /// `ip link set <index> master <master> up` (`master` `None`: only up).
    pub(crate) fn set_up(&mut self, index: u32, master: Option<u32>) -> io::Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, 0, &ifinfomsg(0, index as i32, IFF_UP, IFF_UP));
        if let Some(m) = master {
            msg.attr(IFLA_MASTER, &m.to_ne_bytes());
        }
        self.request(&mut msg).map(drop)
    }

    /// `ip link set dev <index> addrgenmode none`: the link gets no IPv6 link-local address
    /// when it comes up, so no duplicate address detection or multicast listener reports
    /// either. For a bridge port, which needs no address of its own. A kernel without IPv6 is
    /// fine: there is nothing to generate.
    pub(crate) fn set_no_ipv6_link_local(&mut self, index: u32) -> io::Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, 0, &ifinfomsg(0, index as i32, 0, 0));
        let spec = msg.begin_nest(IFLA_AF_SPEC);
        let inet6 = msg.begin_nest(AF_INET6);
        msg.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
        msg.end_nest(inet6);
        msg.end_nest(spec);
        match self.request(&mut msg) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)
                ) =>
            {
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// `ip link set dev <index> type bridge_slave hairpin on`.
    pub(crate) fn set_hairpin(&mut self, index: u32) -> io::Result<()> {
        let mut msg = Message::new(RTM_NEWLINK, 0, &ifinfomsg(0, index as i32, 0, 0));
        let info = msg.begin_nest(IFLA_LINKINFO);
        msg.attr_str(IFLA_INFO_SLAVE_KIND, "bridge");
        let data = msg.begin_nest(IFLA_INFO_SLAVE_DATA);
        msg.attr(IFLA_BRPORT_MODE, &[1]);
        msg.end_nest(data);
        msg.end_nest(info);
        self.request(&mut msg).map(drop)
    }

    /// `ip link del <name>`; false if there was no such link.
    pub(crate) fn del_link(&mut self, name: &str) -> io::Result<bool> {
        let mut msg = Message::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0, 0));
        msg.attr_str(IFLA_IFNAME, name);
        match self.request(&mut msg) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip addr add <ip>/<prefix> dev <index> [nodad]`.
    pub(crate) fn add_addr(
        &mut self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        nodad: bool,
    ) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = family(&ip);
        fixed[1] = prefix;
        fixed[2] = if nodad { IFA_F_NODAD } else { 0 };
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        let mut msg = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed);
        let addr = octets(&ip);
        msg.attr(IFA_LOCAL, &addr).attr(IFA_ADDRESS, &addr);
        self.request(&mut msg).map(drop)
    }

    /// `ip route replace default via <gateway> dev <index>`.
    pub(crate) fn replace_default_route(&mut self, gateway: IpAddr, index: u32) -> io::Result<()> {
        let fixed = [
            family(&gateway),
            0, // dst_len: default
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ];
        let mut msg = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &fixed);
        msg.attr(RTA_GATEWAY, &octets(&gateway))
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(&mut msg).map(drop)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length_and_are_aligned() {
        let mut msg = Message::new(RTM_NEWLINK, 0, &ifinfomsg(0, 7, IFF_UP, IFF_UP));
        msg.attr_str(IFLA_IFNAME, "abc");
        let nest = msg.begin_nest(IFLA_LINKINFO);
        msg.attr_str(IFLA_INFO_KIND, "veth");
        msg.end_nest(nest);
        let bytes = msg.finish(9).to_vec();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 9);
        // ifinfomsg index
        assert_eq!(i32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 7);
        // IFLA_IFNAME "abc\0": 4 + 4 bytes
        let a = NLMSG_HDRLEN + 16;
        assert_eq!(u16::from_ne_bytes(bytes[a..a + 2].try_into().unwrap()), 8);
        // The nest spans its header and the aligned "veth\0" attribute (4 + 8).
        let n = a + 8;
        assert_eq!(
            u16::from_ne_bytes(bytes[n..n + 2].try_into().unwrap()),
            4 + 12
        );
        assert_eq!(&bytes[n + 8..n + 12], b"veth");
    }
}
