//! Imperative kubectl commands (`create configmap|secret|deployment|service|namespace|ingress`)
//! whose typed clients send protobuf bodies, checked through kubectl's output and the stored objects.

use std::path::Path;

use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::Api;
use serde_json::{Value, json};

use super::{TestServer, api_code, kubectl, raw};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

#[tokio::test]
async fn create_configmap_and_secrets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;

    let out = kubectl(
        &kc,
        &[
            "create",
            "configmap",
            "app",
            "--from-literal=mode=fast",
            "--from-literal=empty=",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "configmap/app created");
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("app")
        .await?;
    let data = cm.data.unwrap_or_default();
    assert_eq!(data.get("mode").map(String::as_str), Some("fast"));
    assert_eq!(data.get("empty").map(String::as_str), Some(""));
    assert!(cm.metadata.uid.is_some());

    // The decoded body is validated like JSON: 422 naming the field, nothing stored.
    let run = super::kubectl_run(
        &kc,
        &["create", "configmap", "Bad_Name", "--from-literal=a=b"],
    )
    .await?;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains(r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value"#),
        "{}",
        run.stderr
    );
    let names: Vec<_> = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, ["app"]);

    let out = kubectl(
        &kc,
        &[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=password=s3cr3t",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "secret/db created");
    let secrets = Api::<Secret>::namespaced(client.clone(), "default");
    let secret = secrets.get("db").await?;
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let data = secret.data.unwrap_or_default();
    assert_eq!(
        data.get("password").map(|b| b.0.as_slice()),
        Some(&b"s3cr3t"[..])
    );
    let encoded = kubectl(
        &kc,
        &["get", "secret", "db", "-o", "jsonpath={.data.password}"],
    )
    .await?;
    assert_eq!(encoded, "czNjcjN0");

    let (cert, key) = write_cert(dir.path())?;
    let out = kubectl(
        &kc,
        &[
            "create", "secret", "tls", "web-tls", "--cert", &cert.0, "--key", &key.0,
        ],
    )
    .await?;
    assert_eq!(out.trim(), "secret/web-tls created");
    let tls = secrets.get("web-tls").await?;
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = tls.data.unwrap_or_default();
    assert_eq!(
        data.get("tls.crt").map(|b| b.0.as_slice()),
        Some(cert.1.as_bytes())
    );
    assert_eq!(
        data.get("tls.key").map(|b| b.0.as_slice()),
        Some(key.1.as_bytes())
    );
    ts.stop().await;
    Ok(())
}

/// A self-signed certificate and key in `dir`: ((path, pem), (path, pem)).
fn write_cert(dir: &Path) -> anyhow::Result<((String, String), (String, String))> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["web.example".to_owned()])?.self_signed(&key)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    std::fs::write(&cert_path, &cert_pem)?;
    std::fs::write(&key_path, &key_pem)?;
    Ok((
        (cert_path.to_string_lossy().into_owned(), cert_pem),
        (key_path.to_string_lossy().into_owned(), key_pem),
    ))
}

