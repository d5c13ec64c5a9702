//! The admin kubeconfig (`DIR/kubeconfig`): server URL, embedded CA, bearer token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;

use super::tls::{TlsError, write_file};

/// The file name of the admin kubeconfig in the data dir.
pub const KUBECONFIG_FILE: &str = "kubeconfig";

/// Where the admin kubeconfig of `data_dir` is written.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KUBECONFIG_FILE)
}

/// The `https://` URL clients on this machine use for a server bound to `addr` (an unspecified
/// bind address becomes loopback).
pub fn server_url(addr: SocketAddr) -> String {
    let ip = addr.ip();
    let ip = if ip.is_unspecified() {
        if ip.is_ipv4() {
            "127.0.0.1".to_owned()
        } else {
            "[::1]".to_owned()
        }
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("https://{ip}:{}", addr.port())
}

/// Renders a kubeconfig for `server` trusting `ca_pem`, authenticating with `token` as `user`.
pub fn render(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n  user:\n    token: {token}\n\
         contexts:\n\
         - name: skiff\n  context:\n    cluster: skiff\n    user: {user}\n\
         current-context: skiff\n\
         preferences: {{}}\n"
    )
}

/// Writes the admin kubeconfig (mode 0600) and returns its path.
pub fn write_admin(
    data_dir: &Path,
    addr: SocketAddr,
    ca_pem: &str,
    token: &str,
) -> Result<PathBuf, TlsError> {
    let path = kubeconfig_path(data_dir);
    let text = render(&server_url(addr), ca_pem, super::auth::ADMIN_USER, token);
    write_file(&path, text.as_bytes(), true)?;
    Ok(path)
}
