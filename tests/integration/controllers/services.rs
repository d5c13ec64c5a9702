//! Service allocation: ClusterIPs, NodePorts and healthCheckNodePorts in the API server (kubectl
//! `create service`, `expose`, `apply`, conflicts, dual-stack, restarts, concurrent creates), and
//! LoadBalancer addresses from the built-in load balancer (`service-controller`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_apiserver::allocation::records::{self, Owner, Table};
use skiff_apiserver::allocation::{AllocationConfig, repair};
use skiff_apiserver::server::{ApiServer, ServerConfig};

use crate::apiserver::{TestServer, api_code, kubectl, kubectl_run};

fn spec(svc: &Service) -> k8s_openapi::api::core::v1::ServiceSpec {
    svc.spec.clone().unwrap_or_default()
}

fn cluster_ips(svc: &Service) -> Vec<String> {
    spec(svc).cluster_ips.unwrap_or_default()
}

fn node_ports(svc: &Service) -> Vec<i32> {
    spec(svc)
        .ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.node_port)
        .collect()
}

async fn recorded(ts: &TestServer, table: Table) -> anyhow::Result<Vec<(String, String)>> {
    Ok(records::list(ts.store.as_ref(), table)
        .await?
        .into_iter()
        .map(|r| {
            let owner = r.owner.map(|o| o.to_string()).unwrap_or_default();
            (r.value, owner)
        })
        .collect())
}

fn service_body(name: &str, spec: serde_json::Value) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

