//! Deterministic names derived from the pod uid: netns, host-side veth, cgroup leaf (pure).

/// Linux interface names are at most 15 bytes.
const IFNAMSIZ_MAX: usize = 15;

/// The pod's network namespace name: `<prefix><uid>`.
pub fn netns_name(prefix: &str, uid: &str) -> String {
    format!("{prefix}{uid}")
}

/// The host side of the pod's veth: `skv` + 12 hex digits of a hash of prefix and uid, so two
/// clusters sharing a node namespace never collide and the name fits in 15 bytes.
pub fn veth_name(prefix: &str, uid: &str) -> String {
    let name = format!(
        "skv{:012x}",
        fnv1a64(format!("{prefix}/{uid}").as_bytes()) & 0xffff_ffff_ffff
    );
    debug_assert!(name.len() <= IFNAMSIZ_MAX);
    name
}

/// The pod cgroup's directory name, as the kubelet's cgroupfs driver names it.
pub fn cgroup_leaf(uid: &str) -> String {
    format!("pod{uid}")
}

/// A locally administered MAC for the bridge (02:...), fixed so that adding a port with a
/// lower MAC never changes the bridge's address under the pods' neighbour caches.
pub fn bridge_mac(seed: &str) -> String {
    let h = fnv1a64(seed.as_bytes()).to_be_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        h[0], h[1], h[2], h[3], h[4]
    )
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = veth_name("skiff-a-", "0b6c5c1e-0000-4000-8000-000000000001");
        assert_eq!(
            a,
            veth_name("skiff-a-", "0b6c5c1e-0000-4000-8000-000000000001")
        );
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("skv"));
        assert_ne!(
            a,
            veth_name("skiff-b-", "0b6c5c1e-0000-4000-8000-000000000001")
        );
        assert_eq!(netns_name("skiff-a-", "u1"), "skiff-a-u1");
        assert_eq!(cgroup_leaf("u1"), "podu1");
        let mac = bridge_mac("x");
        assert_eq!(mac.len(), 17);
        assert!(mac.starts_with("02:"));
    }
}
