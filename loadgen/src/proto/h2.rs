//! HTTP/2 and gRPC unary over hyper's HTTP/2 client: TLS with ALPN h2 or prior-knowledge h2c;
//! the lanes of a connection are its concurrent streams.

use std::time::Instant;

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost_types::FileDescriptorProto;

use super::{Failure, Proto};
use crate::Error;
use crate::config::{Config, GRPC_ECHO_METHOD, GrpcDescriptors, Protocol};
use crate::grpc::{self, Source, reflection};
use crate::net::{Endpoint, HttpTarget};

type Sender = http2::SendRequest<Full<Bytes>>;

#[derive(Debug)]
pub(crate) struct H2 {
    endpoint: Endpoint,
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    /// gRPC: check `grpc-status`, name the method in errors.
    grpc: Option<String>,
    new_conn: bool,
}

#[derive(Debug)]
pub(crate) struct Lane {
    sender: Option<Sender>,
}

impl H2 {
    pub async fn new(config: &Config) -> Result<H2, Error> {
        let grpc = config.protocol == Protocol::Grpc;
        let target = HttpTarget::parse(&config.target, grpc.then_some("http")).await?;
        let endpoint = target.endpoint(&config.tls, &[b"h2"])?;
        let path = if grpc {
            config.grpc_method.clone()
        } else {
            target.path.clone()
        };
        let scheme = if target.tls { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{}{path}", target.authority)
            .parse()
            .map_err(|e| Error::Target {
                target: config.target.clone(),
                problem: format!("{e}"),
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::Config {
                field: "--header",
                problem: format!("{name:?}: {e}"),
            })?;
            let value = HeaderValue::from_str(value).map_err(|e| Error::Config {
                field: "--header",
                problem: format!("{value:?}: {e}"),
            })?;
            headers.append(name, value);
        }
        let method = if grpc {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
            Method::POST
        } else {
            Method::from_bytes(config.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                Error::Config {
                    field: "--http-method",
                    problem: format!("{:?} is not an HTTP method", config.method),
                }
            })?
        };
        let mut h2 = H2 {
            endpoint,
            uri,
            method,
            headers,
            body: config.payload.clone(),
            grpc: grpc.then(|| config.grpc_method.clone()),
            new_conn: config.new_conn,
        };
        if grpc {
            // Encoded once here; every request of the run sends these same bytes.
            h2.body = grpc_frame(&h2.grpc_message(config).await?);
        }
        Ok(h2)
    }

    /// The request message of a gRPC run: from descriptors and JSON, else grpc-echo's
    /// `EchoRequest` with the payload as its text, else the payload as given.
    async fn grpc_message(&self, config: &Config) -> Result<Bytes, Error> {
        let method = &config.grpc_method;
        let (files, source) = match &config.grpc_descriptors {
            None if method == GRPC_ECHO_METHOD => {
                let text = if config.payload.is_empty() {
                    Bytes::from_static(b"skiff bench")
                } else {
                    config.payload.clone()
                };
                return Ok(echo_request(&text));
            }
            None => return Ok(config.payload.clone()),
            Some(GrpcDescriptors::ProtoSet(path)) => (
                grpc::read_proto_set(path)?,
                Source {
                    place: format!("in {}", path.display()),
                    missing_hint: " (protoc writes the imported files too with --include_imports)",
                },
            ),
            Some(GrpcDescriptors::Reflection) => (
                self.reflect(config).await?,
                Source {
                    place: format!("served by {} (server reflection)", self.endpoint.addr),
                    missing_hint: "",
                },
            ),
        };
        Ok(grpc::encode_request(files, method, &config.payload, &source)?.into())
    }

    /// The descriptors of the method's service, asked of the target by server reflection on
    /// a connection of its own.
    async fn reflect(&self, config: &Config) -> Result<Vec<FileDescriptorProto>, Error> {
        let addr = self.endpoint.addr;
        let fetch = async {
            let mut sender = self.connect().await.map_err(|f| Error::Target {
                target: config.target.clone(),
                problem: f.message,
            })?;
            let service = grpc::service_of(&config.grpc_method);
            reflection::fetch(&mut sender, &self.uri, &self.headers, service)
                .await
                .map_err(|problem| Error::Config {
                    field: "--grpc-reflection",
                    problem: format!("{addr}: {problem}"),
                })
        };
        tokio::time::timeout(config.timeout, fetch)
            .await
            .map_err(|_| Error::Target {
                target: config.target.clone(),
                problem: format!(
                    "no answer to server reflection within {:?} (--timeout)",
                    config.timeout
                ),
            })?
    }

