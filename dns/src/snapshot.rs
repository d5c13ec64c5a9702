//! One immutable view of every cluster record, swapped with `ArcSwap`: the query path reads it
//! without a lock, and an update never shows a half-updated zone. The name map is split into
//! shards behind `Arc`s, so the next snapshot ([`crate::index::Index`]) shares every shard a
//! change did not touch.
//!
//! Names are keys in lowercase wire form; a name that exists without records (an empty
//! non-terminal: the apex's children `svc`/`pod`, each namespace) is a node with no RRsets, so
//! NXDOMAIN versus NODATA is one map lookup. RDATA is pre-encoded, so answering copies bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::index::{Index, SHARDS};
use crate::model::{Key, Model};
use crate::names::{self, to_wire};
use crate::wire::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SRV, TYPE_TXT};

pub use crate::records::SCHEMA_VERSION;

/// Pod records `<a-b-c-d>.<ns>.pod.<zone>` (`--pods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodRecords {
    /// Any well-formed address label answers with that address (kubeadm's CoreDNS default).
    #[default]
    Insecure,
    /// Only addresses of pods that exist in that namespace.
    Verified,
    /// No pod records.
    Disabled,
}

impl std::str::FromStr for PodRecords {
    type Err = crate::DnsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "insecure" => Ok(PodRecords::Insecure),
            "verified" => Ok(PodRecords::Verified),
            "disabled" => Ok(PodRecords::Disabled),
            other => Err(crate::DnsError::Config(format!(
                "--pods must be insecure, verified or disabled, not {other:?}"
            ))),
        }
    }
}

/// What every snapshot of one server shares: the zone, the TTL and the pod mode.
#[derive(Debug, Clone)]
pub struct ZoneSettings {
    /// The cluster domain in lowercase wire form.
    pub zone: Box<[u8]>,
    pub ttl: u32,
    pub pods: PodRecords,
    /// The Service whose ClusterIPs answer for `ns.dns.<zone>`, the name in the apex NS and the
    /// SOA's MNAME (default `kube-system/kube-dns`).
    pub nameserver_service: Key,
}

impl ZoneSettings {
    pub fn new(zone: &str, ttl: u32, pods: PodRecords) -> Result<ZoneSettings, crate::DnsError> {
        let wire = to_wire(zone).filter(|w| w.len() > 1).ok_or_else(|| {
            crate::DnsError::Config(format!("cluster domain {zone:?} is not a domain name"))
        })?;
        if ttl > crate::MAX_TTL {
            return Err(crate::DnsError::Config(format!(
                "TTL {ttl} is above {}",
                crate::MAX_TTL
            )));
        }
        Ok(ZoneSettings {
            zone: wire.into(),
            ttl,
            pods,
            nameserver_service: crate::records::default_nameserver_service(),
        })
    }
}

/// A name that exists, with its records in one allocation: `refs` (u32, why the name exists:
/// see [`crate::index`]), then per record `type` (u16), `count` (u32, how many sources
/// contribute it), RDATA length (u16) and the pre-encoded RDATA, sorted by type then RDATA
/// (an RRset is a set, RFC 2181 §5). No records: an empty non-terminal.
///
/// Why one blob: a name costs one allocation instead of a vector of RRsets, each a vector of
/// RDATA buffers, and the index's bookkeeping lives in the same bytes, so the zone is held once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node(pub(crate) Box<[u8]>);

/// Bytes of a record before its RDATA.
pub(crate) const RECORD_HEAD: usize = 8;

impl Node {
    /// Why the name exists (index bookkeeping).
    pub(crate) fn refs(&self) -> u32 {
        self.0
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    /// (type, count, RDATA) of every record, in order.
    pub(crate) fn entries(&self) -> Entries<'_> {
        Entries {
            rest: self.0.get(4..).unwrap_or_default(),
        }
    }

    /// No records (an empty non-terminal).
    pub fn is_empty(&self) -> bool {
        self.0.len() <= 4
    }

    /// The RRset of one type.
    pub fn rrset(&self, rtype: u16) -> Option<RrSet<'_>> {
        self.rrsets().find(|s| s.rtype == rtype)
    }

    /// Every RRset, by type.
    pub fn rrsets(&self) -> impl Iterator<Item = RrSet<'_>> {
        let mut rest = self.0.get(4..).unwrap_or_default();
        std::iter::from_fn(move || {
            let rtype = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
            // The set ends where the first record of another type starts.
            let mut records = Entries { rest };
            let mut end = 0;
            while let Some((t, _, _)) = records.next()
                && t == rtype
            {
                end = rest.len() - records.rest.len();
            }
            if end == 0 {
                return None;
            }
            let (set, after) = rest.split_at(end);
            rest = after;
            Some(RrSet { rtype, bytes: set })
        })
    }
}

