//! The DNS wire format on the hot path: a request's one question parsed in place (name
//! lowercased into a fixed buffer, EDNS0 found), and responses written straight from the
//! snapshot's pre-encoded RDATA.
//!
//! Why not hickory-proto here: its `Message` owns a `Name` per record, so decoding a query and
//! encoding an answer allocates per label and per record; this path allocates only the output
//! buffer. hickory-proto still decodes and encodes everything that is not a cluster answer
//! (forwarding, the cache), and the tests decode our output with it.

use crate::names::MAX_NAME_LEN;

pub const HEADER_LEN: usize = 12;
/// The UDP payload every DNS speaker accepts (RFC 1035 §4.2.1).
pub const MIN_UDP_PAYLOAD: usize = 512;
/// What we advertise and the most we send over UDP: the DNS Flag Day 2020 value, which avoids
/// IP fragmentation.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Response codes we send (RFC 1035 §4.1.1, RFC 6891 §9 for BADVERS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    /// Needs EDNS: the upper bits go in the OPT record.
    BadVers,
}

impl Rcode {
    pub fn code(self) -> u16 {
        match self {
            Rcode::NoError => 0,
            Rcode::FormErr => 1,
            Rcode::ServFail => 2,
            Rcode::NxDomain => 3,
            Rcode::NotImp => 4,
            Rcode::Refused => 5,
            Rcode::BadVers => 16,
        }
    }

    pub fn from_code(code: u16) -> Option<Rcode> {
        Some(match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            16 => Rcode::BadVers,
            _ => return None,
        })
    }
}

/// EDNS0 as the client sent it (RFC 6891 §6.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A query's name in lowercase wire form, kept inline so parsing allocates nothing.
#[derive(Clone)]
pub struct QName {
    buf: [u8; MAX_NAME_LEN],
    len: u8,
}

impl QName {
    pub fn as_wire(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for QName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::names::to_dotted(self.as_wire()))
    }
}

/// A parsed query: everything the answer path and the response writer need.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub packet: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub qname: QName,
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question in `packet` (the question is echoed byte for byte, case included).
    pub question_end: usize,
    pub edns: Option<Edns>,
}

impl Request<'_> {
    /// The most bytes a UDP response to this request may carry.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => usize::from(e.payload.clamp(MIN_UDP_PAYLOAD as u16, MAX_UDP_PAYLOAD)),
            None => MIN_UDP_PAYLOAD,
        }
    }
}

/// What a packet turned out to be.
#[derive(Debug)]
// Not boxed: a `Request` lives on the stack for one query; boxing would allocate per query.
#[allow(clippy::large_enum_variant)]
pub enum Parsed<'a> {
    Query(Request<'a>),
    /// Answer with this rcode and no question (FORMERR, NOTIMP): the header was readable.
    Error {
        id: u16,
        opcode: u8,
        recursion_desired: bool,
        rcode: Rcode,
    },
    /// Not worth an answer: shorter than a header, or itself a response (answering those could
    /// loop two servers forever).
    Drop,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Parses a request. Never panics, whatever the bytes.
pub fn parse(packet: &[u8]) -> Parsed<'_> {
    if packet.len() < HEADER_LEN {
        return Parsed::Drop;
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Parsed::Drop;
    }
    let opcode = ((flags >> 11) & 0xf) as u8;
    let recursion_desired = flags & 0x0100 != 0;
    let error = |rcode| Parsed::Error {
        id,
        opcode,
        recursion_desired,
        rcode,
    };
    if opcode != 0 {
        return error(Rcode::NotImp);
    }
    let counts = [4, 6, 8, 10].map(|at| u16::from_be_bytes([packet[at], packet[at + 1]]));
    if counts[0] != 1 {
        return error(Rcode::FormErr);
    }
    let mut qname = QName {
        buf: [0; MAX_NAME_LEN],
        len: 0,
    };
    let mut pos = HEADER_LEN;
    let mut out = 0usize;
    loop {
        let Some(&len) = packet.get(pos) else {
            return error(Rcode::FormErr);
        };
        // Compression (or the reserved label types) in the question: nothing precedes it to
        // point at, so it is malformed.
        if len & 0xc0 != 0 {
            return error(Rcode::FormErr);
        }
        let len = usize::from(len);
        if out + 1 + len > MAX_NAME_LEN {
            return error(Rcode::FormErr);
        }
        let Some(label) = packet.get(pos + 1..pos + 1 + len) else {
            return error(Rcode::FormErr);
        };
        qname.buf[out] = len as u8;
        for (dst, src) in qname.buf[out + 1..out + 1 + len].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        out += 1 + len;
        pos += 1 + len;
        if len == 0 {
            break;
        }
    }
    qname.len = out as u8;
    let (Some(qtype), Some(qclass)) = (u16_at(packet, pos), u16_at(packet, pos + 2)) else {
        return error(Rcode::FormErr);
    };
    let question_end = pos + 4;
    // The other sections: skipped record by record, looking for the one OPT.
    let mut edns = None;
    let mut pos = question_end;
    for (section, &count) in counts.iter().enumerate().skip(1) {
        for _ in 0..count {
            let Some(after_name) = skip_name(packet, pos) else {
                return error(Rcode::FormErr);
            };
            let (Some(rtype), Some(class), Some(rdlen)) = (
                u16_at(packet, after_name),
                u16_at(packet, after_name + 2),
                u16_at(packet, after_name + 8),
            ) else {
                return error(Rcode::FormErr);
            };
            let end = after_name + 10 + usize::from(rdlen);
            if end > packet.len() {
                return error(Rcode::FormErr);
            }
            if rtype == TYPE_OPT {
                // RFC 6891 §6.1.1: one OPT, in the additional section, owned by the root.
                if section != 3 || edns.is_some() || after_name != pos + 1 {
                    return error(Rcode::FormErr);
                }
                edns = Some(Edns {
                    payload: class,
                    version: packet[after_name + 5],
                    dnssec_ok: packet[after_name + 6] & 0x80 != 0,
                });
            }
            pos = end;
        }
    }
    Parsed::Query(Request {
        packet,
        id,
        opcode,
        recursion_desired,
        checking_disabled: flags & 0x0010 != 0,
        qname,
        qtype,
        qclass,
        question_end,
        edns,
    })
}