    async fn connect(&self) -> Result<Sender, Failure> {
        let addr = self.endpoint.addr;
        let stream = self.endpoint.connect().await?;
        if let Some(alpn) = stream.alpn()
            && alpn != b"h2"
        {
            return Err(Failure::new(
                "protocol",
                format!(
                    "{addr} negotiated ALPN {:?}, not h2",
                    String::from_utf8_lossy(alpn)
                ),
                true,
            ));
        }
        if matches!(stream, crate::net::Stream::Tls(_)) && stream.alpn().is_none() {
            return Err(Failure::new(
                "protocol",
                format!("{addr} did not negotiate h2 by ALPN: does it speak HTTP/2 over TLS?"),
                true,
            ));
        }
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::new("h2", format!("HTTP/2 handshake with {addr}: {e}"), true))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// A fresh request (http's `Request` is not `Clone`); every part is a cheap clone.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    fn grpc_check(&self, method: &str, headers: &HeaderMap) -> Result<bool, Failure> {
        let Some(status) = headers.get("grpc-status") else {
            return Ok(false);
        };
        let addr = self.endpoint.addr;
        let code: u32 = status
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                Failure::new(
                    "protocol",
                    format!("{addr} sent grpc-status {status:?}, not a number"),
                    false,
                )
            })?;
        if code == 0 {
            return Ok(true);
        }
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default();
        let name = grpc_code_name(code);
        Err(Failure::new(
            format!("grpc {code} {name}"),
            format!("{addr} answered gRPC status {code} {name} for {method}: {message}"),
            false,
        ))
    }
}

impl Proto for H2 {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let sender = if self.new_conn {
            None
        } else {
            Some(self.connect().await?)
        };
        Ok((0..lanes)
            .map(|_| Lane {
                sender: sender.clone(),
            })
            .collect())
    }

    fn tls_handshakes(&self) -> Option<(u64, u64)> {
        self.endpoint.tls_handshakes()
    }

    async fn call(
        &self,
        lane: &mut Lane,
        _n: usize,
        done: &mut Vec<Instant>,
    ) -> Result<(), Failure> {
        let addr = self.endpoint.addr;
        if lane.sender.is_none() {
            lane.sender = Some(self.connect().await?);
        }
        let Some(sender) = lane.sender.as_mut() else {
            return Err(Failure::new("io", "no connection".into(), true));
        };
        let broken = |e: hyper::Error, sender: &Sender| {
            Failure::new(
                "h2",
                format!("HTTP/2 with {addr}: {e}"),
                sender.is_closed() || e.is_closed(),
            )
        };
        if let Err(e) = sender.ready().await {
            let failure = broken(e, sender);
            lane.sender = None;
            return Err(failure);
        }
        let response = match sender.send_request(self.request()).await {
            Ok(response) => response,
            Err(e) => {
                let failure = broken(e, sender);
                if failure.reconnect {
                    lane.sender = None;
                }
                return Err(failure);
            }
        };
        let status = response.status();
        let grpc_ok_in_head = match &self.grpc {
            Some(method) => self.grpc_check(method, response.headers())?,
            None => false,
        };
        let mut body = response.into_body();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| broken(e, sender))?;
            if let Ok(t) = frame.into_trailers() {
                trailers = Some(t);
            }
        }
        if self.new_conn {
            lane.sender = None;
        }
        if let Some(method) = &self.grpc {
            if !status.is_success() {
                return Err(Failure::new(
                    format!("http {}", status.as_u16()),
                    format!("{addr} answered HTTP {status} to {method}, not a gRPC response"),
                    false,
                ));
            }
            let ok = grpc_ok_in_head
                || match &trailers {
                    Some(t) => self.grpc_check(method, t)?,
                    None => false,
                };
            if !ok {
                return Err(Failure::new(
                    "protocol",
                    format!("{addr} sent no grpc-status for {method}"),
                    false,
                ));
            }
        } else if status.as_u16() >= 400 {
            return Err(Failure::new(
                format!("http {}", status.as_u16()),
                format!("{addr} answered HTTP {status}"),
                false,
            ));
        }
        done.push(Instant::now());
        Ok(())
    }
}

/// `skiff.echo.v1.EchoRequest { message }`: field 1, length-delimited.
fn echo_request(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.len() + 6);
    buf.put_u8(0x0a);
    let mut len = message.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            buf.put_u8(byte);
            break;
        }
        buf.put_u8(byte | 0x80);
    }
    buf.put_slice(message);
    buf.freeze()
}

/// One uncompressed length-prefixed gRPC message.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.put_slice(message);
    buf.freeze()
}

pub(crate) fn grpc_code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(code as usize).copied().unwrap_or("UNKNOWN_CODE")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_are_protobuf_and_framed() {
        let msg = echo_request(b"hi");
        assert_eq!(&msg[..], b"\x0a\x02hi");
        let long = echo_request(&[b'x'; 300]);
        assert_eq!(&long[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(&grpc_frame(&msg)[..], b"\x00\x00\x00\x00\x04\x0a\x02hi");
        assert_eq!(grpc_code_name(12), "UNIMPLEMENTED");
        assert_eq!(grpc_code_name(99), "UNKNOWN_CODE");
    }
}
