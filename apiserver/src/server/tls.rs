//! The cluster CA and the API serving certificate: generated in the data dir on first start, reused after.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The CA certificate file in the data dir (PEM).
pub const CA_CERT: &str = "ca.crt";
/// The CA private key (PEM, 0600).
pub const CA_KEY: &str = "ca.key";
/// The serving certificate (PEM).
pub const SERVER_CERT: &str = "server.crt";
/// The serving key (PEM, 0600).
pub const SERVER_KEY: &str = "server.key";
/// The SANs `server.crt` was issued for, one per line: a change re-issues the certificate.
pub const SERVER_SANS: &str = "server.sans";

/// Names every serving certificate carries (loopback and the in-cluster `kubernetes` Service).
pub const DEFAULT_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "10.96.0.1",
];

const CA_COMMON_NAME: &str = "skiff-ca";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a usable PEM certificate or key: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file + rename), with mode 0600 when `secret`.
pub(crate) fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = opts.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(contents).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The material on disk: paths and the CA PEM (embedded in kubeconfigs).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert_path: PathBuf,
    pub ca_cert_pem: String,
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
}

pub(crate) fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Loads the CA and serving certificate from `dir`, generating what is missing; re-issues the
/// serving certificate when the wanted SANs (defaults + `extra_sans`) changed.
pub fn ensure_pki(dir: &Path, extra_sans: &[String]) -> Result<Pki, TlsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let (ca_key, ca_cert_pem, ca_is_new) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::Pem {
            path: ca_key_path.clone(),
            message: e.to_string(),
        })?;
        let cert_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
        (key, cert_pem, false)
    } else {
        tracing::info!(dir = %dir.display(), "generating the cluster CA");
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), false)?;
        (key, cert.pem(), true)
    };

    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect();
    for san in extra_sans {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    let server_cert_path = dir.join(SERVER_CERT);
    let server_key_path = dir.join(SERVER_KEY);
    let sans_path = dir.join(SERVER_SANS);
    let wanted = sans.join("\n");
    let current = fs::read_to_string(&sans_path).unwrap_or_default();
    if ca_is_new || current != wanted || !server_cert_path.exists() || !server_key_path.exists() {
        tracing::info!(?sans, "issuing the API serving certificate");
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        // The issuer is rebuilt from the CA's fixed name and its key: what signing needs.
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        write_file(&server_key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&server_cert_path, cert.pem().as_bytes(), false)?;
        write_file(&sans_path, wanted.as_bytes(), false)?;
    }
    Ok(Pki {
        ca_cert_path,
        ca_cert_pem,
        server_cert_path,
        server_key_path,
    })
}

/// The rustls server configuration (ring provider), offering HTTP/2 and HTTP/1.1 over ALPN.
pub fn server_config(pki: &Pki) -> Result<rustls::ServerConfig, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls::pki_types::pem::Error| TlsError::Pem {
            path,
            message: e.to_string(),
        }
    };
    let mut chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pki.server_cert_path)
            .map_err(pem_err(&pki.server_cert_path))?
            .collect::<Result<_, _>>()
            .map_err(pem_err(&pki.server_cert_path))?;
    chain.extend(
        CertificateDer::pem_file_iter(&pki.ca_cert_path)
            .map_err(pem_err(&pki.ca_cert_path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_err(&pki.ca_cert_path))?,
    );
    let key = PrivateKeyDer::from_pem_file(&pki.server_key_path)
        .map_err(pem_err(&pki.server_key_path))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reissues_on_new_sans() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let a = ensure_pki(dir.path(), &[])?;
        let cert1 = fs::read(&a.server_cert_path)?;
        let b = ensure_pki(dir.path(), &[])?;
        assert_eq!(a.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(cert1, fs::read(&b.server_cert_path)?);
        let c = ensure_pki(dir.path(), &["skiff.example".to_owned()])?;
        assert_eq!(a.ca_cert_pem, c.ca_cert_pem);
        assert_ne!(cert1, fs::read(&c.server_cert_path)?);
        server_config(&c)?;
        Ok(())
    }
}
