//! What every privileged test shares: the root check, running `ip`, a node namespace
//! fixture that cleans up after itself, a private BPF file system, and the BPF programs a
//! process holds.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use skiff_node::sandbox::{CgroupLayout, IpCidr, SandboxConfig, list_netns, netns_path};

/// Whether privileged tests run: true as root; false only with `SKIFF_SKIP_PRIVILEGED=1`;
/// otherwise the test fails, saying `what` needs root.
pub fn privileged(what: &str) -> bool {
    if std::env::var("SKIFF_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIFF_SKIP_PRIVILEGED=1: skipping a privileged {what} test");
        return false;
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "{what} tests need root (network namespaces, cgroups, mounts); run as root or set SKIFF_SKIP_PRIVILEGED=1"
    );
    true
}

/// Runs `ip ARGS`, failing with its stderr; returns its stdout.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("run ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One test's node network namespace (no uplink), pod netns prefix, cgroup parent and temp
/// dir; Drop kills what runs in the cgroups and removes the cgroups and every namespace.
#[derive(Debug)]
pub struct NodeFixture {
    pub node_ns: String,
    pub prefix: String,
    pub cgroup_parent: String,
    pub dir: tempfile::TempDir,
}

impl NodeFixture {
    /// `tag` keeps the names of different test files apart (e.g. `k` for kubelet tests).
    pub fn new(tag: &str) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{tag}{n}", std::process::id());
        let f = NodeFixture {
            node_ns: format!("skt{tag}node-{id}"),
            prefix: format!("skt{tag}pod-{id}-"),
            // Under this process's own cgroup (relative), except on pure cgroup v2, where a
            // cgroup with processes cannot delegate controllers: there from the root.
            cgroup_parent: if CgroupLayout::detect().is_ok_and(|l| l.version() == "v2") {
                format!("/skiff-test-{id}")
            } else {
                format!("skiff-test-{id}")
            },
            dir: tempfile::tempdir()?,
        };
        ip(&["netns", "add", &f.node_ns])?;
        Ok(f)
    }

    /// A sandbox config on this node for `cidrs`, with the host's resolv.conf and hosts files
    /// replaced by the given texts (written in the temp dir).
    pub fn sandbox_config(
        &self,
        cidrs: Vec<IpCidr>,
        host_resolv_conf: &str,
        host_hosts: &str,
    ) -> Result<SandboxConfig> {
        let mut c = SandboxConfig::new(self.prefix.clone(), cidrs, self.dir.path().join("state"));
        c.node_netns = Some(netns_path(&self.node_ns));
        c.cgroup_parent = self.cgroup_parent.clone();
        c.host_resolv_conf = self.dir.path().join("host-resolv.conf");
        c.host_hosts_file = self.dir.path().join("host-hosts");
        std::fs::write(&c.host_resolv_conf, host_resolv_conf)?;
        std::fs::write(&c.host_hosts_file, host_hosts)?;
        Ok(c)
    }
}

impl Drop for NodeFixture {
    fn drop(&mut self) {
        if let Ok(layout) = CgroupLayout::detect() {
            for leaf in layout.children(&self.cgroup_parent, "pod") {
                let cg = layout.pod(&self.cgroup_parent, &leaf);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !cg.pids().is_empty() && Instant::now() < deadline {
                    cg.kill_all();
                    std::thread::sleep(Duration::from_millis(20));
                }
                for p in cg.paths() {
                    let _ = std::fs::remove_dir(p);
                }
            }
            layout.remove_parent(&self.cgroup_parent);
        }
        for ns in list_netns(&self.prefix) {
            let _ = ip(&["netns", "delete", &ns]);
        }
        let _ = ip(&["netns", "delete", &self.node_ns]);
    }
}

/// A runtime whose threads (workers and blocking) all live in netns `name`, as `skiff up`'s
/// node runtime: every socket made on it is in that namespace.
pub fn netns_runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    let file = std::fs::File::open(netns_path(name)).context("open the netns")?;
    let fd = std::sync::Arc::new(file);
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&*fd),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .is_err()
            {
                // Never run node code in the host's namespace.
                std::process::abort();
            }
        })
        .build()?)
}

/// A private BPF file system mounted on a temp dir, for pins: a test never touches
/// /sys/fs/bpf. Drop removes what is pinned in it, unmounts and removes the dir.
#[derive(Debug)]
pub struct Bpffs {
    pub dir: std::path::PathBuf,
}

impl Bpffs {
    pub fn new(tag: &str) -> Result<Bpffs> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skt-bpffs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()?;
        if !status.success() {
            let _ = std::fs::remove_dir(&dir);
            anyhow::bail!("mount -t bpf bpf {} failed", dir.display());
        }
        Ok(Bpffs { dir })
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        // Whatever is left (a failed test's pins): unmounting frees the maps nobody holds.
        match std::process::Command::new("umount").arg(&self.dir).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("cleanup: umount {}: {other:?}", self.dir.display()),
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The ids of the BPF programs process `pid` holds, loaded or through links (from its
/// fdinfo: `prog_id:` of bpf-prog and bpf_link descriptors).
pub fn bpf_program_ids(pid: u32) -> Result<std::collections::BTreeSet<u32>> {
    let mut ids = std::collections::BTreeSet::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(info) = std::fs::read_to_string(entry?.path()) else {
            continue; // closed meanwhile
        };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix("prog_id:") {
                ids.extend(id.trim().parse::<u32>().ok());
            }
        }
    }
    Ok(ids)
}

/// The names of the loaded BPF programs among `ids` (those still in the kernel).
pub fn loaded_program_names(ids: &std::collections::BTreeSet<u32>) -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The names of the tcx programs at ingress of `dev` in the network namespace at `netns`.
pub fn tcx_ingress_programs(netns: &std::path::Path, dev: &str) -> Result<Vec<String>> {
    let dev = dev.to_owned();
    let (_, programs) = skiff_node::sandbox::run_in_netns(Some(netns), move || {
        aya::programs::SchedClassifier::query_tcx(&dev, aya::programs::TcAttachType::Ingress)
    })?
    .context("querying tcx programs")?;
    Ok(programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect())
}
