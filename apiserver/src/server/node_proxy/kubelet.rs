//! The API server's HTTPS client to kubelets: verifies the kubelet against the cluster CA and
//! presents the `kube-apiserver-kubelet-client` certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pki;
use super::target::KubeletEndpoint;
use crate::server::status::ApiError;
use crate::server::tls::TlsError;

/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens HTTP/1.1 connections (upgrades allowed) to kubelets.
#[derive(Clone)]
pub(crate) struct KubeletClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient").finish_non_exhaustive()
    }
}

fn pem_error(what: &str) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: what.into(),
        message: e.to_string(),
    }
}

impl KubeletClient {
    /// Trusts only the cluster CA (`ca_pem`); the client certificate is issued in `data_dir`
    /// on first start.
    pub(crate) fn new(data_dir: &Path, ca_pem: &str) -> Result<Self, TlsError> {
        let identity = pki::ensure_kubelet_client_cert(data_dir)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.map_err(pem_error("the cluster CA"))?)?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(pem_error(pki::KUBELET_CLIENT_CERT))?;
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
            .map_err(pem_error(pki::KUBELET_CLIENT_KEY))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        // Upgrades (exec, attach, port-forward) exist only in HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Connects to the kubelet of `node` at `endpoint`; the connection serves one request
    /// (and its upgrade) and lives as long as the returned sender or its response.
    pub(crate) async fn connect(
        &self,
        node: &str,
        endpoint: &KubeletEndpoint,
    ) -> Result<SendRequest<Empty<Bytes>>, ApiError> {
        let unreachable = |why: String| unreachable(node, endpoint, &why);
        let server_name = ServerName::try_from(endpoint.host.clone())
            .map_err(|e| unreachable(format!("invalid address: {e}")))?;
        let connecting = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            self.connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS handshake: {e}")))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// 503 naming the node and the address tried.
pub(crate) fn unreachable(node: &str, endpoint: &KubeletEndpoint, why: &str) -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        format!(
            "error dialing backend: the kubelet of node {node:?} at {endpoint} is unreachable: {why}"
        ),
    )
}
