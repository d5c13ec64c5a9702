//! What a run does: protocol, target, load shape and per-protocol options, with their parsers.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::Error;

/// The protocol a run speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (own keep-alive client, optional pipelining), over TLS for `https://`.
    Http,
    /// HTTP/2: TLS with ALPN h2 for `https://`, prior-knowledge h2c for `http://`.
    H2,
    /// gRPC unary calls over HTTP/2.
    Grpc,
    /// Raw TCP: connect only, or request/response with `payload`.
    Tcp,
    /// UDP request/response datagrams.
    Udp,
    /// DNS queries over UDP, or over TCP with `dns_tcp`.
    Dns,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::H2 => "h2",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Dns => "dns",
        }
    }
}

/// TLS client options (rustls with ring).
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// Accept any server certificate (the handshake and its cost stay real).
    pub insecure: bool,
    /// Trust only the certificates of this PEM file [default: the system's CA bundle].
    pub ca: Option<PathBuf>,
    /// Server name sent and verified [default: the target's host].
    pub sni: Option<String>,
    /// Resume TLS sessions on new connections (rustls' in-memory session cache).
    pub resumption: bool,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            insecure: false,
            ca: None,
            sni: None,
            resumption: true,
        }
    }
}

/// The gRPC method of `skiff.dev/grpc-echo`, the default for `grpc` runs.
pub const GRPC_ECHO_METHOD: &str = "/skiff.echo.v1.Echo/Echo";

/// Where a gRPC run finds its method's descriptors, to check the method and encode the
/// request message from JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcDescriptors {
    /// A serialized `google.protobuf.FileDescriptorSet` (`protoc -o`, `buf build -o`).
    ProtoSet(PathBuf),
    /// Ask the target by gRPC server reflection (v1, else v1alpha).
    Reflection,
}

/// One run's settings. [`Config::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct Config {
    pub protocol: Protocol,
    /// A URL for http/h2/grpc, `HOST:PORT` for tcp/udp/dns.
    pub target: String,
    /// The measured time (after the warm-up).
    pub duration: Duration,
    /// Run this long first without recording: connections open, caches warm.
    pub warmup: Duration,
    /// Connections (closed loop: each keeps `depth` requests in flight).
    pub connections: usize,
    /// HTTP/2 and gRPC: concurrent streams per connection.
    pub streams: usize,
    /// HTTP/1.1: requests written back to back per connection before reading the answers.
    pub pipeline: usize,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// A request not answered within this is an error (`timeout`) and its connection is dropped.
    pub timeout: Duration,
    /// Every request on a fresh connection (connect and TLS handshake included in its latency).
    pub new_conn: bool,
    pub tls: TlsOptions,
    /// HTTP request method (http/h2).
    pub method: String,
    /// Extra request headers (http/h2/grpc).
    pub headers: Vec<(String, String)>,
    /// Request body (http/h2), request bytes (tcp/udp); grpc: the request message as JSON with
    /// `grpc_descriptors`, else the echo text (grpc-echo's method) or the raw encoded message.
    pub payload: Bytes,
    /// tcp/udp: bytes of answer to wait for per request [default: tcp the payload's length, udp one datagram].
    pub expect: Option<usize>,
    /// gRPC `:path`, `/package.Service/Method`.
    pub grpc_method: String,
    /// gRPC: descriptors to check the method against and encode the JSON payload with.
    pub grpc_descriptors: Option<GrpcDescriptors>,
    /// DNS question name and type.
    pub qname: String,
    pub qtype: String,
    /// DNS over TCP (RFC 7766: length-prefixed messages, connections reused, `pipeline`
    /// queries in flight per connection) instead of UDP.
    pub dns_tcp: bool,
}

impl Config {
    pub fn new(protocol: Protocol, target: impl Into<String>) -> Config {
        Config {
            protocol,
            target: target.into(),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            connections: 10,
            streams: 1,
            pipeline: 1,
            rate: None,
            timeout: Duration::from_secs(10),
            new_conn: false,
            tls: TlsOptions::default(),
            method: "GET".to_owned(),
            headers: Vec::new(),
            payload: Bytes::new(),
            expect: None,
            grpc_method: GRPC_ECHO_METHOD.to_owned(),
            grpc_descriptors: None,
            qname: "kubernetes.default.svc.cluster.local.".to_owned(),
            qtype: "A".to_owned(),
            dns_tcp: false,
        }
    }

