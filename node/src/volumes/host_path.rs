//! hostPath volumes: the `type` checks (and creation for the `...OrCreate` types).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use super::VolumeError;

/// Checks (or creates) `path` according to the hostPath `type`.
pub fn check(path: &Path, kind: Option<&str>) -> Result<(), VolumeError> {
    let kind = kind.unwrap_or("");
    let io = |what: &'static str| {
        let p = path.to_path_buf();
        move |e| VolumeError::Io {
            what,
            path: p,
            source: e,
        }
    };
    let meta = std::fs::metadata(path).ok();
    let wrong = |expected: &'static str| VolumeError::HostPathType {
        path: path.to_path_buf(),
        expected,
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Some(m) if m.is_dir() => Ok(()),
            Some(_) => Err(wrong("a directory")),
            None => {
                std::fs::create_dir_all(path).map_err(io("create"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("chmod"))
            }
        },
        "Directory" => meta
            .filter(|m| m.is_dir())
            .map(|_| ())
            .ok_or_else(|| wrong("an existing directory")),
        "FileOrCreate" => match meta {
            Some(m) if m.is_file() => Ok(()),
            Some(_) => Err(wrong("a file")),
            None => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(io("create"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io("chmod"))
            }
        },
        "File" => meta
            .filter(|m| m.is_file())
            .map(|_| ())
            .ok_or_else(|| wrong("an existing file")),
        "Socket" => meta
            .filter(|m| m.file_type().is_socket())
            .map(|_| ())
            .ok_or_else(|| wrong("an existing socket")),
        "CharDevice" => meta
            .filter(|m| m.file_type().is_char_device())
            .map(|_| ())
            .ok_or_else(|| wrong("an existing character device")),
        "BlockDevice" => meta
            .filter(|m| m.file_type().is_block_device())
            .map(|_| ())
            .ok_or_else(|| wrong("an existing block device")),
        other => Err(VolumeError::Unsupported(format!("hostPath type {other:?}"))),
    }
}