#[tokio::test]
async fn kubectl_services_get_cluster_ips_and_node_ports() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let api: Api<Service> = Api::namespaced(ts.client().await?, "default");

    kubectl(
        &kc,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
    )
    .await?;
    let web = api.get("web").await?;
    let ip = spec(&web).cluster_ip.unwrap_or_default();
    let parsed: IpAddr = ip.parse()?;
    assert!(
        matches!(parsed, IpAddr::V4(v4) if v4.octets()[0] == 10 && (96..112).contains(&v4.octets()[1])),
        "{ip}"
    );
    assert_eq!(cluster_ips(&web), vec![ip.clone()]);
    assert_eq!(spec(&web).ip_families, Some(vec!["IPv4".to_owned()]));
    assert_eq!(spec(&web).ip_family_policy.as_deref(), Some("SingleStack"));
    assert!(
        recorded(&ts, Table::ClusterIp)
            .await?
            .contains(&(ip.clone(), "default/web".into()))
    );
    let table = kubectl(&kc, &["get", "svc", "web"]).await?;
    assert!(table.contains(&ip), "{table}");

    // Requested values are honoured, then refused to the next asker with upstream's message.
    kubectl(
        &kc,
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:80",
            "--node-port=30080",
        ],
    )
    .await?;
    assert_eq!(node_ports(&api.get("np").await?), vec![30080]);
    let run = kubectl_run(
        &kc,
        &[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80:80",
            "--node-port=30080",
        ],
    )
    .await?;
    assert!(!run.ok);
    assert!(
        run.stderr.contains(
            "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
        ),
        "{}",
        run.stderr
    );
    kubectl(
        &kc,
        &[
            "create",
            "service",
            "clusterip",
            "fixed",
            "--clusterip=10.96.0.5",
            "--tcp=80",
        ],
    )
    .await?;
    let run = kubectl_run(
        &kc,
        &[
            "create",
            "service",
            "clusterip",
            "fixed2",
            "--clusterip=10.96.0.5",
            "--tcp=80",
        ],
    )
    .await?;
    assert!(!run.ok);
    assert!(
        run.stderr.contains(
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.5\": provided IP is already allocated"
        ),
        "{}",
        run.stderr
    );
    let run = kubectl_run(
        &kc,
        &[
            "create",
            "service",
            "clusterip",
            "far",
            "--clusterip=10.200.0.5",
            "--tcp=80",
        ],
    )
    .await?;
    assert!(!run.ok);
    assert!(
        run.stderr.contains(
            "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        ),
        "{}",
        run.stderr
    );
    assert!(matches!(api.get("fixed2").await, Err(e) if api_code(&e) == Some(404)));
    assert!(matches!(api.get("far").await, Err(e) if api_code(&e) == Some(404)));

    // A dynamic NodePort, through `kubectl expose`.
    kubectl(
        &kc,
        &["create", "deployment", "app", "--image=skiff.dev/echo"],
    )
    .await?;
    kubectl(
        &kc,
        &[
            "expose",
            "deployment",
            "app",
            "--port=80",
            "--target-port=3000",
            "--type=NodePort",
        ],
    )
    .await?;
    let app = api.get("app").await?;
    let np = node_ports(&app);
    assert_eq!(np.len(), 1);
    assert!((30000..=32767).contains(&np[0]) && np[0] != 30080, "{np:?}");
    assert!(
        recorded(&ts, Table::NodePort)
            .await?
            .contains(&(np[0].to_string(), "default/app".into()))
    );

    // Headless and ExternalName get no address.
    kubectl(
        &kc,
        &[
            "create",
            "service",
            "clusterip",
            "headless",
            "--clusterip=None",
        ],
    )
    .await?;
    assert_eq!(
        cluster_ips(&api.get("headless").await?),
        vec!["None".to_owned()]
    );
    kubectl(
        &kc,
        &[
            "create",
            "service",
            "externalname",
            "ext",
            "--external-name=example.com",
        ],
    )
    .await?;
    assert!(cluster_ips(&api.get("ext").await?).is_empty());

    // The kube-dns address is kube-dns's only.
    let dns = service_body(
        "kube-dns",
        json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    )?;
    let err = api
        .create(
            &PostParams::default(),
            &service_body(
                "x",
                json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
            )?,
        )
        .await;
    assert!(
        matches!(&err, Err(e) if api_code(e) == Some(422)),
        "{err:?}"
    );
    let kube_system: Api<Service> = Api::namespaced(ts.client().await?, "kube-system");
    let dns = kube_system.create(&PostParams::default(), &dns).await?;
    assert_eq!(spec(&dns).cluster_ip.as_deref(), Some("10.96.0.10"));

    // Delete releases: the address can be asked for again.
    kubectl(&kc, &["delete", "service", "fixed"]).await?;
    assert!(
        !recorded(&ts, Table::ClusterIp)
            .await?
            .iter()
            .any(|(v, _)| v == "10.96.0.5")
    );
    kubectl(
        &kc,
        &[
            "create",
            "service",
            "clusterip",
            "fixed2",
            "--clusterip=10.96.0.5",
            "--tcp=80",
        ],
    )
    .await?;
    assert_eq!(
        spec(&api.get("fixed2").await?).cluster_ip.as_deref(),
        Some("10.96.0.5")
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn dual_stack_type_changes_and_immutability() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let api: Api<Service> = Api::namespaced(ts.client().await?, "default");

    let manifest = dir.path().join("dual.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dual\nspec:\n  ipFamilyPolicy: RequireDualStack\n  \
         selector:\n    app: dual\n  ports:\n  - port: 80\n",
    )?;
    kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap_or_default()]).await?;
    let dual = api.get("dual").await?;
    let ips = cluster_ips(&dual);
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips[0].starts_with("10."), "{ips:?}");
    assert!(ips[1].starts_with("fd00:10:96::"), "{ips:?}");
    assert_eq!(
        spec(&dual).ip_families,
        Some(vec!["IPv4".to_owned(), "IPv6".to_owned()])
    );
    // Re-applying the same manifest (no clusterIP in it) keeps the addresses.
    kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap_or_default()]).await?;
    assert_eq!(cluster_ips(&api.get("dual").await?), ips);

    let v6 = api
        .create(
            &PostParams::default(),
            &service_body(
                "v6",
                json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
            )?,
        )
        .await?;
    assert!(
        spec(&v6)
            .cluster_ip
            .unwrap_or_default()
            .starts_with("fd00:10:96::")
    );

    // clusterIP may not change once set.
    let patch = json!({"spec": {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77"]}});
    let err = api
        .patch("v6", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    assert!(
        matches!(&err, Err(e) if api_code(e) == Some(422)),
        "{err:?}"
    );

    // ClusterIP → NodePort allocates a node port; → ClusterIP frees it; → ExternalName frees the IP.
    kubectl(
        &kc,
        &["create", "service", "clusterip", "mover", "--tcp=80"],
    )
    .await?;
    let ip = spec(&api.get("mover").await?)
        .cluster_ip
        .unwrap_or_default();
    let to_np = json!({"spec": {"type": "NodePort"}});
    let mover = api
        .patch("mover", &PatchParams::default(), &Patch::Merge(&to_np))
        .await?;
    assert_eq!(spec(&mover).cluster_ip.as_deref(), Some(ip.as_str()));
    let np = node_ports(&mover);
    assert_eq!(np.len(), 1);
    assert!(
        recorded(&ts, Table::NodePort)
            .await?
            .contains(&(np[0].to_string(), "default/mover".into()))
    );
    let to_cip = json!({"spec": {"type": "ClusterIP"}});
    let mover = api
        .patch("mover", &PatchParams::default(), &Patch::Merge(&to_cip))
        .await?;
    assert!(node_ports(&mover).is_empty());
    assert!(
        !recorded(&ts, Table::NodePort)
            .await?
            .iter()
            .any(|(v, _)| *v == np[0].to_string())
    );
    let to_ext = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
    let mover = api
        .patch("mover", &PatchParams::default(), &Patch::Merge(&to_ext))
        .await?;
    assert!(cluster_ips(&mover).is_empty());
    assert!(
        !recorded(&ts, Table::ClusterIp)
            .await?
            .iter()
            .any(|(v, _)| *v == ip)
    );

    // LoadBalancer + externalTrafficPolicy Local gets a healthCheckNodePort.
    let local = api
        .create(
            &PostParams::default(),
            &service_body("local", json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}))?,
        )
        .await?;
    let hc = spec(&local).health_check_node_port.unwrap_or_default();
    assert!((30000..=32767).contains(&hc), "{hc}");
    assert!(!node_ports(&local).contains(&hc));
    assert!(
        recorded(&ts, Table::NodePort)
            .await?
            .contains(&(hc.to_string(), "default/local".into()))
    );
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn restart_keeps_allocations_and_repair_fixes_records() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut seen = HashSet::new();
    for round in 0..2 {
        let ts = TestServer::start(dir.path()).await?;
        let api: Api<Service> = Api::namespaced(ts.client().await?, "default");
        for i in 0..15 {
            let svc = service_body(
                &format!("s{round}-{i}"),
                json!({"type": "NodePort", "ports": [{"port": 80}]}),
            )?;
            api.create(&PostParams::default(), &svc).await?;
        }
        for svc in api.list(&ListParams::default()).await? {
            let name = svc.metadata.name.clone().unwrap_or_default();
            if name.starts_with(&format!("s{round}-")) {
                assert!(
                    seen.insert(spec(&svc).cluster_ip.unwrap_or_default()),
                    "{name}: address handed out twice"
                );
                assert!(
                    seen.insert(node_ports(&svc)[0].to_string()),
                    "{name}: node port handed out twice"
                );
            }
        }
        ts.stop().await;
    }
    assert_eq!(seen.len(), 60);

    // Repair: a leaked record is freed, a missing one re-recorded.
    let ts = TestServer::start(dir.path()).await?;
    let api: Api<Service> = Api::namespaced(ts.client().await?, "default");
    let ghost = Owner {
        namespace: "default".into(),
        name: "ghost".into(),
    };
    assert!(
        records::claim(ts.store.as_ref(), Table::ClusterIp, "10.96.3.3", &ghost)
            .await?
            .is_some()
    );
    let s0 = api.get("s0-0").await?;
    let s0_ip = spec(&s0).cluster_ip.unwrap_or_default();
    let rec = records::list(ts.store.as_ref(), Table::ClusterIp).await?;
    let mine = rec
        .iter()
        .find(|r| r.value == s0_ip)
        .ok_or_else(|| anyhow::anyhow!("no record for {s0_ip}"))?;
    records::remove(ts.store.as_ref(), Table::ClusterIp, mine).await?;
    let net = AllocationConfig::default().network(30000..=32767)?;
    let report = repair::repair(ts.store.as_ref(), &net, Duration::ZERO).await?;
    assert_eq!((report.freed, report.recorded), (1, 1), "{report:?}");
    let after = recorded(&ts, Table::ClusterIp).await?;
    assert!(after.contains(&(s0_ip.clone(), "default/s0-0".into())));
    assert!(!after.iter().any(|(v, _)| v == "10.96.3.3"));
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn two_api_servers_racing_for_one_address_one_wins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    // A second API server on the same store, as two servers on one etcd.
    let dir2 = tempfile::tempdir()?;
    let mut config = ServerConfig::new(dir2.path());
    config.api_port = 0;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let second = ApiServer::start(config, ts.store.clone(), async move {
        let _ = rx.await;
    })
    .await?;
    let kubeconfig = kube::config::Kubeconfig::read_from(second.kubeconfig_path())?;
    let config2 = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let clients = [ts.client().await?, kube::Client::try_from(config2)?];

    let mut tasks = Vec::new();
    for i in 0..8 {
        let api: Api<Service> = Api::namespaced(clients[i % 2].clone(), "default");
        let svc = service_body(
            &format!("race-{i}"),
            json!({"clusterIP": "10.96.9.9", "type": "NodePort", "ports": [{"port": 80, "nodePort": 31999}]}),
        )?;
        tasks.push(tokio::spawn(async move {
            api.create(&PostParams::default(), &svc).await
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(svc) => won.push(svc.metadata.name.unwrap_or_default()),
            Err(e) => assert_eq!(api_code(&e), Some(422), "{e}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let api: Api<Service> = Api::namespaced(clients[0].clone(), "default");
    let stored: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .filter(|n| n.starts_with("race-"))
        .collect();
    assert_eq!(stored, won);
    let owners: Vec<(String, String)> = recorded(&ts, Table::ClusterIp)
        .await?
        .into_iter()
        .filter(|(v, _)| v == "10.96.9.9")
        .collect();
    assert_eq!(
        owners,
        vec![("10.96.9.9".to_owned(), format!("default/{}", won[0]))]
    );
    let _ = tx.send(());
    second.wait().await;
    ts.stop().await;
    Ok(())
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn lb_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

async fn lb_ip_of(api: &Api<Service>, name: &str) -> anyhow::Result<String> {
    let api = api.clone();
    let name = name.to_owned();
    wait_for(&format!("a load-balancer address for {name}"), || {
        let api = api.clone();
        let name = name.clone();
        async move { Ok(lb_ips(&api.get(&name).await?).first().cloned()) }
    })
    .await
}

#[tokio::test]
async fn load_balancer_addresses_from_the_pool() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let kc = ts.server.kubeconfig_path().to_path_buf();
    let client = ts.client().await?;
    let api: Api<Service> = Api::namespaced(client.clone(), "default");

    kubectl(
        &kc,
        &["create", "service", "loadbalancer", "lb", "--tcp=80:8080"],
    )
    .await?;
    let ip = lb_ip_of(&api, "lb").await?;
    assert_eq!(ip, "172.18.255.1");
    let table = kubectl(&kc, &["get", "svc", "lb"]).await?;
    let row = table
        .lines()
        .find(|l| l.starts_with("lb "))
        .unwrap_or_default();
    assert!(
        row.contains("LoadBalancer") && row.contains("172.18.255.1"),
        "{table}"
    );

    // A requested address is honoured; a second asker for it gets none and an event says why.
    api.create(&PostParams::default(), &service_body("wanted", json!({"type": "LoadBalancer", "loadBalancerIP": "172.18.255.50", "ports": [{"port": 80}]}))?).await?;
    assert_eq!(lb_ip_of(&api, "wanted").await?, "172.18.255.50");
    api.create(&PostParams::default(), &service_body("greedy", json!({"type": "LoadBalancer", "loadBalancerIP": "172.18.255.50", "ports": [{"port": 80}]}))?).await?;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let message = wait_for("an AllocationFailed event for greedy", || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("AllocationFailed")
                        && e.involved_object.name.as_deref() == Some("greedy")
                })
                .and_then(|e| e.message))
        }
    })
    .await?;
    assert!(
        message.contains("172.18.255.50 is already in use by default/wanted"),
        "{message}"
    );
    assert!(lb_ips(&api.get("greedy").await?).is_empty());

    // Another class is not ours.
    api.create(&PostParams::default(), &service_body("foreign", json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 80}]}))?).await?;

    // Type change releases; the freed address goes to the next Service.
    let to_cip = json!({"spec": {"type": "ClusterIP"}});
    api.patch("lb", &PatchParams::default(), &Patch::Merge(&to_cip))
        .await?;
    wait_for("lb's address to be released", || {
        let api = api.clone();
        async move { Ok(lb_ips(&api.get("lb").await?).is_empty().then_some(())) }
    })
    .await?;
    api.create(
        &PostParams::default(),
        &service_body(
            "next",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        )?,
    )
    .await?;
    assert_eq!(lb_ip_of(&api, "next").await?, "172.18.255.1");
    assert!(lb_ips(&api.get("foreign").await?).is_empty());
    ts.stop().await;

    // After a restart the statuses are the record: nothing is handed out twice.
    let ts = TestServer::start_with_controllers(dir.path()).await?;
    let api: Api<Service> = Api::namespaced(ts.client().await?, "default");
    api.create(
        &PostParams::default(),
        &service_body(
            "later",
            json!({"type": "LoadBalancer", "ports": [{"port": 80}]}),
        )?,
    )
    .await?;
    let later = lb_ip_of(&api, "later").await?;
    assert_eq!(later, "172.18.255.2");
    assert_eq!(lb_ip_of(&api, "next").await?, "172.18.255.1");
    assert_eq!(lb_ip_of(&api, "wanted").await?, "172.18.255.50");
    ts.stop().await;
    Ok(())
}

