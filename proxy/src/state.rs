//! `Proxy`: the state a running proxy shares with its readers (dump, metrics, health checks).
//!
//! The table is an `ArcSwap`: readers load the current `Arc<ServiceTable>` without a lock and
//! keep a consistent snapshot for as long as they hold it; the watcher swaps in a new one
//! after each successful apply.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::table::{NodeInfo, ServiceTable};

/// Shared state of one running proxy.
#[derive(Debug)]
pub struct Proxy {
    node: NodeInfo,
    table: ArcSwap<ServiceTable>,
    metrics: Metrics,
    /// Bumped after every swap, so tasks (the health server) wake on a new table.
    version: watch::Sender<u64>,
}

impl Proxy {
    /// A proxy for `node` with an empty table.
    pub fn new(node: NodeInfo) -> Arc<Proxy> {
        let (version, _) = watch::channel(0);
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(ServiceTable::empty(node.clone())),
            node,
            metrics: Metrics::default(),
            version,
        })
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The table last programmed (a snapshot: later swaps do not change it).
    pub fn table(&self) -> Arc<ServiceTable> {
        self.table.load_full()
    }

    /// The programmed table as text (`skiff proxy dump`).
    pub fn dump(&self) -> String {
        self.table.load().dump()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Wakes when a new table is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Makes `table` the current one (the watcher calls this after `apply` succeeded).
    pub fn publish(&self, table: Arc<ServiceTable>) {
        let m = &self.metrics;
        m.services.set(table.service_count() as u64);
        m.service_ports.set(table.ports().len() as u64);
        m.backends.set(table.backend_count() as u64);
        m.problems.set(table.problems().len() as u64);
        self.table.store(table);
        self.version.send_modify(|v| *v += 1);
    }
}
