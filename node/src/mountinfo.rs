//! Reading `/proc/self/mountinfo`: the mount point, filesystem type, source and superblock
//! options of each line, unescaped.

use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

/// The mounts of this process's mount namespace, in mount order (an empty list if unreadable).
pub(crate) fn read() -> Vec<MountEntry> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Parses a mountinfo text (pure); malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            Some(MountEntry {
                point: PathBuf::from(unescape(point)),
                fstype: unescape(right.next()?),
                source: unescape(right.next().unwrap_or_default()),
                super_options: right.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_split_and_unescaped() {
        let text = "36 35 98:0 / /mnt/a\\040b\\134c rw,noatime master:1 - tmpfs skiff-sandbox rw,size=64k\n\
                    garbage\n\
                    1 2 0:3 / /sys/fs/cgroup rw shared:9 - cgroup2 none rw,nsdelegate\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].point, PathBuf::from("/mnt/a b\\c"));
        assert_eq!(m[0].fstype, "tmpfs");
        assert_eq!(m[0].source, "skiff-sandbox");
        assert_eq!(m[0].super_options, "rw,size=64k");
        assert_eq!(m[1].point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m[1].fstype, "cgroup2");
    }
}
