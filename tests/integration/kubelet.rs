//! The kubelet's pod workers (skiff-node::kubelet::run) against a test API server, as root.
//!
//! Every test makes its own node network namespace (no uplink), a unique netns prefix, cgroup
//! parent and node name, and a Drop guard that removes every namespace, cgroup and process.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_apiserver::server::node_proxy::issue_kubelet_serving_cert;
use skiff_node::config::{KubeletConfig, NodeAllocatable};
use skiff_node::images::{ImageMap, ImageResolver};
use skiff_node::sandbox::{IpCidr, list_netns, netns_path, run_in_netns_async};
use skiff_node::streaming::StreamingConfig;
use tokio::sync::oneshot;

use crate::apiserver::{Kubectl, TestServer};
use crate::controllers::{eventually, register_node};
use crate::privileged::{NodeFixture, privileged};

const CIDR: &str = "10.244.9.0/24";

/// The node fixture with the Node object's name.
struct Fixture {
    node: String,
    fx: NodeFixture,
}

impl std::ops::Deref for Fixture {
    type Target = NodeFixture;
    fn deref(&self) -> &NodeFixture {
        &self.fx
    }
}

impl Fixture {
    fn new() -> Result<Self> {
        let fx = NodeFixture::new("k")?;
        Ok(Fixture {
            node: format!("kubelet-node-{}", fx.node_ns),
            fx,
        })
    }

    fn config(&self) -> Result<KubeletConfig> {
        let cidr: IpCidr = CIDR.parse().context("cidr")?;
        let sc = self.sandbox_config(
            vec![cidr],
            "nameserver 192.0.2.53\n",
            "127.0.0.1 localhost\n",
        )?;
        let map =
            ImageMap::parse("test-map.yaml", r#""busybox*": ["/bin/sh"]"#).context("image map")?;
        Ok(KubeletConfig {
            node_name: self.node.clone(),
            root_dir: self.dir.path().join("kubelet"),
            sandbox: sc,
            images: ImageResolver::new(
                Some(map),
                PathBuf::from(env!("CARGO_BIN_EXE_skiff-builtin")),
            ),
            streaming: None,
            streaming_addr: Default::default(),
            host_ips: vec!["192.0.2.10".parse()?],
            node_allocatable: NodeAllocatable {
                cpu: Some("2".into()),
                memory: Some("4Gi".into()),
            },
        })
    }
}

/// An API server, a registered node and its kubelet.
struct Cluster {
    client: kube::Client,
    stop: Option<oneshot::Sender<()>>,
    kubelet: Option<tokio::task::JoinHandle<Result<(), skiff_node::kubelet::KubeletError>>>,
    server: Option<TestServer>,
    // Last: removed after the kubelet stopped.
    fx: Fixture,
    _api_dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        Self::start_with(false).await
    }

