//! kube-proxy: Services and EndpointSlices compiled into one immutable service table, programmed through a `Dataplane`.
//!
//! Flow: `watch::run` keeps reflector stores of Services and EndpointSlices → after a short
//! debounce, its `Compiler` recompiles only the Services whose objects changed (`model`
//! validates each object) and returns the next table with its diff → `Dataplane::apply`
//! (`program` turns table and diff into per-frontend work) → the new table is swapped into
//! `Proxy` (an `ArcSwap`) for `dump`, metrics and the health checks.

pub mod dataplane;
pub mod diff;
pub mod ebpf;
pub mod model;
pub mod table;

pub use dataplane::{Dataplane, DataplaneError};
pub use diff::{PortChange, TableDiff};
pub use model::{IpFamily, Problem, Protocol, ServiceKey};
pub use table::{
    Backend, Backends, Frontend, FrontendKind, HealthCheck, NodeInfo, PortKey, ServicePortEntry,
    ServicePortId, ServiceTable,
};
pub mod compiler;
pub mod conntrack;
pub mod health;
pub mod metrics;
mod pmap;
pub mod program;
pub mod routes;
pub mod state;
pub mod userspace;
pub mod watch;

pub use metrics::Metrics;
pub use state::Proxy;
pub use watch::{Config, run, run_with};
