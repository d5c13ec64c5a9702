//! `skiff controller`: the controllers and the scheduler alone against any API server (from a kubeconfig), behind leader election, with their metrics served as Prometheus text.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;

use crate::leader::{Elector, LeaderConfig};
use crate::{Config, Metrics};

/// Errors of the standalone controller manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot read the kubeconfig {path}: {source} (pass --kubeconfig with a readable kubeconfig file)"
    )]
    ReadKubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("the kubeconfig {path} is unusable: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build an API client from {path}: {source}")]
    Client { path: String, source: kube::Error },
    #[error("--lb-pool {pool:?}: {reason}")]
    LbPool { pool: String, reason: String },
    #[error(transparent)]
    Leader(#[from] crate::leader::Error),
}

/// A kube client for the API server and credentials `path` names (its current context).
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let shown = path.display().to_string();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| Error::ReadKubeconfig {
        path: shown.clone(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: shown.clone(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| Error::Client {
        path: shown,
        source,
    })
}

/// What `skiff controller` runs with.
#[derive(Debug)]
pub struct Standalone {
    pub controllers: Config,
    pub leader: LeaderConfig,
    /// Where `/metrics` is served (already bound, so a caller can pick port 0); none: not served.
    pub metrics_listener: Option<TcpListener>,
}

/// Serves `/metrics` on `listener` until `shutdown`, elects a leader over the Lease, and runs the
/// controllers while leading. Returns after `shutdown` (Lease released), or with
/// [`crate::leader::Error::Lost`] when leadership was lost (the controllers stopped first; a
/// supervisor restarts the process, as upstream's controller manager exits).
pub async fn run(
    client: kube::Client,
    settings: Standalone,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    crate::service_lb::LbPool::parse(&settings.controllers.lb_pool).map_err(|e| Error::LbPool {
        pool: settings.controllers.lb_pool.clone(),
        reason: e.to_string(),
    })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = settings.metrics_listener.map(|listener| {
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(serve_metrics(listener, metrics.clone(), async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }))
    });
    let elector = Elector::new(client.clone(), settings.leader);
    let controllers = settings.controllers;
    let leading_metrics = metrics.clone();
    let result = elector
        .run(
            shutdown,
            move |leading| leading_metrics.leader.set(u64::from(leading)),
            |stop| crate::run_with_config(client, controllers, metrics, stop),
        )
        .await;
    let _ = stop_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    result.map_err(Error::from)
}

/// Plain HTTP/1.1 on `listener`: `GET /metrics` is the Prometheus text of `metrics`, `/healthz`
/// is `ok`, anything else 404. Until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving controller metrics on /metrics");
    }
    serve_http(listener, move |req| respond(req, &metrics), shutdown).await
}

/// A small plain HTTP/1.1 server (metrics and admin endpoints): each request is answered by
/// `respond`, until `shutdown`.
pub async fn serve_http<F>(listener: TcpListener, respond: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(&Request<hyper::body::Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "HTTP listener: accept failed");
                    continue;
                }
            },
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = respond(&req);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// A response with `status`, `content_type` and `body`.
pub fn text_response(
    status: StatusCode,
    content_type: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn respond<B>(req: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET" | "HEAD", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET" | "HEAD", "/healthz") => (StatusCode::OK, "text/plain", "ok".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics\n".to_owned(),
        ),
    };
    text_response(status, content_type, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_and_health_only() {
        let metrics = Metrics::default();
        metrics.reconcile_rounds.inc();
        let get = |path: &str| {
            let req = Request::get(path).body(()).unwrap();
            respond(&req, &metrics)
        };
        let ok = get("/metrics");
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(
            ok.headers()[hyper::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        assert_eq!(get("/healthz").status(), StatusCode::OK);
        assert_eq!(get("/other").status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn metrics_endpoint_answers_over_http() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.gc_objects_deleted.inc();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, metrics, async move {
            let _ = rx.await;
        }));
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains("skiff_gc_objects_deleted_total 1\n"),
            "{text}"
        );
        let _ = tx.send(());
        server.await.unwrap();
    }
}
