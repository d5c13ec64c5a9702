//! The records one source contributes: the zone itself (SOA, NS, `dns-version`), one Service
//! with its EndpointSlices, or one Pod (`--pods verified`). Pure functions of their inputs, so
//! the index can take a source's old records back by computing them again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::model::{Key, NamedPort, PodInfo, ServiceInfo, ServiceKind, SliceInfo};
use crate::names::{ip_label, prepend, reverse_name, to_wire};
use crate::snapshot::ZoneSettings;
use crate::wire::{TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT};

/// The schema version of the Kubernetes DNS specification served (`dns-version.<zone>` TXT).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// One record: owner (lowercase wire form), type, RDATA.
pub(crate) type Record = (Vec<u8>, u16, Vec<u8>);

/// What one source puts in the zone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Records {
    pub records: Vec<Record>,
    /// Names that exist without records of their own (empty non-terminals).
    pub exist: Vec<Vec<u8>>,
}

impl Records {
    fn add(&mut self, name: Vec<u8>, rtype: u16, rdata: Vec<u8>) {
        self.records.push((name, rtype, rdata));
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

/// `ns.dns.<zone>`: the name of the zone's nameserver in NS and the SOA's MNAME (CoreDNS's
/// spelling), with the addresses of [`ZoneSettings::nameserver_service`].
pub(crate) fn nameserver_name(zone: &[u8]) -> Vec<u8> {
    prepend("ns", &prepend("dns", zone).unwrap_or_else(|| zone.to_vec()))
        .unwrap_or_else(|| zone.to_vec())
}

/// The zone's own records: SOA and NS at the apex, `svc` and `pod` (which always exist), and
/// `dns-version`.
pub(crate) fn zone(settings: &ZoneSettings, serial: u32) -> Records {
    let zone: &[u8] = &settings.zone;
    let mut r = Records::default();
    r.add(
        zone.to_vec(),
        TYPE_SOA,
        soa_rdata(zone, serial, settings.ttl),
    );
    r.add(zone.to_vec(), TYPE_NS, nameserver_name(zone));
    r.exist.extend(prepend("svc", zone));
    r.exist.extend(prepend("pod", zone));
    if let Some(name) = prepend("dns-version", zone) {
        let mut txt = vec![SCHEMA_VERSION.len() as u8];
        txt.extend_from_slice(SCHEMA_VERSION.as_bytes());
        r.add(name, TYPE_TXT, txt);
    }
    r
}

/// The records of one Service, given the EndpointSlices labelled with its name.
pub(crate) fn service(
    settings: &ZoneSettings,
    svc: &ServiceInfo,
    slices: &[&SliceInfo],
) -> Records {
    let mut r = Records::default();
    let Some(svc_zone) = prepend("svc", &settings.zone) else {
        return r;
    };
    let Some(ns_name) = prepend(&svc.key.namespace, &svc_zone) else {
        return r;
    };
    r.exist.push(ns_name.clone());
    let Some(name) = prepend(&svc.key.name, &ns_name) else {
        return r;
    };
    match &svc.kind {
        ServiceKind::ClusterIp(ips) => {
            r.exist.push(name.clone());
            for ip in ips {
                r.address(&name, *ip);
                r.ptr(*ip, &name);
            }
            for port in &svc.ports {
                r.srv(&name, port, &[name.as_slice()]);
            }
            if svc.key == settings.nameserver_service {
                let ns = nameserver_name(&settings.zone);
                for ip in ips {
                    r.address(&ns, *ip);
                }
            }
        }
        ServiceKind::Headless => headless(&mut r, &name, slices, svc.publish_not_ready),
        ServiceKind::ExternalName(target) => match to_wire(target).filter(|t| t.len() > 1) {
            Some(t) => r.add(name, TYPE_CNAME, t),
            None => r.exist.push(name),
        },
    }
    r
}

/// Records of a headless Service: per ready endpoint address an A/AAAA at the service name, and
/// at `<hostname>.<service>` (the endpoint's `hostname`, else its address spelled as a label:
/// stable for the endpoint's life and the same in A, SRV and PTR), a PTR back to that name, and
/// SRV per named port. No ready endpoint: the name does not exist (specification §2.4.1).
fn headless(r: &mut Records, name: &[u8], slices: &[&SliceInfo], publish_not_ready: bool) {
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
                r.address(name, *ip);
                r.address(&host, *ip);
                r.ptr(*ip, &host);
                for port in &slice.ports {
                    srv.entry(port).or_default().insert(host.clone());
                }
            }
        }
    }
    for (port, targets) in srv {
        let targets: Vec<&[u8]> = targets.iter().map(Vec::as_slice).collect();
        r.srv(name, port, &targets);
    }
}

/// `<a-b-c-d>.<ns>.pod.<zone>` for each of a pod's addresses (`--pods verified`).
pub(crate) fn pod(settings: &ZoneSettings, pod: &PodInfo) -> Records {
    let mut r = Records::default();
    let Some(ns_name) =
        prepend("pod", &settings.zone).and_then(|z| prepend(&pod.key.namespace, &z))
    else {
        return r;
    };
    for ip in &pod.ips {
        if let Some(name) = prepend(&ip_label(*ip), &ns_name) {
            r.address(&name, *ip);
        }
    }
    r
}

pub(crate) fn soa_rdata(zone: &[u8], serial: u32, ttl: u32) -> Vec<u8> {
    let mut out = nameserver_name(zone);
    let rname = prepend("hostmaster", zone).unwrap_or_else(|| zone.to_vec());
    out.extend_from_slice(&rname);
    // refresh, retry, expire as CoreDNS's kubernetes plugin; minimum = the record TTL, which makes
    // the negative-caching TTL (RFC 2308 §5: min of the SOA's TTL and minimum) the record TTL.
    for v in [serial, 7200, 1800, 86400, ttl] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

/// The default Service whose ClusterIPs answer for `ns.dns.<zone>`: the one `skiff up` creates.
pub fn default_nameserver_service() -> Key {
    Key {
        namespace: "kube-system".into(),
        name: "kube-dns".into(),
    }
}
