//! `skiff.dev/grpc-echo`: gRPC over HTTP/2 cleartext with `grpc.health.v1.Health/Check`,
//! `skiff.echo.v1.Echo/Echo` and server reflection (v1 and v1alpha) of those services.
//!
//! gRPC framing is done here over hyper with prost messages (no protoc, no tonic codegen).

mod client;
mod framing;
pub mod proto;
mod reflection;
mod server;

pub use client::{GrpcClientError, GrpcEchoClient, call, health_check};
pub use proto::{
    DESCRIPTOR_SET, ECHO_SERVICE, EchoRequest, EchoResponse, HealthCheckRequest,
    HealthCheckResponse, PROTO, ServingStatus,
};
pub use server::{GrpcEchoConfig, GrpcEchoError, serve, serve_on};

/// The port when neither `--port` nor `PORT` is given.
pub const DEFAULT_PORT: u16 = 50051;
