//! The userspace `Dataplane`: every frontend of the table becomes a listener of the engine.
//!
//! Beyond what a socket proxy can do, it does not preserve the client's address for
//! `externalTrafficPolicy: Local` (backends see the node's address; only the choice of local
//! endpoints is honoured), and serves no SCTP.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Engine, L4Proto, ListenKey, Pool};
use crate::dataplane::{Dataplane, DataplaneError};
use crate::diff::TableDiff;
use crate::program::plan;
use crate::table::ServiceTable;

/// The userspace data plane over an [`Engine`] (whose runtime lives in the node namespace).
#[derive(Debug)]
pub struct UserspaceDataplane {
    engine: Engine,
}

impl UserspaceDataplane {
    /// Serves frontends with sockets made on `node`, a runtime in the node's network namespace.
    pub fn new(node: tokio::runtime::Handle) -> UserspaceDataplane {
        UserspaceDataplane {
            engine: Engine::new(node),
        }
    }

    /// The engine, for counters and `dump`.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[async_trait]
impl Dataplane for UserspaceDataplane {
    fn name(&self) -> &'static str {
        "userspace"
    }

    async fn apply(
        &self,
        table: &Arc<ServiceTable>,
        diff: &TableDiff,
    ) -> Result<(), DataplaneError> {
        let plan = plan(table, diff, || {
            self.engine
                .keys()
                .into_iter()
                .map(|k| (k.addr, k.proto.into()))
                .collect()
        });
        for (addr, proto) in plan.remove {
            if let Some(proto) = L4Proto::of(proto) {
                self.engine.remove(&ListenKey { addr, proto });
            }
        }
        let mut first_error = None;
        for frontend in plan.upsert {
            let Some(proto) = L4Proto::of(frontend.protocol) else {
                tracing::warn!(frontend = %frontend.addr, "SCTP is not served by the userspace data plane: skipped");
                continue;
            };
            let key = ListenKey {
                addr: frontend.addr,
                proto,
            };
            let pool = Pool::new(frontend.backends, frontend.affinity_timeout.is_some());
            // One frontend that cannot listen (say, a NodePort taken by another program) must
            // not keep the others unprogrammed: report it after trying them all.
            if let Err(e) = self.engine.upsert(key, pool).await {
                tracing::warn!(error = %e, "frontend not served");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(DataplaneError::Other(e.to_string())),
        }
    }

    fn dump(&self) -> String {
        self.engine.dump()
    }

    async fn shutdown(&self) -> Result<(), DataplaneError> {
        // Listeners close; open TCP connections end with their tasks' runtime.
        for key in self.engine.keys() {
            self.engine.remove(&key);
        }
        Ok(())
    }
}
