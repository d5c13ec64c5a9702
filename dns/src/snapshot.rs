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

/// The records of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub rtype: u16,
    /// Pre-encoded RDATA, sorted and without duplicates (an RRset is a set, RFC 2181 §5).
    pub rdatas: Vec<Arc<[u8]>>,
}

/// A name that exists; no RRsets means an empty non-terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub rrsets: Vec<RrSet>,
}

impl Node {
    pub fn rrset(&self, rtype: u16) -> Option<&RrSet> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

/// One shard of the name map.
pub(crate) type Shard = HashMap<Arc<[u8]>, Node>;

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
            .flat_map(|(name, node)| {
                node.rrsets.iter().flat_map(move |set| {
                    set.rdatas
                        .iter()
                        .map(move |r| (&name[..], set.rtype, &r[..]))
                })
            })
    }

    /// Every record as `name type rdata-debug` lines, sorted (for tests and debugging).
    pub fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, node) in self.shards.iter().flat_map(|s| s.iter()) {
            if node.rrsets.is_empty() {
                out.push(format!("{} ENT", names::to_dotted(name)));
            }
            for set in &node.rrsets {
                for rdata in &set.rdatas {
                    out.push(format!(
                        "{} {} {}",
                        names::to_dotted(name),
                        set.rtype,
                        rdata_text(set.rtype, rdata)
                    ));
                }
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