#[tokio::test]
async fn create_deployment_and_services() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;

    let out = kubectl(
        &kc,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx:1.27",
            "--replicas=3",
            "--port=8080",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "deployment.apps/web created");
    let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
    let d = serde_json::to_value(deployments.get("web").await?)?;
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let template = &d["spec"]["template"];
    assert_eq!(template["metadata"]["labels"], json!({"app": "web"}));
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["name"], "nginx");
    assert_eq!(container["image"], "nginx:1.27");
    // Server-side defaults run on the decoded body, as for JSON.
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    // Go's zeros that JSON omits are not stored.
    assert!(d["spec"].get("minReadySeconds").is_none(), "{d}");
    assert!(d["metadata"].get("generateName").is_none(), "{d}");

    // `--replicas=0` is an explicit zero of a pointer field: kept, not defaulted to 1.
    kubectl(
        &kc,
        &[
            "create",
            "deployment",
            "idle",
            "--image=nginx",
            "--replicas=0",
        ],
    )
    .await?;
    let idle = deployments.get("idle").await?;
    assert_eq!(idle.spec.and_then(|s| s.replicas), Some(0));

    let services = Api::<Service>::namespaced(client.clone(), "default");
    for (kind, name) in [
        ("clusterip", "api"),
        ("nodeport", "edge"),
        ("loadbalancer", "lb"),
    ] {
        let out = kubectl(&kc, &["create", "service", kind, name, "--tcp=80:8080"]).await?;
        assert_eq!(out.trim(), format!("service/{name} created"));
        let svc = serde_json::to_value(services.get(name).await?)?;
        let expected_type = match kind {
            "clusterip" => "ClusterIP",
            "nodeport" => "NodePort",
            _ => "LoadBalancer",
        };
        assert_eq!(svc["spec"]["type"], expected_type);
        let mut svc = svc;
        let node_port = svc["spec"]["ports"][0]
            .as_object_mut()
            .and_then(|p| p.remove("nodePort"));
        assert_eq!(
            node_port
                .as_ref()
                .is_some_and(|n| n.as_i64().is_some_and(|n| (30000..=32767).contains(&n))),
            kind != "clusterip",
            "{kind}: {node_port:?}"
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
        );
        assert_eq!(svc["spec"]["selector"], json!({"app": name}));
    }
    let out = kubectl(
        &kc,
        &[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=db.example.com",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "service/ext created");
    let ext = services.get("ext").await?.spec.unwrap_or_default();
    assert_eq!(ext.type_.as_deref(), Some("ExternalName"));
    assert_eq!(ext.external_name.as_deref(), Some("db.example.com"));

    let out = kubectl(
        &kc,
        &["expose", "deployment", "web", "--port=80", "--name=web"],
    )
    .await?;
    assert_eq!(out.trim(), "service/web exposed");
    let web = serde_json::to_value(services.get("web").await?)?;
    assert_eq!(web["spec"]["selector"], json!({"app": "web"}));
    // Without --target-port kubectl targets the service port itself.
    assert_eq!(
        web["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 80}])
    );

    let out = kubectl(&kc, &["get", "deploy,svc", "-o", "name"]).await?;
    for name in [
        "deployment.apps/web",
        "deployment.apps/idle",
        "service/api",
        "service/ext",
    ] {
        assert!(out.lines().any(|l| l == name), "{name} missing from {out}");
    }
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn create_namespace_and_ingress() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;

    let out = kubectl(&kc, &["create", "namespace", "team"]).await?;
    assert_eq!(out.trim(), "namespace/team created");
    let ns = Api::<Namespace>::all(client.clone()).get("team").await?;
    assert_eq!(
        ns.metadata
            .labels
            .unwrap_or_default()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("team")
    );

    let out = kubectl(
        &kc,
        &[
            "create",
            "ingress",
            "site",
            "-n",
            "team",
            "--class=skiff",
            "--rule=foo.example/api*=api:8080",
            "--rule=bar.example/=web:http,tls=bar-tls",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "ingress.networking.k8s.io/site created");
    let ing = serde_json::to_value(
        Api::<Ingress>::namespaced(client, "team")
            .get("site")
            .await?,
    )?;
    assert_eq!(ing["spec"]["ingressClassName"], "skiff");
    assert_eq!(
        ing["spec"]["rules"],
        json!([
            {"host": "foo.example", "http": {"paths": [{"path": "/api", "pathType": "Prefix",
                "backend": {"service": {"name": "api", "port": {"number": 8080}}}}]}},
            {"host": "bar.example", "http": {"paths": [{"path": "/", "pathType": "Exact",
                "backend": {"service": {"name": "web", "port": {"name": "http"}}}}]}},
        ])
    );
    assert_eq!(
        ing["spec"]["tls"],
        json!([{"hosts": ["bar.example"], "secretName": "bar-tls"}])
    );
    ts.stop().await;
    Ok(())
}

/// What the protobuf path stores equals what the JSON path stores for the same command.
#[tokio::test]
async fn protobuf_and_json_bodies_store_the_same_object() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    kubectl(&kc, &["create", "namespace", "viajson"]).await?;
    let commands: &[&[&str]] = &[
        &["configmap", "c", "--from-literal=a=b"],
        &[
            "secret",
            "generic",
            "s",
            "--from-literal=k=v",
            "--type=example.com/x",
        ],
        &[
            "deployment",
            "d",
            "--image=nginx",
            "--replicas=2",
            "--port=80",
            "--",
            "sleep",
            "1",
        ],
        // Node ports and ClusterIPs are allocated per Service: the two copies differ there.
        &["service", "nodeport", "n", "--tcp=80:8080"],
        &["service", "clusterip", "h", "--clusterip=None"],
        &[
            "ingress",
            "i",
            "--rule=a.example/x=svc:80",
            "--default-backend=def:81",
        ],
    ];
    for args in commands {
        let mut proto = vec!["create"];
        proto.extend_from_slice(args);
        kubectl(&kc, &proto).await?;
        // The flags go first: after `--` everything is the container's command.
        let mut dry = vec!["create", "--dry-run=client", "-o", "json"];
        dry.extend_from_slice(args);
        let manifest = dir.path().join("manifest.json");
        std::fs::write(&manifest, kubectl(&kc, &dry).await?)?;
        let manifest = manifest.to_string_lossy().into_owned();
        kubectl(&kc, &["create", "-n", "viajson", "-f", &manifest]).await?;

        let resource = args[0];
        // `create secret generic NAME`, `create service nodeport NAME`: the name comes third.
        let name = if resource == "service" || resource == "secret" {
            args[2]
        } else {
            args[1]
        };
        let get = |ns: &'static str| {
            let kc = kc.clone();
            let (resource, name) = (resource.to_owned(), name.to_owned());
            async move {
                let out = kubectl(&kc, &["get", &resource, &name, "-n", ns, "-o", "json"]).await?;
                anyhow::Ok(normalized(serde_json::from_str(&out)?))
            }
        };
        assert_eq!(get("default").await?, get("viajson").await?, "{args:?}");
    }
    ts.stop().await;
    Ok(())
}

/// An object without the metadata the server assigns.
fn normalized(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "namespace",
            "managedFields",
        ] {
            meta.remove(field);
        }
    }
    if let Some(spec) = object["spec"].as_object_mut()
        && spec.get("clusterIP").and_then(Value::as_str) != Some("None")
    {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    for port in object["spec"]["ports"].as_array_mut().into_iter().flatten() {
        if let Some(port) = port.as_object_mut() {
            port.remove("nodePort");
        }
    }
    object
}

