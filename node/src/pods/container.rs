//! One container's life in a pod: resolve, start, watch, record, restart with backoff.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HostIP, Pod, PodIP};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tracing::{info, warn};

use super::backoff::{Backoff, RESET_AFTER};
use super::sources::NamespaceSources;
use super::worker::PodWorkerCtx;
use super::{PodEntry, events};
use crate::env::{container_env, expand_args};
use crate::logs::{LogWriter, RotationPolicy, container_log_dir, instance_log_path, mark_finished};
use crate::probes::{ProbeHandle, Prober, SandboxProbeTarget};
use crate::sandbox::Sandbox;
use crate::sandbox::spawn::{Process, ProcessSpec};
use crate::status::{ContainerRecord, PodRecord, State};

/// Which record a container writes: an init container's or a regular one's, by index.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    pub init: bool,
    pub index: usize,
}

impl Slot {
    fn get<'a>(&self, r: &'a mut PodRecord) -> Option<&'a mut ContainerRecord> {
        if self.init {
            r.init_containers.get_mut(self.index)
        } else {
            r.containers.get_mut(self.index)
        }
    }
}

/// PATH when the container sets none (what most images set).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long ErrImagePull shows before ImagePullBackOff.
const PULL_ERROR_SHOWN: Duration = Duration::from_secs(2);
/// How long a CreateContainerConfigError waits before trying again (the source may appear).
const CONFIG_RETRY: Duration = Duration::from_secs(2);

/// Sleeps `d` unless the pod is stopping first; true when stopping.
pub async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

fn set(entry: &PodEntry, slot: Slot, f: impl FnOnce(&mut ContainerRecord)) {
    entry.update(|r| {
        if let Some(c) = slot.get(r) {
            f(c)
        }
    });
}

/// `pod` with the IPs the kubelet knows (its status write may not have landed yet), so
/// fieldRefs to `status.podIP(s)`/`status.hostIP(s)` see them, as upstream resolves them.
pub(super) fn with_known_ips(mut pod: Pod, entry: &PodEntry) -> Pod {
    let (pod_ips, host_ips) = match entry.record.lock() {
        Ok(r) => (r.pod_ips.clone(), r.host_ips.clone()),
        Err(p) => {
            let r = p.into_inner();
            (r.pod_ips.clone(), r.host_ips.clone())
        }
    };
    let status = pod.status.get_or_insert_with(Default::default);
    if let Some(first) = pod_ips.first() {
        status.pod_ip = Some(first.to_string());
        status.pod_ips = Some(
            pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.to_string() })
                .collect(),
        );
    }
    if let Some(first) = host_ips.first() {
        status.host_ip = Some(first.to_string());
        status.host_ips = Some(
            host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.to_string() })
                .collect(),
        );
    }
    pod
}

/// Whether a container that exited (`ok` = exit 0) runs again under `restart_policy`. Init
/// containers run again only after failing, and never under `Never`.
pub fn should_restart(init: bool, restart_policy: &str, ok: bool) -> bool {
    match (init, restart_policy) {
        (true, "Never") => false,
        (true, _) => !ok,
        (false, "Always") => true,
        (false, "OnFailure") => !ok,
        _ => false,
    }
}