    /// With `streaming`, the kubelet also serves logs/exec/port-forward on 127.0.0.1:<free>
    /// and the Node says where.
    async fn start_with(streaming: bool) -> Result<Cluster> {
        let fx = Fixture::new()?;
        let api_dir = tempfile::tempdir()?;
        let server = TestServer::start(api_dir.path()).await?;
        let client = server.client().await?;
        register_node(
            &client,
            &fx.node,
            json!({}),
            json!({"podCIDR": CIDR, "podCIDRs": [CIDR]}),
            json!({"cpu": "2", "memory": "4Gi", "pods": "110"}),
            "True",
        )
        .await?;
        let mut config = fx.config()?;
        if streaming {
            let issued =
                issue_kubelet_serving_cert(api_dir.path(), &fx.node, &["127.0.0.1".to_owned()])?;
            let mut sc = StreamingConfig::new(
                issued.cert_pem,
                issued.key_pem,
                server.server.ca_pem().to_owned(),
            );
            sc.addr = "127.0.0.1:0".parse()?;
            config.streaming = Some(sc);
        }
        let bound = config.streaming_addr.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let kubelet = tokio::spawn(skiff_node::kubelet::run(
            client.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        if streaming {
            let addr = eventually("the kubelet streaming server listens", || {
                let bound = bound.clone();
                async move { Ok(bound.get().copied()) }
            })
            .await?;
            let nodes: Api<Node> = Api::all(client.clone());
            nodes
                .patch_status(
                    &fx.node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": addr.port()}}}})),
                )
                .await?;
        }
        Ok(Cluster {
            client,
            stop: Some(stop),
            kubelet: Some(kubelet),
            server: Some(server),
            fx,
            _api_dir: api_dir,
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn create_pod(&self, name: &str, spec: serde_json::Value) -> Result<Pod> {
        let mut spec = spec;
        spec["nodeName"] = json!(self.fx.node);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))?;
        Ok(self.pods().create(&PostParams::default(), &pod).await?)
    }

    /// Polls the pod until `check` accepts it.
    async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Result<Pod> {
        let pods = self.pods();
        eventually(what, || {
            let pods = pods.clone();
            let name = name.to_owned();
            let check = &check;
            async move {
                let pod = pods.get(&name).await?;
                Ok(check(&pod).then_some(pod))
            }
        })
        .await
    }

    /// The admin kubeconfig of the test API server, for the real kubectl.
    fn kubeconfig(&self) -> Result<PathBuf> {
        let server = self.server.as_ref().context("server")?;
        Ok(server.server.kubeconfig_path().to_path_buf())
    }

    fn log_root(&self) -> PathBuf {
        self.fx.dir.path().join("kubelet").join("logs")
    }

    async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(k) = self.kubelet.take() {
            k.await??;
        }
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        Ok(())
    }
}

fn container_state(pod: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    let st = pod.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .cloned()
}

fn waiting_reason(pod: &Pod, name: &str) -> Option<(String, String)> {
    let w = container_state(pod, name)?.state?.waiting?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

/// Every log line's content of `<log_root>/default_<pod>_<uid>/<container>/0.log`.
fn read_log(root: &Path, pod: &Pod, container: &str) -> String {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let path = root
        .join(format!("default_{name}_{uid}"))
        .join(container)
        .join("0.log");
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_pod_runs_answers_http_and_is_removed_on_delete() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        "echo",
        json!({"terminationGracePeriodSeconds": 5,
               "containers": [{"name": "echo", "image": "skiff.dev/echo"}]}),
    )
    .await?;
    let pod = c
        .wait_pod("echo", "the echo pod is Running and Ready", |p| {
            let st = p.status.clone().unwrap_or_default();
            st.phase.as_deref() == Some("Running")
                && st
                    .container_statuses
                    .iter()
                    .flatten()
                    .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some()))
        })
        .await?;
    let st = pod.status.clone().unwrap_or_default();
    let pod_ip: IpAddr = st.pod_ip.clone().context("podIP")?.parse()?;
    let cidr: IpCidr = CIDR.parse()?;
    ensure!(cidr.contains(&pod_ip), "podIP {pod_ip} not in {CIDR}");
    ensure!(
        st.host_ip.as_deref() == Some("192.0.2.10"),
        "hostIP {:?}",
        st.host_ip
    );
    ensure!(st.start_time.is_some(), "startTime missing");
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    ensure!(
        list_netns(&c.fx.prefix).iter().any(|n| n.contains(&uid)),
        "pod netns missing: {:?}",
        list_netns(&c.fx.prefix)
    );