    /// Refuse settings no run can honour, naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, problem: String| Err(Error::Config { field, problem });
        if self.connections == 0 {
            return bad("--connections", "must be at least 1".into());
        }
        if self.streams == 0 {
            return bad("--streams", "must be at least 1".into());
        }
        if self.pipeline == 0 {
            return bad("--pipeline", "must be at least 1".into());
        }
        if self.dns_tcp && self.protocol != Protocol::Dns {
            return bad(
                "--tcp",
                format!("only for dns runs, not {}", self.protocol.name()),
            );
        }
        if self.pipeline > 1 && self.protocol == Protocol::Dns && !self.dns_tcp {
            return bad(
                "--pipeline",
                "DNS over UDP keeps one query in flight per socket: add --tcp to pipeline \
                 queries, or raise --connections"
                    .into(),
            );
        }
        if self.pipeline > 1 && !matches!(self.protocol, Protocol::Http | Protocol::Dns) {
            return bad(
                "--pipeline",
                format!(
                    "only HTTP/1.1 and DNS over TCP pipeline; {} runs take --streams or --connections",
                    self.protocol.name()
                ),
            );
        }
        if self.streams > 1 && !matches!(self.protocol, Protocol::H2 | Protocol::Grpc) {
            return bad(
                "--streams",
                format!(
                    "only HTTP/2 and gRPC multiplex streams, not {}",
                    self.protocol.name()
                ),
            );
        }
        if self.duration.is_zero() {
            return bad("--duration", "must be longer than 0".into());
        }
        if self.timeout.is_zero() {
            return bad("--timeout", "must be longer than 0".into());
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return bad("--rate", format!("{rate} is not a positive rate"));
        }
        if !self.grpc_method.starts_with('/') || self.grpc_method[1..].split('/').count() != 2 {
            return bad(
                "--method",
                format!(
                    "{:?} is not a gRPC method path: write /package.Service/Method",
                    self.grpc_method
                ),
            );
        }
        if let Some(descriptors) = &self.grpc_descriptors
            && self.protocol != Protocol::Grpc
        {
            let field = match descriptors {
                GrpcDescriptors::ProtoSet(_) => "--proto-set",
                GrpcDescriptors::Reflection => "--grpc-reflection",
            };
            return bad(
                field,
                format!("only for grpc runs, not {}", self.protocol.name()),
            );
        }
        Ok(())
    }
}

/// `R/s`, `R` (per second) or `R/m`, e.g. `2000/s`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let bad = || format!("{text:?} is not a rate: write requests per second, e.g. 2000/s");
    let trimmed = text.trim();
    let (number, per) = match trimmed.split_once('/') {
        Some((n, unit)) => (n, unit.trim()),
        None => (trimmed, "s"),
    };
    let seconds = match per {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        _ => return Err(bad()),
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !(value.is_finite() && value > 0.0) {
        return Err(bad());
    }
    Ok(value / seconds)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("2000/s").unwrap(), 2000.0);
        assert_eq!(parse_rate("150").unwrap(), 150.0);
        assert_eq!(parse_rate("600/m").unwrap(), 10.0);
        for bad in ["", "0", "-5/s", "ten/s", "5/h", "nan"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_no_run_can_honour_are_refused() {
        let mut c = Config::new(Protocol::Tcp, "127.0.0.1:1");
        assert!(c.validate().is_ok());
        c.pipeline = 4;
        assert!(c.validate().unwrap_err().to_string().contains("--pipeline"));
        let mut c = Config::new(Protocol::Grpc, "http://127.0.0.1:1");
        c.grpc_method = "Echo".into();
        assert!(c.validate().unwrap_err().to_string().contains("--method"));
        c.grpc_method = GRPC_ECHO_METHOD.into();
        c.grpc_descriptors = Some(GrpcDescriptors::Reflection);
        assert!(c.validate().is_ok());
        let mut h2 = c.clone();
        h2.protocol = Protocol::H2;
        assert!(
            h2.validate()
                .unwrap_err()
                .to_string()
                .contains("--grpc-reflection: only for grpc runs")
        );
        let mut dns = Config::new(Protocol::Dns, "127.0.0.1:53");
        dns.pipeline = 8;
        assert!(
            dns.validate()
                .unwrap_err()
                .to_string()
                .contains("add --tcp")
        );
        dns.dns_tcp = true;
        assert!(dns.validate().is_ok());
        let mut udp = Config::new(Protocol::Udp, "127.0.0.1:53");
        udp.dns_tcp = true;
        assert!(
            udp.validate()
                .unwrap_err()
                .to_string()
                .contains("--tcp: only for dns runs, not udp")
        );
        c.connections = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--connections")
        );
    }
}
