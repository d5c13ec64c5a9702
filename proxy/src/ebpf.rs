//! The eBPF `Dataplane`: every frontend becomes a VIP of `skiff-ebpf`'s socket load balancer,
//! so connections from the node and its pods are translated once, at connect time.
//!
//! North-south traffic (external clients reaching NodePorts, LoadBalancer IPs and externalIPs
//! through the node's interfaces) never passes a local connect(), so until the tc programs
//! exist those frontends are also served by the userspace engine: local clients are still
//! translated by the socket hooks (the listener never sees them), external ones reach the
//! listener. This is the documented gap of this build; `preserve_client_ip` is not honoured
//! for that path.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use skiff_ebpf::{BackendAddr, ServiceOptions, SockLb, Vip};

use crate::dataplane::{Dataplane, DataplaneError};
use crate::diff::TableDiff;
use crate::model::Protocol;
use crate::program::{FrontendProgram, plan};
use crate::table::ServiceTable;
use crate::userspace::{Engine, L4Proto, ListenKey, Pool};

/// The eBPF data plane over a loaded and attached [`SockLb`].
#[derive(Debug)]
pub struct EbpfDataplane {
    lb: Arc<Mutex<SockLb>>,
    programmed: Mutex<BTreeSet<(SocketAddr, Protocol)>>,
    north_south: Engine,
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

/// Lets the socket programs act on the sockets of the network namespace at `netns` (or stop
/// acting on them), by its cookie: a node agent calls it as pod namespaces come and go.
pub fn set_netns_allowed(
    lb: &Mutex<SockLb>,
    netns: &std::path::Path,
    allow: bool,
) -> Result<(), skiff_ebpf::EbpfError> {
    let cookie = skiff_ebpf::netns_cookie(netns)?;
    let mut lb = lb.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if allow {
        lb.allow_netns(cookie)
    } else {
        lb.forbid_netns(cookie)
    }
}

impl EbpfDataplane {
    /// Programs `lb` (shared: the caller also allows and forbids network namespaces on it);
    /// external frontends are also listened on with sockets made on `node`, a runtime in the
    /// node's network namespace.
    pub fn new(lb: Arc<Mutex<SockLb>>, node: tokio::runtime::Handle) -> EbpfDataplane {
        EbpfDataplane {
            lb,
            programmed: Mutex::default(),
            north_south: Engine::new(node),
        }
    }

    fn lock_lb(&self) -> std::sync::MutexGuard<'_, SockLb> {
        self.lb
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn programmed(&self) -> std::sync::MutexGuard<'_, BTreeSet<(SocketAddr, Protocol)>> {
        self.programmed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn upsert_vip(&self, f: &FrontendProgram) -> Result<(), DataplaneError> {
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
        self.lock_lb()
            .upsert_service(v, &backends, options)
            .map_err(|e| err(&format!("programming {}", f.addr), e))?;
        self.programmed().insert(f.key());
        Ok(())
    }

    fn remove_vip(&self, addr: SocketAddr, protocol: Protocol) -> Result<(), DataplaneError> {
        if let Some(v) = vip(addr, protocol) {
            self.lock_lb()
                .remove_service(&v)
                .map_err(|e| err(&format!("removing {addr}"), e))?;
        }
        self.programmed().remove(&(addr, protocol));
        Ok(())
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
        let plan = plan(table, diff, || self.programmed().clone());
        for (addr, protocol) in &plan.remove {
            self.remove_vip(*addr, *protocol)?;
            if let Some(proto) = L4Proto::of(*protocol) {
                self.north_south.remove(&ListenKey { addr: *addr, proto });
            }
        }
        let mut first_error = None;
        for f in &plan.upsert {
            if let Err(e) = self.upsert_vip(f) {
                tracing::warn!(error = %e, "frontend not programmed");
                first_error.get_or_insert(e);
                continue;
            }
            if let (true, Some(proto)) = (f.kind.is_external(), L4Proto::of(f.protocol)) {
                let key = ListenKey {
                    addr: f.addr,
                    proto,
                };
                let pool = Pool::new(f.backends.clone(), f.affinity_timeout.is_some());
                if let Err(e) = self.north_south.upsert(key, pool).await {
                    tracing::warn!(error = %e, "external frontend not served");
                    first_error.get_or_insert(err("external frontend", e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn dump(&self) -> String {
        let maps = self
            .lock_lb()
            .dump()
            .unwrap_or_else(|e| format!("cannot read the BPF maps: {e}\n"));
        format!(
            "# socket load balancer maps\n{maps}# north-south listeners\n{}",
            self.north_south.dump()
        )
    }

    async fn shutdown(&self) -> Result<(), DataplaneError> {
        // The socket programs detach when the `SockLb` is dropped by its owner; the maps go
        // with it (nothing is pinned by this data plane yet).
        for key in self.north_south.keys() {
            self.north_south.remove(&key);
        }
        Ok(())
    }
}