/// The offset just past a (possibly compressed) name starting at `pos`.
fn skip_name(p: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *p.get(pos)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xc0 => return (pos + 2 <= p.len()).then_some(pos + 2),
            _ => return None,
        }
    }
}

/// Owner name of a record we write.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    /// The question's name: a 2-byte pointer to offset 12.
    Question,
    /// A pointer to a name already in the message (a suffix of the question).
    Pointer(u16),
    /// Written out in full (wire form).
    Wire(&'a [u8]),
}

/// Writes a response into a caller-owned buffer: header, the request's question echoed byte for
/// byte, then records; counts are patched by [`ResponseWriter::finish`].
#[derive(Debug)]
pub struct ResponseWriter<'b> {
    buf: &'b mut Vec<u8>,
    counts: [u16; 3],
}

/// Header flags of a response.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_available: bool,
    pub rcode: Rcode,
}

/// Which section [`ResponseWriter::record`] appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

impl<'b> ResponseWriter<'b> {
    /// Starts a response to `req` (question included).
    pub fn new(buf: &'b mut Vec<u8>, req: &Request<'_>, flags: Flags) -> Self {
        buf.clear();
        write_header(
            buf,
            req.id,
            req.opcode,
            req.recursion_desired,
            req.checking_disabled,
            flags,
            1,
        );
        buf.extend_from_slice(&req.packet[HEADER_LEN..req.question_end]);
        ResponseWriter {
            buf,
            counts: [0; 3],
        }
    }

