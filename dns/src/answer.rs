//! Query → response on a snapshot, pure: which records, which rcode, whether authoritative,
//! whether the negative answer carries the SOA, or that the question belongs to the forwarder.
//!
//! Negative answers follow RFC 1034 §4.3.2 / RFC 2308 / RFC 8020: a name that exists (records
//! or children) gets NODATA (NOERROR, empty answer), one that does not gets NXDOMAIN; both carry
//! the zone's SOA in the authority section, whose TTL and minimum are the record TTL.

use std::borrow::Cow;

use crate::names::{self, labels, parse_ip_label, suffix_offset};
use crate::snapshot::{PodRecords, RrSet, Snapshot};
use crate::wire::{
    self, CLASS_ANY, CLASS_IN, Flags, HEADER_LEN, Owner, Rcode, Request, ResponseWriter, Section,
    TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_NS, TYPE_SOA, TYPE_SRV,
};

/// How many CNAMEs inside the cluster zone are followed before giving up (a loop of
/// ExternalNames pointing at each other).
const MAX_CNAME_CHAIN: usize = 8;

const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";
const IP6_ARPA: &[u8] = b"\x03ip6\x04arpa\x00";

/// A question, name in lowercase wire form.
#[derive(Debug, Clone, Copy)]
pub struct Question<'q> {
    pub name: &'q [u8],
    pub qtype: u16,
    pub qclass: u16,
}

/// Owner of an answer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrOwner<'s> {
    /// The question's name (written as a pointer to it).
    Question,
    /// Another name (a CNAME target inside the zone).
    Name(&'s [u8]),
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr<'s> {
    pub owner: RrOwner<'s>,
    pub rtype: u16,
    pub rdata: Cow<'s, [u8]>,
}

/// An answer from cluster data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<'s> {
    pub rcode: Rcode,
    pub authoritative: bool,
    pub records: Vec<Rr<'s>>,
    /// The additional section: addresses of the cluster names SRV and NS answers point at
    /// (as CoreDNS gives them), so a client needs no second query. Dropped first when the
    /// answer does not fit (RFC 2181 §9: no TC for a missing additional section).
    pub additional: Vec<Rr<'s>>,
    /// Put the zone SOA in the authority section (negative answers), with the owner at this
    /// offset of the question's name (the zone apex is a suffix of it).
    pub soa_at: Option<usize>,
    /// The SOA's RDATA when `soa_at` is set.
    pub soa: &'s [u8],
    pub ttl: u32,
}

impl Answer<'_> {
    fn status(rcode: Rcode) -> Answer<'static> {
        Answer {
            rcode,
            authoritative: false,
            records: Vec::new(),
            additional: Vec::new(),
            soa_at: None,
            soa: &[],
            ttl: 0,
        }
    }

    /// Writes the response to `req` into `buf`; over UDP (`limit`), an answer that does not fit
    /// loses its additional section, and if it still does not fit becomes an empty TC response,
    /// so the client retries over TCP (RFC 2181 §9).
    pub fn write(&self, req: &Request<'_>, buf: &mut Vec<u8>, limit: Option<usize>) {
        let flags = Flags {
            authoritative: self.authoritative,
            truncated: false,
            recursion_available: true,
            rcode: self.rcode,
        };
        let fits = |len: usize| limit.is_none_or(|l| len <= l);
        if fits(self.write_sections(req, buf, flags, true)) {
            return;
        }
        if !self.additional.is_empty() && fits(self.write_sections(req, buf, flags, false)) {
            return;
        }
        wire::bare_response(
            buf,
            req,
            Flags {
                truncated: true,
                ..flags
            },
        );
    }

    /// The whole response; its length.
    fn write_sections(
        &self,
        req: &Request<'_>,
        buf: &mut Vec<u8>,
        flags: Flags,
        additional: bool,
    ) -> usize {
        let mut w = ResponseWriter::new(buf, req, flags);
        // Where each SRV/NS target name sits in the message, so additional records can point
        // at it (RFC 1035 §4.1.4) instead of spelling it again.
        let mut targets: Vec<(&[u8], usize)> = Vec::new();
        for rr in &self.records {
            let owner = match rr.owner {
                RrOwner::Question => Owner::Question,
                RrOwner::Name(n) => Owner::Wire(n),
            };
            let at = w.record(Section::Answer, owner, rr.rtype, self.ttl, &rr.rdata);
            if let Some(skip) = target_offset(rr.rtype, &rr.rdata) {
                targets.push((&rr.rdata[skip..], at + skip));
            }
        }
        if let Some(at) = self.soa_at {
            w.record(
                Section::Authority,
                Owner::Pointer((HEADER_LEN + at) as u16),
                TYPE_SOA,
                self.ttl,
                self.soa,
            );
        }
        if additional {
            for rr in &self.additional {
                let owner = match rr.owner {
                    RrOwner::Question => Owner::Question,
                    RrOwner::Name(n) => match targets.iter().find(|(t, _)| *t == n) {
                        Some(&(_, at)) if at < 0x4000 => Owner::Pointer(at as u16),
                        _ => Owner::Wire(n),
                    },
                };
                w.record(Section::Additional, owner, rr.rtype, self.ttl, &rr.rdata);
            }
        }
        if let Some(e) = req.edns {
            w.opt(self.rcode, e.dnssec_ok);
        }
        let len = w.len();
        w.finish();
        len
    }
}

