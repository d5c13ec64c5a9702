//! Create, get, list, update and delete with every error path a Status.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::{TestServer, api_code, raw};

fn config_map(name: &str, value: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"k": value},
    }))?)
}

#[tokio::test]
async fn namespaced_crud_conflict_and_not_found() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = cms
        .create(&PostParams::default(), &config_map("a", "1")?)
        .await?;
    let rv1 = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    assert!(!rv1.is_empty());
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    assert!(created.metadata.uid.is_some());

    let got = cms.get("a").await?;
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("1")
    );

    // Update with the current RV, then a stale one → 409 Conflict.
    let mut next = got.clone();
    next.data = Some([("k".to_owned(), "2".to_owned())].into());
    let updated = cms.replace("a", &PostParams::default(), &next).await?;
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let err = cms.replace("a", &PostParams::default(), &next).await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(409), "{err:?}");
    if let Some(kube::Error::Api(s)) = &err {
        assert_eq!(s.reason, "Conflict");
        assert!(
            s.message.contains("the object has been modified"),
            "{}",
            s.message
        );
    }

    // Duplicate create → 409 AlreadyExists.
    let err = cms
        .create(&PostParams::default(), &config_map("a", "1")?)
        .await
        .err();
    assert_eq!(err.as_ref().and_then(api_code), Some(409));

    // Lists: in the namespace and across namespaces.
    let list = cms.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(all.list(&ListParams::default()).await?.items.len(), 1);
    let (code, body) = raw(&client, "GET", "/api/v1/configmaps", None, vec![]).await?;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "ConfigMapList");
    assert_eq!(body["items"][0]["kind"], "ConfigMap");

    // Missing object → 404 Status; missing namespace on create → 404 for the namespace.
    let err = cms.get("nope").await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404));
    let (code, body) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/configmaps/nope",
        None,
        vec![],
    )
    .await?;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["message"], "configmaps \"nope\" not found");
    let ghost: Api<ConfigMap> = Api::namespaced(client.clone(), "ghost");
    match ghost
        .create(&PostParams::default(), &config_map("a", "1")?)
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 404);
            assert_eq!(s.message, "namespaces \"ghost\" not found");
        }
        other => anyhow::bail!("expected 404, got {other:?}"),
    }

    // Delete returns the object; a second delete is 404.
    let deleted = cms.delete("a", &DeleteParams::background()).await?;
    assert!(deleted.left().is_some());
    let err = cms.delete("a", &DeleteParams::default()).await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(404));
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn cluster_scoped_crud_and_initial_namespaces() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    // Defaults applied through the create path.
    let default = nss.get("default").await?;
    assert_eq!(
        default
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/metadata.name"))
            .map(String::as_str),
        Some("default")
    );

    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )?;
    nss.create(&PostParams::default(), &ns).await?;
    let mut got = nss.get("team").await?;
    got.metadata
        .labels
        .get_or_insert_default()
        .insert("x".into(), "y".into());
    let updated = nss.replace("team", &PostParams::default(), &got).await?;
    assert_eq!(
        updated
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("x"))
            .map(String::as_str),
        Some("y")
    );
    // Without the namespace controller the namespace stays, Terminating (deletion.rs covers
    // the rest of its life).
    nss.delete("team", &DeleteParams::default()).await?;
    let terminating = nss.get("team").await?;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // Protected namespaces cannot be deleted.
    let err = nss.delete("default", &DeleteParams::default()).await.err();
    assert_eq!(err.as_ref().and_then(api_code), Some(403));
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_objects_and_bad_requests_store_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let path = "/api/v1/namespaces/default/configmaps";

    // 422 Invalid with causes.
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    let (code, body) = raw(
        &client,
        "POST",
        path,
        Some("application/json"),
        serde_json::to_vec(&bad)?,
    )
    .await?;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["kind"], "ConfigMap");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");

    // Unknown field: 400 in Strict, created with a warning otherwise.
    let unknown =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "bogus": 1});
    let (code, body) = raw(
        &client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        Some("application/json"),
        serde_json::to_vec(&unknown)?,
    )
    .await?;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["reason"], "BadRequest");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("unknown field \"bogus\"")),
        "{body}"
    );

    // Namespace mismatch → 400; wrong kind → 400; not JSON → 400; unknown media type → 415.
    let other_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n", "namespace": "kube-system"}});
    let (code, body) = raw(
        &client,
        "POST",
        path,
        Some("application/json"),
        serde_json::to_vec(&other_ns)?,
    )
    .await?;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "the namespace of the provided object does not match the namespace sent on the request"
    );
    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "n"}});
    let (code, _) = raw(
        &client,
        "POST",
        path,
        Some("application/json"),
        serde_json::to_vec(&wrong_kind)?,
    )
    .await?;
    assert_eq!(code, 400);
    let (code, _) = raw(
        &client,
        "POST",
        path,
        Some("application/json"),
        b"{not json".to_vec(),
    )
    .await?;
    assert_eq!(code, 400);
    let (code, body) = raw(&client, "POST", path, Some("text/plain"), b"x".to_vec()).await?;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, body) = raw(
        &client,
        "PATCH",
        &format!("{path}/x"),
        Some("application/merge-patch+json"),
        b"{}".to_vec(),
    )
    .await?;
    // PATCH does not create.
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));

    // Nothing above was stored.
    let (_, list) = raw(&client, "GET", path, None, vec![]).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");

    // YAML bodies and generateName work.
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: gen-\ndata:\n  a: b\n"
        .to_vec();
    let (code, body) = raw(&client, "POST", path, Some("application/yaml"), yaml).await?;
    assert_eq!(code, 201, "{body}");
    assert!(
        body["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("gen-") && n.len() == 9),
        "{body}"
    );

    // Unknown paths and unserved subresources are 404 Status.
    let (code, body) = raw(&client, "GET", "/api/v1/widgets", None, vec![]).await?;
    assert_eq!((code, body["kind"].as_str()), (404, Some("Status")));
    ts.stop().await;
    Ok(())
}