/// Runs `container` until it should not run again (per `restart_policy`) or the pod stops.
/// For an init container, true when it exited 0; for a regular one the result is unused.
pub async fn run_container(
    ctx: Arc<PodWorkerCtx>,
    entry: Arc<PodEntry>,
    sandbox: Sandbox,
    container: Container,
    slot: Slot,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut crash = Backoff::crash_loop();
    let mut pull = Backoff::crash_loop();
    let mut restart_count: i32 = 0;
    let name = container.name.clone();
    let log_dir = container_log_dir(
        &ctx.config.log_root(),
        &entry.namespace,
        &entry.name,
        &entry.uid,
        &name,
    );
    if let Ok(mut dirs) = entry.log_dirs.lock() {
        dirs.insert(name.clone(), log_dir.clone());
    }
    let readiness = entry.readiness(&name);
    loop {
        if *stop.borrow() {
            return false;
        }
        let pod = with_known_ips(entry.pod.borrow().clone(), &entry);
        let restart_policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let image_ref = container.image.clone().unwrap_or_default();
        let image = match ctx.config.images.resolve(&image_ref) {
            Ok(i) => {
                pull.reset();
                i
            }
            Err(e) => {
                let msg = e.to_string();
                warn!(pod = %entry.name, container = %name, error = %msg, "image");
                set(&entry, slot, |c| {
                    c.state = State::waiting(e.reason(), Some(msg.clone()))
                });
                // Upstream's kubelet events, so `kubectl describe pod` tells the story.
                let failed = format!("Failed to pull image {image_ref:?}: {msg}");
                events::post_in_background(&ctx, &entry, &name, "Warning", "Failed", failed);
                let error = format!("Error: {}", e.reason());
                events::post_in_background(&ctx, &entry, &name, "Warning", "Failed", error);
                if sleep_or_stop(&mut stop, PULL_ERROR_SHOWN).await {
                    return false;
                }
                let delay = pull.next_delay();
                let back_off = format!("Back-off pulling image {image_ref:?}");
                events::post_in_background(&ctx, &entry, &name, "Normal", "BackOff", back_off);
                set(&entry, slot, |c| {
                    c.state = State::waiting(
                        "ImagePullBackOff",
                        Some(format!("Back-off pulling image {image_ref:?}: {msg}")),
                    )
                });
                if sleep_or_stop(&mut stop, delay).await {
                    return false;
                }
                continue;
            }
        };
        let sources = NamespaceSources {
            caches: &ctx.caches,
            namespace: &entry.namespace,
        };
        let env = match container_env(&pod, &container, &sources) {
            Ok(mut env) => {
                // Images set PATH; host programs need one to find `sh` and friends.
                if !env.iter().any(|(k, _)| k == "PATH") {
                    env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
                }
                env
            }
            Err(e) => {
                set(&entry, slot, |c| {
                    c.state = State::waiting("CreateContainerConfigError", Some(e.to_string()))
                });
                if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    return false;
                }
                continue;
            }
        };
        let command = expand_args(container.command.as_deref().unwrap_or_default(), &env);
        let args = expand_args(container.args.as_deref().unwrap_or_default(), &env);
        let argv = image.argv(&command, &args);
        let Some((program, rest)) = argv.split_first() else {
            set(&entry, slot, |c| {
                c.state = State::waiting(
                    "CreateContainerConfigError",
                    Some(format!(
                        "container {name}: no command: image {image_ref:?} has no entrypoint; set command"
                    )),
                )
            });
            if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                return false;
            }
            continue;
        };

        let volumes = entry.volumes.lock().ok().and_then(|v| v.clone());
        let mounts = match volumes.as_ref().map(|v| v.mounts(&container)) {
            None => Vec::new(),
            Some(Ok(mounts)) => mounts,
            Some(Err(e)) => {
                set(&entry, slot, |c| {
                    c.state = State::waiting("CreateContainerConfigError", Some(e.to_string()))
                });
                if sleep_or_stop(&mut stop, CONFIG_RETRY).await {
                    return false;
                }
                continue;
            }
        };

        let oom_before = sandbox.oom_kills().unwrap_or(0);
        let started = Instant::now();
        let started_at = Timestamp::now();
        let log_path = instance_log_path(&log_dir, restart_count.max(0) as u32);
        let process = ProcessSpec {
            program: program.into(),
            args: rest.iter().map(Into::into).collect(),
            env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            cwd: container
                .working_dir
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(Into::into),
        };
        let spawned = sandbox.spawn(&process, &mounts).map_err(|e| {
            if e.is_not_found() {
                format!("exec: {program:?}: executable file not found: {e}")
            } else {
                format!("exec: {e}")
            }
        });
        let terminated = match spawned {
            Err(message) => {
                warn!(pod = %entry.name, container = %name, %message, "container did not start");
                let error = format!("Error: {message}");
                events::post_in_background(&ctx, &entry, &name, "Warning", "Failed", error);
                State::Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: Some(message),
                    started_at: None,
                    finished_at: Timestamp::now(),
                }
            }
            Ok(mut child) => {
                info!(pod = %entry.name, container = %name, pid = ?child.id(), "container started");
                let message = format!("Started container {name}");
                events::post_in_background(&ctx, &entry, &name, "Normal", "Started", message);
                let writer = LogWriter::spawn(
                    log_path.clone(),
                    RotationPolicy::default(),
                    child.stdout.take(),
                    child.stderr.take(),
                );
                let probed = container.startup_probe.is_some()
                    || container.liveness_probe.is_some()
                    || container.readiness_probe.is_some();
                let mut probes = probed.then(|| {
                    let target = SandboxProbeTarget::new(&ctx.sandboxes, sandbox.clone())
                        .for_container(mounts.clone(), env.clone());
                    Prober::spawn(&container, Arc::new(target))
                });
                let (ready, started) = match &probes {
                    Some(p) => (*p.ready.borrow(), *p.started.borrow()),
                    None => (*readiness.borrow(), true),
                };
                let id = format!("skiff://{}/{}/{}", entry.uid, name, restart_count);
                set(&entry, slot, |c| {
                    c.state = State::Running { started_at };
                    c.ready = ready;
                    c.started = started;
                    c.container_id = Some(id);
                });
                let status = match probes.as_mut() {
                    None => child.wait().await,
                    Some(p) => watch_probes(&ctx, &entry, slot, &name, &mut child, p).await,
                };
                drop(probes);
                if let Ok(Err(e)) = writer.await {
                    warn!(pod = %entry.name, container = %name, error = %e, "container log");
                }
                if let Err(e) = mark_finished(&log_path) {
                    warn!(pod = %entry.name, container = %name, error = %e, "container log");
                }
                let (exit_code, signal) = match status {
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(code), _) => (code, None),
                        (None, Some(sig)) => (128 + sig, Some(sig)),
                        (None, None) => (255, None),
                    },
                    Err(e) => {
                        warn!(pod = %entry.name, container = %name, error = %e, "wait");
                        (255, None)
                    }
                };
                let oom = sandbox.oom_kills().unwrap_or(0) > oom_before;
                let reason = if oom {
                    "OOMKilled"
                } else if exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                info!(pod = %entry.name, container = %name, exit_code, reason, "container exited");
                State::Terminated {
                    exit_code,
                    signal,
                    reason: reason.into(),
                    message: None,
                    started_at: Some(started_at),
                    finished_at: Timestamp::now(),
                }
            }
        };
        let ok = matches!(terminated, State::Terminated { exit_code: 0, .. });
        let restart = !*stop.borrow() && should_restart(slot.init, &restart_policy, ok);
        if !restart {
            set(&entry, slot, |c| {
                c.state = terminated;
                c.ready = false;
            });
            return ok;
        }
        if started.elapsed() >= RESET_AFTER {
            crash.reset();
        }
        let delay = crash.next_delay();
        restart_count += 1;
        let message = format!(
            "back-off {}s restarting failed container={name} pod={}_{}({})",
            delay.as_secs(),
            entry.name,
            entry.namespace,
            entry.uid
        );
        let back_off = format!(
            "Back-off restarting failed container {name} in pod {}_{}({})",
            entry.name, entry.namespace, entry.uid
        );
        events::post_in_background(&ctx, &entry, &name, "Warning", "BackOff", back_off);
        set(&entry, slot, |c| {
            c.last_state = Some(terminated);
            c.restart_count = restart_count;
            c.ready = false;
            c.state = State::waiting("CrashLoopBackOff", Some(message));
        });
        if sleep_or_stop(&mut stop, delay).await {
            return false;
        }
    }
}

