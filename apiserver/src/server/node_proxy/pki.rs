//! Certificates between the API server and kubelets, issued by the cluster CA in the data dir.
//!
//! - The API server presents `kubelet-client.crt` (CN `kube-apiserver-kubelet-client`,
//!   O `system:masters`, client auth), as kubeadm's `apiserver-kubelet-client` certificate:
//!   a kubelet authenticates the API server by it.
//! - A kubelet serves HTTPS with a certificate from [`issue_kubelet_serving_cert`]
//!   (CN `system:node:<node>`, O `system:nodes`, server auth, SANs = the node's addresses);
//!   the API server verifies it against the cluster CA.

use std::fs;
use std::path::Path;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::server::tls::{CA_KEY, TlsError, ca_params, io_err, write_file};

/// The API server's client certificate towards kubelets (PEM), in the data dir.
pub const KUBELET_CLIENT_CERT: &str = "kubelet-client.crt";
/// Its key (PEM, 0600).
pub const KUBELET_CLIENT_KEY: &str = "kubelet-client.key";
/// The identity in that certificate.
pub const KUBELET_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

fn issue(
    dir: &Path,
    common_name: &str,
    organization: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<IssuedCert, TlsError> {
    let ca_key_path = dir.join(CA_KEY);
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca_key_path.clone(),
        message: e.to_string(),
    })?;
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, organization);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A kubelet serving certificate for `node`, valid for `sans` (its addresses and host names),
/// signed by the cluster CA in `dir` (which must exist: the API server made it).
pub fn issue_kubelet_serving_cert(
    dir: &Path,
    node: &str,
    sans: &[String],
) -> Result<IssuedCert, TlsError> {
    issue(
        dir,
        &format!("system:node:{node}"),
        "system:nodes",
        sans.to_vec(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )
}

/// The API server's kubelet client certificate: loaded from `dir`, issued on first use.
pub fn ensure_kubelet_client_cert(dir: &Path) -> Result<IssuedCert, TlsError> {
    let cert_path = dir.join(KUBELET_CLIENT_CERT);
    let key_path = dir.join(KUBELET_CLIENT_KEY);
    if cert_path.exists() && key_path.exists() {
        return Ok(IssuedCert {
            cert_pem: fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?,
            key_pem: fs::read_to_string(&key_path).map_err(io_err(&key_path))?,
        });
    }
    let issued = issue(
        dir,
        KUBELET_CLIENT_CN,
        "system:masters",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    write_file(&key_path, issued.key_pem.as_bytes(), true)?;
    write_file(&cert_path, issued.cert_pem.as_bytes(), false)?;
    Ok(issued)
}
