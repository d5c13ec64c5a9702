//! Ingress controller and L7 proxy on pingora: Ingresses compiled into one immutable route
//! table, TLS certificates from Secrets chosen by SNI, per-request balancing.
//!
//! Flow: `model` (objects cut down to what routing needs, invalid parts reported as
//! `Problem`s) → `compile` (class selection, per-host merging, EndpointSlice resolution) →
//! `table` (the `RouteTable` snapshot, swapped whole) → the proxy reads it per request and picks
//! an endpoint with `balance` (P2C over peak-EWMA).

pub mod balance;
pub mod class;
pub mod compile;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod server;
pub mod table;
pub mod tls;

#[cfg(test)]
mod compile_tests;
#[cfg(test)]
mod tls_tests;

pub use class::{CONTROLLER_NAME, ClassSelector, DEFAULT_CLASS_NAME};
pub use compile::{Compiled, RoutingConfig, compile};
pub use model::{BackendRef, Key, Model, PortRef, Problem};
pub use table::{Backend, Decision, Route, RouteTable};
