//! `skiff agent --pod-netns-prefix`: the pod network namespaces another runtime makes (CNI
//! names them under /run/netns, e.g. `cni-<uuid>`) allowed on the eBPF socket load balancer
//! while they exist, so pods of that node reach ClusterIPs as they would through kube-proxy.
//! Followed with inotify: a namespace is allowed as soon as its name is mounted, before the
//! pod's containers start.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use skiff_ebpf::SockLb;
use skiff_node::sandbox::register_with_reactor;
use tokio::time::Instant;

use crate::lock;

/// How long a new name may stay a plain file: `ip netns add` and CNI create the file, then
/// bind-mount the namespace on it.
const MOUNT_WAIT: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(20);

/// The pod namespaces under `dir` whose names start with one of `prefixes`.
#[derive(Debug, Clone)]
pub struct PodNetns {
    dir: PathBuf,
    prefixes: Vec<String>,
}

impl PodNetns {
    pub fn new(dir: impl Into<PathBuf>, prefixes: Vec<String>) -> PodNetns {
        PodNetns {
            dir: dir.into(),
            prefixes,
        }
    }

    fn matches(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// The matching namespaces there now, with their cookies (names not mounted yet are
    /// left to [`PodNetns::follow`]).
    pub fn current(&self) -> HashMap<String, u64> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashMap::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| self.matches(name))
            .filter_map(|name| {
                let cookie = skiff_ebpf::netns_cookie(self.dir.join(&name)).ok()?;
                Some((name, cookie))
            })
            .collect()
    }

    /// Watches the directory until `stop`: a matching name that appears is allowed once it is
    /// a namespace, one that goes is forbidden by the cookie it had. `known` is what
    /// [`PodNetns::current`] found (already allowed). The watch is set before `known` is
    /// compared with the directory again, so no name falls between the two.
    pub async fn follow(
        self,
        lb: Arc<Mutex<SockLb>>,
        mut known: HashMap<String, u64>,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let fd =
            inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).context("inotify_init")?;
        let watch = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, &self.dir, watch)
            .with_context(|| format!("watching {}", self.dir.display()))?;
        let fd = register_with_reactor(fd).context("registering the inotify descriptor")?;
        // Not mounted yet: name → give up after.
        let mut pending: HashMap<String, Instant> = HashMap::new();
        let now = self.current();
        for (name, cookie) in &now {
            if !known.contains_key(name) {
                self.allow(&lb, name, *cookie);
            }
        }
        for (name, cookie) in std::mem::take(&mut known) {
            if !now.contains_key(&name) {
                self.forbid(&lb, &name, cookie);
            }
        }
        known = now;
        tokio::pin!(stop);
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 8192];
        loop {
            let retry = async {
                if pending.is_empty() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(RETRY).await;
            };
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = retry => {}
                ready = fd.readable() => {
                    let mut guard = ready.context("inotify")?;
                    let events = read_events(fd.get_ref(), &mut buf);
                    guard.clear_ready();
                    for (name, appeared) in events.context("reading inotify events")? {
                        if !self.matches(&name) {
                            continue;
                        }
                        if appeared {
                            pending.insert(name, Instant::now() + MOUNT_WAIT);
                        } else {
                            pending.remove(&name);
                            if let Some(cookie) = known.remove(&name) {
                                self.forbid(&lb, &name, cookie);
                            }
                        }
                    }
                }
            }
            pending.retain(|name, give_up| {
                match skiff_ebpf::netns_cookie(self.dir.join(name.as_str())) {
                    Ok(cookie) => {
                        if let Some(old) = known.insert(name.clone(), cookie) {
                            // the name was re-created over another namespace
                            self.forbid(&lb, name, old);
                        }
                        self.allow(&lb, name, cookie);
                        false
                    }
                    Err(e) if Instant::now() > *give_up => {
                        tracing::warn!(netns = %name, error = %e, "not a network namespace; its sockets are not load balanced");
                        false
                    }
                    Err(_) => true,
                }
            });
        }
    }

    fn allow(&self, lb: &Mutex<SockLb>, name: &str, cookie: u64) {
        match lock(lb).allow_netns(cookie) {
            Ok(()) => tracing::info!(netns = name, cookie, "pod namespace load balanced"),
            Err(e) => tracing::warn!(netns = name, error = %e, "cannot allow a pod namespace"),
        }
    }

    fn forbid(&self, lb: &Mutex<SockLb>, name: &str, cookie: u64) {
        match lock(lb).forbid_netns(cookie) {
            Ok(()) => tracing::info!(netns = name, cookie, "pod namespace gone"),
            Err(e) => tracing::warn!(netns = name, error = %e, "cannot forget a pod namespace"),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Drains the queued events: (name, true if it appeared / false if it went).
fn read_events(
    fd: &OwnedFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> std::io::Result<Vec<(String, bool)>> {
    let mut reader = inotify::Reader::new(fd, buf);
    let mut out = Vec::new();
    loop {
        match reader.next() {
            Ok(event) => {
                let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                    continue;
                };
                let flags = event.events();
                let appeared = flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO);
                let went = flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM);
                if appeared || went {
                    out.push((name.to_owned(), appeared));
                }
            }
            Err(rustix::io::Errno::AGAIN) => return Ok(out),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_a_prefix_match() {
        let p = PodNetns::new("/run/netns", vec!["cni-".into(), "pod-".into()]);
        assert!(p.matches("cni-1f2e"));
        assert!(p.matches("pod-a"));
        assert!(!p.matches("skiff-node"));
        assert!(!p.matches("xcni-1"));
        assert!(!PodNetns::new("/run/netns", Vec::new()).matches("cni-1"));
    }

    #[test]
    fn events_name_what_appeared_and_what_went() {
        let dir = tempfile::tempdir().unwrap();
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).unwrap();
        inotify::add_watch(
            &fd,
            dir.path(),
            WatchFlags::CREATE | WatchFlags::DELETE | WatchFlags::MOVED_TO | WatchFlags::MOVED_FROM,
        )
        .unwrap();
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 4096];
        assert!(read_events(&fd, &mut buf).unwrap().is_empty());
        std::fs::write(dir.path().join("cni-a"), b"").unwrap();
        std::fs::rename(dir.path().join("cni-a"), dir.path().join("cni-b")).unwrap();
        std::fs::remove_file(dir.path().join("cni-b")).unwrap();
        assert_eq!(
            read_events(&fd, &mut buf).unwrap(),
            vec![
                ("cni-a".to_owned(), true),
                ("cni-a".to_owned(), false),
                ("cni-b".to_owned(), true),
                ("cni-b".to_owned(), false),
            ]
        );
    }
}
