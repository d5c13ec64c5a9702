//! Pod cgroups on cgroup v2, v1 or hybrid hosts: detection, limits, OOM kills, kill, removal.
//!
//! A pod's processes join one cgroup per hierarchy: the v2 (unified) one when mounted, and the
//! v1 `memory` and `cpu` ones when those controllers live in v1 (hybrid and v1 hosts). Limits go
//! wherever the controller is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{Result, SandboxError};
use super::spec::PodResources;

/// The CFS period the kubelet uses (100 ms).
const CFS_PERIOD_US: u64 = 100_000;

/// Where the cgroup hierarchies are mounted (from /proc/self/mountinfo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    pub unified: Option<PathBuf>,
    pub memory_v1: Option<PathBuf>,
    pub cpu_v1: Option<PathBuf>,
}

/// Finds the cgroup mounts in a mountinfo text (pure).
pub fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut m = CgroupMounts::default();
    for entry in crate::mountinfo::parse(text) {
        match entry.fstype.as_str() {
            "cgroup2" if m.unified.is_none() => m.unified = Some(entry.point),
            "cgroup" => {
                let opts: Vec<&str> = entry.super_options.split(',').collect();
                if opts.contains(&"memory") && m.memory_v1.is_none() {
                    m.memory_v1 = Some(entry.point.clone());
                }
                if opts.contains(&"cpu") && m.cpu_v1.is_none() {
                    m.cpu_v1 = Some(entry.point);
                }
            }
            _ => {}
        }
    }
    m
}

/// The cgroups this process is in, per hierarchy (from /proc/self/cgroup).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfCgroups {
    pub unified: String,
    pub memory: String,
    pub cpu: String,
}

/// Parses a /proc/<pid>/cgroup text (pure).
pub fn parse_proc_cgroup(text: &str) -> SelfCgroups {
    let mut s = SelfCgroups {
        unified: "/".into(),
        memory: "/".into(),
        cpu: "/".into(),
    };
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            s.unified = path.to_string();
        }
        let ctrls: Vec<&str> = ctrls.split(',').collect();
        if ctrls.contains(&"memory") {
            s.memory = path.to_string();
        }
        if ctrls.contains(&"cpu") {
            s.cpu = path.to_string();
        }
    }
    s
}

/// One hierarchy a pod cgroup lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The unified hierarchy, with the controllers it carries.
    V2 {
        memory: bool,
        cpu: bool,
    },
    V1Memory,
    V1Cpu,
}

/// The host's cgroup layout, detected once.
#[derive(Clone, Debug)]
pub struct CgroupLayout {
    hierarchies: Vec<(Kind, PathBuf, String)>,
}