    /// Appends a record; where its RDATA starts in the message.
    pub fn record(
        &mut self,
        section: Section,
        owner: Owner<'_>,
        rtype: u16,
        ttl: u32,
        rdata: &[u8],
    ) -> usize {
        match owner {
            Owner::Question => self.buf.extend_from_slice(&[0xc0, HEADER_LEN as u8]),
            Owner::Pointer(at) => self.buf.extend_from_slice(&(0xc000 | at).to_be_bytes()),
            Owner::Wire(w) => self.buf.extend_from_slice(w),
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        // RDATA is at most a name plus a few fixed fields, or a short TXT: always < 64 KiB.
        self.buf
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(rdata);
        self.counts[section as usize] += 1;
        at
    }

    /// The OPT pseudo-record answering a request that had one (RFC 6891 §6.1.1).
    pub fn opt(&mut self, rcode: Rcode, dnssec_ok: bool) {
        write_opt(self.buf, rcode, dnssec_ok);
        self.counts[2] += 1;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn finish(self) {
        for (i, c) in self.counts.iter().enumerate() {
            let at = 6 + 2 * i;
            self.buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn write_header(
    buf: &mut Vec<u8>,
    id: u16,
    opcode: u8,
    rd: bool,
    cd: bool,
    f: Flags,
    qdcount: u16,
) {
    let mut flags: u16 = 0x8000 | (u16::from(opcode & 0xf) << 11) | (f.rcode.code() & 0xf);
    if f.authoritative {
        flags |= 0x0400;
    }
    if f.truncated {
        flags |= 0x0200;
    }
    if rd {
        flags |= 0x0100;
    }
    if f.recursion_available {
        flags |= 0x0080;
    }
    if cd {
        flags |= 0x0010;
    }
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&qdcount.to_be_bytes());
    buf.extend_from_slice(&[0; 6]);
}

fn write_opt(buf: &mut Vec<u8>, rcode: Rcode, dnssec_ok: bool) {
    buf.push(0); // root owner
    buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
    buf.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    buf.push((rcode.code() >> 4) as u8);
    buf.push(0); // version 0
    buf.push(if dnssec_ok { 0x80 } else { 0 });
    buf.push(0);
    buf.extend_from_slice(&[0, 0]); // no options
}

/// A header-only answer to an unparseable request (FORMERR, NOTIMP).
pub fn error_response(buf: &mut Vec<u8>, id: u16, opcode: u8, rd: bool, rcode: Rcode) {
    buf.clear();
    let flags = Flags {
        authoritative: false,
        truncated: false,
        recursion_available: true,
        rcode,
    };
    write_header(buf, id, opcode, rd, false, flags, 0);
}

/// A response with the question, an OPT if asked, and nothing else: SERVFAIL, REFUSED,
/// BADVERS, and what a too-large UDP answer becomes (with `truncated`).
pub fn bare_response(buf: &mut Vec<u8>, req: &Request<'_>, flags: Flags) {
    let mut w = ResponseWriter::new(buf, req, flags);
    if let Some(e) = req.edns {
        w.opt(flags.rcode, e.dnssec_ok);
    }
    w.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut p = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            u8::from(edns.is_some()),
        ];
        p.extend(crate::names::to_wire(name).expect("name"));
        p.extend(qtype.to_be_bytes());
        p.extend(CLASS_IN.to_be_bytes());
        if let Some(size) = edns {
            p.extend([0, 0, 41]);
            p.extend(size.to_be_bytes());
            p.extend([0, 0, 0x80, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn parses_a_query_with_edns() {
        let p = query("Foo.Bar.", TYPE_AAAA, Some(4096));
        let Parsed::Query(q) = parse(&p) else {
            panic!("not a query")
        };
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired);
        assert_eq!(q.qname.as_wire(), b"\x03foo\x03bar\x00");
        assert_eq!(q.qtype, TYPE_AAAA);
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(q.udp_limit(), usize::from(MAX_UDP_PAYLOAD));
    }

    #[test]
    fn rejects_what_is_not_one_question() {
        assert!(matches!(parse(&[0; 5]), Parsed::Drop));
        let mut p = query("a.", TYPE_A, None);
        p[2] |= 0x80;
        assert!(matches!(parse(&p), Parsed::Drop));
        let mut p = query("a.", TYPE_A, None);
        p[5] = 2;
        assert!(matches!(
            parse(&p),
            Parsed::Error {
                rcode: Rcode::FormErr,
                ..
            }
        ));
        let mut p = query("a.", TYPE_A, None);
        p[2] = 0x28; // opcode UPDATE
        assert!(matches!(
            parse(&p),
            Parsed::Error {
                rcode: Rcode::NotImp,
                ..
            }
        ));
        let p = query("a.", TYPE_A, None);
        assert!(matches!(
            parse(&p[..p.len() - 1]),
            Parsed::Error {
                rcode: Rcode::FormErr,
                ..
            }
        ));
        let mut p = query("a.", TYPE_A, Some(512));
        p[11] = 2; // two OPT records announced, one present
        assert!(matches!(
            parse(&p),
            Parsed::Error {
                rcode: Rcode::FormErr,
                ..
            }
        ));
    }

    #[test]
    fn every_prefix_and_byte_flip_is_handled() {
        let p = query("x.default.svc.cluster.local", TYPE_SRV, Some(1232));
        for n in 0..p.len() {
            let _ = parse(&p[..n]);
        }
        for i in 0..p.len() {
            for bit in 0..8 {
                let mut q = p.clone();
                q[i] ^= 1 << bit;
                let _ = parse(&q);
            }
        }
    }
}
