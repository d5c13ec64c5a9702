//! What a sandbox is made from: the pod fields the sandbox needs, cut down from the Pod.

use std::fmt;
use std::str::FromStr;

use super::error::SandboxError;

/// `spec.dnsPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnsPolicy {
    /// Cluster DNS, except for hostNetwork pods, which fall back to `Default`.
    #[default]
    ClusterFirst,
    /// Cluster DNS, for hostNetwork pods too.
    ClusterFirstWithHostNet,
    /// The node's resolv.conf.
    Default,
    /// Only what `spec.dnsConfig` says.
    None,
}

impl FromStr for DnsPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "ClusterFirst" => Ok(DnsPolicy::ClusterFirst),
            "ClusterFirstWithHostNet" => Ok(DnsPolicy::ClusterFirstWithHostNet),
            "Default" => Ok(DnsPolicy::Default),
            "None" => Ok(DnsPolicy::None),
            other => Err(format!(
                "unknown dnsPolicy {other:?}; use ClusterFirst, ClusterFirstWithHostNet, Default or None"
            )),
        }
    }
}

impl fmt::Display for DnsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsPolicy::ClusterFirst => "ClusterFirst",
            DnsPolicy::ClusterFirstWithHostNet => "ClusterFirstWithHostNet",
            DnsPolicy::Default => "Default",
            DnsPolicy::None => "None",
        })
    }
}

/// One `spec.dnsConfig.options` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsOption {
    pub name: String,
    pub value: Option<String>,
}

/// `spec.dnsConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<DnsOption>,
}

/// One `spec.hostAliases` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// The pod-level resources its cgroup carries: the sum over its containers (see `from_pod`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    /// CPU limit in millicores; `None` = unlimited.
    pub cpu_limit_millis: Option<u64>,
    /// CPU request in millicores (the cgroup's weight/shares); `None` = the minimum weight.
    pub cpu_request_millis: Option<u64>,
    /// Memory limit in bytes; `None` = unlimited.
    pub memory_limit_bytes: Option<u64>,
}

/// Everything the sandbox needs to know about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSandboxSpec {
    /// `metadata.uid`: the sandbox's identity (netns, cgroup and IPAM are keyed by it).
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `spec.hostNetwork`: no netns, no IP of its own; runs in the node namespace.
    pub host_network: bool,
    pub dns_policy: DnsPolicy,
    pub dns_config: Option<PodDnsConfig>,
    /// The pod's hostname: `spec.hostname`, else the pod name cut to 63 characters.
    pub hostname: String,
    /// `spec.subdomain`: gives the pod the FQDN `<hostname>.<subdomain>.<ns>.svc.<zone>`.
    pub subdomain: Option<String>,
    pub host_aliases: Vec<HostAlias>,
    pub resources: PodResources,
}

impl PodSandboxSpec {
    /// `namespace/name` for messages and logs.
    pub fn pod_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks the fields the sandbox turns into names and paths.
    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        let bad = |field: &'static str, value: &str, reason: &str| SandboxError::InvalidSpec {
            pod: self.pod_name(),
            field,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !valid_uid(&self.uid) {
            return Err(bad(
                "metadata.uid",
                &self.uid,
                "must be 1-128 characters of letters, digits and '-' (it names the netns and cgroup)",
            ));
        }
        if self.hostname.is_empty()
            || self.hostname.len() > 63
            || !self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(bad(
                "hostname",
                &self.hostname,
                "must be 1-63 characters of letters, digits, '-' and '.'",
            ));
        }
        Ok(())
    }
}

/// Whether `uid` is safe to use in file and namespace names.
pub(crate) fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 128
        && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_policy_parses_upstream_names() {
        assert_eq!("".parse::<DnsPolicy>().unwrap(), DnsPolicy::ClusterFirst);
        assert_eq!("None".parse::<DnsPolicy>().unwrap(), DnsPolicy::None);
        assert!(
            "clusterfirst"
                .parse::<DnsPolicy>()
                .unwrap_err()
                .contains("clusterfirst")
        );
        assert_eq!(
            DnsPolicy::ClusterFirstWithHostNet.to_string(),
            "ClusterFirstWithHostNet"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut spec = PodSandboxSpec {
            uid: "../etc".into(),
            namespace: "ns".into(),
            name: "p".into(),
            hostname: "p".into(),
            ..Default::default()
        };
        let err = spec.validate().unwrap_err().to_string();
        assert!(
            err.contains("metadata.uid") && err.contains("../etc"),
            "{err}"
        );
        spec.uid = "0b6c-11".into();
        spec.validate().unwrap();
        spec.hostname = "a b".into();
        assert!(
            spec.validate()
                .unwrap_err()
                .to_string()
                .contains("hostname")
        );
    }
}
