//! What changed between two service tables, so a data plane updates only that.
//!
//! The watch loop gets its diff from [`crate::compiler::Compiler::build`], which records what it
//! touched; [`TableDiff::between`] compares any two tables (tests, tools). Entries that did not
//! change share their `Arc` between tables, and whole chunks of them are shared, so
//! `between` skips them by pointer; the work a data plane does is proportional to
//! `added + removed + changed`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::table::{Backend, Frontend, PortKey, ServicePortEntry, ServiceTable};

/// One service port present in both tables with different contents (same key, same id).
#[derive(Debug, Clone)]
pub struct PortChange {
    pub old: Arc<ServicePortEntry>,
    pub new: Arc<ServicePortEntry>,
    pub frontends_added: Vec<Frontend>,
    pub frontends_removed: Vec<Frontend>,
    /// The internal or external backend sets differ (a data plane rewrites them whole, or
    /// per backend from the two lists below).
    pub backends_changed: bool,
    /// Backends (address:port) in `new` but in neither set of `old`.
    pub backends_added: Vec<Backend>,
    /// Backends (address:port) in `old` but in neither set of `new`: for a UDP service, the
    /// conntrack entries towards them should be flushed.
    pub backends_removed: Vec<Backend>,
    /// Affinity, traffic policies or the port numbers changed.
    pub settings_changed: bool,
}

/// The difference `old → new`. A data plane applies `removed`, then `added`, then `changed`.
#[derive(Debug, Clone, Default)]
pub struct TableDiff {
    /// A full resync: `added` holds every entry of the new table and the data plane should also
    /// remove whatever it has that is not in the table (first sync, or after a failed apply).
    pub full: bool,
    pub added: Vec<Arc<ServicePortEntry>>,
    pub removed: Vec<Arc<ServicePortEntry>>,
    pub changed: Vec<PortChange>,
    /// The health-check ports or their local endpoint counts changed.
    pub health_checks_changed: bool,
}

impl TableDiff {
    /// Everything in `table`, as a full resync.
    pub fn full(table: &ServiceTable) -> TableDiff {
        TableDiff {
            full: true,
            added: table.ports().cloned().collect(),
            removed: Vec::new(),
            changed: Vec::new(),
            health_checks_changed: true,
        }
    }

    /// What turns `old` into `new`. Both walk in key order, so this is one merge pass; the
    /// chunks of entries two tables share (an incremental build leaves every chunk it did not
    /// touch shared) are skipped whole, so comparing a table with its successor costs about
    /// what changed, not the table's size.
    pub fn between(old: &ServiceTable, new: &ServiceTable) -> TableDiff {
        let mut diff = TableDiff {
            health_checks_changed: old.health_checks() != new.health_checks(),
            ..TableDiff::default()
        };
        let mut a = Walk::new(old.ports.chunks());
        let mut b = Walk::new(new.ports.chunks());
        loop {
            while a.at_chunk_start()
                && b.at_chunk_start()
                && let (Some(x), Some(y)) = (a.chunk(), b.chunk())
                && Arc::ptr_eq(x, y)
            {
                a.skip_chunk();
                b.skip_chunk();
            }
            match (a.peek(), b.peek()) {
                (None, None) => break,
                (Some(x), None) => {
                    diff.removed.push(Arc::clone(x));
                    a.next();
                }
                (None, Some(y)) => {
                    diff.added.push(Arc::clone(y));
                    b.next();
                }
                (Some(x), Some(y)) => match x.key.cmp(&y.key) {
                    std::cmp::Ordering::Less => {
                        diff.removed.push(Arc::clone(x));
                        a.next();
                    }
                    std::cmp::Ordering::Greater => {
                        diff.added.push(Arc::clone(y));
                        b.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(x, y) && x != y {
                            diff.changed.push(change(x, y));
                        }
                        a.next();
                        b.next();
                    }
                },
            }
        }
        diff
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.health_checks_changed
    }
}

type Chunk = Arc<Vec<(Arc<PortKey>, Arc<ServicePortEntry>)>>;

/// A position in a table's entry chunks.
struct Walk<'a> {
    chunks: &'a [Chunk],
    chunk: usize,
    entry: usize,
}

impl<'a> Walk<'a> {
    fn new(chunks: &'a [Chunk]) -> Self {
        Walk {
            chunks,
            chunk: 0,
            entry: 0,
        }
    }

    fn at_chunk_start(&self) -> bool {
        self.entry == 0
    }

    fn chunk(&self) -> Option<&'a Chunk> {
        self.chunks.get(self.chunk)
    }

    fn skip_chunk(&mut self) {
        self.chunk += 1;
        self.entry = 0;
    }

    fn peek(&self) -> Option<&'a Arc<ServicePortEntry>> {
        self.chunk().and_then(|c| c.get(self.entry)).map(|(_, e)| e)
    }

    fn next(&mut self) {
        self.entry += 1;
        if self.chunk().is_none_or(|c| self.entry >= c.len()) {
            self.skip_chunk();
        }
    }
}

fn addresses(e: &ServicePortEntry) -> HashSet<(IpAddr, u16)> {
    e.internal
        .iter()
        .chain(e.external.iter())
        .map(|b| (b.ip, b.port))
        .collect()
}