/// A hand-built protobuf ConfigMap: magic, runtime.Unknown{typeMeta, raw}.
fn configmap_body(extra: &[u8]) -> Vec<u8> {
    let ld = |n: u8, b: &[u8]| [&[n << 3 | 2, b.len() as u8][..], b].concat();
    let meta = ld(1, &ld(1, b"raw"));
    let entry = ld(2, &[ld(1, b"k"), ld(2, b"v")].concat());
    let raw = [meta, entry, extra.to_vec()].concat();
    let type_meta = [ld(1, b"v1"), ld(2, b"ConfigMap")].concat();
    [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, &raw)].concat()
}

#[tokio::test]
async fn bad_protobuf_bodies_are_rejected_and_nothing_is_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let path = "/api/v1/namespaces/default/configmaps?fieldValidation=Strict";

    // Field 9 of ConfigMap does not exist upstream.
    let (code, status) = raw(
        &client,
        "POST",
        path,
        Some(PROTOBUF),
        configmap_body(&[9 << 3, 1]),
    )
    .await?;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.contains("ConfigMap has an unknown field number 9"),
        "{message}"
    );

    let mut truncated = configmap_body(&[]);
    truncated.pop();
    let (code, status) = raw(&client, "POST", path, Some(PROTOBUF), truncated).await?;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("truncated"),
        "{status}"
    );

    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let err = configmaps.get("raw").await.err().and_then(|e| api_code(&e));
    assert_eq!(err, Some(404), "a rejected body must store nothing");

    // A valid body is created and goes through the same path as JSON.
    let (code, created) = raw(&client, "POST", path, Some(PROTOBUF), configmap_body(&[])).await?;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"], json!({"k": "v"}));
    assert_eq!(
        configmaps
            .get("raw")
            .await?
            .data
            .unwrap_or_default()
            .get("k")
            .cloned(),
        Some("v".into())
    );

    // A client that accepts only protobuf gets 406: skiff answers JSON only.
    let req = http::Request::get("/api/v1/namespaces/default/configmaps/raw")
        .header("accept", PROTOBUF)
        .body(kube::client::Body::empty())?;
    let resp = client.send(req).await?;
    assert_eq!(resp.status().as_u16(), 406);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    assert_eq!(body["reason"], "NotAcceptable");

    // client-go's typed Delete sends DeleteOptions as protobuf, typed with the request's
    // group-version; its preconditions are honoured.
    let uid = configmaps
        .get("raw")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let delete_body = |uid: &str| {
        let ld = |n: u8, b: &[u8]| [&[n << 3 | 2, b.len() as u8][..], b].concat();
        let options = [ld(2, &ld(1, uid.as_bytes())), ld(4, b"Background")].concat();
        let type_meta = [ld(1, b"v1"), ld(2, b"DeleteOptions")].concat();
        [b"k8s\0".to_vec(), ld(1, &type_meta), ld(2, &options)].concat()
    };
    let item = "/api/v1/namespaces/default/configmaps/raw";
    let (code, status) = raw(
        &client,
        "DELETE",
        item,
        Some(PROTOBUF),
        delete_body("other"),
    )
    .await?;
    assert_eq!(code, 409, "{status}");
    assert!(
        configmaps.get("raw").await.is_ok(),
        "a failed precondition deletes nothing"
    );
    let (code, deleted) = raw(&client, "DELETE", item, Some(PROTOBUF), delete_body(&uid)).await?;
    assert_eq!(code, 200, "{deleted}");
    let err = configmaps.get("raw").await.err().and_then(|e| api_code(&e));
    assert_eq!(err, Some(404));
    ts.stop().await;
    Ok(())
}
