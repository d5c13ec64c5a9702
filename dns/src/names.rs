//! Domain names as skiff-dns keeps them: lowercase wire form (length-prefixed labels, root last), and the cluster-specific spellings of addresses (reverse names, `a-b-c-d` labels).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The longest name on the wire (RFC 1035 §2.3.4), root label included.
pub const MAX_NAME_LEN: usize = 255;
/// The longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// A dotted name (`a.b.c`, trailing dot optional) in lowercase wire form; `None` when it cannot
/// be one (an empty label in the middle, a label over 63 bytes, a name over 255).
///
/// Why wire form: the snapshot is keyed by the exact bytes a query carries (lowercased), so a
/// lookup needs no parsing into labels, and escaping questions (a `.` inside a label) never arise.
pub fn to_wire(dotted: &str) -> Option<Vec<u8>> {
    let trimmed = dotted.strip_suffix('.').unwrap_or(dotted);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= MAX_NAME_LEN).then_some(out)
}

/// The dotted form of a wire name (for logs and errors), with a trailing dot.
pub fn to_dotted(wire: &[u8]) -> String {
    let mut out = String::new();
    for label in labels(wire) {
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(b as char);
            } else {
                let _ = write!(out, "\\{b:03}");
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The labels of a well-formed wire name, leftmost first (the root label excluded).
pub fn labels(wire: &[u8]) -> Labels<'_> {
    Labels { wire, pos: 0 }
}

/// Iterator over the labels of a wire name; see [`labels`].
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(*self.wire.get(self.pos)?);
        if len == 0 {
            return None;
        }
        let label = self.wire.get(self.pos + 1..self.pos + 1 + len)?;
        self.pos += 1 + len;
        Some(label)
    }
}

/// Where `suffix` (a wire name) starts inside `name` on a label boundary, if `name` is
/// `suffix` or below it.
pub fn suffix_offset(name: &[u8], suffix: &[u8]) -> Option<usize> {
    if name.len() < suffix.len() {
        return None;
    }
    let want = name.len() - suffix.len();
    let mut pos = 0;
    loop {
        if pos == want {
            return (name[pos..] == *suffix).then_some(pos);
        }
        if pos > want {
            return None;
        }
        let len = usize::from(*name.get(pos)?);
        if len == 0 {
            return None;
        }
        pos += 1 + len;
    }
}

/// `child` + `.` + `parent`: a wire name one label deeper, `None` when too long or the label is
/// not a label.
pub fn prepend(label: &str, parent: &[u8]) -> Option<Vec<u8>> {
    if label.is_empty()
        || label.len() > MAX_LABEL_LEN
        || label.len() + 1 + parent.len() > MAX_NAME_LEN
    {
        return None;
    }
    let mut out = Vec::with_capacity(label.len() + 1 + parent.len());
    out.push(label.len() as u8);
    out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    out.extend_from_slice(parent);
    Some(out)
}

/// The parent of a wire name (drop the first label); `None` for the root.
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*wire.first()?);
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// The reverse-lookup name of an address: `d.c.b.a.in-addr.arpa` or the 32-nibble
/// `ip6.arpa` form (RFC 3596 §2.5: every nibble, no zero compression).
pub fn reverse_name(ip: IpAddr) -> String {
    let mut out = String::with_capacity(72);
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let _ = write!(out, "{d}.{c}.{b}.{a}.in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            for byte in v6.octets().iter().rev() {
                let _ = write!(out, "{:x}.{:x}.", byte & 0xf, byte >> 4);
            }
            out.push_str("ip6.arpa");
        }
    }
    out
}

/// The label spelling of an address used for pod names and for endpoints without a hostname:
/// `10-244-0-5`, `fd00-10-244--5` (the textual form with `.`/`:` as `-`, as CoreDNS spells it).
pub fn ip_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a pod label spells (`10-244-0-5` → 10.244.0.5; `fd00-10-244--5` → fd00:10:244::5),
/// whatever zero-padding or compression the asker chose.
pub fn parse_ip_label(label: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(label).ok()?;
    if text.bytes().filter(|&b| b == b'-').count() == 3 && !text.contains("--") {
        if let Ok(v4) = text.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
        // Leading zeros ("010-...") are refused by std; accept them as kube-dns did.
        let mut octets = [0u8; 4];
        for (slot, part) in octets.iter_mut().zip(text.split('-')) {
            if part.is_empty() || part.len() > 3 {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    text.replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let w = to_wire("Foo.Default.svc.cluster.local.").expect("valid");
        assert_eq!(to_dotted(&w), "foo.default.svc.cluster.local.");
        assert_eq!(to_wire(""), Some(vec![0]));
        assert_eq!(to_wire("a..b"), None);
        assert_eq!(to_wire(&"a".repeat(64)), None);
        assert_eq!(labels(&w).count(), 5);
    }

    #[test]
    fn suffixes_on_label_boundaries_only() {
        let zone = to_wire("cluster.local").expect("valid");
        let name = to_wire("a.cluster.local").expect("valid");
        assert_eq!(suffix_offset(&name, &zone), Some(2));
        assert_eq!(suffix_offset(&zone, &zone), Some(0));
        let other = to_wire("xcluster.local").expect("valid");
        assert_eq!(suffix_offset(&other, &zone), None);
        assert_eq!(parent(&name), Some(zone.as_slice()));
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.96.0.10".parse().expect("ip")),
            "10.0.96.10.in-addr.arpa"
        );
        let v6 = reverse_name("fd00:10:96::a".parse().expect("ip"));
        assert_eq!(
            v6,
            "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa"
        );
    }

    #[test]
    fn ip_labels() {
        let v4: IpAddr = "10.244.0.5".parse().expect("ip");
        assert_eq!(ip_label(v4), "10-244-0-5");
        assert_eq!(parse_ip_label(b"10-244-0-5"), Some(v4));
        assert_eq!(parse_ip_label(b"010-244-000-5"), Some(v4));
        let v6: IpAddr = "fd00:10:244::5".parse().expect("ip");
        assert_eq!(ip_label(v6), "fd00-10-244--5");
        assert_eq!(parse_ip_label(b"fd00-10-244--5"), Some(v6));
        assert_eq!(parse_ip_label(b"not-an-ip"), None);
        assert_eq!(parse_ip_label(b"1-2-3-256"), None);
    }
}