/// Where the target name starts in the RDATA of an SRV or NS record.
fn target_offset(rtype: u16, rdata: &[u8]) -> Option<usize> {
    match rtype {
        TYPE_SRV if rdata.len() > 6 => Some(6),
        TYPE_NS => Some(0),
        _ => None,
    }
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'s> {
    /// Answer from cluster data.
    Answer(Answer<'s>),
    /// Not ours: ask the upstream servers.
    Forward,
    /// A CNAME (ExternalName) leaving the zone: send `answer`, followed by what the upstream
    /// says about `target` (wire form) for the same type.
    Chase {
        answer: Answer<'s>,
        target: &'s [u8],
    },
}

/// Answers `q` from `snapshot` (`None`: not synced yet) for the cluster zone `zone` (wire form).
pub fn answer<'s>(zone: &[u8], snapshot: Option<&'s Snapshot>, q: &Question<'_>) -> Outcome<'s> {
    let Some(zone_at) = suffix_offset(q.name, zone) else {
        return reverse(snapshot, q);
    };
    let Some(snap) = snapshot else {
        // Before the first full sync an answer could deny a name that exists: say nothing.
        return Outcome::Answer(Answer::status(Rcode::ServFail));
    };
    if q.qclass != CLASS_IN && q.qclass != CLASS_ANY {
        return Outcome::Answer(Answer::status(Rcode::Refused));
    }
    let mut a = Answer {
        rcode: Rcode::NoError,
        authoritative: true,
        records: Vec::new(),
        additional: Vec::new(),
        soa_at: None,
        soa: &snap.soa,
        ttl: snap.settings.ttl,
    };
    let mut owner = RrOwner::Question;
    let Some(mut node) = snap.node(q.name) else {
        if let Some(found) = pod_answer(snap, q) {
            match found {
                PodAnswer::Address(rr) if q.qtype == rr.rtype || q.qtype == TYPE_ANY => {
                    a.records.push(rr)
                }
                PodAnswer::Address(_) | PodAnswer::Exists => {}
                PodAnswer::Missing => a.rcode = Rcode::NxDomain,
            }
        } else {
            a.rcode = Rcode::NxDomain;
        }
        if a.records.is_empty() {
            a.soa_at = Some(zone_at);
        }
        return Outcome::Answer(a);
    };
    for _ in 0..MAX_CNAME_CHAIN {
        if q.qtype == TYPE_ANY {
            if node.is_empty() {
                a.soa_at = Some(zone_at);
            }
            for set in node.rrsets() {
                push_set(&mut a, owner, set);
            }
        } else if let Some(set) = node.rrset(q.qtype) {
            push_set(&mut a, owner, set);
            add_target_addresses(&mut a, snap, zone, set);
        } else if let Some(cname) = node.rrset(TYPE_CNAME) {
            push_set(&mut a, owner, cname);
            let Some(target) = cname.first() else {
                break;
            };
            let target: &'s [u8] = target;
            if suffix_offset(target, zone).is_none() {
                return Outcome::Chase { answer: a, target };
            }
            owner = RrOwner::Name(target);
            match snap.node(target) {
                Some(next) => {
                    node = next;
                    continue;
                }
                None => {
                    // RFC 6604: the rcode speaks of the last name of the chain.
                    a.rcode = Rcode::NxDomain;
                    a.soa_at = Some(zone_at);
                    return Outcome::Answer(a);
                }
            }
        } else {
            // NODATA for the (last) name, after any CNAMEs that led to it (RFC 2308 §2.2).
            a.soa_at = Some(zone_at);
        }
        return Outcome::Answer(a);
    }
    // A CNAME loop: what was gathered, as a failure.
    a.rcode = Rcode::ServFail;
    Outcome::Answer(a)
}

fn push_set<'s>(a: &mut Answer<'s>, owner: RrOwner<'s>, set: RrSet<'s>) {
    a.records.extend(set.rdatas().map(|r| Rr {
        owner,
        rtype: set.rtype,
        rdata: Cow::Borrowed(r),
    }));
}

