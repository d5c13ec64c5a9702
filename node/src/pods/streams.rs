//! The streaming server's view of the pods: exec (with a pseudo-terminal for `-t`) and
//! port-forward in sandboxes, log folders.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::sources::{Caches, NamespaceSources};
use super::{PodEntry, PodRegistry};
use crate::env::container_env;
use crate::logs::container_log_dir;
use crate::sandbox::{Pty, PtyMaster};
use crate::streaming::{
    BoxRead, BoxWrite, ContainerTarget, ExecChild, ExecRequest, PodStreams, PodTarget, StreamError,
    TerminalSize,
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
        let mut cmd = sandbox
            .command(program)
            .map_err(|e| StreamError::Internal(e.to_string()))?;
        let mut env = self.exec_env(target);
        if request.tty && !env.iter().any(|(k, _)| k == "TERM") {
            // What containerd and Docker give a tty exec: programs need it to draw.
            env.push(("TERM".into(), "xterm".into()));
        }
        cmd.args(args).env_clear().envs(env).kill_on_drop(true);
        let what = format!(
            "exec {program:?} in container {} of pod {}/{}",
            target.container, target.namespace, target.pod
        );
        if request.tty {
            return exec_tty(cmd, &request, what);
        }
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(pipe(request.stdin))
            .stdout(pipe(request.stdout))
            .stderr(pipe(request.stderr));
        let mut child = cmd
            .spawn()
            .map_err(|e| StreamError::Internal(format!("{what}: {e}")))?;
        Ok(ExecChild {
            stdin: child.stdin.take().map(|s| Box::new(s) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s) as BoxRead),
            resize: None,
            exit: Box::pin(async move { exit_code(child.wait().await) }),
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

/// How long a tty exec waits for the client's first terminal size before starting the
/// process. kubectl sends it right away; without the wait, programs that read the size once
/// at start (`stty size`, `ls` columns, a shell's first prompt) race it and see 0x0.
const INITIAL_SIZE_WAIT: Duration = Duration::from_millis(500);

/// Starts `cmd` on a new pseudo-terminal: its master is both stdout and stdin (a terminal
/// has one output, stderr included), and sizes from the client resize it.
fn exec_tty(
    mut cmd: tokio::process::Command,
    request: &ExecRequest,
    what: String,
) -> Result<ExecChild, StreamError> {
    let pty = Pty::open().map_err(|e| StreamError::Internal(format!("{what}: {e}")))?;
    pty.give_to(&mut cmd)
        .map_err(|e| StreamError::Internal(format!("{what}: the terminal: {e}")))?;
    let master = pty.master();
    let (resize_tx, mut sizes) = mpsc::channel::<TerminalSize>(8);
    let resizer = master.clone();
    let exit = async move {
        // The process starts here rather than in `exec`: the resize channel is only fed once
        // `exec` has returned. A start failure still ends as the exec's failure verdict.
        if let Ok(Some(size)) = tokio::time::timeout(INITIAL_SIZE_WAIT, sizes.recv()).await {
            apply_size(&resizer, size);
        }
        let spawned = cmd.spawn();
        // The slave copies must close here, or the master never reads EOF (EIO).
        drop(cmd);
        drop(pty);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                resizer.process_ended();
                return Err(StreamError::Internal(format!("{what}: {e}")));
            }
        };
        let resizes = {
            let resizer = resizer.clone();
            tokio::spawn(async move {
                while let Some(size) = sizes.recv().await {
                    apply_size(&resizer, size);
                }
            })
        };
        let status = child.wait().await;
        resizes.abort();
        resizer.process_ended();
        exit_code(status)
    };
    Ok(ExecChild {
        stdin: request.stdin.then(|| Box::new(master.clone()) as BoxWrite),
        // Always read, even when the client wants no output: a full terminal buffer would
        // block the process.
        stdout: Some(Box::new(master) as BoxRead),
        stderr: None,
        resize: Some(resize_tx),
        exit: Box::pin(exit),
    })
}

fn apply_size(master: &PtyMaster, size: TerminalSize) {
    if let Err(e) = master.resize(size.height, size.width) {
        tracing::debug!(error = %e, ?size, "exec: cannot resize the terminal");
    }
}

/// The exit code of an exec, as a shell reports it (128 + signal when killed).
fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> Result<i32, StreamError> {
    use std::os::unix::process::ExitStatusExt;
    let status = status.map_err(|e| StreamError::Internal(format!("exec wait: {e}")))?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
