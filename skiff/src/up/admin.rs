//! `skiff up`'s admin endpoint on the host loopback (`--admin-addr`): Prometheus text of the
//! service proxy, the cluster DNS and the ingress on `/metrics`, the programmed service table and data
//! plane state on `/proxy/dump` (what `skiff proxy dump` would print), `/healthz`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use skiff_controller::standalone::{serve_http, text_response};
use skiff_proxy::{Dataplane, Proxy};

/// What the endpoint reads.
#[derive(Clone)]
pub struct Sources {
    pub proxy: Arc<Proxy>,
    pub dataplane: Arc<dyn Dataplane>,
    pub dns: Vec<Arc<skiff_dns::Metrics>>,
    pub ingress: Option<Arc<skiff_ingress::Metrics>>,
}

fn respond<B>(req: &Request<B>, sources: &Sources) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/metrics") => {
            let mut text = sources.proxy.metrics().render();
            // The first DNS server's metrics: both serve the same zone, the node one takes the
            // pods' queries.
            if let Some(dns) = sources.dns.first() {
                text.push_str(&dns.render());
            }
            if let Some(ingress) = &sources.ingress {
                text.push_str(&ingress.render());
            }
            (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        ("GET" | "HEAD", "/proxy/dump") => {
            let text = format!(
                "# service table\n{}\n# data plane: {}\n{}",
                sources.proxy.dump(),
                sources.dataplane.name(),
                sources.dataplane.dump()
            );
            (StatusCode::OK, "text/plain; charset=utf-8", text)
        }
        ("GET" | "HEAD", "/healthz") => (StatusCode::OK, "text/plain", "ok".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /proxy/dump or /healthz\n".to_owned(),
        ),
    };
    text_response(status, content_type, body)
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    shutdown: impl Future<Output = ()>,
) {
    serve_http(listener, move |req| respond(req, &sources), shutdown).await
}