    // HTTP from the node namespace to the pod IP.
    let node_ns = netns_path(&c.fx.node_ns);
    let body = eventually("the echo pod answers HTTP from the node", || {
        let node_ns = node_ns.clone();
        async move {
            let got = run_in_netns_async(Some(node_ns), move || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(
                    &(pod_ip, 3000).into(),
                    Duration::from_secs(5),
                )?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.write_all(b"GET /hello HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })
            .await?;
            Ok(got.ok())
        }
    })
    .await?;
    ensure!(body.starts_with("HTTP/1.1 200"), "answer: {body}");
    ensure!(body.contains("/hello"), "answer: {body}");

    // Delete: SIGTERM, the worker removes the sandbox and its netns.
    c.pods().delete("echo", &DeleteParams::default()).await?;
    eventually("the pod's netns is removed after delete", || {
        let prefix = c.fx.prefix.clone();
        let uid = uid.clone();
        async move { Ok((!list_netns(&prefix).iter().any(|n| n.contains(&uid))).then_some(())) }
    })
    .await?;
    ensure!(
        c.pods().get_opt("echo").await?.is_none(),
        "pod still in the API"
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_container_goes_into_crash_loop_backoff() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        "crash",
        json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
               "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo bye; exit 1"]}]}),
    )
    .await?;
    let pod = c
        .wait_pod("crash", "CrashLoopBackOff with restartCount >= 1", |p| {
            container_state(p, "main").is_some_and(|s| {
                s.restart_count >= 1
                    && s.state
                        .as_ref()
                        .and_then(|st| st.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        == Some("CrashLoopBackOff")
            })
        })
        .await?;
    let last = container_state(&pod, "main")
        .and_then(|s| s.last_state)
        .and_then(|s| s.terminated)
        .context("lastState.terminated")?;
    ensure!(last.exit_code == 1, "last exit code {}", last.exit_code);
    ensure!(
        last.reason.as_deref() == Some("Error"),
        "reason {:?}",
        last.reason
    );
    ensure!(
        read_log(&c.log_root(), &pod, "main").contains("bye"),
        "log of the first instance lacks the output"
    );
    c.pods().delete("crash", &DeleteParams::default()).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_and_env_reaches_the_process() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kubelet-env", "namespace": "default"},
        "data": {"color": "teal"}
    }))?;
    cms.create(&PostParams::default(), &cm).await?;
    c.create_pod(
        "initenv",
        json!({"terminationGracePeriodSeconds": 1,
               "initContainers": [
                   {"name": "first", "image": "busybox", "command": ["sh", "-c", "echo first-ran"]},
                   {"name": "second", "image": "busybox", "command": ["sh", "-c", "echo second-ran"]}
               ],
               "containers": [{"name": "main", "image": "busybox",
                   "command": ["sh", "-c", "echo ip=$POD_IP color=$COLOR; sleep 3600"],
                   "env": [
                       {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                       {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "kubelet-env", "key": "color"}}}
                   ]}]}),
    )
    .await?;
    let pod = c
        .wait_pod("initenv", "the pod runs after its init containers", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await?;
    let done = |name: &str| -> Result<i64> {
        let t = container_state(&pod, name)
            .and_then(|s| s.state)
            .and_then(|s| s.terminated)
            .with_context(|| format!("init container {name} not terminated"))?;
        ensure!(t.exit_code == 0, "{name} exit {}", t.exit_code);
        Ok(t.finished_at.map(|f| f.0.as_millisecond()).unwrap_or(0))
    };
    let (f1, f2) = (done("first")?, done("second")?);
    ensure!(f1 <= f2, "first finished after second");
    let root = c.log_root();
    ensure!(read_log(&root, &pod, "first").contains("first-ran"));
    ensure!(read_log(&root, &pod, "second").contains("second-ran"));
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("podIP")?;
    let want = format!("ip={pod_ip} color=teal");
    let pod2 = pod.clone();
    eventually("the container's log shows its env", || {
        let root = root.clone();
        let want = want.clone();
        let pod = pod2.clone();
        async move { Ok(read_log(&root, &pod, "main").contains(&want).then_some(())) }
    })
    .await?;
    c.pods().delete("initenv", &DeleteParams::default()).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_shows_pull_errors_with_the_message() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        "noimage",
        json!({"containers": [{"name": "main", "image": "registry.invalid/nothing:1"}]}),
    )
    .await?;
    let pod = c
        .wait_pod("noimage", "ErrImagePull or ImagePullBackOff", |p| {
            waiting_reason(p, "main")
                .is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
        })
        .await?;
    let (_, message) = waiting_reason(&pod, "main").context("waiting")?;
    ensure!(
        message.contains("registry.invalid/nothing:1"),
        "message: {message}"
    );
    c.wait_pod("noimage", "ImagePullBackOff", |p| {
        waiting_reason(p, "main").is_some_and(|(r, _)| r == "ImagePullBackOff")
    })
    .await?;
    c.pods().delete("noimage", &DeleteParams::default()).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_runs_prestop_then_sigterm() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    let marker = c.fx.dir.path().join("prestop-ran");
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.2; done";
    c.create_pod(
        "graceful",
        json!({"terminationGracePeriodSeconds": 20,
               "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
                   "lifecycle": {"preStop": {"exec": {"command":
                       ["sh", "-c", format!("echo hook > {}", marker.display())]}}}}]}),
    )
    .await?;
    let pod = c
        .wait_pod("graceful", "the pod is Running", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await?;
    let root = c.log_root();
    let p2 = pod.clone();
    eventually("the container started its trap", || {
        let root = root.clone();
        let pod = p2.clone();
        async move {
            Ok(read_log(&root, &pod, "main")
                .contains("started")
                .then_some(()))
        }
    })
    .await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    c.pods()
        .delete("graceful", &DeleteParams::default())
        .await?;
    eventually("the pod's netns is removed after delete", || {
        let prefix = c.fx.prefix.clone();
        let uid = uid.clone();
        async move { Ok((!list_netns(&prefix).iter().any(|n| n.contains(&uid))).then_some(())) }
    })
    .await?;
    ensure!(
        std::fs::read_to_string(&marker).is_ok_and(|t| t.contains("hook")),
        "the preStop hook did not run"
    );
    ensure!(
        read_log(&root, &pod, "main").contains("got-term"),
        "the container did not get SIGTERM: {}",
        read_log(&root, &pod, "main")
    );
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_command_is_a_start_error_naming_it() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        "nocmd",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "main", "image": "busybox", "command": ["no-such-command-xyz"]}]}),
    )
    .await?;
    let pod = c
        .wait_pod(
            "nocmd",
            "the container is Terminated with StartError",
            |p| {
                container_state(p, "main")
                    .and_then(|s| s.state)
                    .and_then(|s| s.terminated)
                    .is_some_and(|t| t.reason.as_deref() == Some("StartError"))
            },
        )
        .await?;
    let t = container_state(&pod, "main")
        .and_then(|s| s.state)
        .and_then(|s| s.terminated)
        .context("terminated")?;
    ensure!(
        t.message
            .unwrap_or_default()
            .contains("no-such-command-xyz"),
        "message does not name the command"
    );
    c.wait_pod("nocmd", "the pod Failed", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await?;
    c.pods().delete("nocmd", &DeleteParams::default()).await?;
    c.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_and_logs_reach_the_pod() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start_with(true).await?;
    c.create_pod(
        "shell",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [{"name": "main", "image": "busybox",
                   "env": [{"name": "GREETING", "value": "hi-env"}],
                   "command": ["sh", "-c", "echo hello-from-shell; sleep 3600"]},
                   {"name": "web", "image": "skiff.dev/echo"}]}),
    )
    .await?;
    c.wait_pod("shell", "the pod is Running and Ready", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.container_statuses.iter().flatten().all(|c| c.ready)
        })
    })
    .await?;
    let kubeconfig = c.kubeconfig()?;
    let k = Kubectl::default_binary(&kubeconfig);
    let out = k.ok(&["exec", "shell", "--", "hostname"]).await?;
    ensure!(out.trim() == "shell", "exec hostname gave {out:?}");
    let out = k
        .ok(&["exec", "shell", "--", "cat", "/etc/resolv.conf"])
        .await?;
    ensure!(out.contains("10.96.0.10"), "pod resolv.conf: {out}");
    let out = k
        .ok(&["exec", "shell", "--", "sh", "-c", "echo $GREETING"])
        .await?;
    ensure!(out.trim() == "hi-env", "exec env: {out:?}");
    let k2 = Kubectl::default_binary(&kubeconfig);
    let logs = eventually("kubectl logs shows the output", || {
        let k = &k2;
        async move {
            let out = k.ok(&["logs", "shell"]).await?;
            Ok(out.contains("hello-from-shell").then_some(out))
        }
    })
    .await?;
    ensure!(logs.contains("hello-from-shell"));
    port_forward_get(&kubeconfig, "shell", 3000).await?;
    c.pods().delete("shell", &DeleteParams::default()).await?;
    c.shutdown().await
}

