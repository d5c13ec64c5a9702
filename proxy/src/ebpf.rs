//! The eBPF `Dataplane`: every frontend becomes a VIP of `skiff-ebpf`'s socket load balancer,
//! so connections from the node and its pods are translated once, at connect time; external
//! frontends (NodePort, LoadBalancer IP, externalIP) also go to its tc north-south load
//! balancer, which translates packets arriving from outside the node.
//!
//! North-south: `externalTrafficPolicy: Cluster` frontends are SNATed to the node's first
//! address of their family (`NodeInfo::addresses`), `Local` ones keep the client address and
//! balance over this node's endpoints only. Without a [`NodePortLb`]
//! ([`EbpfDataplane::with_north_south`]) external frontends serve local clients only: nothing
//! listens for outside traffic (the userspace listeners belong to the userspace data plane).
//!
//! When a UDP backend stops serving every UDP frontend, the kernel's conntrack entries whose
//! replies come from it are deleted in the node namespace (see `conntrack`).
//!
//! Restarts: when the balancers were loaded with pinned maps, what they adopted is taken as
//! programmed, so the first full apply leaves unchanged frontends untouched (no write, no
//! moment without backends) and removes only those the new table lacks.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skiff_ebpf::{BackendAddr, FrontendOptions, NodePortLb, ServiceOptions, SockLb, Vip};

use crate::conntrack::Conntrack;
use crate::dataplane::{Dataplane, DataplaneError};
use crate::diff::TableDiff;
use crate::model::Protocol;
use crate::program::{FrontendProgram, plan};
use crate::table::{NodeInfo, ServiceTable};

type Key = (SocketAddr, Protocol);

/// What this data plane programmed: frontend → backends, and how many UDP frontends each UDP
/// backend serves (so a removed one is known without a scan).
#[derive(Debug, Default)]
struct State {
    frontends: BTreeMap<Key, Vec<SocketAddr>>,
    udp_backends: HashMap<SocketAddr, usize>,
    snat: Option<(Option<IpAddr>, Option<IpAddr>)>,
}

impl State {
    /// Records `key` → `backends` (None: removed); returns the UDP backends that no UDP
    /// frontend uses any more.
    fn record(&mut self, key: Key, backends: Option<&[SocketAddr]>) -> Vec<SocketAddr> {
        let old = match backends {
            Some(b) => self.frontends.insert(key, b.to_vec()),
            None => self.frontends.remove(&key),
        };
        let mut gone = Vec::new();
        if key.1 != Protocol::Udp {
            return gone;
        }
        for b in backends.unwrap_or_default() {
            *self.udp_backends.entry(*b).or_default() += 1;
        }
        for b in old.unwrap_or_default() {
            if let Some(n) = self.udp_backends.get_mut(&b) {
                *n -= 1;
                if *n == 0 {
                    self.udp_backends.remove(&b);
                    gone.push(b);
                }
            }
        }
        gone
    }
}

/// The eBPF data plane over a loaded and attached [`SockLb`] (and optionally a
/// [`NodePortLb`] attached to the node's interfaces).
#[derive(Debug)]
pub struct EbpfDataplane {
    lb: Arc<Mutex<SockLb>>,
    north_south: Option<Arc<Mutex<NodePortLb>>>,
    node: tokio::runtime::Handle,
    state: Mutex<State>,
}

fn err(what: &str, e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Other(format!("{what}: {e}"))
}

