//! The gRPC messages of `skiff.dev/grpc-echo` as prost derives (no protoc needed at build
//! time), their `.proto` text and the committed descriptor set its server reflection serves.

/// The services `skiff.dev/grpc-echo` serves, for any gRPC client (grpcurl, ghz, ...).
pub const PROTO: &str = include_str!("protos/skiff/echo/v1/echo.proto");

/// A serialized `google.protobuf.FileDescriptorSet` of every service grpc-echo serves (echo,
/// health, server reflection v1 and v1alpha), written by `protoc` from `protos/` with
/// `scripts/gen-grpc-echo-descriptors`; grpc-echo's server reflection answers from it, and it is
/// what `skiff bench grpc --proto-set` takes.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!("descriptors.pb");

/// The echo service's full name (also a health-check service name).
pub const ECHO_SERVICE: &str = "skiff.echo.v1.Echo";
/// `:path` of `Echo/Echo`.
pub const ECHO_PATH: &str = "/skiff.echo.v1.Echo/Echo";
/// `:path` of the standard health check.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// `:path` of server reflection, the current protocol and its identical predecessor.
pub const REFLECTION_V1_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
pub const REFLECTION_V1ALPHA_PATH: &str =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use prost::Message as _;
    use prost_types::field_descriptor_proto::Type;
    use prost_types::{FileDescriptorProto, FileDescriptorSet};

    use super::*;

    fn fields(file: &FileDescriptorProto, message: &str) -> Vec<(String, i32, Type)> {
        let message = file
            .message_type
            .iter()
            .find(|m| m.name() == message)
            .unwrap();
        message
            .field
            .iter()
            .map(|f| (f.name().to_owned(), f.number(), f.r#type()))
            .collect()
    }

    /// The descriptors say what the server routes and what the prost derives encode.
    #[test]
    fn the_descriptor_set_declares_what_is_served() {
        let set = FileDescriptorSet::decode(DESCRIPTOR_SET).unwrap();
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert_eq!(
            paths,
            [
                ECHO_PATH,
                HEALTH_CHECK_PATH,
                REFLECTION_V1_PATH,
                REFLECTION_V1ALPHA_PATH
            ]
        );
        let echo = &set.file[0];
        assert_eq!(echo.name(), "skiff/echo/v1/echo.proto");
        assert_eq!(
            fields(echo, "EchoRequest"),
            [("message".into(), 1, Type::String)]
        );
        assert_eq!(
            fields(echo, "EchoResponse"),
            [
                ("message".into(), 1, Type::String),
                ("pod".into(), 2, Type::String),
                ("namespace".into(), 3, Type::String)
            ]
        );
        let health = &set.file[1];
        assert_eq!(
            fields(health, "HealthCheckRequest"),
            [("service".into(), 1, Type::String)]
        );
        assert_eq!(
            fields(health, "HealthCheckResponse"),
            [("status".into(), 1, Type::Enum)]
        );
        let values: Vec<(String, i32)> = health.message_type[1].enum_type[0]
            .value
            .iter()
            .map(|v| (v.name().to_owned(), v.number()))
            .collect();
        assert_eq!(
            values,
            [
                ("UNKNOWN".into(), ServingStatus::Unknown as i32),
                ("SERVING".into(), ServingStatus::Serving as i32),
                ("NOT_SERVING".into(), ServingStatus::NotServing as i32),
                (
                    "SERVICE_UNKNOWN".into(),
                    ServingStatus::ServiceUnknown as i32
                )
            ]
        );
        assert!(PROTO.contains("service Echo"));
    }

    /// The committed file is protoc's output for the committed .proto files (checked where
    /// protoc is installed; nothing else needs it).
    #[test]
    fn the_descriptor_set_is_protocs_output_for_the_protos() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/images/grpc_echo");
        let out = tempfile::tempdir().unwrap();
        let pb = out.path().join("descriptors.pb");
        let status = std::process::Command::new("protoc")
            .current_dir(&dir)
            .arg("-I")
            .arg("protos")
            .arg(format!("--descriptor_set_out={}", pb.display()))
            .args([
                "skiff/echo/v1/echo.proto",
                "grpc/health/v1/health.proto",
                "grpc/reflection/v1/reflection.proto",
                "grpc/reflection/v1alpha/reflection.proto",
            ])
            .status();
        match status {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("protoc is not installed: descriptors.pb not compared");
            }
            status => {
                assert!(status.unwrap().success());
                assert!(
                    std::fs::read(&pb).unwrap() == DESCRIPTOR_SET,
                    "descriptors.pb is stale: run scripts/gen-grpc-echo-descriptors"
                );
            }
        }
    }
}
