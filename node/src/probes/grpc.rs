//! The grpc handler: one `grpc.health.v1.Health/Check` over HTTP/2 cleartext.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;

use super::ProbeTarget;
use super::handler::fmt_addr;
use crate::images::grpc_echo::{HealthCheckRequest, HealthCheckResponse, ServingStatus};

const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// Health responses are tiny; anything bigger is not a health server.
const MAX_BODY: usize = 64 * 1024;

pub(super) async fn probe(
    target: &dyn ProbeTarget,
    host: IpAddr,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), String> {
    let addr = fmt_addr(host, port);
    let secs = timeout.as_secs_f64();
    let stream = match tokio::time::timeout(timeout, target.connect_tcp(host, port)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "timeout: failed to connect service {addr:?} within {secs}s: {e}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "timeout: failed to connect service {addr:?} within {secs}s"
            ));
        }
    };
    let call = async {
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
        let conn = tokio::spawn(conn);
        let result = check(&mut sender, &addr, service).await;
        conn.abort();
        result
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {secs}s"
        )),
    }
}

async fn check(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    addr: &str,
    service: &str,
) -> Result<(), String> {
    let message = HealthCheckRequest {
        service: service.to_owned(),
    }
    .encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(&message);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{HEALTH_CHECK_PATH}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "kube-probe/1.33")
        .body(Full::new(frame.freeze()))
        .map_err(|e| format!("health rpc failed: {e}"))?;
    sender
        .ready()
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "health rpc failed: HTTP status {}",
            response.status()
        ));
    }
    let grpc_status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
    };
    let headers_status = grpc_status(response.headers());
    let collected = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("health rpc failed: {e}"))?;
    let status = collected
        .trailers()
        .and_then(grpc_status)
        .or(headers_status)
        .unwrap_or(0);
    if status == 12 {
        return Err("this server does not implement the grpc health protocol (grpc.health.v1.Health): unimplemented".to_owned());
    }
    if status != 0 {
        return Err(format!("health rpc failed with grpc status {status}"));
    }
    let body = collected.to_bytes();
    if body.len() < 5 {
        return Err("health rpc failed: empty response".to_owned());
    }
    let response = HealthCheckResponse::decode(&body[5..])
        .map_err(|e| format!("health rpc failed: bad response: {e}"))?;
    match ServingStatus::try_from(response.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "service unhealthy (responded with {:?})",
            match other {
                ServingStatus::NotServing => "NOT_SERVING",
                ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            }
        )),
        Err(_) => Err(format!(
            "service unhealthy (responded with status {})",
            response.status
        )),
    }
}
