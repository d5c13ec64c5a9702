//! The grpc-echo server: routes calls by `:path` (unary echo and health, streaming server
//! reflection), answers in gRPC framing with trailers.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use tokio::net::TcpListener;

use super::framing::{GrpcBody, MAX_MESSAGE, code, decode_one, encode, status_headers};
use super::proto::{
    ECHO_PATH, ECHO_SERVICE, EchoRequest, EchoResponse, HEALTH_CHECK_PATH, HealthCheckRequest,
    HealthCheckResponse, REFLECTION_V1_PATH, REFLECTION_V1ALPHA_PATH, ServingStatus,
};
use super::reflection;
use crate::images::listen::{ServeError, accept_loop, serve_until_signal};

#[derive(Clone, Debug)]
pub struct GrpcEchoConfig {
    pub port: u16,
    /// `None`: `[::]` dual-stack (else `0.0.0.0`).
    pub host: Option<IpAddr>,
    /// Reported in every echo response.
    pub pod: String,
    pub namespace: String,
}

impl GrpcEchoConfig {
    /// `port` on every address; pod from `POD_NAME` (else the hostname), namespace from `NAMESPACE`.
    pub fn new(port: u16) -> GrpcEchoConfig {
        let pod = std::env::var("POD_NAME")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_default();
        GrpcEchoConfig {
            port,
            host: None,
            pod,
            namespace: std::env::var("NAMESPACE").unwrap_or_default(),
        }
    }
}

/// Why the gRPC echo server could not start.
pub type GrpcEchoError = ServeError;

/// Run until SIGTERM/SIGINT, then let open calls finish. Prints `skiff grpc-echo listening on
/// ADDR` on stdout once it accepts connections.
pub async fn serve(config: GrpcEchoConfig) -> Result<(), GrpcEchoError> {
    let (host, port) = (config.host, config.port);
    serve_until_signal(
        "grpc-echo",
        "gRPC, HTTP/2 cleartext",
        host,
        port,
        |listener, shutdown| serve_on(listener, config, shutdown),
    )
    .await
}

/// Serve on an existing listener until `shutdown` resolves (for embedding and tests).
pub async fn serve_on(
    listener: TcpListener,
    config: GrpcEchoConfig,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(config);
    let builder = Arc::new(http2::Builder::new(TokioExecutor::new()));
    accept_loop(listener, shutdown, |stream, remote, watcher| {
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, error = %e, "gRPC connection ended");
            }
        });
    })
    .await;
}

async fn handle(req: Request<Incoming>, state: &GrpcEchoConfig) -> Response<GrpcBody> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if req.method() != Method::POST || !is_grpc {
        // Not a gRPC call: what the gRPC spec asks of a server (415), said in plain text too.
        let mut response = Response::new(GrpcBody::new(
            Some(Bytes::from_static(
                b"skiff.dev/grpc-echo speaks gRPC only: POST with content-type application/grpc\n",
            )),
            None,
        ));
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    let path = req.uri().path().to_owned();
    if path == REFLECTION_V1_PATH || path == REFLECTION_V1ALPHA_PATH {
        // Bidirectional streaming: answered as the requests arrive, not after the body ends.
        let mut response = Response::new(reflection::serve(req.into_body()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        return response;
    }
    let body = match Limited::new(req.into_body(), MAX_MESSAGE + 5)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return trailers_only(
                code::RESOURCE_EXHAUSTED,
                &format!("cannot read the request (limit {MAX_MESSAGE} bytes): {e}"),
            );
        }
    };
    let message = match decode_one(&body) {
        Ok(message) => message,
        Err((status, text)) => return trailers_only(status, &text),
    };
    let reply = match path.as_str() {
        ECHO_PATH => match EchoRequest::decode(message) {
            Ok(request) => Ok(encode(&EchoResponse {
                message: request.message,
                pod: state.pod.clone(),
                namespace: state.namespace.clone(),
            })),
            Err(e) => Err((code::INVALID_ARGUMENT, format!("bad EchoRequest: {e}"))),
        },
        HEALTH_CHECK_PATH => match HealthCheckRequest::decode(message) {
            Ok(request) if request.service.is_empty() || request.service == ECHO_SERVICE => {
                Ok(encode(&HealthCheckResponse {
                    status: ServingStatus::Serving as i32,
                }))
            }
            Ok(request) => Err((
                code::NOT_FOUND,
                format!(
                    "unknown service {:?}: this server serves \"\" and {ECHO_SERVICE:?}",
                    request.service
                ),
            )),
            Err(e) => Err((
                code::INVALID_ARGUMENT,
                format!("bad HealthCheckRequest: {e}"),
            )),
        },
        other => Err((
            code::UNIMPLEMENTED,
            format!(
                "unknown method {other}: this server serves {ECHO_PATH}, {HEALTH_CHECK_PATH} and \
                 server reflection (grpc.reflection.v1 and v1alpha)"
            ),
        )),
    };
    match reply {
        Ok(frame) => {
            let mut trailers = HeaderMap::new();
            status_headers(&mut trailers, code::OK, "");
            let mut response = Response::new(GrpcBody::new(Some(frame), Some(trailers)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err((status, text)) => trailers_only(status, &text),
    }
}

/// A failed call: status in the headers, no body (gRPC's "Trailers-Only" response).
fn trailers_only(status: u32, message: &str) -> Response<GrpcBody> {
    let mut response = Response::new(GrpcBody::default());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    status_headers(headers, status, message);
    response
}