impl CgroupLayout {
    /// Detects the layout of this host from /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Self> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| SandboxError::io("read", p, e));
        let mounts = parse_mountinfo(&read("/proc/self/mountinfo")?);
        let own = parse_proc_cgroup(&read("/proc/self/cgroup")?);
        let v2_controllers = mounts
            .unified
            .as_ref()
            .and_then(|u| std::fs::read_to_string(u.join("cgroup.controllers")).ok())
            .unwrap_or_default();
        Self::from_parts(&mounts, &own, &v2_controllers)
    }

    /// The layout from parsed parts (pure; `v2_controllers` is the root's cgroup.controllers).
    pub fn from_parts(
        mounts: &CgroupMounts,
        own: &SelfCgroups,
        v2_controllers: &str,
    ) -> Result<Self> {
        let has = |c: &str| v2_controllers.split_whitespace().any(|x| x == c);
        let mut hierarchies = Vec::new();
        if let Some(u) = &mounts.unified {
            let kind = Kind::V2 {
                memory: mounts.memory_v1.is_none() && has("memory"),
                cpu: mounts.cpu_v1.is_none() && has("cpu"),
            };
            hierarchies.push((kind, u.clone(), own.unified.clone()));
        }
        if let Some(m) = &mounts.memory_v1 {
            hierarchies.push((Kind::V1Memory, m.clone(), own.memory.clone()));
        }
        if let Some(c) = &mounts.cpu_v1 {
            hierarchies.push((Kind::V1Cpu, c.clone(), own.cpu.clone()));
        }
        if hierarchies.is_empty() {
            return Err(SandboxError::Cgroup(
                "no cgroup2 or cgroup v1 memory/cpu mount in /proc/self/mountinfo; mount cgroup2 at /sys/fs/cgroup".into(),
            ));
        }
        Ok(CgroupLayout { hierarchies })
    }

    /// `v2`, `v1` or `hybrid`, for logs.
    pub fn version(&self) -> &'static str {
        let v2 = self
            .hierarchies
            .iter()
            .any(|(k, ..)| matches!(k, Kind::V2 { .. }));
        let v1 = self
            .hierarchies
            .iter()
            .any(|(k, ..)| !matches!(k, Kind::V2 { .. }));
        match (v2, v1) {
            (true, true) => "hybrid",
            (true, false) => "v2",
            _ => "v1",
        }
    }

    /// The directory of `parent` in each hierarchy. An absolute `parent` (`/skiff`) is from the
    /// hierarchy's root; a relative one is under the cgroup this process is in.
    fn parent_dirs(&self, parent: &str) -> Vec<(Kind, PathBuf, PathBuf, PathBuf)> {
        self.hierarchies
            .iter()
            .map(|(kind, mount, own)| {
                let base = if parent.starts_with('/') {
                    mount.clone()
                } else {
                    mount.join(own.trim_start_matches('/'))
                };
                let dir = base.join(parent.trim_start_matches('/'));
                (*kind, mount.clone(), base, dir)
            })
            .collect()
    }

    /// The pod cgroup `leaf` under `parent` (no I/O).
    pub fn pod(&self, parent: &str, leaf: &str) -> PodCgroup {
        PodCgroup {
            dirs: self
                .parent_dirs(parent)
                .into_iter()
                .map(|(k, mount, _, dir)| (k, mount, dir.join(leaf)))
                .collect(),
        }
    }

    /// Names of the child cgroups of `parent` starting with `prefix`, in any hierarchy.
    pub fn children(&self, parent: &str, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .parent_dirs(parent)
            .iter()
            .filter_map(|(_, _, _, dir)| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                (e.file_type().ok()?.is_dir()).then(|| e.file_name().into_string().ok())?
            })
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Removes the `parent` directories (deepest first) that are empty; leaves the rest.
    pub fn remove_parent(&self, parent: &str) {
        for (_, _, base, dir) in self.parent_dirs(parent) {
            let mut d = dir.as_path();
            while d != base && d.starts_with(&base) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
        }
    }
}

/// A pod's cgroup: one directory per hierarchy.
#[derive(Clone, Debug)]
pub struct PodCgroup {
    dirs: Vec<(Kind, PathBuf, PathBuf)>,
}