pub(crate) fn change(old: &Arc<ServicePortEntry>, new: &Arc<ServicePortEntry>) -> PortChange {
    let old_f: HashSet<&Frontend> = old.frontends.iter().collect();
    let new_f: HashSet<&Frontend> = new.frontends.iter().collect();
    let old_b = addresses(old);
    let new_b = addresses(new);
    let mut backends_added: Vec<Backend> = new
        .internal
        .iter()
        .chain(new.external.iter())
        .filter(|b| !old_b.contains(&(b.ip, b.port)))
        .cloned()
        .collect();
    backends_added.sort();
    backends_added.dedup_by(|x, y| (x.ip, x.port) == (y.ip, y.port));
    let mut backends_removed: Vec<Backend> = old
        .internal
        .iter()
        .chain(old.external.iter())
        .filter(|b| !new_b.contains(&(b.ip, b.port)))
        .cloned()
        .collect();
    backends_removed.sort();
    backends_removed.dedup_by(|x, y| (x.ip, x.port) == (y.ip, y.port));
    PortChange {
        old: Arc::clone(old),
        new: Arc::clone(new),
        frontends_added: new
            .frontends
            .iter()
            .filter(|f| !old_f.contains(f))
            .copied()
            .collect(),
        frontends_removed: old
            .frontends
            .iter()
            .filter(|f| !new_f.contains(f))
            .copied()
            .collect(),
        backends_changed: old.internal != new.internal || old.external != new.external,
        backends_added,
        backends_removed,
        settings_changed: old.port != new.port
            || old.node_port != new.node_port
            || old.affinity_timeout != new.affinity_timeout
            || old.internal_local != new.internal_local
            || old.external_local != new.external_local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        EndpointInfo, IpFamily, PortInfo, Protocol, ServiceInfo, ServiceKey, ServiceType,
        SliceInfo, SlicePort,
    };
    use crate::table::NodeInfo;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "node-a".into(),
            zone: None,
            addresses: vec![],
        }
    }

    fn service(name: &str, ip: [u8; 4]) -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey::new("ns", name),
            created: None,
            service_type: ServiceType::ClusterIp,
            cluster_ips: vec![IpAddr::from(ip)],
            ports: vec![PortInfo {
                name: String::new(),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
            }],
            external_ips: vec![],
            lb_ips: vec![],
            internal_local: false,
            external_local: false,
            health_check_node_port: None,
            affinity_timeout: None,
            prefer_close: false,
        }
    }

    fn slice(service: &str, ips: &[[u8; 4]]) -> SliceInfo {
        SliceInfo {
            name: format!("{service}-1"),
            service: ServiceKey::new("ns", service),
            family: IpFamily::V4,
            ports: vec![SlicePort {
                name: String::new(),
                protocol: Protocol::Udp,
                port: 5353,
            }],
            endpoints: ips
                .iter()
                .map(|ip| EndpointInfo {
                    ip: IpAddr::from(*ip),
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: None,
                    zone: None,
                    zone_hints: vec![],
                    node_hints: vec![],
                })
                .collect(),
        }
    }

    fn build(
        svcs: &[(&str, u8)],
        slices: &[SliceInfo],
        prev: Option<&ServiceTable>,
    ) -> ServiceTable {
        let svcs = svcs
            .iter()
            .map(|(n, i)| service(n, [10, 96, 0, *i]))
            .collect();
        ServiceTable::build_from(&node(), svcs, slices, Vec::new(), prev)
    }

    #[test]
    fn one_endpoint_change_is_one_changed_entry() {
        let a = build(
            &[("a", 1), ("b", 2), ("c", 3)],
            &[
                slice("a", &[[10, 244, 0, 1]]),
                slice("b", &[[10, 244, 0, 2]]),
            ],
            None,
        );
        let b = build(
            &[("a", 1), ("b", 2), ("c", 3)],
            &[
                slice("a", &[[10, 244, 0, 1]]),
                slice("b", &[[10, 244, 0, 3]]),
            ],
            Some(&a),
        );
        // Unchanged entries are shared, not copied.
        let key_a = a.ports().next().map(|e| e.key.clone()).expect("a");
        assert!(Arc::ptr_eq(
            a.get(&key_a).expect("a"),
            b.get(&key_a).expect("a")
        ));
        let d = TableDiff::between(&a, &b);
        assert!(d.added.is_empty() && d.removed.is_empty());
        assert_eq!(d.changed.len(), 1);
        let c = &d.changed[0];
        assert_eq!(c.new.key.service.name, "b");
        assert!(c.backends_changed && !c.settings_changed);
        assert_eq!(c.backends_removed.len(), 1);
        assert_eq!(c.backends_removed[0].ip, IpAddr::from([10, 244, 0, 2]));
        assert_eq!(c.backends_added[0].ip, IpAddr::from([10, 244, 0, 3]));
        assert!(c.frontends_added.is_empty() && c.frontends_removed.is_empty());
        assert!(TableDiff::between(&b, &b).is_empty());
    }

    #[test]
    fn ids_are_stable_and_not_reused_at_once() {
        let a = build(&[("a", 1), ("b", 2), ("c", 3)], &[], None);
        let ids = |t: &ServiceTable| -> Vec<(String, u32)> {
            t.ports()
                .map(|e| (e.key.service.name.clone(), e.id.0))
                .collect()
        };
        assert_eq!(ids(&a), [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)]);
        // b removed, d and aa added: b's id 2 is not reused in the same build.
        let b = build(&[("a", 1), ("aa", 4), ("c", 3), ("d", 5)], &[], Some(&a));
        assert_eq!(
            ids(&b),
            [
                ("a".into(), 1),
                ("aa".into(), 4),
                ("c".into(), 3),
                ("d".into(), 5)
            ]
        );
        let d = TableDiff::between(&a, &b);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.added.len(), 2);
        // The next build may reuse it.
        let c = build(
            &[("a", 1), ("aa", 4), ("c", 3), ("d", 5), ("e", 6)],
            &[],
            Some(&b),
        );
        assert_eq!(
            c.get_by_id(crate::table::ServicePortId(2))
                .map(|e| e.key.service.name.as_str()),
            Some("e")
        );
        let full = TableDiff::full(&c);
        assert!(full.full && full.added.len() == 5 && !full.is_empty());
    }
}