/// `kubectl exec -it` gives the process a terminal: `tty` names a /dev/pts device, the size
/// is kubectl's terminal's (sent on the resize channel before the process starts), TERM is
/// set, and the exit code comes back. Over websocket (kubectl 1.33) and SPDY (1.29).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_with_a_tty_gets_a_terminal_its_size_and_exit_code() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start_with(true).await?;
    c.create_pod(
        "term",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [{"name": "main", "image": "busybox",
                   "command": ["sh", "-c", "sleep 3600"]}]}),
    )
    .await?;
    c.wait_pod("term", "the pod is Running", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase.as_deref() == Some("Running"))
    })
    .await?;
    let kubeconfig = c.kubeconfig()?;
    for minor in [33, 29] {
        let k = Kubectl::version(minor, &kubeconfig);
        let (code, out) = exec_in_terminal(
            &k,
            "term",
            "tty; stty size; echo TERM=$TERM; exit 7",
            (45, 123),
        )
        .await?;
        ensure!(
            out.contains("/dev/pts/") && !out.contains("not a tty"),
            "kubectl 1.{minor}: tty: {out:?}"
        );
        ensure!(out.contains("45 123"), "kubectl 1.{minor}: size: {out:?}");
        ensure!(
            out.contains("TERM=xterm"),
            "kubectl 1.{minor}: TERM: {out:?}"
        );
        ensure!(code == Some(7), "kubectl 1.{minor}: exit {code:?}: {out:?}");
    }
    c.pods().delete("term", &DeleteParams::default()).await?;
    c.shutdown().await
}

