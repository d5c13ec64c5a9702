//! Where the north-south (tc) balancer is attached: every interface of the node namespace
//! with a global address but `lo` — those carrying the node's addresses, where outside
//! clients arrive, and the gateways toward the backends (the pod bridge), where replies
//! arrive — found with `ip -j addr` and followed as interfaces come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use skiff_ebpf::NodePortLb;

use crate::lock;

/// How often new or re-created interfaces are looked for.
const RESCAN: Duration = Duration::from_secs(5);

/// The balancer and the interfaces of one node namespace it is attached to.
#[derive(Debug)]
pub struct NorthSouth {
    pub lb: Arc<Mutex<NodePortLb>>,
    /// `ip -n` name; `None`: the agent's own namespace.
    netns_name: Option<String>,
    netns_path: PathBuf,
    /// Attached interfaces by name, with the index they had (a re-created interface has a
    /// new one and needs a new attachment); and those that failed, logged once.
    attached: Mutex<(BTreeMap<String, u32>, BTreeSet<String>)>,
}

impl NorthSouth {
    pub fn new(lb: Arc<Mutex<NodePortLb>>, netns_name: Option<&str>, netns_path: &Path) -> Self {
        NorthSouth {
            lb,
            netns_name: netns_name.map(str::to_owned),
            netns_path: netns_path.to_owned(),
            attached: Mutex::default(),
        }
    }

    /// Attaches to every node interface not attached yet (or re-created since), forgets
    /// those that are gone. Blocking: a process and a few netlink calls.
    pub fn sync(&self) -> anyhow::Result<()> {
        let now = node_interfaces(self.netns_name.as_deref())?;
        let mut guard = lock(&self.attached);
        let (attached, failed) = &mut *guard;
        let mut lb = lock(&self.lb);
        let gone: Vec<String> = attached
            .keys()
            .filter(|name| !now.iter().any(|(n, _)| n == *name))
            .cloned()
            .collect();
        for name in gone {
            // the interface took its attachment with it; drop the bookkeeping
            lb.detach(&self.netns_path, &name);
            attached.remove(&name);
        }
        for (name, index) in now {
            match attached.get(&name) {
                Some(i) if *i == index => continue,
                Some(_) => {
                    lb.detach(&self.netns_path, &name);
                    attached.remove(&name);
                }
                None => {}
            }
            match lb.attach(&self.netns_path, &name) {
                Ok(()) => {
                    failed.remove(&name);
                    attached.insert(name, index);
                }
                Err(e) => {
                    if failed.insert(name.clone()) {
                        tracing::warn!(interface = name, error = %e, "north-south load balancer not attached");
                    }
                }
            }
        }
        Ok(())
    }

    /// Rescans until `stop`, on the blocking pool of the runtime it runs on.
    pub async fn follow(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(RESCAN) => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.sync()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "listing the node's interfaces"),
                Err(e) => tracing::warn!(error = %e, "north-south rescan task"),
            }
        }
    }

    /// Pins the attachments in `dir` for the next process ([`NodePortLb::hand_over`]).
    pub fn hand_over(&self, dir: &Path) -> Result<usize, skiff_ebpf::EbpfError> {
        let handed = lock(&self.lb).hand_over(dir);
        lock(&self.attached).0.clear();
        handed
    }

    /// Detaches from every interface (the links would go with the process anyway).
    pub fn detach_all(&self) {
        lock(&self.lb).detach_all();
        lock(&self.attached).0.clear();
    }
}

/// The node namespace's interfaces with a global address, but `lo`: (name, index).
pub fn node_interfaces(netns_name: Option<&str>) -> anyhow::Result<Vec<(String, u32)>> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns_name {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(["-j", "addr", "show"])
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "`ip -j addr show` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_interfaces(&out.stdout)
}

/// [`node_interfaces`] from `ip -j addr show` output.
fn parse_interfaces(json: &[u8]) -> anyhow::Result<Vec<(String, u32)>> {
    let links: Vec<serde_json::Value> =
        serde_json::from_slice(json).context("`ip -j addr show` printed no JSON list")?;
    let mut out = Vec::new();
    for link in &links {
        let (Some(name), Some(index)) = (
            link.get("ifname").and_then(|v| v.as_str()),
            link.get("ifindex").and_then(|v| v.as_u64()),
        ) else {
            continue;
        };
        let loopback = link
            .get("flags")
            .and_then(|f| f.as_array())
            .is_some_and(|f| f.iter().any(|f| f == "LOOPBACK"));
        let global = link
            .get("addr_info")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|a| a.get("scope").is_some_and(|s| s == "global"))
            });
        if !loopback
            && global
            && let Ok(index) = u32::try_from(index)
        {
            out.push((name.to_owned(), index));
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn interfaces_with_a_global_address_but_loopback() {
        let json = br#"[
          {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"addr_info":[
            {"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"},
            {"family":"inet","local":"127.0.0.2","prefixlen":8,"scope":"global"}]},
          {"ifindex":4,"ifname":"skiff0","flags":["BROADCAST","UP"],"addr_info":[
            {"family":"inet","local":"10.244.0.1","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
          {"ifindex":5,"ifname":"vethab","flags":["BROADCAST","UP"],"addr_info":[
            {"family":"inet6","local":"fe80::2","prefixlen":64,"scope":"link"}]},
          {"ifindex":6,"ifname":"eth1","flags":["UP"],"addr_info":[
            {"family":"inet6","local":"fd00::1","prefixlen":64,"scope":"global"}]},
          {"ifindex":7,"flags":[]}
        ]"#;
        assert_eq!(
            super::parse_interfaces(json).unwrap(),
            vec![("skiff0".to_owned(), 4), ("eth1".to_owned(), 6)]
        );
        assert!(super::parse_interfaces(b"not json").is_err());
    }
}
