//! The node namespace's routes for service CIDRs, set before anything is programmed so a
//! packet to a service address never leaves the node: `unreachable` (the eBPF data plane
//! rewrites known addresses before routing) or `local` (the userspace data plane listens on
//! them), through iproute2.

use std::net::IpAddr;
use std::process::Command;

/// How the node treats a service CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRoute {
    /// Rejected with ICMP unreachable: nothing in the CIDR is reachable but by translation.
    Unreachable,
    /// Delivered locally (`table local`, on `lo`): every address in the CIDR is the node's own.
    Local,
}

/// A service CIDR, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Cidr, RouteError> {
        let bad = || RouteError::BadCidr(s.to_owned());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

/// Why a route could not be set.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{0:?} is not a CIDR (want ADDRESS/PREFIX, e.g. 10.96.0.0/12)")]
    BadCidr(String),
    #[error("cannot run `ip` (install iproute2): {0}")]
    Spawn(std::io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// The iproute2 arguments that set (`replace`) or remove (`del`) one route.
fn args(netns: Option<&str>, verb: &str, cidr: Cidr, kind: ServiceRoute) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if let Some(ns) = netns {
        a.extend(["-n".into(), ns.into()]);
    }
    a.push(if cidr.addr.is_ipv4() { "-4" } else { "-6" }.into());
    a.extend(["route".into(), verb.into()]);
    match kind {
        ServiceRoute::Unreachable => a.extend(["unreachable".into(), cidr.to_string()]),
        ServiceRoute::Local => a.extend([
            "local".into(),
            cidr.to_string(),
            "dev".into(),
            "lo".into(),
            "table".into(),
            "local".into(),
        ]),
    }
    a
}

fn ip(args: &[String]) -> Result<(), RouteError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(RouteError::Spawn)?;
    if !out.status.success() {
        return Err(RouteError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Sets `kind` for every CIDR in network namespace `netns` (`None`: the caller's own, for a
/// node daemon on a real host). Idempotent.
pub fn install(netns: Option<&str>, cidrs: &[Cidr], kind: ServiceRoute) -> Result<(), RouteError> {
    for cidr in cidrs {
        ip(&args(netns, "replace", *cidr, kind))?;
    }
    Ok(())
}

/// Removes what [`install`] set; routes already gone are not an error.
pub fn remove(netns: Option<&str>, cidrs: &[Cidr], kind: ServiceRoute) {
    for cidr in cidrs {
        if let Err(e) = ip(&args(netns, "del", *cidr, kind)) {
            tracing::debug!(error = %e, "removing a service route");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_refuse_nonsense() {
        let c: Cidr = "fd00:10:96::/112".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:10:96::/112");
        for bad in ["10.96.0.0", "10.96.0.0/33", "x/12", "fd00::/129"] {
            let e = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn route_arguments_name_the_namespace_family_and_table() {
        let c: Cidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(
            args(Some("skiff-x"), "replace", c, ServiceRoute::Local).join(" "),
            "-n skiff-x -4 route replace local 10.96.0.0/12 dev lo table local"
        );
        let c6: Cidr = "fd00:10:96::/112".parse().unwrap();
        assert_eq!(
            args(None, "del", c6, ServiceRoute::Unreachable).join(" "),
            "-6 route del unreachable fd00:10:96::/112"
        );
    }
}
