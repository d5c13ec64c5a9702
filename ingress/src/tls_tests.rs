//! Certificate selection tests: rcgen-made certificates in Secrets, a real rustls client
//! handshake against `server_config`, verified against the expected certificate.

use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::compile::{RoutingConfig, our_ingresses};
use crate::model::Model;
use crate::tls::{CertSnapshot, default_certificate, server_config};

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
pub(crate) fn make_cert(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().clone(),
    )
}

pub(crate) fn tls_secret(name: &str, cert: &str, key: &str) -> Secret {
    use k8s_openapi::ByteString;
    let mut s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
    }))
    .expect("secret");
    s.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(cert.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ]
        .into(),
    );
    s
}

fn tls_ingress(name: &str, tls: serde_json::Value) -> Ingress {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"ingressClassName": "skiff", "tls": tls}
    }))
    .expect("ingress")
}

fn cfg() -> RoutingConfig {
    RoutingConfig {
        classes: crate::ClassSelector {
            extra_class: Some("skiff".into()),
        },
        default_backend: None,
    }
}

/// Handshakes with `sni` and returns the server's end-entity certificate and the ALPN.
pub(crate) async fn handshake(
    server: Arc<rustls::ServerConfig>,
    sni: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let srv = tokio::spawn(async move { acceptor.accept(server_io).await.map(|_| ()) });
    let mut client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let stream = conn
        .connect(name, client_io)
        .await
        .map_err(|e| e.to_string())?;
    let (_, c) = stream.get_ref();
    let cert = c
        .peer_certificates()
        .and_then(|p| p.first())
        .cloned()
        .ok_or("no peer certificate")?;
    let alpn = c.alpn_protocol().map(<[u8]>::to_vec);
    srv.await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok((cert, alpn))
}

/// Accepts any certificate: these tests compare the presented certificate byte for byte.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &crate::tls::provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

const V13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const V12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn sni_selects_secret_wildcard_and_default_certificates_and_follows_rotation() {
    let (a_pem, a_key, a_der) = make_cert(&["a.example.com"]);
    let (w_pem, w_key, w_der) = make_cert(&["*.wild.com"]);
    let mut m = Model::default();
    m.add_secret(&tls_secret("a-cert", &a_pem, &a_key));
    m.add_secret(&tls_secret("wild-cert", &w_pem, &w_key));
    m.add_ingress(&tls_ingress(
        "i",
        json!([
            {"hosts": ["a.example.com"], "secretName": "a-cert"},
            {"hosts": ["*.wild.com"], "secretName": "wild-cert"},
            {"hosts": ["missing.example.com"], "secretName": "nope"},
        ]),
    ));
    let default = default_certificate().expect("default cert");
    let default_der = default.cert[0].clone();
    let (snap, problems) = CertSnapshot::build(&m, &our_ingresses(&m, &cfg()), default.clone());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "spec.tls[2].secretName");
    assert!(problems[0].message.contains("default/nope"), "{problems:?}");
    let certs = Arc::new(ArcSwap::from_pointee(snap));
    let server = server_config(certs.clone()).expect("server config");

    for (sni, want) in [
        ("a.example.com", &a_der),
        ("A.Example.COM", &a_der),
        ("x.wild.com", &w_der),
        ("x.y.wild.com", &default_der),
        ("wild.com", &default_der),
        ("missing.example.com", &default_der),
        ("unknown.org", &default_der),
    ] {
        for versions in [V13, V12] {
            let (got, _) = handshake(server.clone(), sni, &[b"h2", b"http/1.1"], versions)
                .await
                .expect("handshake");
            assert_eq!(&got, want, "{sni} {versions:?}");
        }
    }

    // Rotation: a new certificate in the Secret is served on the next handshake.
    let (b_pem, b_key, b_der) = make_cert(&["a.example.com"]);
    m.add_secret(&tls_secret("a-cert", &b_pem, &b_key));
    let (snap, _) = CertSnapshot::build(&m, &our_ingresses(&m, &cfg()), default);
    certs.store(Arc::new(snap));
    let (got, _) = handshake(server.clone(), "a.example.com", &[b"http/1.1"], V13)
        .await
        .expect("handshake");
    assert_eq!(got, b_der);
}

#[tokio::test]
async fn alpn_prefers_h2_and_falls_back_to_http11() {
    let certs = Arc::new(ArcSwap::from_pointee(CertSnapshot::empty(
        default_certificate().expect("default"),
    )));
    let server = server_config(certs).expect("config");
    let (_, alpn) = handshake(server.clone(), "x.org", &[b"h2", b"http/1.1"], V13)
        .await
        .expect("h2");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (_, alpn) = handshake(server.clone(), "x.org", &[b"http/1.1"], V12)
        .await
        .expect("h1");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[test]
fn broken_secrets_are_reported() {
    let (a_pem, _, _) = make_cert(&["a.example.com"]);
    let (_, other_key, _) = make_cert(&["b.example.com"]);
    let mut m = Model::default();
    m.add_secret(&tls_secret("mismatch", &a_pem, &other_key));
    m.add_secret(&tls_secret("garbage", "not pem", "not pem"));
    let mut no_key = tls_secret("nokey", &a_pem, "");
    if let Some(d) = no_key.data.as_mut() {
        d.remove("tls.key");
    }
    m.add_secret(&no_key);
    m.add_ingress(&tls_ingress(
        "i",
        json!([
            {"hosts": ["a.example.com"], "secretName": "mismatch"},
            {"hosts": ["b.example.com"], "secretName": "garbage"},
            {"hosts": ["c.example.com"], "secretName": "nokey"},
        ]),
    ));
    let (snap, problems) = CertSnapshot::build(
        &m,
        &our_ingresses(&m, &cfg()),
        default_certificate().expect("default"),
    );
    let msgs: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs[0].contains("do not form a usable pair"), "{msgs:?}");
    assert!(msgs[1].contains("tls.crt holds no certificate"), "{msgs:?}");
    assert!(msgs[2].contains("TLS Secret has no tls.key"), "{msgs:?}");
    // Every such host gets the default certificate.
    assert!(Arc::ptr_eq(
        snap.select(Some("a.example.com")),
        snap.default_cert()
    ));
}
