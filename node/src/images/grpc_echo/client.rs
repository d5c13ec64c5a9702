//! A minimal gRPC client for grpc-echo (tests and benchmarks): one HTTP/2 connection, unary calls.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::framing::{MAX_MESSAGE, decode_one, encode, percent_decode};
use super::proto::{
    ECHO_PATH, EchoRequest, EchoResponse, HEALTH_CHECK_PATH, HealthCheckRequest,
    HealthCheckResponse, ServingStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum GrpcClientError {
    #[error("cannot connect to {addr}: {source}; is the gRPC server listening there?")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/2 with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("{addr} answered HTTP {status}, not a gRPC response")]
    HttpStatus {
        addr: SocketAddr,
        status: StatusCode,
    },
    #[error("{addr} answered gRPC status {code}: {message}")]
    Status {
        addr: SocketAddr,
        code: u32,
        message: String,
    },
    #[error("{addr} sent a malformed gRPC response: {problem}")]
    Protocol { addr: SocketAddr, problem: String },
}

/// One HTTP/2 connection to a grpc-echo server; calls on it may run concurrently (clone it).
#[derive(Clone, Debug)]
pub struct GrpcEchoClient {
    addr: SocketAddr,
    sender: http2::SendRequest<Full<Bytes>>,
}

impl GrpcEchoClient {
    pub async fn connect(addr: SocketAddr) -> Result<GrpcEchoClient, GrpcClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| GrpcClientError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|source| GrpcClientError::Http { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "gRPC client connection ended");
            }
        });
        Ok(GrpcEchoClient { addr, sender })
    }

    /// `skiff.echo.v1.Echo/Echo`.
    pub async fn echo(&mut self, message: &str) -> Result<EchoResponse, GrpcClientError> {
        let request = EchoRequest {
            message: message.to_owned(),
        };
        self.unary(ECHO_PATH, &request).await
    }

    /// `grpc.health.v1.Health/Check` for `service` ("" = the whole server).
    pub async fn health_check(&mut self, service: &str) -> Result<ServingStatus, GrpcClientError> {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let response: HealthCheckResponse = self.unary(HEALTH_CHECK_PATH, &request).await?;
        Ok(ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown))
    }

    async fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &mut self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, GrpcClientError> {
        let addr = self.addr;
        let protocol = |problem: String| GrpcClientError::Protocol { addr, problem };
        let http_request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}{path}"))
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            )
            .header(header::TE, HeaderValue::from_static("trailers"))
            .body(Full::new(encode(request)))
            .map_err(|e| protocol(format!("cannot build the request: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|source| GrpcClientError::Http { addr, source })?;
        let response = self
            .sender
            .send_request(http_request)
            .await
            .map_err(|source| GrpcClientError::Http { addr, source })?;
        if response.status() != StatusCode::OK {
            return Err(GrpcClientError::HttpStatus {
                addr,
                status: response.status(),
            });
        }
        // A Trailers-Only response carries the status in its headers.
        check_status(addr, response.headers())?;
        let collected = Limited::new(response.into_body(), MAX_MESSAGE + 5)
            .collect()
            .await
            .map_err(|e| protocol(format!("cannot read the body: {e}")))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        if !trailers.contains_key("grpc-status") {
            return Err(protocol("no grpc-status trailer".to_owned()));
        }
        check_status(addr, &trailers)?;
        let body = collected.to_bytes();
        let message = decode_one(&body).map_err(|(_, text)| protocol(text))?;
        Resp::decode(message).map_err(|e| protocol(format!("cannot decode the message: {e}")))
    }
}

fn check_status(addr: SocketAddr, headers: &HeaderMap) -> Result<(), GrpcClientError> {
    let Some(status) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code = status
        .to_str()
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| GrpcClientError::Protocol {
            addr,
            problem: format!("grpc-status {status:?} is not a number"),
        })?;
    if code == 0 {
        return Ok(());
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(GrpcClientError::Status {
        addr,
        code,
        message,
    })
}

/// One `Echo` call on a fresh connection.
pub async fn call(addr: SocketAddr, message: &str) -> Result<EchoResponse, GrpcClientError> {
    GrpcEchoClient::connect(addr).await?.echo(message).await
}

/// One health check on a fresh connection.
pub async fn health_check(
    addr: SocketAddr,
    service: &str,
) -> Result<ServingStatus, GrpcClientError> {
    GrpcEchoClient::connect(addr)
        .await?
        .health_check(service)
        .await
}
