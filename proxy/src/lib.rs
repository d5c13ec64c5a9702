//! kube-proxy: Services and EndpointSlices compiled into one immutable service table, programmed through a `Dataplane`.

pub mod routes;
pub mod userspace;
