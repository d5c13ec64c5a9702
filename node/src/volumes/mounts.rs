//! A container's volumeMounts as bind mounts (subPath resolved, kubelet-written volumes read-only).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::{VolumeError, check_path};
use crate::sandbox::Mount;

/// `volume(name)` gives a volume's node path and whether it is kubelet-written.
pub fn container_mounts(
    container: &Container,
    volume: impl Fn(&str) -> Option<(PathBuf, bool)>,
) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let (path, written) = volume(&vm.name).ok_or_else(|| VolumeError::NoVolume {
            mount: vm.name.clone(),
        })?;
        let source = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                check_path(sub)?;
                let source = path.join(sub);
                // Upstream creates a missing subPath in writable volumes.
                if !written && std::fs::symlink_metadata(&source).is_err() {
                    std::fs::create_dir_all(&source).map_err(|e| VolumeError::Io {
                        what: "create subPath",
                        path: source.clone(),
                        source: e,
                    })?;
                }
                source
            }
            None => path,
        };
        out.push(Mount {
            source,
            target: Path::new(&vm.mount_path).to_path_buf(),
            read_only: written || vm.read_only == Some(true),
        });
    }
    Ok(out)
}
