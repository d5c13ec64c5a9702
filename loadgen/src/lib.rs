//! `skiff bench`: a load generator that measures latency correctly (HDR histograms, warm-up
//! excluded, coordinated-omission correction in open loop) for HTTP/1.1, HTTP/2, gRPC, TCP, UDP
//! and DNS, with JSON results and SVG percentile plots.
//!
//! Invariant: a latency is always measured from the moment the request *should* have been sent
//! (open loop: its slot in the fixed-rate schedule; closed loop: when the connection was free),
//! never from when a stalled client finally got round to sending it.

mod config;
mod cpu;
mod driver;
mod grpc;
mod net;
mod plot;
mod proto;
mod record;
mod report;
mod tls;

pub use config::{Config, GRPC_ECHO_METHOD, GrpcDescriptors, Protocol, TlsOptions, parse_rate};
pub use driver::{Progress, run};
pub use plot::{PlotError, PlotRun, plot};
pub use report::{ClientCpu, Errors, Latency, Report, TlsHandshakes};

/// Why a run could not be set up. Failures *during* a run are in its [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("target {target:?}: {problem}")]
    Target { target: String, problem: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}