/// Runs `kubectl exec -it <pod> -- sh -c <command>` on a terminal of `rows`x`cols` made by
/// util-linux `script` (kubectl only asks for a TTY when its stdin is one). Returns script's
/// exit code (kubectl's, with `-e`) and everything that reached the terminal.
async fn exec_in_terminal(
    k: &Kubectl,
    pod: &str,
    command: &str,
    (rows, cols): (u16, u16),
) -> Result<(Option<i32>, String)> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line = format!(
        "stty rows {rows} cols {cols} && exec {} --kubeconfig {} exec -it {pod} -- sh -c {}",
        quote(&k.binary.to_string_lossy()),
        quote(&k.kubeconfig.to_string_lossy()),
        quote(command),
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        // A pipe held open to the end: at EOF on its stdin, script would type Ctrl-D into
        // the terminal, which kubectl forwards.
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("run util-linux `script` (apt-get install util-linux)")?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().context("script stdout")?;
    let run = async {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out).await?;
        let status = child.wait().await?;
        anyhow::Ok((status.code(), String::from_utf8_lossy(&out).into_owned()))
    };
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("kubectl exec -it did not end within 60 s")?;
    drop(stdin);
    result
}

/// A kubectl process killed (by its PID, through `Child`) when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl port-forward pod/<pod> :<port>`, then an HTTP GET through it must answer 200.
pub(crate) async fn port_forward_get(kubeconfig: &Path, pod: &str, port: u16) -> Result<()> {
    use std::io::BufRead;
    let k = Kubectl::default_binary(kubeconfig);
    let target = format!(":{port}");
    let mut cmd = k.command(&["port-forward", &format!("pod/{pod}"), &target])?;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = KillOnDrop(cmd.spawn()?);
    let stdout = child.0.stdout.take().context("kubectl stdout")?;
    // Keep draining stdout: kubectl dies of SIGPIPE when it writes to a closed pipe.
    let (port_tx, port_rx) = oneshot::channel::<u16>();
    std::thread::spawn(move || {
        let mut port_tx = Some(port_tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:")
                && let Some(p) = rest.split(' ').next().and_then(|p| p.parse().ok())
                && let Some(tx) = port_tx.take()
            {
                let _ = tx.send(p);
            }
        }
    });
    let local = port_rx
        .await
        .context("kubectl port-forward ended without forwarding")?;
    let answer = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", local))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(b"GET /pf HTTP/1.1\r\nHost: pf\r\nConnection: close\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .await??;
    ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "port-forward answer: {answer}"
    );
    drop(child);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pod_gets_the_node_ips_and_no_netns() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    let pod = c
        .create_pod(
            "hostnet",
            json!({"hostNetwork": true, "terminationGracePeriodSeconds": 1,
                   "containers": [{"name": "main", "image": "busybox",
                       "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                       "command": ["sh", "-c", "echo ip=$POD_IP; sleep 3600"]}]}),
        )
        .await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod = c
        .wait_pod("hostnet", "the hostNetwork pod is Running", |p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .await?;
    let st = pod.status.clone().unwrap_or_default();
    ensure!(
        st.pod_ip.as_deref() == Some("192.0.2.10"),
        "podIP {:?}",
        st.pod_ip
    );
    ensure!(
        !list_netns(&c.fx.prefix).iter().any(|n| n.contains(&uid)),
        "a hostNetwork pod got its own netns"
    );
    let root = c.log_root();
    eventually("the process sees the node IP as POD_IP", || {
        let root = root.clone();
        let pod = pod.clone();
        async move {
            Ok(read_log(&root, &pod, "main")
                .contains("ip=192.0.2.10")
                .then_some(()))
        }
    })
    .await?;
    c.pods().delete("hostnet", &DeleteParams::default()).await?;
    c.shutdown().await
}

/// Volumes reach the container at their mountPaths; readiness probes drive `ready` (and the
/// pod's Ready condition); failed probes become `Unhealthy` Events; a failing liveness probe
/// restarts its container.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_and_volumes_drive_the_pod() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "probe-cfg"}, "data": {"greeting": "hello-volume"}}),
        )?,
    )
    .await?;
    let mnt = c.fx.dir.path().join("mnt");
    let (cfg, scratch) = (mnt.join("cfg"), mnt.join("scratch"));
    let (cfg, scratch) = (cfg.display().to_string(), scratch.display().to_string());
    c.create_pod(
        "probed",
        json!({"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
               "volumes": [{"name": "cfg", "configMap": {"name": "probe-cfg"}}, {"name": "scratch", "emptyDir": {}}],
               "containers": [
                 {"name": "main", "image": "busybox",
                  "command": ["sh", "-c", format!("cat {cfg}/greeting; echo; touch {scratch}/ready; sleep 3600")],
                  "volumeMounts": [{"name": "cfg", "mountPath": cfg}, {"name": "scratch", "mountPath": scratch}],
                  "readinessProbe": {"exec": {"command": ["sh", "-c", format!("test -f {scratch}/ready")]}, "periodSeconds": 1}},
                 {"name": "closed", "image": "busybox", "command": ["sleep", "3600"],
                  "readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 1}},
                 {"name": "live", "image": "busybox", "command": ["sleep", "3600"],
                  "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}},
               ]}),
    )
    .await?;
    let pod = c
        .wait_pod("probed", "main ready, live restarted", |p| {
            container_state(p, "main").is_some_and(|s| s.ready)
                && container_state(p, "live").is_some_and(|s| s.restart_count >= 1)
        })
        .await?;
    ensure!(
        !container_state(&pod, "closed").is_some_and(|s| s.ready),
        "a container whose readiness probe hits a closed port is ready"
    );
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .context("Ready condition")?;
    ensure!(
        ready.status == "False",
        "pod Ready with an unready container"
    );
    ensure!(
        read_log(&c.log_root(), &pod, "main").contains("hello-volume"),
        "the configMap volume did not reach the container"
    );
    // A changed ConfigMap reaches the running pod's volume (through the atomic `..data` swap).
    cms.patch(
        "probe-cfg",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"greeting": "updated-volume"}})),
    )
    .await?;
    let file =
        c.fx.dir
            .path()
            .join("kubelet/pods")
            .join(pod.metadata.uid.clone().unwrap_or_default())
            .join("volumes/cfg/greeting");
    eventually("the configMap volume shows the update", || {
        let file = file.clone();
        async move {
            Ok(std::fs::read_to_string(&file)
                .is_ok_and(|t| t == "updated-volume")
                .then_some(()))
        }
    })
    .await?;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(c.client.clone(), "default");
    let messages = eventually("Unhealthy and Killing events", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&kube::api::ListParams::default().fields("involvedObject.name=probed"))
                .await?;
            let messages: Vec<String> = list
                .items
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    )
                })
                .collect();
            let found = messages
                .iter()
                .any(|m| m.starts_with("Unhealthy Readiness probe failed"))
                && messages
                    .iter()
                    .any(|m| m.starts_with("Killing Container live failed liveness probe"));
            Ok(found.then_some(messages))
        }
    })
    .await?;
    ensure!(!messages.is_empty());
    c.pods().delete("probed", &DeleteParams::default()).await?;
    c.shutdown().await
}

