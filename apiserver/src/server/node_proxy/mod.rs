//! Pod subresources served by the pod's kubelet: `log`, `exec`, `attach`, `portforward`.
//!
//! The API server looks up the pod's `spec.nodeName`, the Node's kubelet endpoint
//! (`target`), and forwards the request over HTTPS (`kubelet`, certificates in `pki`) to the
//! upstream kubelet path. Log bodies are relayed frame by frame as they arrive. Upgrade
//! requests (`Upgrade: SPDY/3.1` POSTs, `Upgrade: websocket` GETs) are passed through: the
//! kubelet's 101 is relayed and both upgraded connections are spliced byte for byte; any other
//! kubelet answer is relayed as is. The streams are not interpreted here.

mod kubelet;
pub mod pki;
pub mod target;

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{CONTENT_TYPE, HOST, UPGRADE};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use skiff_api::kinds;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) use kubelet::KubeletClient;
pub use pki::{IssuedCert, issue_kubelet_serving_cert};
use target::Streaming;

use super::Ctx;
use super::handlers::{Body, full, object_key};
use super::routes::{self, ResourcePath};
use super::status::ApiError;

/// Request headers passed to the kubelet: what content negotiation and upgrades need. The
/// client's credentials never are.
const FORWARDED_HEADERS: &[&str] = &[
    "accept",
    "user-agent",
    "content-type",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// Kubelet response headers relayed on a non-upgrade answer.
const RELAYED_HEADERS: &[&str] = &["content-type", "cache-control", "x-content-type-options"];

/// Serves `what` for the pod `namespace/name` through its kubelet.
pub(crate) async fn serve(
    ctx: &Ctx,
    mut req: Request<Incoming>,
    path: &ResourcePath,
    what: Streaming,
    namespace: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let allowed = match what {
        Streaming::Log => method == http::Method::GET,
        _ => method == http::Method::GET || method == http::Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "{method} is not allowed on pods/{}",
            path.subresource.as_deref().unwrap_or("")
        )));
    }
    let query = routes::parse_query(req.uri().query());
    let pod = ctx
        .store
        .get(&object_key(path.info, Some(namespace), name)?)
        .await
        .map_err(|e| ApiError::from_store(path.info, name, e))?;
    let Some(node_name) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let container = if what.needs_container() {
        let requested = query
            .iter()
            .find(|(k, _)| k == "container")
            .map(|(_, v)| v.as_str());
        target::container(&pod, requested)?
    } else {
        String::new()
    };
    let kubelet_path = target::kubelet_path(what, namespace, name, &container, &query)?;
    let nodes = kinds::by_resource("", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not registered"))?;
    let node = ctx
        .store
        .get(&object_key(nodes, None, node_name)?)
        .await
        .map_err(|e| ApiError::from_store(nodes, node_name, e))?;
    let endpoint = target::kubelet_endpoint(&node).ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "error dialing backend: node {node_name:?} publishes no InternalIP or Hostname \
                 address"
            ),
        )
    })?;

    let client_upgrade = req
        .headers()
        .contains_key(UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let mut sender = ctx.kubelet.connect(node_name, &endpoint).await?;
    let mut out = Request::builder()
        .method(method)
        .uri(&kubelet_path)
        .header(HOST, endpoint.to_string());
    for (header, value) in req.headers() {
        if FORWARDED_HEADERS.contains(&header.as_str()) {
            out = out.header(header, value);
        }
    }
    let out = out
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let mut answer = sender
        .send_request(out)
        .await
        .map_err(|e| kubelet::unreachable(node_name, &endpoint, &e.to_string()))?;
    tracing::debug!(node = node_name, %endpoint, path = kubelet_path, status = %answer.status(),
        "forwarded to the kubelet");

    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::new(
                502,
                "InternalError",
                format!("the kubelet of node {node_name:?} switched protocols unasked"),
            ));
        };
        let kubelet_upgrade = hyper::upgrade::on(&mut answer);
        let mut relay = Response::new(full(Bytes::new()));
        *relay.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *relay.headers_mut() = answer.headers().clone();
        tokio::spawn(splice(
            client_upgrade,
            kubelet_upgrade,
            ctx.shutdown.clone(),
        ));
        return Ok(relay);
    }

    let (parts, body) = answer.into_parts();
    let mut relay = Response::new(stream_body(body, sender));
    *relay.status_mut() = parts.status;
    for header in RELAYED_HEADERS {
        if let Some(value) = parts.headers.get(*header) {
            relay
                .headers_mut()
                .insert(HeaderName::from_static(header), value.clone());
        }
    }
    if !relay.headers().contains_key(CONTENT_TYPE) && what == Streaming::Log {
        relay
            .headers_mut()
            .insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    }
    Ok(relay)
}

/// Relays a kubelet body frame by frame (so `logs -f` lines arrive as written). Stops when
/// the client goes away or the kubelet ends or fails; `sender` keeps the connection open.
fn stream_body(
    mut body: Incoming,
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _connection = sender;
        loop {
            let frame = tokio::select! {
                () = tx.closed() => break,
                frame = body.frame() => frame,
            };
            match frame {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && tx.send(data).await.is_err()
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "kubelet body ended with an error");
                    break;
                }
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    BodyExt::boxed(StreamBody::new(stream))
}

/// Splices the client's and the kubelet's upgraded connections until either side closes or
/// the server shuts down.
async fn splice(
    client: OnUpgrade,
    kubelet: OnUpgrade,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (client, kubelet) = match tokio::try_join!(client, kubelet) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "an upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut kubelet = TokioIo::new(kubelet);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut kubelet) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "an upgraded stream ended with an error");
            }
        }
        _ = shutdown.changed() => {}
    }
}
