//! One immutable index of every cluster record, built whole from the cut-down model and
//! swapped with `ArcSwap`: the query path reads it without a lock, and a rebuild never shows a
//! half-updated zone.
//!
//! Names are keys in lowercase wire form; a name that exists without records (an empty
//! non-terminal: the apex's children `svc`/`pod`, each namespace) is a node with no RRsets, so
//! NXDOMAIN versus NODATA is one map lookup. RDATA is pre-encoded, so answering copies bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::{Model, NamedPort, ServiceKind, SliceInfo};
use crate::names::{self, ip_label, prepend, reverse_name, to_wire};
use crate::wire::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT};

/// The schema version of the Kubernetes DNS specification served (`dns-version.<zone>` TXT).
pub const SCHEMA_VERSION: &str = "1.1.0";

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
        })
    }
}

/// The records of one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrSet {
    pub rtype: u16,
    /// Pre-encoded RDATA, sorted and without duplicates (an RRset is a set, RFC 2181 §5).
    pub rdatas: Vec<Box<[u8]>>,
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

/// Every record of the cluster zone (and the PTRs of cluster addresses).
#[derive(Debug)]
pub struct Snapshot {
    pub settings: ZoneSettings,
    pub(crate) nodes: HashMap<Box<[u8]>, Node>,
    pub(crate) soa: Box<[u8]>,
    /// `pod.<zone>` in wire form.
    pub(crate) pod_zone: Box<[u8]>,
}

impl Snapshot {
    /// Builds the whole index from the model.
    pub fn build(settings: &ZoneSettings, model: &Model) -> Snapshot {
        let zone: &[u8] = &settings.zone;
        let services = model.services.len();
        let mut b = Builder {
            zone,
            records: Vec::with_capacity(16 + services * 4),
            ents: Vec::with_capacity(16 + services * 2),
        };
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let soa = soa_rdata(zone, serial, settings.ttl);
        b.add(zone.to_vec(), TYPE_SOA, soa.clone());
        let svc_zone = prepend("svc", zone).unwrap_or_default();
        let pod_zone = prepend("pod", zone).unwrap_or_default();
        b.ent(svc_zone.clone());
        b.ent(pod_zone.clone());
        if let Some(name) = prepend("dns-version", zone) {
            let mut txt = vec![SCHEMA_VERSION.len() as u8];
            txt.extend_from_slice(SCHEMA_VERSION.as_bytes());
            b.add(name, TYPE_TXT, txt);
        }

        let mut slices_by_service: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
        for slice in model.slices.values() {
            slices_by_service
                .entry((slice.key.namespace.as_str(), slice.service.as_str()))
                .or_default()
                .push(slice);
        }

        for svc in model.services.values() {
            let Some(ns_name) = prepend(&svc.key.namespace, &svc_zone) else {
                continue;
            };
            b.ent(ns_name.clone());
            let Some(name) = prepend(&svc.key.name, &ns_name) else {
                continue;
            };
            match &svc.kind {
                ServiceKind::ClusterIp(ips) => {
                    b.ent(name.clone());
                    for ip in ips {
                        b.address(&name, *ip);
                        b.ptr(*ip, &name);
                    }
                    for port in &svc.ports {
                        b.srv(&name, port, &[name.as_slice()]);
                    }
                }
                ServiceKind::Headless => {
                    let slices = slices_by_service
                        .get(&(svc.key.namespace.as_str(), svc.key.name.as_str()))
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    headless(&mut b, &name, slices, svc.publish_not_ready);
                }
                ServiceKind::ExternalName(target) => {
                    match to_wire(target).filter(|t| t.len() > 1) {
                        Some(t) => b.add(name, TYPE_CNAME, t),
                        None => b.ent(name),
                    }
                }
            }
        }

        if settings.pods == PodRecords::Verified {
            for pod in model.pods.values() {
                let Some(ns_name) = prepend(&pod.key.namespace, &pod_zone) else {
                    continue;
                };
                for ip in &pod.ips {
                    if let Some(name) = prepend(&ip_label(*ip), &ns_name) {
                        b.address(&name, *ip);
                    }
                }
            }
        }

        let nodes = b.finish();
        Snapshot {
            settings: settings.clone(),
            nodes,
            soa: soa.into(),
            pod_zone: pod_zone.into(),
        }
    }

    /// The node of a name (lowercase wire form).
    pub fn node(&self, name: &[u8]) -> Option<&Node> {
        self.nodes.get(name)
    }

