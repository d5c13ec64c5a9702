//! `skiff controller`'s entry point (`skiff_controller::standalone::run`) against a TestServer with no controllers of its own: a Deployment gets scheduled pods, `/metrics` answers, and of two instances only the Lease holder acts; leader election itself (takeover after expiry, release).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_controller::leader::{Elector, LeaderConfig};
use skiff_controller::standalone::{self, Standalone};
use skiff_controller::{Config, Metrics};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{eventually, register_node};
use crate::apiserver::TestServer;

/// Short lease times so takeovers happen within the test's patience.
fn quick_leader(identity: &str) -> LeaderConfig {
    LeaderConfig {
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(3),
        retry_period: Duration::from_millis(200),
        renew_deadline: Duration::from_secs(2),
        ..LeaderConfig::skiff_controller()
    }
}

/// One `skiff controller` as the subcommand runs it, from the server's kubeconfig.
struct Instance {
    metrics: Arc<Metrics>,
    metrics_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), standalone::Error>>>,
}

impl Instance {
    async fn start(ts: &TestServer, identity: &str) -> anyhow::Result<Self> {
        let client = standalone::client_from_kubeconfig(ts.server.kubeconfig_path()).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = oneshot::channel::<()>();
        let settings = Standalone {
            controllers: Config::default(),
            leader: quick_leader(identity),
            metrics_listener: Some(listener),
        };
        let task = tokio::spawn(standalone::run(
            client,
            settings,
            metrics.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            metrics,
            metrics_addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    fn leading(&self) -> bool {
        self.metrics.leader.get() == 1
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await?;
    Ok(text)
}

fn deployment(name: &str, replicas: i32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "skiff.dev/pause"}]}}}
    }))?)
}

/// The pods of `app` that are bound to a node, once there are `want` of them.
async fn scheduled_pods(client: &kube::Client, app: &str, want: usize) -> anyhow::Result<usize> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually(&format!("{want} pods of {app} are scheduled"), || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?;
        let bound = list
            .items
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| !n.is_empty())
            })
            .count();
        Ok((bound == want && list.items.len() == want).then_some(bound))
    })
    .await
}

async fn lease_holder(client: &kube::Client) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    Ok(leases
        .get_opt("skiff-controller")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

#[tokio::test]
async fn standalone_controller_runs_deployments_and_the_scheduler_and_serves_metrics()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    register_node(
        &client,
        "solo-node",
        json!({}),
        json!({}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        "True",
    )
    .await?;
    let instance = Instance::start(&ts, "solo").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("web", 3)?)
        .await?;
    scheduled_pods(&client, "web", 3).await?;
    assert_eq!(lease_holder(&client).await?.as_deref(), Some("solo"));

    let text = http_get(instance.metrics_addr, "/metrics").await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("skiff_controller_leader 1\n"), "{text}");
    assert!(
        text.contains("skiff_scheduler_bindings_total 3\n"),
        "{text}"
    );
    assert!(
        http_get(instance.metrics_addr, "/nothing")
            .await?
            .starts_with("HTTP/1.1 404")
    );

    // A clean stop releases the Lease for a standby.
    instance.stop().await?;
    assert_eq!(lease_holder(&client).await?, None);
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn of_two_controllers_only_the_lease_holder_acts_until_it_stops() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    register_node(
        &client,
        "pair-node",
        json!({}),
        json!({}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        "True",
    )
    .await?;
    let first = Instance::start(&ts, "first").await?;
    eventually("the first instance leads", || async {
        Ok(
            (first.leading() && lease_holder(&client).await?.as_deref() == Some("first"))
                .then_some(()),
        )
    })
    .await?;
    let second = Instance::start(&ts, "second").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment("pair", 2)?)
        .await?;
    scheduled_pods(&client, "pair", 2).await?;
    // The work was done while the second instance stood by: it never ran a controller.
    assert!(!second.leading());
    assert_eq!(second.metrics.scheduler_bindings.get(), 0);
    assert_eq!(second.metrics.reconcile_rounds.get(), 0);
    assert_eq!(first.metrics.scheduler_bindings.get(), 2);
    assert_eq!(lease_holder(&client).await?.as_deref(), Some("first"));

    first.stop().await?;
    eventually("the second instance takes over", || async {
        Ok(
            (second.leading() && lease_holder(&client).await?.as_deref() == Some("second"))
                .then_some(()),
        )
    })
    .await?;
    deployments
        .patch(
            "pair",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    scheduled_pods(&client, "pair", 3).await?;
    assert_eq!(second.metrics.scheduler_bindings.get(), 1);
    second.stop().await?;
    ts.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_lease_is_taken_over_only_after_it_expires_or_is_released() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ts = TestServer::start(dir.path()).await?;
    let client = ts.client().await?;
    let mut a = Elector::new(client.clone(), quick_leader("a"));
    let mut b = Elector::new(client.clone(), quick_leader("b"));
    assert!(a.try_acquire_or_renew().await?, "a creates the lease");
    assert!(
        !b.try_acquire_or_renew().await?,
        "b must wait while a holds it"
    );
    assert!(a.try_acquire_or_renew().await?, "a renews");
    // a goes silent (no release): b takes over once the lease has not changed for its
    // duration, by b's clock.
    let started = tokio::time::Instant::now();
    // `eventually` cannot lend `b` mutably to each attempt: the same poll, by hand.
    loop {
        if b.try_acquire_or_renew().await? {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < super::DEADLINE,
            "b never took the expired lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "taken before expiry"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = leases
        .get("skiff-controller")
        .await?
        .spec
        .unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    // a comes back: b holds it now.
    assert!(!a.try_acquire_or_renew().await?);
    // b releases: a takes it at once.
    b.release().await?;
    assert!(a.try_acquire_or_renew().await?);
    ts.stop().await;
    Ok(())
}
