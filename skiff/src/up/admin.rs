//! `skiff up`'s admin endpoint on the host loopback (`--admin-addr`): Prometheus text of the
//! service proxy and the cluster DNS on `/metrics`, the programmed service table and data
//! plane state on `/proxy/dump` (what `skiff proxy dump` would print), `/healthz`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use skiff_proxy::{Dataplane, Proxy};

/// What the endpoint reads.
#[derive(Clone)]
pub struct Sources {
    pub proxy: Arc<Proxy>,
    pub dataplane: Arc<dyn Dataplane>,
    pub dns: Vec<Arc<skiff_dns::Metrics>>,
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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// Serves on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Sources,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::debug!(%error, "admin endpoint: accept failed");
                    continue;
                }
            },
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let sources = sources.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &sources)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}