/// Allocation picks a random value and claims it without reading the records (most ranges are
/// mostly free); in a small range the picks collide, and it falls back to reading them: every
/// value is still handed out once, all of the range gets used, then the next create is refused.
#[tokio::test]
async fn small_ranges_fill_up_with_distinct_values_then_refuse() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start_with(dir.path(), |c| {
        // 14 addresses (.1 to .14), the first one reserved for default/kubernetes; 5 ports.
        c.allocation = AllocationConfig {
            service_cidrs: "10.100.0.0/28".into(),
            cluster_dns: None,
        };
        c.validation.node_port_range = 30000..=30004;
    })
    .await?;
    let api: Api<Service> = Api::namespaced(ts.client().await?, "default");
    let create = |name: String, ty: &'static str| {
        let api = api.clone();
        async move {
            let svc = service_body(&name, json!({"type": ty, "ports": [{"port": 80}]}))?;
            anyhow::Ok(api.create(&PostParams::default(), &svc).await)
        }
    };
    let mut ports = HashSet::new();
    let mut ips = HashSet::new();
    for i in 0..5 {
        let svc = create(format!("np{i}"), "NodePort").await??;
        assert!(
            ports.insert(node_ports(&svc)[0]),
            "node port handed out twice"
        );
        assert!(ips.insert(spec(&svc).cluster_ip.unwrap_or_default()));
    }
    assert_eq!(ports, (30000..=30004).collect::<HashSet<i32>>());
    let err = create("np5".into(), "NodePort")
        .await?
        .expect_err("no port left");
    assert_eq!(api_code(&err), Some(500), "{err}");
    assert!(err.to_string().contains("range is full"), "{err}");
    let mut i = 0;
    let last_err = loop {
        match create(format!("c{i}"), "ClusterIP").await? {
            Ok(svc) => {
                let ip = spec(&svc).cluster_ip.unwrap_or_default();
                assert!(ips.insert(ip.clone()), "{ip} handed out twice");
            }
            Err(e) => break e,
        }
        i += 1;
        assert!(i <= 14, "more Services than addresses");
    };
    assert!(last_err.to_string().contains("range is full"), "{last_err}");
    assert_eq!(ips.len(), 13, "{ips:?}");
    assert!(
        !ips.contains("10.100.0.1"),
        "the reserved address was handed out"
    );

    // One address freed: the next create gets exactly that one.
    let freed = spec(&api.get("c0").await?).cluster_ip.unwrap_or_default();
    api.delete("c0", &Default::default()).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let again = loop {
        match create("again".into(), "ClusterIP").await? {
            Ok(svc) => break svc,
            // The record goes right after the Service; retry until it has.
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("range is full"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    assert_eq!(spec(&again).cluster_ip.unwrap_or_default(), freed);
    ts.stop().await;
    Ok(())
}
