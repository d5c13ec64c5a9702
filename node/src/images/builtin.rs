//! The built-in images: their names, references, entrypoint subcommands and default ports.

use std::fmt;

/// One of the images compiled into skiff.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `skiff.dev/echo`: HTTP/1.1 + HTTP/2 echo server on `$PORT` (3000).
    Echo,
    /// `skiff.dev/grpc-echo`: gRPC health + echo service on `$PORT` (50051).
    GrpcEcho,
    /// `skiff.dev/pause`: sleeps until SIGTERM/SIGINT.
    Pause,
}

impl Builtin {
    pub const ALL: [Builtin; 3] = [Builtin::Echo, Builtin::GrpcEcho, Builtin::Pause];

    /// The subcommand of the skiff binary that runs it, and the `NAME` of `builtin:NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Echo => "echo",
            Builtin::GrpcEcho => "grpc-echo",
            Builtin::Pause => "pause",
        }
    }

    /// The image reference without tag or digest.
    pub fn repository(self) -> &'static str {
        match self {
            Builtin::Echo => "skiff.dev/echo",
            Builtin::GrpcEcho => "skiff.dev/grpc-echo",
            Builtin::Pause => "skiff.dev/pause",
        }
    }

    /// The port the image listens on unless `PORT` says otherwise (none for pause).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Builtin::Echo => Some(crate::images::echo::DEFAULT_PORT),
            Builtin::GrpcEcho => Some(crate::images::grpc_echo::DEFAULT_PORT),
            Builtin::Pause => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    pub(crate) fn from_repository(repository: &str) -> Option<Builtin> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.repository() == repository)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.repository())
    }
}
