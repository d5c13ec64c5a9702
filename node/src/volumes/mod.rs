//! Pod volumes on the node: emptyDir, configMap, secret, downwardAPI, projected and hostPath
//! under `<pod_dir>/volumes/<name>`, and the bind mounts each container gets.

mod atomic;
mod host_path;
mod mounts;
mod payload;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use skiff_api::quantity;
use tracing::{debug, warn};

use crate::env::{EnvError, EnvSources};
use crate::sandbox::Mount;
pub use atomic::{Payload, check_path};
use payload::default_mode;

/// Why a pod's volumes cannot be set up (the pod stays in ContainerCreating with this message).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{kind} {name:?} not found; create it or mark the volume optional")]
    SourceMissing { kind: &'static str, name: String },
    #[error(
        "couldn't find key {key} in {kind} {name:?}; fix the volume's items or mark it optional"
    )]
    KeyMissing {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("volume file path {0:?} must be relative without '..' elements")]
    BadPath(String),
    #[error(
        "downwardAPI {path}: container {container:?} not found in the pod; set resourceFieldRef.containerName"
    )]
    Container { path: String, container: String },
    #[error("hostPath {path:?} is not {expected}; fix the path or the volume's type")]
    HostPathType {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("volumeMount {mount:?} names no volume of the pod; add the volume or fix the name")]
    NoVolume { mount: String },
    #[error("unsupported {0}")]
    Unsupported(String),
    #[error("emptyDir {volume}: invalid sizeLimit {limit:?}")]
    SizeLimit { volume: String, limit: String },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Node-wide choices for volumes.
#[derive(Clone, Copy, Debug)]
pub struct VolumeOptions {
    /// Mount tmpfs for `medium: Memory` emptyDirs and for secret volumes (needs root); when
    /// false they are plain directories (tests without privileges).
    pub tmpfs: bool,
}

impl Default for VolumeOptions {
    fn default() -> Self {
        VolumeOptions { tmpfs: true }
    }
}

/// What a volume is on the node, for mounting.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    EmptyDir,
    /// configMap, secret, downwardAPI, projected: kubelet-written, mounted read-only.
    Written,
    HostPath,
}

/// The materialized volumes of one pod.
#[derive(Debug)]
pub struct PodVolumes {
    dir: PathBuf,
    options: VolumeOptions,
    volumes: BTreeMap<String, (PathBuf, Kind)>,
}

/// `<pod_dir>/volumes`.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { what, path, source }
}

impl PodVolumes {
    /// Creates every volume of `pod` under `<pod_dir>/volumes` (idempotent: an existing
    /// setup, e.g. after a kubelet restart, is reused and refreshed).
    pub fn setup(
        pod: &Pod,
        pod_dir: &Path,
        sources: &dyn EnvSources,
        options: VolumeOptions,
    ) -> Result<PodVolumes, VolumeError> {
        let dir = volumes_dir(pod_dir);
        let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
        // A pod without volumes gets no directory: each new inode costs (on a journal-less
        // ext4, more so after many recent deletions), and most pods have none.
        if volumes.clone().next().is_some() {
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        }
        let mut this = PodVolumes {
            dir,
            options,
            volumes: BTreeMap::new(),
        };
        for volume in volumes {
            let entry = this.setup_one(pod, volume, sources)?;
            this.volumes.insert(volume.name.clone(), entry);
        }
        Ok(this)
    }