/// The A and AAAA records of the cluster names that SRV or NS records point at, each name once.
fn add_target_addresses<'s>(a: &mut Answer<'s>, snap: &'s Snapshot, zone: &[u8], set: RrSet<'s>) {
    let mut seen: Vec<&[u8]> = Vec::new();
    for rdata in set.rdatas() {
        let Some(skip) = target_offset(set.rtype, rdata) else {
            continue;
        };
        let target: &'s [u8] = &rdata[skip..];
        if seen.contains(&target) || suffix_offset(target, zone).is_none() {
            continue;
        }
        seen.push(target);
        let Some(node) = snap.node(target) else {
            continue;
        };
        for t in [TYPE_A, TYPE_AAAA] {
            if let Some(set) = node.rrset(t) {
                a.additional.extend(set.rdatas().map(|r| Rr {
                    owner: RrOwner::Name(target),
                    rtype: t,
                    rdata: Cow::Borrowed(r),
                }));
            }
        }
    }
}

/// PTR names: answered when a cluster address has one, forwarded otherwise (the reverse zones
/// are shared with the rest of the world, so a miss here is no NXDOMAIN).
fn reverse<'s>(snapshot: Option<&'s Snapshot>, q: &Question<'_>) -> Outcome<'s> {
    if suffix_offset(q.name, IN_ADDR_ARPA).is_none() && suffix_offset(q.name, IP6_ARPA).is_none() {
        return Outcome::Forward;
    }
    let Some(snap) = snapshot else {
        return Outcome::Forward;
    };
    let Some(node) = snap.node(q.name) else {
        return Outcome::Forward;
    };
    let mut a = Answer {
        rcode: Rcode::NoError,
        authoritative: true,
        records: Vec::new(),
        additional: Vec::new(),
        soa_at: None,
        soa: &[],
        ttl: snap.settings.ttl,
    };
    for set in node.rrsets() {
        if set.rtype == q.qtype || q.qtype == TYPE_ANY {
            push_set(&mut a, RrOwner::Question, set);
        }
    }
    Outcome::Answer(a)
}

enum PodAnswer {
    Address(Rr<'static>),
    /// `<ns>.pod.<zone>` in insecure mode: every namespace has (possible) children.
    Exists,
    Missing,
}

/// `<a-b-c-d>.<ns>.pod.<zone>` in insecure mode, computed from the name itself (verified pod
/// records are in the snapshot like any other).
fn pod_answer(snap: &Snapshot, q: &Question<'_>) -> Option<PodAnswer> {
    if snap.settings.pods != PodRecords::Insecure {
        return None;
    }
    let at = suffix_offset(q.name, &snap.pod_zone)?;
    let mut above = labels(&q.name[..at]);
    let first = above.next()?;
    Some(match (above.next(), above.next()) {
        (None, _) => PodAnswer::Exists,
        (Some(_ns), None) => match parse_ip_label(first) {
            Some(std::net::IpAddr::V4(v4)) => PodAnswer::Address(Rr {
                owner: RrOwner::Question,
                rtype: TYPE_A,
                rdata: Cow::Owned(v4.octets().to_vec()),
            }),
            Some(std::net::IpAddr::V6(v6)) => PodAnswer::Address(Rr {
                owner: RrOwner::Question,
                rtype: TYPE_AAAA,
                rdata: Cow::Owned(v6.octets().to_vec()),
            }),
            None => PodAnswer::Missing,
        },
        _ => PodAnswer::Missing,
    })
}

/// For logs: the question as text.
pub fn describe(q: &Question<'_>) -> String {
    format!("{} type {}", names::to_dotted(q.name), q.qtype)
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
