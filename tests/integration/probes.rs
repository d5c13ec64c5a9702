//! Probes and volumes (skiff-node::probes, skiff-node::volumes) against real pod sandboxes, as root.
//!
//! Each test makes its own node network namespace (no uplink), a manager with a unique netns
//! prefix and cgroup parent, and Drop guards that remove namespaces, cgroups, processes and
//! the tmpfs mounts they made, even when the test fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EmptyDirVolumeSource, ExecAction, Pod, PodSpec, Probe,
    SecretVolumeSource, Service, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_node::env::EnvSources;
use skiff_node::probes::{ProbeKind, Prober, ProberOptions, SandboxProbeTarget};
use skiff_node::sandbox::{
    IpCidr, PodSandboxSpec, Sandbox, SandboxConfig, SandboxManager, run_in_netns,
};
use skiff_node::volumes::{PodVolumes, VolumeOptions, teardown_dir};

use crate::privileged::{NodeFixture, privileged};

/// The node fixture plus the pod dir whose tmpfs volumes are unmounted first on Drop.
struct Fixture(NodeFixture);

impl std::ops::Deref for Fixture {
    type Target = NodeFixture;
    fn deref(&self) -> &NodeFixture {
        &self.0
    }
}

impl Fixture {
    fn new() -> Result<Self> {
        Ok(Fixture(NodeFixture::new("p")?))
    }

    fn config(&self) -> SandboxConfig {
        let cidrs: Vec<IpCidr> = vec!["10.244.9.0/24".parse().expect("v4 cidr")];
        self.sandbox_config(cidrs, "nameserver 192.0.2.53\n", "127.0.0.1 localhost\n")
            .expect("sandbox config")
    }

    fn pod_dir(&self) -> PathBuf {
        self.dir.path().join("poddir")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = teardown_dir(&skiff_node::volumes::volumes_dir(&self.pod_dir()));
    }
}

fn spec(uid: &str, name: &str) -> PodSandboxSpec {
    PodSandboxSpec {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        hostname: name.into(),
        ..Default::default()
    }
}

struct Sources;

impl EnvSources for Sources {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        (name == "cfg").then(|| BTreeMap::from([("greeting".into(), "hello".into())]))
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        (name == "sec").then(|| BTreeMap::from([("token".into(), b"s3cret".to_vec())]))
    }
    fn services(&self) -> Vec<Service> {
        Vec::new()
    }
    fn allocatable(&self, _resource: &str) -> Option<String> {
        None
    }
}

