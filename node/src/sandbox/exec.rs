//! Entering a pod (one of the two places with `unsafe`, with `spawn`): what a child does
//! before exec to move into the pod's cgroup, a private mount namespace with the pod's DNS
//! files and volumes, the pod's network and UTS namespaces; the `pre_exec` hooks that do it
//! (and give a child a controlling terminal), and the reactor registration of a
//! pseudo-terminal master.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

use rustix::mount::{MountPropagationFlags, UnmountFlags, mount_bind, mount_change};
use rustix::thread::{LinkNameSpaceType, UnshareFlags, move_into_link_name_space, unshare_unsafe};

/// What a child enters between fork (or [`super::spawn`]'s clone) and exec. Everything is
/// opened or allocated before, so [`Entry::apply`] makes only raw system calls
/// (async-signal-safe, and safe in a child that shares the parent's memory).
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// Open `cgroup.procs` files; writing "0" moves the writer in.
    pub cgroup_procs: Vec<OwnedFd>,
    /// A network namespace to enter (`/run/netns/<name>` opened).
    pub netns: Option<OwnedFd>,
    /// Bind mounts `(source, target)` made in a new private mount namespace.
    pub binds: Vec<(CString, CString)>,
    /// Volume bind mounts `(source, target, read_only)`, made after `binds` in the same
    /// private mount namespace (which needs `binds` to be non-empty to exist).
    pub mounts: Vec<(CString, CString, bool)>,
    /// A hostname for a new UTS namespace.
    pub hostname: Option<Vec<u8>>,
}

impl Entry {
    /// Moves the calling process into the cgroup, a private mount namespace with the binds,
    /// the network namespace and a UTS namespace with the hostname.
    ///
    /// Only for a process about to exec that no other thread can observe: it unshares the
    /// calling process's namespaces.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        for fd in &self.cgroup_procs {
            rustix::io::write(fd, b"0")?;
        }
        if !self.binds.is_empty() {
            // SAFETY: unsharing the mount namespace (not the file table) in a child about to
            // exec, that no other thread observes (the caller's contract).
            unsafe { unshare_unsafe(UnshareFlags::NEWNS) }?;
            // Downstream (slave) first: nothing done here propagates back to the node.
            mount_change(
                c"/",
                MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
            )?;
            // The copy of /run/netns holds every pod namespace mounted when this process
            // started; without it, the namespace can be private (upstream's default
            // `mountPropagation: None`): the node's later mounts and unmounts (each pod's netns,
            // volumes) are no longer copied into every running container, which made a burst of
            // n pods cost n² mount copies. Where /run/netns is no mount point (EINVAL) its
            // netns mounts stay, and so does the slave link that carries `ip netns delete`'s
            // unmounts in.
            if rustix::mount::unmount(super::netns::NETNS_DIR_C, UnmountFlags::DETACH).is_ok() {
                mount_change(
                    c"/",
                    MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
                )?;
            }
            for (source, target) in &self.binds {
                mount_bind(source.as_c_str(), target.as_c_str())?;
            }
            for (source, target, read_only) in &self.mounts {
                mount_bind(source.as_c_str(), target.as_c_str())?;
                if *read_only {
                    rustix::mount::mount_remount(
                        target.as_c_str(),
                        rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
                        c"",
                    )?;
                }
            }
        }
        if let Some(ns) = &self.netns {
            move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))?;
        }
        if let Some(name) = &self.hostname {
            // SAFETY: as above, a new UTS namespace for a child about to exec.
            unsafe { unshare_unsafe(UnshareFlags::NEWUTS) }?;
            rustix::system::sethostname(name)?;
        }
        Ok(())
    }
}

/// Registers `entry` to be applied in the child of `cmd` right before exec.
pub(crate) fn enter_on_exec(cmd: &mut tokio::process::Command, entry: Entry) {
    // SAFETY: the hook only makes system calls on memory and fds prepared before the fork
    // (no allocation, no locks), which is what `pre_exec` requires; the forked child is
    // single-threaded, as `Entry::apply` requires.
    unsafe {
        cmd.pre_exec(move || entry.apply());
    }
}

/// Registers a hook that makes `tty` the controlling terminal of the child of `cmd`: a new
/// session (`setsid`), then `TIOCSCTTY`. Without it a shell has no job control, and Ctrl-C
/// typed into the terminal reaches nobody. Register it after [`enter_on_exec`]; `tty` is the
/// slave the child's stdio were given, and closes (close-on-exec) when the child execs.
pub(crate) fn controlling_terminal_on_exec(cmd: &mut tokio::process::Command, tty: OwnedFd) {
    let hook = move || -> std::io::Result<()> {
        // The forked child is never a process-group leader, so setsid cannot fail with EPERM.
        rustix::process::setsid()?;
        rustix::process::ioctl_tiocsctty(&tty)?;
        Ok(())
    };
    // SAFETY: as in `enter_on_exec`: two system calls on an fd opened before the fork.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Registers `fd` (non-blocking) with the tokio reactor, for readiness-driven reads and writes.
pub fn register_with_reactor(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, so the descriptor stays open and the same
    // for the registration's whole life, which is all `register` asks.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// A bind mount for one process: `source` on the node appears at `target` in the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: std::path::PathBuf,
    pub target: std::path::PathBuf,
    pub read_only: bool,
}

impl super::Sandbox {
    /// [`Sandbox::command`](super::Sandbox::command) plus `mounts`, bind-mounted in the
    /// process's private mount namespace (volumes). A missing target is created on the node
    /// first (a directory, or an empty file when the source is not a directory), since
    /// processes share the node's root filesystem.
    pub fn command_with_mounts(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        mounts: &[Mount],
    ) -> super::Result<tokio::process::Command> {
        let entry = self.entry(mounts)?;
        let mut cmd = tokio::process::Command::new(program);
        enter_on_exec(&mut cmd, entry);
        Ok(cmd)
    }

    /// What a process of this pod enters, with `mounts` (volumes) in its mount namespace.
    pub(crate) fn entry(&self, mounts: &[Mount]) -> super::Result<Entry> {
        let mut entry = self.base_entry()?;
        for m in mounts {
            prepare_target(m)?;
            entry.mounts.push((
                super::cstring(&m.source)?,
                super::cstring(&m.target)?,
                m.read_only,
            ));
        }
        Ok(entry)
    }
}

/// Creates `m.target` like its source (directory or file) when it does not exist yet.
fn prepare_target(m: &Mount) -> super::Result<()> {
    use super::SandboxError;
    if std::fs::symlink_metadata(&m.target).is_ok() {
        return Ok(());
    }
    let source_is_dir = std::fs::metadata(&m.source)
        .map_err(|e| SandboxError::io("stat mount source", &m.source, e))?
        .is_dir();
    if source_is_dir {
        std::fs::create_dir_all(&m.target)
            .map_err(|e| SandboxError::io("create mount target", &m.target, e))?;
    } else {
        if let Some(parent) = m.target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| SandboxError::io("create mount target", parent, e))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&m.target)
            .map_err(|e| SandboxError::io("create mount target", &m.target, e))?;
    }
    Ok(())
}