    /// How many names the snapshot holds (empty non-terminals included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every record as `name type rdata-debug` lines, sorted (for tests and debugging).
    pub fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, node) in &self.nodes {
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
        (TYPE_PTR | TYPE_CNAME, _) => names::to_dotted(rdata),
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

/// Records of a headless Service: per ready endpoint address an A/AAAA at the service name, and
/// at `<hostname>.<service>` (the endpoint's `hostname`, else its address spelled as a label:
/// stable for the endpoint's life and the same in A, SRV and PTR), a PTR back to that name, and
/// SRV per named port. No ready endpoint: the name does not exist (specification §2.4.1).
fn headless(b: &mut Builder<'_>, name: &[u8], slices: &[&SliceInfo], publish_not_ready: bool) {
    // (port) → targets, so weights can be shared out across the targets of one SRV set.
    let mut srv: BTreeMap<&NamedPort, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for slice in slices {
        for ep in &slice.endpoints {
            if !(ep.ready || publish_not_ready) {
                continue;
            }
            for ip in &ep.addresses {
                let label = ep.hostname.clone().unwrap_or_else(|| ip_label(*ip));
                let Some(host) = prepend(&label, name) else {
                    continue;
                };
                b.address(name, *ip);
                b.address(&host, *ip);
                b.ptr(*ip, &host);
                for port in &slice.ports {
                    srv.entry(port).or_default().insert(host.clone());
                }
            }
        }
    }
    for (port, targets) in srv {
        let targets: Vec<&[u8]> = targets.iter().map(Vec::as_slice).collect();
        b.srv(name, port, &targets);
    }
}

fn soa_rdata(zone: &[u8], serial: u32, ttl: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mname = prepend("ns", &prepend("dns", zone).unwrap_or_else(|| zone.to_vec()))
        .unwrap_or_else(|| zone.to_vec());
    let rname = prepend("hostmaster", zone).unwrap_or_else(|| zone.to_vec());
    out.extend_from_slice(&mname);
    out.extend_from_slice(&rname);
    // refresh, retry, expire as CoreDNS's kubernetes plugin; minimum = the record TTL, which makes
    // the negative-caching TTL (RFC 2308 §5: min of the SOA's TTL and minimum) the record TTL.
    for v in [serial, 7200, 1800, 86400, ttl] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// Records are gathered flat, then sorted and grouped once: a rebuild of 10k Services is a few
/// big allocations and one sort, not a tree of small maps per name.
struct Builder<'z> {
    zone: &'z [u8],
    records: Vec<(Vec<u8>, u16, Vec<u8>)>,
    ents: Vec<Vec<u8>>,
}

impl Builder<'_> {
    /// Makes `name` (and every ancestor up to the zone apex) exist.
    fn ent(&mut self, name: Vec<u8>) {
        self.ents.push(name);
    }

    fn add(&mut self, name: Vec<u8>, rtype: u16, rdata: Vec<u8>) {
        self.records.push((name, rtype, rdata));
    }

    /// The index: RRsets grouped per name (sorted, without duplicates), then every ancestor of
    /// every name inside the zone made to exist.
    fn finish(mut self) -> HashMap<Box<[u8]>, Node> {
        self.records.sort_unstable();
        self.records.dedup();
        let mut nodes: HashMap<Box<[u8]>, Node> =
            HashMap::with_capacity(self.records.len() + self.ents.len());
        let mut records = std::mem::take(&mut self.records).into_iter().peekable();
        while let Some((name, rtype, rdata)) = records.next() {
            let mut rdatas = vec![rdata.into_boxed_slice()];
            while let Some((_, _, more)) = records.next_if(|(n, t, _)| *n == name && *t == rtype) {
                rdatas.push(more.into_boxed_slice());
            }
            self.ensure_ancestors(&mut nodes, &name);
            nodes
                .entry(name.into_boxed_slice())
                .or_default()
                .rrsets
                .push(RrSet { rtype, rdatas });
        }
        for name in std::mem::take(&mut self.ents) {
            self.ensure_ancestors(&mut nodes, &name);
            nodes.entry(name.into_boxed_slice()).or_default();
        }
        nodes
    }

    /// Inserts the missing ancestors of `name` below the apex, stopping at the first present
    /// one (its own ancestors were ensured when it was inserted).
    fn ensure_ancestors(&self, nodes: &mut HashMap<Box<[u8]>, Node>, name: &[u8]) {
        let mut cur = name;
        while names::suffix_offset(cur, self.zone).is_some_and(|o| o > 0) {
            let Some(parent) = names::parent(cur) else {
                break;
            };
            if nodes.contains_key(parent) {
                break;
            }
            nodes.insert(parent.into(), Node::default());
            cur = parent;
        }
    }

    fn address(&mut self, name: &[u8], ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(name.to_vec(), TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => self.add(name.to_vec(), TYPE_AAAA, v6.octets().to_vec()),
        }
    }

    fn ptr(&mut self, ip: IpAddr, target: &[u8]) {
        if let Some(rev) = to_wire(&reverse_name(ip)) {
            self.add(rev, TYPE_PTR, target.to_vec());
        }
    }

    /// `_<port>._<proto>.<name>` SRV to each target; priority 0, weights shared out as CoreDNS
    /// does (100 / targets), so clients spread evenly.
    fn srv(&mut self, name: &[u8], port: &NamedPort, targets: &[&[u8]]) {
        let Some(owner) = prepend(port.protocol.label(), name)
            .and_then(|n| prepend(&format!("_{}", port.name), &n))
        else {
            return;
        };
        let weight = (100 / targets.len().max(1)).max(1) as u16;
        for target in targets {
            let mut rdata = Vec::with_capacity(6 + target.len());
            rdata.extend_from_slice(&0u16.to_be_bytes());
            rdata.extend_from_slice(&weight.to_be_bytes());
            rdata.extend_from_slice(&port.port.to_be_bytes());
            rdata.extend_from_slice(target);
            self.add(owner.clone(), TYPE_SRV, rdata);
        }
    }
}