/// The pods users get wrong — an image that does not exist, a command that is not found, a
/// liveness probe on a closed port, a memory limit exceeded — each show their reason in
/// `kubectl describe pod`, and a healthy pod on the same node is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_pods_show_their_reason_in_kubectl_describe() -> Result<()> {
    if !privileged("kubelet") {
        return Ok(());
    }
    let c = Cluster::start().await?;
    c.create_pod(
        "healthy",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [{"name": "web", "image": "skiff.dev/echo",
                   "readinessProbe": {"httpGet": {"path": "/health", "port": 3000}, "periodSeconds": 1}}]}),
    )
    .await?;
    c.create_pod(
        "badimage",
        json!({"containers": [{"name": "main", "image": "example.invalid/app:1"}]}),
    )
    .await?;
    c.create_pod(
        "badcmd",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "main", "image": "busybox", "command": ["no-such-command-xyz"]}]}),
    )
    .await?;
    c.create_pod(
        "closedport",
        json!({"terminationGracePeriodSeconds": 1,
               "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"],
                   "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 1}}]}),
    )
    .await?;
    // `tail` keeps every byte of a file with no newline: it grows until the limit stops it.
    c.create_pod(
        "oom",
        json!({"restartPolicy": "Never",
               "containers": [{"name": "main", "image": "busybox", "command": ["tail", "/dev/zero"],
                   "resources": {"limits": {"memory": "32Mi"}}}]}),
    )
    .await?;

    let terminated_reason = |p: &Pod| {
        container_state(p, "main")
            .and_then(|s| s.state)
            .and_then(|s| s.terminated)
            .and_then(|t| t.reason)
    };
    c.wait_pod("badimage", "ImagePullBackOff", |p| {
        waiting_reason(p, "main").is_some_and(|(r, _)| r == "ImagePullBackOff")
    })
    .await?;
    c.wait_pod("badcmd", "StartError", |p| {
        terminated_reason(p).as_deref() == Some("StartError")
    })
    .await?;
    c.wait_pod("closedport", "a liveness restart", |p| {
        container_state(p, "main").is_some_and(|s| s.restart_count >= 1)
    })
    .await?;
    c.wait_pod("oom", "OOMKilled", |p| {
        terminated_reason(p).as_deref() == Some("OOMKilled")
    })
    .await?;

    let kubeconfig = c.kubeconfig()?;
    let k = Kubectl::default_binary(&kubeconfig);
    let expectations: [(&str, &[&str]); 4] = [
        (
            "badimage",
            &[
                "ImagePullBackOff",
                "Failed to pull image \"example.invalid/app:1\"",
            ],
        ),
        ("badcmd", &["StartError", "no-such-command-xyz"]),
        (
            "closedport",
            &["Liveness probe failed", "connection refused"],
        ),
        ("oom", &["OOMKilled"]),
    ];
    for (pod, wanted) in expectations {
        let text = eventually(
            &format!("kubectl describe pod {pod} names the reason"),
            || {
                let k = &k;
                async move {
                    let out = k.ok(&["describe", "pod", pod]).await?;
                    Ok(wanted.iter().all(|w| out.contains(w)).then_some(out))
                }
            },
        )
        .await?;
        ensure!(!text.is_empty());
    }
    let healthy = c.pods().get("healthy").await?;
    let web = container_state(&healthy, "web").context("web status")?;
    ensure!(
        web.ready && web.restart_count == 0,
        "the healthy pod was disturbed: {web:?}"
    );
    for pod in ["healthy", "badimage", "badcmd", "closedport", "oom"] {
        c.pods().delete(pod, &DeleteParams::default()).await?;
    }
    c.shutdown().await
}
