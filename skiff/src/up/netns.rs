//! The node network namespace of `skiff up`: create (loopback up), remove, and a tokio
//! runtime whose worker threads enter it when they start.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// `/run/netns/<name>`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Creates the namespace with `lo` up and nothing else (no route out of the machine), and
/// `tcp_tw_reuse` on in it.
pub fn create(name: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", name])
        .with_context(|| format!("cannot create netns {name} (run as root)"))?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    tw_reuse(name)
}

/// Lets outgoing connections reuse a port in TIME_WAIT (older than 1 s, by TCP timestamps).
/// The userspace service proxy and the ingress connect to backends from this namespace and,
/// when the client closes first, close those connections first: each leaves a TIME_WAIT on
/// an ephemeral port to the same backend for 60 s, so without reuse the ~28k ports of the
/// default range last ~470 new connections a second, and connect() spends more and more
/// time searching them. Only this namespace's setting (sysctls under `net` are per netns).
fn tw_reuse(name: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path(name))
        .with_context(|| format!("cannot open {}", path(name).display()))?;
    // A thread of its own enters the namespace: /proc/sys/net is the writer's namespace's.
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .context("cannot enter the node netns")?;
            std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "1")
                .context("cannot set net.ipv4.tcp_tw_reuse in the node netns")
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the netns sysctl thread panicked")))
    })
}

/// Deletes the namespace if it exists (a leftover, or ours at exit).
pub fn remove(name: &str) {
    if path(name).exists() {
        match ip(&["netns", "del", name]) {
            Ok(()) => tracing::info!(netns = name, "removed the node network namespace"),
            Err(e) => tracing::warn!(netns = name, error = %e, "cannot remove the netns"),
        }
    }
}

/// Removes the namespace when dropped, whatever way `up` ends.
pub struct Guard(pub String);

impl Drop for Guard {
    fn drop(&mut self) {
        remove(&self.0);
    }
}

/// A multi-thread runtime whose threads (workers and blocking) all live in the namespace, so
/// every socket created on it does too. A thread that cannot enter it aborts the process
/// rather than run node code in the host's namespace.
///
/// Two workers, or one when the process may run on one CPU only (`available_parallelism`
/// heeds `taskset`, cpusets and CPU quotas): two workers on one CPU only hand work to each
/// other (futex and eventfd wakes were a fifth of the userspace proxy's CPU under load, pinned).
pub fn node_runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    let ns = path(name);
    let file = std::fs::File::open(&ns).with_context(|| format!("cannot open {}", ns.display()))?;
    let fd = std::sync::Arc::new(file);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 2)))
        .thread_name("skiff-node")
        .enable_all()
        .on_thread_start(move || {
            if let Err(e) = rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&*fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            ) {
                tracing::error!(error = %e, "a node thread cannot enter the node netns: aborting");
                std::process::abort();
            }
        })
        .build()
        .context("cannot start the node runtime")
}
