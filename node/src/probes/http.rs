//! The httpGet handler: HTTP/1.1 (or HTTPS without certificate checks, as upstream) GET.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ProbeTarget;
use super::handler::{fmt_addr, io_text, parse_host};

/// The User-Agent upstream's kubelet sends.
const USER_AGENT: &str = "kube-probe/1.33";

pub(super) async fn probe(
    get: &HTTPGetAction,
    host: Option<String>,
    default_host: IpAddr,
    port: u16,
    target: &dyn ProbeTarget,
    timeout: Duration,
) -> Result<(), String> {
    let ip = match &host {
        Some(h) => parse_host(h)?,
        None => default_host,
    };
    let https = get
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let mut path = get.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = fmt_addr(ip, port);
    let url = format!(
        "{}://{authority}{path}",
        if https { "https" } else { "http" }
    );
    let attempt = async {
        let tcp = target.connect_tcp(ip, port).await.map_err(|e| {
            format!(
                "Get {url:?}: dial tcp {authority}: connect: {}",
                io_text(&e)
            )
        })?;
        let mut request = Request::get(&path)
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::ACCEPT, "*/*");
        for h in get.http_headers.iter().flatten() {
            // A probe header replaces the default of the same name (Host, User-Agent...).
            if let (Some(headers), Ok(name), Ok(value)) = (
                request.headers_mut(),
                header::HeaderName::from_bytes(h.name.as_bytes()),
                header::HeaderValue::from_str(&h.value),
            ) {
                headers.remove(&name);
                headers.append(name, value);
            }
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let status = if https {
            let tls = tls_connector()
                .connect(server_name(host.as_deref(), ip), tcp)
                .await
                .map_err(|e| format!("Get {url:?}: tls: {e}"))?;
            send(tls, request, &url).await?
        } else {
            send(tcp, request, &url).await?
        };
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

async fn send<S>(stream: S, request: Request<Empty<Bytes>>, url: &str) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let conn = tokio::spawn(conn);
    let response = sender.send_request(request).await;
    conn.abort();
    // Only the status matters: the body is never read (upstream reads at most 10KiB of it).
    response
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("Get {url:?}: {e}"))
}

fn server_name(host: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_owned()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        });
    let config = match config {
        Ok(c) => c,
        // The ring provider supports the default versions; this branch is unreachable in practice.
        Err(_) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))))
            .with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Accepts any server certificate (upstream's HTTPS probes set InsecureSkipVerify), while
/// still checking the handshake signatures against it.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