/// Waits for `child` while its probes run: readiness and startup results go to the record,
/// failures become `Unhealthy` Events, and a failed liveness or startup probe kills the
/// process (the restart policy then decides, as upstream).
async fn watch_probes(
    ctx: &PodWorkerCtx,
    entry: &PodEntry,
    slot: Slot,
    name: &str,
    child: &mut Process,
    probes: &mut ProbeHandle,
) -> std::io::Result<std::process::ExitStatus> {
    let node = ctx.config.node_name.as_str();
    let mut events_open = true;
    let mut restart_open = true;
    loop {
        tokio::select! {
            status = child.wait() => return status,
            changed = probes.ready.changed() => {
                if changed.is_ok() {
                    let ready = *probes.ready.borrow_and_update();
                    entry.set_ready(name, ready);
                    set(entry, slot, |c| c.ready = ready);
                }
            }
            changed = probes.started.changed() => {
                if changed.is_ok() {
                    let started = *probes.started.borrow_and_update();
                    set(entry, slot, |c| c.started = started);
                }
            }
            event = probes.events.recv(), if events_open => match event {
                Some(e) => {
                    super::events::post(&ctx.client, node, entry, Some(name), "Warning", e.reason, &e.message).await;
                }
                None => events_open = false,
            },
            changed = probes.restart.changed(), if restart_open => {
                if changed.is_err() {
                    restart_open = false;
                    continue;
                }
                let restart = probes.restart.borrow_and_update().clone();
                if let Some(restart) = restart {
                    restart_open = false;
                    info!(pod = %entry.name, container = %name, message = %restart.message, "probe failed: killing the container");
                    super::events::post(&ctx.client, node, entry, Some(name), "Normal", "Killing", &restart.message).await;
                    if let Err(e) = child.start_kill() {
                        warn!(pod = %entry.name, container = %name, error = %e, "killing the container");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::should_restart;

    #[test]
    fn restart_policy_decides_per_container_kind() {
        assert!(should_restart(false, "Always", true));
        assert!(should_restart(false, "Always", false));
        assert!(should_restart(false, "OnFailure", false));
        assert!(!should_restart(false, "OnFailure", true));
        assert!(!should_restart(false, "Never", false));
        assert!(should_restart(true, "Always", false));
        assert!(!should_restart(true, "Always", true));
        assert!(should_restart(true, "OnFailure", false));
        assert!(!should_restart(true, "Never", false));
    }
}
