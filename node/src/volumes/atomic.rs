//! The kubelet's atomic writer: files in a `..<stamp>` dir, a `..data` symlink swapped by
//! rename, and top-level symlinks through `..data`, so readers see all old or all new files.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

use super::VolumeError;

/// Relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Checks a payload path the way upstream does: relative, no `..` element, not starting with `..`.
pub fn check_path(path: &str) -> Result<(), VolumeError> {
    let p = Path::new(path);
    let bad = path.is_empty()
        || path.starts_with("..")
        || p.components().any(|c| !matches!(c, Component::Normal(_)));
    if bad {
        return Err(VolumeError::BadPath(path.to_owned()));
    }
    Ok(())
}

/// Makes `dir` hold exactly `payload`; a no-op when nothing changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<(), VolumeError> {
    let io = |what: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| VolumeError::Io {
            what,
            path: p,
            source: e,
        }
    };
    for path in payload.keys() {
        check_path(path)?;
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let old = std::fs::read_link(dir.join(DATA)).ok();
    if old
        .as_ref()
        .is_some_and(|o| unchanged(&dir.join(o), payload))
    {
        return Ok(());
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let stamp = format!(
        "..{}_{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f"),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let new = dir.join(&stamp);
    std::fs::create_dir(&new).map_err(io("create", &new))?;
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755))
        .map_err(io("chmod", &new))?;
    for (path, (content, mode)) in payload {
        let file = new.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::write(&file, content).map_err(io("write", &file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &file))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(io("symlink", &tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(io("rename", &tmp))?;
    // Top-level entries: add links for new ones, remove those no longer in the payload.
    let tops: BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(top), &link).map_err(io("symlink", &link))?;
        }
    }
    let entries = std::fs::read_dir(dir).map_err(io("read", dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Whether the files under `current` already are `payload` (same paths, bytes and modes).
fn unchanged(current: &Path, payload: &Payload) -> bool {
    let mut found = Vec::new();
    collect(current, current, &mut found);
    found.len() == payload.len()
        && found.iter().all(|rel| {
            let p = current.join(rel);
            let Some((content, mode)) = payload.get(rel) else {
                return false;
            };
            std::fs::read(&p).is_ok_and(|c| &c == content)
                && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == *mode)
        })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}