    /// Rewrites configMap, secret, downwardAPI and projected volumes from the current
    /// objects (atomically per volume); other volumes are untouched. A volume that cannot
    /// be refreshed keeps its old files; the first such error is returned after trying all.
    pub fn update(&self, pod: &Pod, sources: &dyn EnvSources) -> Result<(), VolumeError> {
        let mut first = None;
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some((path, Kind::Written)) = self.volumes.get(&volume.name) {
                let result = written_payload(pod, volume, sources)
                    .and_then(|p| p.map_or(Ok(()), |p| atomic::write(path, &p)));
                if let Err(e) = result {
                    warn!(volume = %volume.name, error = %e, "volume not refreshed");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Where volume `name` lives on the node.
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(|(p, _)| p.as_path())
    }

    /// The bind mounts of `container`'s volumeMounts, for `Sandbox::command_with_mounts`.
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        mounts::container_mounts(container, |name| {
            self.volumes
                .get(name)
                .map(|(p, k)| (p.clone(), *k == Kind::Written))
        })
    }

    /// Unmounts the pod's tmpfs volumes and deletes `<pod_dir>/volumes` (hostPaths are kept).
    pub fn teardown(&self) -> Result<(), VolumeError> {
        teardown_dir(&self.dir)
    }

    fn setup_one(
        &self,
        pod: &Pod,
        volume: &Volume,
        sources: &dyn EnvSources,
    ) -> Result<(PathBuf, Kind), VolumeError> {
        let path = self.dir.join(&volume.name);
        if let Some(hp) = &volume.host_path {
            let host = PathBuf::from(&hp.path);
            host_path::check(&host, hp.type_.as_deref())?;
            return Ok((host, Kind::HostPath));
        }
        if let Some(ed) = &volume.empty_dir {
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
            if ed.medium.as_deref() == Some("Memory") {
                let size =
                    match &ed.size_limit {
                        Some(q) => Some(quantity::parse_units(&q.0).ok_or_else(|| {
                            VolumeError::SizeLimit {
                                volume: volume.name.clone(),
                                limit: q.0.clone(),
                            }
                        })?),
                        None => None,
                    };
                self.tmpfs(&path, size)?;
            }
            // World-writable as upstream: containers may run as any user.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(io("chmod", &path))?;
            return Ok((path, Kind::EmptyDir));
        }
        match written_payload(pod, volume, sources)? {
            Some(payload) => {
                std::fs::create_dir_all(&path).map_err(io("create", &path))?;
                let secret = volume.secret.is_some()
                    || volume.projected.as_ref().is_some_and(|p| {
                        p.sources
                            .iter()
                            .flatten()
                            .any(|s| s.secret.is_some() || s.service_account_token.is_some())
                    });
                if secret {
                    // Secrets never touch the node's disk.
                    self.tmpfs(&path, None)?;
                }
                atomic::write(&path, &payload)?;
                Ok((path, Kind::Written))
            }
            None => Err(VolumeError::Unsupported(format!(
                "volume type of {:?}: skiff supports emptyDir, configMap, secret, downwardAPI, projected and hostPath",
                volume.name
            ))),
        }
    }

    fn tmpfs(&self, path: &Path, size: Option<i128>) -> Result<(), VolumeError> {
        if !self.options.tmpfs {
            return Ok(());
        }
        if is_mount_point(path) {
            return Ok(());
        }
        let mut data = String::from("mode=0755");
        if let Some(size) = size {
            data.push_str(&format!(",size={size}"));
        }
        let data = std::ffi::CString::new(data)
            .map_err(|e| io("mount tmpfs on", path)(std::io::Error::other(e)))?;
        rustix::mount::mount(
            "tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
            Some(data.as_c_str()),
        )
        .map_err(|e| io("mount tmpfs on", path)(e.into()))?;
        debug!(path = %path.display(), "tmpfs mounted");
        Ok(())
    }
}

/// The files of a kubelet-written volume; `None` for other volume types.
fn written_payload(
    pod: &Pod,
    volume: &Volume,
    sources: &dyn EnvSources,
) -> Result<Option<Payload>, VolumeError> {
    let mut out = Payload::new();
    if let Some(cm) = &volume.config_map {
        let mode = default_mode(cm.default_mode);
        let optional = cm.optional == Some(true);
        payload::config_map(
            sources,
            &cm.name,
            cm.items.as_ref(),
            optional,
            mode,
            &mut out,
        )?;
    } else if let Some(s) = &volume.secret {
        let mode = default_mode(s.default_mode);
        let name = s.secret_name.clone().unwrap_or_default();
        let optional = s.optional == Some(true);
        payload::secret(sources, &name, s.items.as_ref(), optional, mode, &mut out)?;
    } else if let Some(d) = &volume.downward_api {
        let mode = default_mode(d.default_mode);
        payload::downward_api(pod, sources, d.items.as_ref(), mode, &mut out)?;
    } else if let Some(p) = &volume.projected {
        let mode = default_mode(p.default_mode);
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                payload::config_map(
                    sources,
                    &cm.name,
                    cm.items.as_ref(),
                    optional,
                    mode,
                    &mut out,
                )?;
            }
            if let Some(s) = &source.secret {
                let optional = s.optional == Some(true);
                payload::secret(sources, &s.name, s.items.as_ref(), optional, mode, &mut out)?;
            }
            if let Some(d) = &source.downward_api {
                payload::downward_api(pod, sources, d.items.as_ref(), mode, &mut out)?;
            }
            if source.service_account_token.is_some() || source.cluster_trust_bundle.is_some() {
                warn!(volume = %volume.name, "projected serviceAccountToken/clusterTrustBundle sources are not supported; skipped");
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(out))
}

/// Mount points at or under `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    // mountinfo names absolute paths with symlinks resolved; the kubelet's root dir may be
    // relative (`skiff up`'s default data dir is `.skiff/<name>`).
    let dir = &std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found: Vec<PathBuf> = crate::mountinfo::read()
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Whether `path` is the root of a mount: asked of `statx` (one call; reading mountinfo costs
/// as much as the node has mounts, and every pod adds some), else looked up in mountinfo
/// on kernels older than 5.8.
fn is_mount_point(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let flags = AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW;
    match statx(CWD, path, flags, StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        Err(_) => false,
        Ok(_) => mounts_under(path).iter().any(|p| p == path),
    }
}

/// Unmounts everything under `dir` (a pod's directory or its volumes directory) and deletes
/// it; for pods found after a kubelet restart as well as through [`PodVolumes::teardown`].
pub fn teardown_dir(dir: &Path) -> Result<(), VolumeError> {
    // Most pods have no volumes, hence no directory: no need to read every mount of the node.
    if std::fs::symlink_metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(());
    }
    for mount in mounts_under(dir) {
        if let Err(e) = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH) {
            return Err(io("unmount", &mount)(e.into()));
        }
        debug!(path = %mount.display(), "volume unmounted");
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", dir)(e)),
    }
}

#[cfg(test)]
mod tests;
