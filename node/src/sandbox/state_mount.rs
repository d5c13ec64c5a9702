//! The sandbox state directory on a tmpfs of its own (`skiff up`), mounted at start and
//! unmounted at teardown.
//!
//! Its files (records, resolv.conf, hosts) describe network namespaces, veths and cgroups,
//! which live exactly as long as the kernel does: a tmpfs gives them that lifetime, as `/run`
//! does on most hosts. It also takes four new inodes per pod off the disk's filesystem, where
//! they are not free: a journal-less ext4 skips every recently deleted inode when it allocates
//! one, so a burst of pods right after another burst was deleted spent ~13% of skiff's CPU
//! there.

use std::path::Path;

use tracing::{debug, info, warn};

use super::error::{Result, SandboxError};

/// The mount's source, which marks it as ours in mountinfo (found again after a crash).
const SOURCE: &str = "skiff-sandbox";

/// What is mounted at a directory, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
enum Mounted {
    Nothing,
    Ours,
    Other,
}

fn mounted_at(dir: &Path) -> Mounted {
    // mountinfo names absolute paths with symlinks resolved; `skiff up`'s default data dir is
    // relative (`.skiff/<name>`). A directory that does not exist has nothing mounted on it.
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Mounted::Nothing;
    };
    // The last mount at a path is the visible one.
    match crate::mountinfo::read()
        .into_iter()
        .rfind(|m| m.point == dir)
    {
        None => Mounted::Nothing,
        Some(m) if m.fstype == "tmpfs" && m.source == SOURCE => Mounted::Ours,
        Some(_) => Mounted::Other,
    }
}

/// Puts `dir` on its own tmpfs unless something is mounted there already (ours, left by a
/// crash: adopted with its records; someone else's: used as it is) or it holds records
/// written to the disk by an earlier run (kept, so their sandboxes can be found and removed).
/// A tmpfs that cannot be mounted leaves the state on the disk, with a warning.
pub(crate) fn ensure(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create directory", dir, e))?;
    match mounted_at(dir) {
        Mounted::Ours => {
            debug!(dir = %dir.display(), "sandbox state tmpfs already mounted");
            return Ok(());
        }
        Mounted::Other => return Ok(()),
        Mounted::Nothing => {}
    }
    let on_disk = std::fs::read_dir(dir.join("pods"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if on_disk {
        info!(dir = %dir.display(), "sandbox records on the disk from an earlier run: keeping the state there");
        return Ok(());
    }
    let mounted = rustix::mount::mount(
        SOURCE,
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        Some(c"mode=0755,size=64m"),
    );
    match mounted {
        Ok(()) => debug!(dir = %dir.display(), "sandbox state on its own tmpfs"),
        Err(e) => warn!(
            dir = %dir.display(),
            error = %std::io::Error::from(e),
            "cannot mount a tmpfs for the sandbox state; keeping it on the disk"
        ),
    }
    Ok(())
}

/// Unmounts the tmpfs [`ensure`] mounted at `dir`, if it is there (nothing else is touched).
pub(crate) fn release(dir: &Path) {
    if mounted_at(dir) != Mounted::Ours {
        return;
    }
    if let Err(e) = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH) {
        warn!(dir = %dir.display(), error = %std::io::Error::from(e), "cannot unmount the sandbox state tmpfs");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn a_fresh_dir_gets_a_tmpfs_that_release_removes() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandbox");
        ensure(&dir).unwrap();
        assert_eq!(mounted_at(&dir), Mounted::Ours);
        // A second start (after a crash, or `up`'s teardown) adopts it with its files.
        std::fs::write(dir.join("kept"), b"x").unwrap();
        ensure(&dir).unwrap();
        assert!(dir.join("kept").exists());
        release(&dir);
        assert_eq!(mounted_at(&dir), Mounted::Nothing);
        assert!(!dir.join("kept").exists());
        release(&dir);
    }

    #[test]
    fn a_path_through_a_symlink_is_found_again_and_released() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let dir = tmp.path().join("link/./sandbox");
        ensure(&dir).unwrap();
        assert_eq!(mounted_at(&dir), Mounted::Ours);
        // Found as ours, so not mounted a second time on top.
        ensure(&dir).unwrap();
        let on_it = crate::mountinfo::read()
            .into_iter()
            .filter(|m| m.point == tmp.path().join("real/sandbox"))
            .count();
        assert_eq!(on_it, 1);
        release(&dir);
        assert_eq!(
            mounted_at(&tmp.path().join("real/sandbox")),
            Mounted::Nothing
        );
    }

    #[test]
    fn records_on_the_disk_keep_the_state_there() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandbox");
        std::fs::create_dir_all(dir.join("pods/0b0e4e5e-0000-4000-8000-000000000001")).unwrap();
        ensure(&dir).unwrap();
        assert_eq!(mounted_at(&dir), Mounted::Nothing);
        release(&dir);
        assert!(dir.join("pods").exists());
    }

    #[test]
    fn someone_elses_mount_is_left_alone() {
        if !root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sandbox");
        std::fs::create_dir_all(&dir).unwrap();
        rustix::mount::mount(
            "other",
            &dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        ensure(&dir).unwrap();
        assert_eq!(mounted_at(&dir), Mounted::Other);
        release(&dir);
        assert_eq!(mounted_at(&dir), Mounted::Other);
        rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
}
