//! The gRPC messages of `skiff.dev/grpc-echo` as prost derives (no protoc needed), and their `.proto` text.

/// The services `skiff.dev/grpc-echo` serves, for any gRPC client (grpcurl, ghz, ...).
pub const PROTO: &str = r#"syntax = "proto3";

package skiff.echo.v1;

// Served by skiff.dev/grpc-echo next to grpc.health.v1.Health (Check).
service Echo {
  rpc Echo(EchoRequest) returns (EchoResponse);
}

message EchoRequest {
  string message = 1;
}

message EchoResponse {
  string message = 1;   // the request's message
  string pod = 2;       // $POD_NAME, else the hostname
  string namespace = 3; // $NAMESPACE
}
"#;

/// The echo service's full name (also a health-check service name).
pub const ECHO_SERVICE: &str = "skiff.echo.v1.Echo";
/// `:path` of `Echo/Echo`.
pub const ECHO_PATH: &str = "/skiff.echo.v1.Echo/Echo";
/// `:path` of the standard health check.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub pod: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}
