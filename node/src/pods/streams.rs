//! The streaming server's view of the pods: exec and port-forward in sandboxes, log folders.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::net::TcpStream;

use super::sources::{Caches, NamespaceSources};
use super::{PodEntry, PodRegistry};
use crate::env::container_env;
use crate::logs::container_log_dir;
use crate::streaming::{
    BoxRead, BoxWrite, ContainerTarget, ExecChild, ExecRequest, PodStreams, PodTarget, StreamError,
};

/// [`PodStreams`] over the kubelet's pod registry.
#[derive(Debug, Clone)]
pub struct KubeletStreams {
    pub registry: PodRegistry,
    pub log_root: PathBuf,
    /// For exec's environment (the container's env, as upstream's exec gets).
    pub caches: Option<Caches>,
}

impl KubeletStreams {
    /// The container's environment (PATH at least), as its main process got it.
    fn exec_env(&self, target: &ContainerTarget) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let (Some(entry), Some(caches)) = (self.registry.get(&target.uid), &self.caches) {
            let pod = super::container::with_known_ips(entry.pod.borrow().clone(), &entry);
            let container = pod.spec.as_ref().and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == target.container)
                    .cloned()
            });
            if let Some(c) = container {
                let sources = NamespaceSources {
                    caches,
                    namespace: &target.namespace,
                };
                env = container_env(&pod, &c, &sources).unwrap_or_default();
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.insert(0, ("PATH".into(), super::container::DEFAULT_PATH.into()));
        }
        env
    }

    fn entry(&self, namespace: &str, pod: &str) -> Result<Arc<PodEntry>, StreamError> {
        self.registry.by_name(namespace, pod).ok_or_else(|| {
            StreamError::NotFound(format!("pod {namespace}/{pod} is not on this node"))
        })
    }

    fn sandbox_of(&self, uid: &str, what: &str) -> Result<crate::sandbox::Sandbox, StreamError> {
        self.registry
            .get(uid)
            .and_then(|e| e.sandbox())
            .ok_or_else(|| {
                StreamError::NotFound(format!(
                    "{what}: the pod has no sandbox yet (uid {uid}); wait until it runs"
                ))
            })
    }
}

#[async_trait::async_trait]
impl PodStreams for KubeletStreams {
    fn container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<ContainerTarget, StreamError> {
        let entry = self.entry(namespace, pod)?;
        let record = entry
            .record
            .lock()
            .map_err(|_| StreamError::Internal("pod record lock poisoned".into()))?
            .clone();
        let c = record
            .containers
            .iter()
            .chain(record.init_containers.iter())
            .find(|c| c.name == container)
            .ok_or_else(|| {
                StreamError::NotFound(format!(
                    "container {container} is not valid for pod {namespace}/{pod}"
                ))
            })?;
        Ok(ContainerTarget {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: entry.uid.clone(),
            container: container.to_owned(),
            log_dir: container_log_dir(&self.log_root, namespace, pod, &entry.uid, container),
            restart_count: c.restart_count.max(0) as u32,
        })
    }

    fn pod(&self, namespace: &str, pod: &str) -> Result<PodTarget, StreamError> {
        let entry = self.entry(namespace, pod)?;
        Ok(PodTarget {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: entry.uid.clone(),
        })
    }

    async fn exec(
        &self,
        target: &ContainerTarget,
        request: ExecRequest,
    ) -> Result<ExecChild, StreamError> {
        let sandbox = self.sandbox_of(&target.uid, "exec")?;
        let (program, args) = request
            .command
            .split_first()
            .ok_or_else(|| StreamError::BadRequest("exec: no command given".into()))?;
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut cmd = sandbox
            .command(program)
            .map_err(|e| StreamError::Internal(e.to_string()))?;
        cmd.args(args).env_clear().envs(self.exec_env(target));
        cmd.stdin(pipe(request.stdin))
            .stdout(pipe(request.stdout))
            .stderr(pipe(request.stderr || request.tty))
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            StreamError::Internal(format!(
                "exec {program:?} in container {} of pod {}/{}: {e}",
                target.container, target.namespace, target.pod
            ))
        })?;
        Ok(ExecChild {
            stdin: child.stdin.take().map(|s| Box::new(s) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s) as BoxRead),
            resize: None,
            exit: Box::pin(async move {
                let status = child
                    .wait()
                    .await
                    .map_err(|e| StreamError::Internal(format!("exec wait: {e}")))?;
                use std::os::unix::process::ExitStatusExt;
                Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }),
        })
    }

    async fn port_forward(&self, target: &PodTarget, port: u16) -> Result<TcpStream, StreamError> {
        let sandbox = self.sandbox_of(&target.uid, "port-forward")?;
        sandbox.connect_tcp(port).await.map_err(|e| {
            StreamError::Internal(format!(
                "port-forward to port {port} of pod {}/{}: {e}",
                target.namespace, target.pod
            ))
        })
    }
}