impl PodCgroup {
    /// The pod cgroup's directories (one per hierarchy, v2 first).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, _, d)| d.clone()).collect()
    }

    /// The `cgroup.procs` files a process writes itself into to join the pod.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, _, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// Creates the directories and writes the limits (idempotent).
    pub fn create(&self, res: &PodResources) -> Result<()> {
        for (kind, mount, dir) in &self.dirs {
            if let Kind::V2 { memory, cpu } = *kind
                && (memory || cpu)
            {
                enable_v2_controllers(mount, dir, memory, cpu)?;
            }
            std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create cgroup", dir, e))?;
            let shares = cpu_shares(res.cpu_request_millis);
            match *kind {
                Kind::V2 { memory, cpu } => {
                    if cpu {
                        let quota = res.cpu_limit_millis.map(cfs_quota_us);
                        let max = quota.map_or("max".to_string(), |q| q.to_string());
                        write(dir, "cpu.max", &format!("{max} {CFS_PERIOD_US}"))?;
                        write(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
                    }
                    if memory {
                        let max = res
                            .memory_limit_bytes
                            .map_or("max".to_string(), |b| b.to_string());
                        write(dir, "memory.max", &max)?;
                    }
                }
                Kind::V1Cpu => {
                    write(dir, "cpu.cfs_period_us", &CFS_PERIOD_US.to_string())?;
                    let quota = res
                        .cpu_limit_millis
                        .map_or("-1".to_string(), |m| cfs_quota_us(m).to_string());
                    write(dir, "cpu.cfs_quota_us", &quota)?;
                    write(dir, "cpu.shares", &shares.to_string())?;
                }
                Kind::V1Memory => {
                    let max = res
                        .memory_limit_bytes
                        .map_or("-1".to_string(), |b| b.to_string());
                    write(dir, "memory.limit_in_bytes", &max)?;
                }
            }
        }
        Ok(())
    }

    /// The memory limit in force (bytes), `None` when unlimited.
    pub fn memory_limit(&self) -> Result<Option<u64>> {
        for (kind, _, dir) in &self.dirs {
            let file = match kind {
                Kind::V2 { memory: true, .. } => "memory.max",
                Kind::V1Memory => "memory.limit_in_bytes",
                _ => continue,
            };
            let text = read(dir, file)?;
            let text = text.trim();
            // v1 reports "unlimited" as a huge page-rounded number.
            return Ok(text.parse::<u64>().ok().filter(|v| *v < (1 << 62)));
        }
        Ok(None)
    }

    /// The CPU quota in force as (quota µs, period µs), `None` when unlimited.
    pub fn cpu_quota(&self) -> Result<Option<(u64, u64)>> {
        for (kind, _, dir) in &self.dirs {
            match kind {
                Kind::V2 { cpu: true, .. } => {
                    let text = read(dir, "cpu.max")?;
                    let mut it = text.split_whitespace();
                    let quota = it.next().and_then(|q| q.parse().ok());
                    let period = it
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(CFS_PERIOD_US);
                    return Ok(quota.map(|q| (q, period)));
                }
                Kind::V1Cpu => {
                    let quota: i64 = read(dir, "cpu.cfs_quota_us")?.trim().parse().unwrap_or(-1);
                    let period = read(dir, "cpu.cfs_period_us")?
                        .trim()
                        .parse()
                        .unwrap_or(CFS_PERIOD_US);
                    return Ok(u64::try_from(quota).ok().map(|q| (q, period)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// How many times the kernel's OOM killer killed a process of the pod.
    pub fn oom_kills(&self) -> Result<u64> {
        for (kind, _, dir) in &self.dirs {
            let file = match kind {
                Kind::V2 { memory: true, .. } => "memory.events",
                Kind::V1Memory => "memory.oom_control",
                _ => continue,
            };
            return Ok(flat_keyed(&read(dir, file)?, "oom_kill").unwrap_or(0));
        }
        Ok(0)
    }

    /// The pids in the pod cgroup (every hierarchy).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, _, d)| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends SIGKILL to every process of the pod (`cgroup.kill` where the kernel has it).
    pub fn kill_all(&self) {
        for (kind, _, dir) in &self.dirs {
            if matches!(kind, Kind::V2 { .. }) && dir.join("cgroup.kill").exists() {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        for pid in self.pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Kills every process, waits until the cgroup is empty, and removes its directories.
    pub async fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.kill_all();
            if self.pids().is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(SandboxError::Cgroup(format!(
                    "processes {:?} in {} survived SIGKILL for 30 s (stuck in the kernel?); remove the cgroup by hand",
                    self.pids(),
                    self.paths()
                        .first()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (_, _, dir) in &self.dirs {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SandboxError::io("remove cgroup", dir, e)),
            }
        }
        Ok(())
    }
}

/// Enables the memory/cpu controllers in every ancestor's `cgroup.subtree_control`, from the
/// hierarchy's root down to the pod's parent (cgroup v2 delegates top-down).
fn enable_v2_controllers(mount: &Path, dir: &Path, memory: bool, cpu: bool) -> Result<()> {
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| p.starts_with(mount))
        .collect();
    chain.reverse();
    for p in chain {
        if !p.join("cgroup.subtree_control").exists() {
            std::fs::create_dir_all(p).map_err(|e| SandboxError::io("create cgroup", p, e))?;
        }
        let enabled = std::fs::read_to_string(p.join("cgroup.subtree_control")).unwrap_or_default();
        for (on, name) in [(memory, "memory"), (cpu, "cpu")] {
            if on && !enabled.split_whitespace().any(|c| c == name) {
                std::fs::write(p.join("cgroup.subtree_control"), format!("+{name}")).map_err(|e| {
                    SandboxError::Cgroup(format!(
                        "cannot enable the {name} controller in {}: {e}; on cgroup v2 give an absolute cgroup parent (e.g. /skiff) whose ancestors hold no processes",
                        p.display()
                    ))
                })?;
            }
        }
    }
    Ok(())
}

fn cfs_quota_us(millis: u64) -> u64 {
    // The kernel's minimum quota is 1 ms.
    (millis.saturating_mul(CFS_PERIOD_US) / 1000).max(1000)
}

/// v1 `cpu.shares` from a CPU request, as the kubelet computes it (minimum 2).
pub fn cpu_shares(request_millis: Option<u64>) -> u64 {
    request_millis.map_or(2, |m| (m.saturating_mul(1024) / 1000).clamp(2, 262_144))
}

/// v2 `cpu.weight` from v1 shares (the kubelet's and runc's conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// The value of `key` in a flat-keyed cgroup file (`oom_kill 3`).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| SandboxError::io("write cgroup file", p, e))
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).map_err(|e| SandboxError::io("read cgroup file", p, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw shared:13 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw shared:14 - cgroup cgroup rw,pids
";

    #[test]
    fn detects_hybrid_and_pure_v2() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(
            m.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            m.memory_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.cpu_v1.as_deref(),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        let own = parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/\n0::/\n");
        assert_eq!(own.memory, "/a/b");
        let layout = CgroupLayout::from_parts(&m, &own, "").unwrap();
        assert_eq!(layout.version(), "hybrid");
        // Relative parents nest under this process's own cgroup, per hierarchy.
        let pod = layout.pod("skiff-t", "podu1");
        assert_eq!(
            pod.paths(),
            [
                PathBuf::from("/sys/fs/cgroup/unified/skiff-t/podu1"),
                PathBuf::from("/sys/fs/cgroup/memory/a/b/skiff-t/podu1"),
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/skiff-t/podu1"),
            ]
        );
        assert_eq!(
            pod.dirs[0].0,
            Kind::V2 {
                memory: false,
                cpu: false
            }
        );

        let v2 = parse_mountinfo("31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let layout = CgroupLayout::from_parts(
            &v2,
            &parse_proc_cgroup("0::/user.slice\n"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        assert_eq!(layout.version(), "v2");
        let pod = layout.pod("/kubepods", "podu1");
        assert_eq!(
            pod.paths(),
            [PathBuf::from("/sys/fs/cgroup/kubepods/podu1")]
        );
        assert_eq!(
            pod.dirs[0].0,
            Kind::V2 {
                memory: true,
                cpu: true
            }
        );
        assert!(
            CgroupLayout::from_parts(&CgroupMounts::default(), &SelfCgroups::default(), "")
                .is_err()
        );
    }

    #[test]
    fn conversions_and_flat_keyed() {
        assert_eq!(cpu_shares(None), 2);
        assert_eq!(cpu_shares(Some(1000)), 1024);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(cfs_quota_us(500), 50_000);
        assert_eq!(cfs_quota_us(1), 1000);
        assert_eq!(
            flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n", "oom_kill"),
            Some(4)
        );
        assert_eq!(
            flat_keyed("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(flat_keyed("", "oom_kill"), None);
    }

    #[test]
    fn mountinfo_unescapes_spaces() {
        let m = parse_mountinfo("1 2 0:3 / /mnt/cg\\040two rw - cgroup2 none rw\n");
        assert_eq!(m.unified.as_deref(), Some(Path::new("/mnt/cg two")));
    }
}