fn vip(addr: SocketAddr, protocol: Protocol) -> Option<Vip> {
    match protocol {
        Protocol::Tcp => Some(Vip::tcp(addr)),
        Protocol::Udp => Some(Vip::udp(addr)),
        Protocol::Sctp => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lets the socket programs act on the sockets of the network namespace at `netns` (or stop
/// acting on them), by its cookie: a node agent calls it as pod namespaces come and go.
pub fn set_netns_allowed(
    lb: &Mutex<SockLb>,
    netns: &std::path::Path,
    allow: bool,
) -> Result<(), skiff_ebpf::EbpfError> {
    let cookie = skiff_ebpf::netns_cookie(netns)?;
    let mut lb = lock(lb);
    if allow {
        lb.allow_netns(cookie)
    } else {
        lb.forbid_netns(cookie)
    }
}

/// The SNAT sources for `node`: its first address of each family.
fn snat_sources(node: &NodeInfo) -> (Option<IpAddr>, Option<IpAddr>) {
    (
        node.addresses.iter().copied().find(IpAddr::is_ipv4),
        node.addresses.iter().copied().find(IpAddr::is_ipv6),
    )
}

impl EbpfDataplane {
    /// Programs `lb` (shared: the caller also allows and forbids network namespaces on it).
    /// `node` is a runtime in the node's network namespace (conntrack is flushed there).
    ///
    /// What `lb` already serves (pinned maps adopted from a previous process) counts as
    /// programmed: the first (full) apply keeps what the table still has, without a write,
    /// and removes the rest.
    pub fn new(lb: Arc<Mutex<SockLb>>, node: tokio::runtime::Handle) -> EbpfDataplane {
        let adopted = lock(&lb).services();
        let dataplane = EbpfDataplane {
            lb,
            north_south: None,
            node,
            state: Mutex::default(),
        };
        dataplane.adopt(adopted);
        dataplane
    }

    /// Also programs external frontends into `ns`, a north-south load balancer the caller
    /// attached to the node namespace's external interfaces and pod bridge (its adopted
    /// frontends count as programmed, as in [`EbpfDataplane::new`]).
    pub fn with_north_south(mut self, ns: Arc<Mutex<NodePortLb>>) -> EbpfDataplane {
        let adopted = lock(&ns).frontends();
        self.north_south = Some(ns);
        self.adopt(adopted);
        self
    }

    /// Records frontends found in the maps that `state` does not know yet.
    fn adopt(&self, found: Vec<(Vip, Vec<BackendAddr>)>) {
        let mut state = lock(&self.state);
        let mut adopted = 0usize;
        for (v, backends) in found {
            let protocol = match v.proto {
                skiff_ebpf::Protocol::Tcp => Protocol::Tcp,
                skiff_ebpf::Protocol::Udp => Protocol::Udp,
            };
            let key = (v.addr, protocol);
            if !state.frontends.contains_key(&key) {
                let backends: Vec<SocketAddr> = backends.iter().map(|b| b.0).collect();
                state.record(key, Some(&backends));
                adopted += 1;
            }
        }
        if adopted > 0 {
            tracing::info!(
                frontends = adopted,
                "eBPF data plane: frontends found in pinned maps, reconciled at the first sync"
            );
        }
    }

    fn upsert(&self, f: &FrontendProgram) -> Result<(), DataplaneError> {
        let Some(v) = vip(f.addr, f.protocol) else {
            tracing::warn!(frontend = %f.addr, "SCTP is not served by the eBPF data plane: skipped");
            return Ok(());
        };
        let backends: Vec<BackendAddr> = f.backends.iter().copied().map(BackendAddr).collect();
        let options = ServiceOptions {
            affinity_timeout: f
                .affinity_timeout
                .map(|s| Duration::from_secs(u64::from(s))),
        };
        lock(&self.lb)
            .upsert_service(v, &backends, options)
            .map_err(|e| err(&format!("programming {}", f.addr), e))?;
        if let Some(ns) = &self.north_south {
            let mut ns = lock(ns);
            if f.kind.is_external() {
                let options = FrontendOptions {
                    snat: !f.preserve_client_ip,
                    affinity: f.affinity_timeout.is_some(),
                };
                ns.upsert_frontend(v, &backends, options)
                    .map_err(|e| err(&format!("programming {} on tc", f.addr), e))?;
            } else {
                // the address was external before (rare): not any more
                ns.remove_frontend(&v)
                    .map_err(|e| err(&format!("removing {} from tc", f.addr), e))?;
            }
        }
        Ok(())
    }

    fn remove(&self, addr: SocketAddr, protocol: Protocol) -> Result<(), DataplaneError> {
        if let Some(v) = vip(addr, protocol) {
            lock(&self.lb)
                .remove_service(&v)
                .map_err(|e| err(&format!("removing {addr}"), e))?;
            if let Some(ns) = &self.north_south {
                lock(ns)
                    .remove_frontend(&v)
                    .map_err(|e| err(&format!("removing {addr} from tc"), e))?;
            }
        }
        Ok(())
    }

    fn update_snat(&self, node: &NodeInfo) -> Result<(), DataplaneError> {
        let Some(ns) = &self.north_south else {
            return Ok(());
        };
        let want = snat_sources(node);
        let mut state = lock(&self.state);
        if state.snat == Some(want) {
            return Ok(());
        }
        lock(ns)
            .set_snat_addresses(want.0, want.1)
            .map_err(|e| err("setting the SNAT addresses", e))?;
        state.snat = Some(want);
        Ok(())
    }

    /// Deletes the node's UDP conntrack entries whose replies come from `gone`.
    async fn flush_conntrack(&self, gone: Vec<SocketAddr>) {
        if gone.is_empty() {
            return;
        }
        // on the node runtime's blocking pool: its threads are in the node namespace
        let task = self.node.spawn_blocking(move || {
            Conntrack::open().and_then(|mut ct| ct.flush_udp_backends(&gone))
        });
        match task.await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(entries = n, "stale UDP conntrack entries deleted"),
            // stale entries time out by themselves: worth a warning, not a failed sync
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing UDP conntrack entries"),
            Err(e) => tracing::warn!(error = %e, "conntrack flush task"),
        }
    }
}

#[async_trait]
impl Dataplane for EbpfDataplane {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    async fn apply(
        &self,
        table: &Arc<ServiceTable>,
        diff: &TableDiff,
    ) -> Result<(), DataplaneError> {
        self.update_snat(table.node())?;
        let plan = plan(table, diff, || {
            lock(&self.state).frontends.keys().copied().collect()
        });
        let mut gone = Vec::new();
        for (addr, protocol) in &plan.remove {
            self.remove(*addr, *protocol)?;
            gone.extend(lock(&self.state).record((*addr, *protocol), None));
        }
        let mut first_error = None;
        for f in &plan.upsert {
            if let Err(e) = self.upsert(f) {
                tracing::warn!(error = %e, "frontend not programmed");
                first_error.get_or_insert(e);
                continue;
            }
            gone.extend(lock(&self.state).record(f.key(), Some(&f.backends)));
        }
        // a backend removed from one frontend and added to another in this apply is in use
        {
            let state = lock(&self.state);
            gone.retain(|b| !state.udp_backends.contains_key(b));
        }
        gone.sort();
        gone.dedup();
        self.flush_conntrack(gone).await;
        first_error.map_or(Ok(()), Err)
    }

    fn dump(&self) -> String {
        let maps = lock(&self.lb)
            .dump()
            .unwrap_or_else(|e| format!("cannot read the BPF maps: {e}\n"));
        let ns = match &self.north_south {
            Some(ns) => lock(ns)
                .dump()
                .unwrap_or_else(|e| format!("cannot read the BPF maps: {e}\n")),
            None => "not loaded: external frontends serve local clients only\n".to_owned(),
        };
        format!("# socket load balancer maps\n{maps}# north-south (tc) maps\n{ns}")
    }

    async fn shutdown(&self) -> Result<(), DataplaneError> {
        // Nothing to undo here: the programs detach when their owners drop the `SockLb` and
        // `NodePortLb` (process-owned links); the maps go with them unless the caller loaded
        // them pinned, in which case they stay for the next process to adopt.
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_udp_backend_is_gone_only_when_no_udp_frontend_uses_it() {
        let mut s = State::default();
        let f1 = (sa("10.96.0.1:53"), Protocol::Udp);
        let f2 = (sa("10.250.7.1:30053"), Protocol::Udp);
        let t = (sa("10.96.0.1:53"), Protocol::Tcp);
        let (a, b) = (sa("10.244.0.5:8053"), sa("10.244.0.6:8053"));
        assert!(s.record(f1, Some(&[a, b])).is_empty());
        assert!(s.record(f2, Some(&[a, b])).is_empty());
        assert!(s.record(t, Some(&[a])).is_empty());
        // still used by f2
        assert!(s.record(f1, Some(&[b])).is_empty());
        assert_eq!(s.record(f2, Some(&[b])), vec![a]);
        assert!(
            s.record(t, None).is_empty(),
            "TCP backends are never flushed"
        );
        assert!(s.record(f1, None).is_empty());
        assert_eq!(s.record(f2, None), vec![b]);
        assert!(s.udp_backends.is_empty() && s.frontends.is_empty());
    }

    #[test]
    fn snat_sources_are_the_first_address_of_each_family() {
        let node = NodeInfo {
            name: "n".into(),
            zone: None,
            addresses: vec![
                "fd00::1".parse().unwrap(),
                "10.0.0.1".parse().unwrap(),
                "10.0.0.2".parse().unwrap(),
            ],
        };
        assert_eq!(
            snat_sources(&node),
            (
                Some("10.0.0.1".parse().unwrap()),
                Some("fd00::1".parse().unwrap())
            )
        );
        assert_eq!(snat_sources(&NodeInfo::default()), (None, None));
    }
}
