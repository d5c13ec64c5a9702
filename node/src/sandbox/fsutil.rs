//! Small file helpers: atomic writes (temp file, rename) and in-place rewrites.
//!
//! Neither fsyncs, on purpose: the sandbox state (records, IPAM, DNS files) describes network
//! namespaces, cgroups and processes, none of which outlive the machine. What must hold is
//! that a crash of skiff never leaves a half-written file, which the rename gives; after a
//! power loss the kernel objects are gone too and start-up recovery removes their records. An
//! fsync per file made pod start-up wait on the disk several times, under the IPAM lock.

use std::io::Write;
use std::path::Path;

use super::error::{Result, SandboxError};

/// Writes `bytes` to `path` so that a crash of the process leaves either the old or the new
/// content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        SandboxError::io(
            "write",
            path,
            std::io::Error::other("path has no parent directory"),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(|e| SandboxError::io("create directory", dir, e))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| SandboxError::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| SandboxError::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| SandboxError::io("rename into place", path, e))
}

/// Writes `bytes` into `path` in place (truncate + write), keeping the inode so that bind
/// mounts of the file in running processes see the new content.
pub(crate) fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| SandboxError::io("open for writing", path, e))?;
    f.write_all(bytes)
        .map_err(|e| SandboxError::io("write", path, e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
