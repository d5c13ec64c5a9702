//! Attachments handed from a stopping process to the next one: on a clean stop the owner
//! pins its BPF links (`link.*` beside the pinned maps), so the programs go on translating
//! while no process runs; the next process attaches its own programs first, then releases
//! the handed-over links ([`release_links`]). A crash pins nothing: its links die with it.

use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};

use crate::EbpfError;

/// The prefix of every pinned link's name in a pin directory (a BPF file system refuses
/// names with a dot).
const PREFIX: &str = "link_";

/// Pins `link` as `dir/link_<name>` (replacing a pin of that name); dots in `name` become
/// colons (which no interface name holds).
pub(crate) fn pin(dir: &Path, name: &str, link: FdLink) -> Result<(), EbpfError> {
    let path = dir.join(format!("{PREFIX}{}", name.replace('.', ":")));
    release(&path)?;
    link.pin(&path).map_err(|e| {
        let detail = match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
        EbpfError::io(
            format!("pinning the link at {}", path.display()),
            std::io::Error::other(detail),
        )
    })?;
    Ok(())
}

/// Detaches every link a previous process handed over in `dir` (unpinned: the last
/// reference goes, so the kernel detaches its program). Returns how many there were.
pub fn release_links(dir: impl AsRef<Path>) -> Result<usize, EbpfError> {
    let dir = dir.as_ref();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(EbpfError::io(format!("reading {}", dir.display()), e)),
    };
    let mut released = 0;
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            release(&entry.path())?;
            released += 1;
        }
    }
    Ok(released)
}

fn release(path: &Path) -> Result<(), EbpfError> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let fd: FdLink = link
                .unpin()
                .map_err(|e| EbpfError::io(format!("unpinning {}", path.display()), e))?;
            drop(fd);
            Ok(())
        }
        Err(_) if !path.exists() => Ok(()),
        // not a link (a stray file): remove the name all the same
        Err(_) => std::fs::remove_file(path)
            .map_err(|e| EbpfError::io(format!("removing {}", path.display()), e)),
    }
}
