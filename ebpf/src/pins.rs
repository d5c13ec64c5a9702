//! Pinned maps in a BPF file system: the bpffs check, reusing (or, when incompatible,
//! replacing) pins an earlier process left, and removing them.
//!
//! A pin outlives the process, so the next one may be a different build. aya opens an existing
//! pin without comparing it with the object being loaded, and a program given a map of another
//! layout would read garbage: every pin is checked first (type, key and value size, entries),
//! and if any differs, all of that program's pins are removed and it starts with fresh maps.

use std::path::{Path, PathBuf};

use aya::maps::{MapInfo, MapType};

use crate::EbpfError;

/// What a map must look like to be reused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapShape {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: u32,
}

/// Every map name either program pins, for [`remove_pins`] (names are unique across both).
pub(crate) const ALL_PINNED: [&str; 15] = [
    // sock_lb.c
    "allowed_netns",
    "services",
    "backends",
    "affinity",
    "affinity_members",
    "rev_nat",
    "counters",
    // tc_nodeport.c
    "ns_services",
    "ns_backends",
    "ns_maglev",
    "ns_members",
    "ns_flows",
    "ns_replies",
    "ns_snat",
    "ns_counters",
];

/// Checks `dir` is on a BPF file system, creates it, and returns the pin path of each map.
/// Pins of a different shape (an earlier build, other sizes) are removed first, all of
/// them: a program must never mix its maps with another build's.
pub(crate) fn prepare(
    dir: &Path,
    shapes: &[MapShape],
) -> Result<Vec<(&'static str, PathBuf)>, EbpfError> {
    check_bpffs(dir)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| EbpfError::io(format!("creating {}", dir.display()), e))?;
    let mismatch = shapes.iter().find_map(|shape| {
        let path = dir.join(shape.name);
        if !path.exists() {
            return None;
        }
        match MapInfo::from_pin(&path) {
            Ok(info) => differs(shape, &info).map(|why| format!("{}: {why}", path.display())),
            Err(e) => Some(format!("{}: cannot open ({e})", path.display())),
        }
    });
    if let Some(why) = mismatch {
        tracing::warn!(
            dir = %dir.display(),
            reason = %why,
            "pinned BPF maps left by another build or other sizes: starting with fresh maps \
             (connections established through the old ones may break)"
        );
        for shape in shapes {
            remove_file(&dir.join(shape.name))?;
        }
    }
    Ok(shapes
        .iter()
        .map(|shape| (shape.name, dir.join(shape.name)))
        .collect())
}

fn differs(want: &MapShape, info: &MapInfo) -> Option<String> {
    match info.map_type() {
        Ok(t) if t == want.map_type => {}
        Ok(t) => return Some(format!("type {t:?}, want {:?}", want.map_type)),
        Err(e) => return Some(format!("unknown type ({e})")),
    }
    let have = (
        info.key_size() as usize,
        info.value_size() as usize,
        info.max_entries(),
    );
    let expected = (want.key_size, want.value_size, want.max_entries);
    (have != expected).then(|| {
        format!(
            "key/value size and entries {}/{}/{}, want {}/{}/{}",
            have.0, have.1, have.2, expected.0, expected.1, expected.2
        )
    })
}

fn remove_file(path: &Path) -> Result<(), EbpfError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EbpfError::io(format!("removing {}", path.display()), e)),
    }
}

/// Removes a pin directory made with [`crate::SockLbOptions::pin_dir`] or
/// [`crate::NodePortOptions::pin_dir`] (the map pins of both programs, then the directory).
/// Maps live on while a loaded balancer still uses them. Absent: no-op. Returns whether the
/// directory existed.
pub fn remove_pins(dir: impl AsRef<Path>) -> Result<bool, EbpfError> {
    let dir = dir.as_ref();
    if !dir.exists() {
        return Ok(false);
    }
    crate::release_links(dir)?;
    for name in ALL_PINNED {
        remove_file(&dir.join(name))?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            let left: Vec<String> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| {
                            e.ok().map(|e| e.file_name().to_string_lossy().into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            Err(EbpfError::io(
                format!("removing {} (still holds {left:?})", dir.display()),
                e,
            ))
        }
    }
}

/// Checks that `dir` (or, when it does not exist yet, its nearest existing ancestor) is on a
/// BPF file system. Pins only work there; on sysfs, where `/sys/fs/bpf` is an empty directory
/// until bpffs is mounted on it, they would fail with a bare EPERM.
pub fn check_bpffs(dir: impl AsRef<Path>) -> Result<(), EbpfError> {
    const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
    let dir = dir.as_ref();
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let stat = rustix::fs::statfs(existing)
        .map_err(|e| EbpfError::io(format!("statfs {}", existing.display()), e.into()))?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    if stat.f_type as u64 != BPF_FS_MAGIC {
        return Err(EbpfError::NotBpffs(existing.to_owned()));
    }
    Ok(())
}
