//! TLS certificates from `kubernetes.io/tls` Secrets, chosen per handshake by SNI.
//!
//! `CertSnapshot` maps `spec.tls` hosts (exact and `*.` wildcard) to parsed certificates, with a
//! generated default certificate for every other name. The `SniResolver` given to rustls reads
//! the current snapshot from an `ArcSwap` on every handshake, so a Secret change is served on
//! the next handshake with no listener restart and no lock.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::model::{IngressInfo, Key, Model, Problem};
use crate::table::normalize_host;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The ring provider: the one TLS provider of the project, chosen explicitly rather than
/// through a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key and checks that they belong together.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("tls.crt and tls.key do not form a usable pair: {e}"))
}

/// A self-signed certificate for names no Secret covers (clients see an untrusted certificate
/// rather than a failed handshake, as with every common ingress controller).
pub fn default_certificate() -> Result<Arc<CertifiedKey>, TlsError> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["skiff-ingress.default.invalid".to_owned()])?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| rustls::Error::General(format!("generated key: {e}")))?;
    let ck = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider())?;
    Ok(Arc::new(ck))
}

/// Certificates by SNI name.
#[derive(Debug)]
pub struct CertSnapshot {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.foo.com` hosts, keyed by `foo.com`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertSnapshot {
    /// Only the default certificate.
    pub fn empty(default: Arc<CertifiedKey>) -> CertSnapshot {
        CertSnapshot {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// The certificate for a client's SNI: exact name, then a wildcard one label up, then the
    /// default.
    pub fn select(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(sni) = sni else { return &self.default };
        let name = normalize_host(sni);
        self.exact
            .get(name.as_ref())
            .or_else(|| {
                name.split_once('.')
                    .and_then(|(_, rest)| self.wildcard.get(rest))
            })
            .unwrap_or(&self.default)
    }

    pub fn default_cert(&self) -> &Arc<CertifiedKey> {
        &self.default
    }

    /// Builds the snapshot for our Ingresses (in merge order: the oldest Ingress naming a host
    /// decides its certificate). Missing or broken Secrets are reported, never fatal.
    pub fn build(
        model: &Model,
        ours: &[&IngressInfo],
        default: Arc<CertifiedKey>,
    ) -> (CertSnapshot, Vec<Problem>) {
        let mut snap = CertSnapshot::empty(default);
        let mut problems = Vec::new();
        let mut parsed: HashMap<Key, Option<Arc<CertifiedKey>>> = HashMap::new();
        for ing in ours {
            for (i, t) in ing.tls.iter().enumerate() {
                let Some(secret) = &t.secret else { continue };
                let key = Key::new(ing.key.namespace.clone(), secret.clone());
                let field = format!("spec.tls[{i}].secretName");
                let cert = parsed
                    .entry(key.clone())
                    .or_insert_with(|| {
                        let found = match model.secrets.get(&key) {
                            None => Err(format!(
                                "Secret {key} does not exist or is not of type kubernetes.io/tls"
                            )),
                            Some(Err(p)) => Err(p.to_string()),
                            Some(Ok(s)) => certified_key(&s.cert_pem, &s.key_pem)
                                .map_err(|e| format!("Secret {key}: {e}")),
                        };
                        match found {
                            Ok(ck) => Some(Arc::new(ck)),
                            Err(message) => {
                                problems.push(Problem {
                                    object: ing.key.clone(),
                                    field: field.clone(),
                                    message,
                                });
                                None
                            }
                        }
                    })
                    .clone();
                let Some(cert) = cert else { continue };
                for h in &t.hosts {
                    let map = match h.strip_prefix("*.") {
                        Some(rest) => snap.wildcard.entry(rest.into()),
                        None => snap.exact.entry(h.as_str().into()),
                    };
                    map.or_insert_with(|| cert.clone());
                }
            }
        }
        (snap, problems)
    }
}

/// The rustls certificate resolver: one `ArcSwap` load per handshake.
#[derive(Debug)]
pub struct SniResolver {
    certs: Arc<ArcSwap<CertSnapshot>>,
}

impl SniResolver {
    pub fn new(certs: Arc<ArcSwap<CertSnapshot>>) -> SniResolver {
        SniResolver { certs }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certs.load().select(hello.server_name()).clone())
    }
}

/// The listener's rustls configuration: TLS 1.2 and 1.3 only, ALPN h2 then http/1.1,
/// certificates from the resolver.
pub fn server_config(
    certs: Arc<ArcSwap<CertSnapshot>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(certs)));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
