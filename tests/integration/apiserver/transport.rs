//! TLS, ALPN, authentication, request limits, /version, the real kubectl, and restart.

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{TestServer, kubectl, tls_connect as connect};

/// One HTTP/1.1 request (`Connection: close`); returns the status code and the body.
async fn http1(ts: &TestServer, head: &str) -> anyhow::Result<(u16, String)> {
    let mut tls = connect(ts, &[b"http/1.1"]).await?;
    tls.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((code, body))
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn auth_tls_alpn_limits_and_version() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;

    // Health needs no token; everything else does.
    let (code, body) = http1(&ts, &get("/healthz", None)).await?;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let (code, _) = http1(&ts, &get("/readyz", None)).await?;
    assert_eq!(code, 200);
    for token in [None, Some("wrong")] {
        let (code, body) = http1(&ts, &get("/api/v1/namespaces", token)).await?;
        assert_eq!(code, 401);
        assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
        let (code, _) = http1(&ts, &get("/version", token)).await?;
        assert_eq!(code, 401);
    }
    let admin = ts.server.admin_token().to_owned();
    let (code, _) = http1(&ts, &get("/api/v1/namespaces", Some(&admin))).await?;
    assert_eq!(code, 200);

    // A node token made with `create_token` works without a restart.
    let node =
        skiff_apiserver::server::create_token(dir.path(), "node-a", &["system:nodes".to_owned()])?;
    let (code, _) = http1(&ts, &get("/api/v1/namespaces", Some(&node))).await?;
    assert_eq!(code, 200);

    // Body limit: a declared 4 MiB body is refused with 413 before it is read.
    let head = format!(
        "POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {admin}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        4 * 1024 * 1024
    );
    let (code, body) = http1(&ts, &head).await?;
    assert_eq!(code, 413);
    assert!(body.contains("RequestEntityTooLarge"), "{body}");

    // HTTP/2 is negotiated over ALPN, and the server speaks it (SETTINGS first).
    let mut h2 = connect(&ts, &[b"h2", b"http/1.1"]).await?;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await?;
    let mut frame = [0u8; 9];
    h2.read_exact(&mut frame).await?;
    assert_eq!(frame[3], 0x04, "first server frame is SETTINGS");

    // /version through the kube client (which speaks HTTP/2 where offered).
    let client = ts.client().await?;
    let info = client.apiserver_version().await?;
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "32"));
    assert!(info.git_version.starts_with("v1.32.0"));

    // The kubeconfig and secrets are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["kubeconfig", "tokens", "ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(f))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn real_kubectl_discovers_lists_selects_and_deletes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_owned();

    let v: serde_json::Value =
        serde_json::from_str(&kubectl(&kc, &["get", "--raw", "/version"]).await?)?;
    assert_eq!(v["minor"], "32");
    let list: serde_json::Value =
        serde_json::from_str(&kubectl(&kc, &["get", "--raw", "/api/v1/namespaces"]).await?)?;
    assert_eq!(list["kind"], "NamespaceList");

    // Discovery: every kind, with its short name.
    let resources = kubectl(&kc, &["api-resources", "--no-headers"]).await?;
    for line in ["configmaps   cm", "deployments  deploy", "ingresses    ing"] {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().take(2).eq(words.iter().copied())),
            "{line} missing from:\n{resources}"
        );
    }

    // Server-side Tables: the upstream columns.
    let ns = kubectl(&kc, &["get", "namespaces"]).await?;
    let header: Vec<&str> = ns.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"], "{ns}");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines()
                .any(|l| l.starts_with(name) && l.contains("Active")),
            "{ns}"
        );
    }

    // Create from a manifest, select by label and field, read back as YAML, delete.
    let manifest = dir.path().join("cms.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n  labels: {tier: web}\ndata: {a: b}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two\ndata: {a: b, c: d}\n",
    )?;
    let path = manifest.to_string_lossy().into_owned();
    let created = kubectl(&kc, &["create", "--validate=false", "-f", &path]).await?;
    assert!(created.contains("configmap/one created") && created.contains("configmap/two created"));
    let web = kubectl(&kc, &["get", "cm", "-l", "tier in (web)", "--no-headers"]).await?;
    assert_eq!(
        web.lines()
            .map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>(),
        [Some("one")]
    );
    let two = kubectl(
        &kc,
        &[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=two",
            "--no-headers",
        ],
    )
    .await?;
    let cells: Vec<&str> = two.split_whitespace().collect();
    assert_eq!(&cells[..2], ["two", "2"], "{two}");
    let yaml = kubectl(&kc, &["get", "cm", "one", "-o", "yaml"]).await?;
    assert!(
        yaml.contains("tier: web") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    kubectl(&kc, &["delete", "cm", "one"]).await?;
    let left = kubectl(&kc, &["get", "cm", "-o", "name"]).await?;
    assert_eq!(left.trim(), "configmap/two");

    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn restart_keeps_certificates_tokens_and_objects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let token = ts.server.admin_token().to_owned();
    let ca = ts.server.ca_pem().to_owned();
    let cert = std::fs::read(dir.path().join("server.crt"))?;
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await?, "default");
    let cm: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}}),
    )?;
    cms.create(&PostParams::default(), &cm).await?;
    drop(cms);
    let store = ts.store.clone();
    ts.stop().await;
    drop(store);

    let ts = TestServer::start(dir.path()).await?;
    assert_eq!(ts.server.admin_token(), token);
    assert_eq!(ts.server.ca_pem(), ca);
    assert_eq!(std::fs::read(dir.path().join("server.crt"))?, cert);
    let cms: Api<ConfigMap> = Api::namespaced(ts.client().await?, "default");
    assert!(cms.get("keep").await.is_ok());
    ts.stop().await;
    Ok(())
}