/// Iterator over a node's records; see [`Node::entries`].
#[derive(Debug, Clone)]
pub(crate) struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = (u16, u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let head = self.rest.get(..RECORD_HEAD)?;
        let rtype = u16::from_be_bytes([head[0], head[1]]);
        let count = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
        let rdata = self.rest.get(RECORD_HEAD..RECORD_HEAD + len)?;
        self.rest = &self.rest[RECORD_HEAD + len..];
        Some((rtype, count, rdata))
    }
}

/// The records of one type at one name.
#[derive(Debug, Clone, Copy)]
pub struct RrSet<'a> {
    pub rtype: u16,
    bytes: &'a [u8],
}

impl<'a> RrSet<'a> {
    /// The pre-encoded RDATA of each record.
    pub fn rdatas(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        Entries { rest: self.bytes }.map(|(_, _, r)| r)
    }

    pub fn first(&self) -> Option<&'a [u8]> {
        self.rdatas().next()
    }
}

/// One shard of the name map.
pub(crate) type Shard = HashMap<Box<[u8]>, Node>;

/// The shard of a name (FNV-1a: cheap, and the shard's own map hashes again with SipHash, so
/// crafted query names cannot pile up in one bucket).
pub(crate) fn shard_of(name: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (SHARDS - 1)
}

/// Every record of the cluster zone (and the PTRs of cluster addresses).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub settings: ZoneSettings,
    pub(crate) shards: Vec<Arc<Shard>>,
    pub(crate) soa: Arc<[u8]>,
    /// `pod.<zone>` in wire form.
    pub(crate) pod_zone: Box<[u8]>,
    pub(crate) len: usize,
}

impl Snapshot {
    /// Builds the whole index from the model (the watch updates an [`Index`] instead).
    pub fn build(settings: &ZoneSettings, model: &Model) -> Snapshot {
        Index::from_model(settings, model).snapshot()
    }

    /// The node of a name (lowercase wire form).
    pub fn node(&self, name: &[u8]) -> Option<&Node> {
        self.shards.get(shard_of(name))?.get(name)
    }

    /// How many names the snapshot holds (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every record as (owner, type, RDATA), wire form, in no particular order (exports: the
    /// benchmark's zone file for another server).
    pub fn records(&self) -> impl Iterator<Item = (&[u8], u16, &[u8])> {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .flat_map(|(name, node)| node.entries().map(move |(t, _, r)| (&name[..], t, r)))
    }

    /// Every record as `name type rdata-debug` lines, sorted (for tests and debugging).
    pub fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, node) in self.shards.iter().flat_map(|s| s.iter()) {
            if node.is_empty() {
                out.push(format!("{} ENT", names::to_dotted(name)));
            }
            for (rtype, _, rdata) in node.entries() {
                out.push(format!(
                    "{} {} {}",
                    names::to_dotted(name),
                    rtype,
                    rdata_text(rtype, rdata)
                ));
            }
        }
        out.sort();
        out
    }
}

fn rdata_text(rtype: u16, rdata: &[u8]) -> String {
    match (rtype, rdata.len()) {
        (TYPE_A, 4) => IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap_or_default()).to_string(),
        (TYPE_AAAA, 16) => {
            IpAddr::from(<[u8; 16]>::try_from(rdata).unwrap_or_default()).to_string()
        }
        (TYPE_PTR | TYPE_CNAME | TYPE_NS, _) => names::to_dotted(rdata),
        (TYPE_SRV, n) if n > 6 => format!(
            "{} {} {} {}",
            u16::from_be_bytes([rdata[0], rdata[1]]),
            u16::from_be_bytes([rdata[2], rdata[3]]),
            u16::from_be_bytes([rdata[4], rdata[5]]),
            names::to_dotted(&rdata[6..])
        ),
        (TYPE_TXT, n) if n > 0 => format!("{:?}", String::from_utf8_lossy(&rdata[1..])),
        _ => format!("{rdata:?}"),
    }
}
