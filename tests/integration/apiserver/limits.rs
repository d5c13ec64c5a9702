//! Request limits: body size, `?timeout=`, and the per-user cap on concurrent watches.

use std::time::Duration;

use serde_json::Value;

use super::{TestServer, raw};

/// Opens a watch and returns its response (headers only; the body stays open).
async fn open_watch(client: &kube::Client) -> anyhow::Result<http::Response<kube::client::Body>> {
    let req = http::Request::builder()
        // Bookmarks make the server write, so it notices a closed watch promptly.
        .uri("/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true")
        .body(kube::client::Body::empty())?;
    Ok(client.send(req).await?)
}

#[tokio::test]
async fn watch_cap_per_user_is_429_with_retry_after() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with(dir.path(), |c| c.max_watches_per_user = 2).await?;
    let client = ts.client_without_retries().await?;
    let first = open_watch(&client).await?;
    let second = open_watch(&client).await?;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    let refused = open_watch(&client).await?;
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = http_body_util::BodyExt::collect(refused.into_body())
        .await?
        .to_bytes();
    let status: Value = serde_json::from_slice(&body)?;
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // Lists are not watches: still served.
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 200);

    // Closing a watch frees its slot (the server notices the closed stream).
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let resp = open_watch(&client).await?;
        if resp.status().as_u16() == 200 {
            reopened = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        reopened.is_some(),
        "the closed watch's slot was never freed"
    );
    drop((second, reopened));
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn timeout_parameter_and_body_size() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?timeout=5s",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 200);
    let (code, status) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps?timeout=soon",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 400);
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("invalid timeout")),
        "{status}"
    );

    // 4 MiB of data: over the 3 MiB limit, refused with 413 and nothing stored.
    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"k\":\"{}\"}}}}",
        "x".repeat(4 << 20)
    );
    let (code, status) = raw(
        &client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some("application/json"),
        big.into_bytes(),
    )
    .await?;
    assert_eq!(code, 413, "{status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge");
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/big",
        None,
        Vec::new(),
    )
    .await?;
    assert_eq!(code, 404);
    ts.stop().await;
    Ok(())
}