async fn sh(
    sb: &Sandbox,
    mounts: &[skiff_node::sandbox::Mount],
    script: &str,
) -> Result<(bool, String)> {
    let out = sb
        .command_with_mounts("sh", mounts)?
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .await
        .context("spawn sh in the sandbox")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_configmap_and_shared_memory_emptydir_in_pod_processes() -> Result<()> {
    if !privileged("probes/volumes") {
        return Ok(());
    }
    let fx = Fixture::new()?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let sb = mgr.create(&spec("vvvv-0001", "vols")).await?;
    let pod = Pod {
        spec: Some(PodSpec {
            volumes: Some(vec![
                Volume {
                    name: "cfg".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: "cfg".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "sec".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("sec".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "shared".into(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity("8Mi".into())),
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let vols = PodVolumes::setup(&pod, &fx.pod_dir(), &Sources, VolumeOptions::default())?;
    let shared = vols.path("shared").context("shared volume")?.to_path_buf();
    ensure!(is_mounted(&shared), "memory emptyDir is a tmpfs mount");
    let sec = vols.path("sec").context("secret volume")?.to_path_buf();
    ensure!(is_mounted(&sec), "secret volume is a tmpfs mount");
    ensure!(std::fs::read(sec.join("token"))? == b"s3cret");

    // Mount targets under the temp dir: processes share the node's root filesystem.
    let root = fx.dir.path().join("mnt");
    let mount = |name: &str, path: &Path| VolumeMount {
        name: name.into(),
        mount_path: path.display().to_string(),
        ..Default::default()
    };
    let writer = Container {
        name: "writer".into(),
        volume_mounts: Some(vec![
            mount("cfg", &root.join("a/config")),
            mount("shared", &root.join("a/shared")),
        ]),
        ..Default::default()
    };
    let reader = Container {
        name: "reader".into(),
        volume_mounts: Some(vec![mount("shared", &root.join("b/data"))]),
        ..Default::default()
    };
    let wm = vols.mounts(&writer)?;
    let rm = vols.mounts(&reader)?;
    let a = root.join("a");
    let (ok, out) = sh(
        &sb,
        &wm,
        &format!(
            "cat {a}/config/greeting > {a}/shared/out && echo x > {a}/config/new",
            a = a.display()
        ),
    )
    .await?;
    ensure!(!ok, "configMap mount must be read-only: {out}");
    ensure!(out.contains("Read-only"), "{out}");
    let (ok, out) = sh(
        &sb,
        &rm,
        &format!("cat {}/data/out", root.join("b").display()),
    )
    .await?;
    ensure!(ok && out == "hello", "reader saw {out:?}");
    // The mounts were private to the processes: the node sees empty targets.
    ensure!(!root.join("a/config/greeting").exists());
    ensure!(std::fs::read(shared.join("out"))? == b"hello");

    vols.teardown()?;
    ensure!(!is_mounted(&shared), "tmpfs unmounted on teardown");
    ensure!(!is_mounted(&sec), "secret tmpfs unmounted on teardown");
    ensure!(!fx.pod_dir().join("volumes").exists());
    mgr.remove(&sb.uid).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_reach_the_pod_ip_and_exec_inside_the_pod() -> Result<()> {
    if !privileged("probes/volumes") {
        return Ok(());
    }
    let fx = Fixture::new()?;
    let mgr = SandboxManager::new(fx.config()).await?;
    let sb = mgr.create(&spec("pppp-0001", "probed")).await?;
    let pod_ip = *sb.ips.first().context("pod has an IP")?;
    // A listener inside the pod's namespace, on its IP.
    let listener = run_in_netns(sb.netns_path.as_deref(), move || {
        std::net::TcpListener::bind(SocketAddr::new(pod_ip, 0))
    })??;
    let port = listener.local_addr()?.port();
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let accept = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    let flag = fx.dir.path().join("healthy");
    std::fs::write(&flag, "")?;
    let container = Container {
        name: "app".into(),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                // Inside the pod (its hostname) with the container's env: ready only there.
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "test \"$(hostname)\" = probed && test \"$PROBE_ENV\" = yes && test -f {}",
                        flag.display()
                    ),
                ]),
            }),
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                host: None,
            }),
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    let target = Arc::new(
        SandboxProbeTarget::new(&mgr, sb.clone())
            .for_container(Vec::new(), vec![("PROBE_ENV".into(), "yes".into())]),
    );
    let options = ProberOptions {
        second: Duration::from_millis(100),
    };
    let mut h = Prober::spawn_with(&container, target, options);
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, h.ready.wait_for(|r| *r))
        .await
        .context("never ready")??;
    std::fs::remove_file(&flag)?;
    tokio::time::timeout(deadline, h.ready.wait_for(|r| !*r))
        .await
        .context("never unready after the flag went away")??;
    // A probe "second" is 100 ms here: on a busy machine an exec can time out before the
    // flag's removal is seen; the event that counts is the exit status.
    let mut event = h.events.recv().await.context("an Unhealthy event")?;
    while event.message.ends_with("timed out") {
        event = h.events.recv().await.context("an Unhealthy event")?;
    }
    ensure!(
        event.message == "Readiness probe failed: command \"sh -c test \\\"$(hostname)\\\" = probed && test \\\"$PROBE_ENV\\\" = yes && test -f ".to_owned()
            + &format!("{}\" exited with 1", flag.display()),
        "{}",
        event.message
    );
    ensure!(
        h.restart.borrow().is_none(),
        "liveness (tcpSocket to the pod IP) passes while the listener is up"
    );
    // Close the listener: the tcpSocket liveness probe fails twice and asks for a restart.
    accept.abort();
    let restart = tokio::time::timeout(deadline, h.restart.wait_for(Option::is_some))
        .await
        .context("liveness never failed")??
        .clone()
        .context("restart")?;
    ensure!(restart.kind == ProbeKind::Liveness);

    // The tcpSocket handler to a closed port says what upstream says.
    let probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(1),
            host: None,
        }),
        ..Default::default()
    };
    let target = SandboxProbeTarget::new(&mgr, sb.clone());
    let err = skiff_node::probes::run_handler(&probe, &container, &target, Duration::from_secs(10))
        .await
        .err()
        .context("port 1 is closed")?;
    ensure!(
        err == format!(
            "dial tcp {}: connect: connection refused",
            SocketAddr::new(pod_ip, 1)
        ),
        "{err}"
    );
    mgr.remove(&sb.uid).await?;
    Ok(())
}
