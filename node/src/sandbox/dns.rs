//! The pod's `/etc/resolv.conf` per dnsPolicy, as the kubelet computes it (pure).

use std::net::IpAddr;

use super::error::SandboxError;
use super::spec::{DnsPolicy, PodSandboxSpec};

/// Upstream's limits (`pkg/apis/core/validation` and the kubelet's `formDNSConfigFitsLimits`).
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains a resolv.conf gets.
pub const MAX_SEARCHES: usize = 32;
/// Most characters of the search list.
pub const MAX_SEARCH_CHARS: usize = 2048;

/// What a resolv.conf says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// Options as written (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses a resolv.conf as the kubelet does: the last `search` line wins, trailing dots
    /// are dropped, comments start with `#` or `;`.
    pub fn parse(text: &str) -> Self {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => out.nameservers.extend(fields.next().map(str::to_string)),
                Some("search") => {
                    out.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => out.options.extend(fields.map(str::to_string)),
                _ => {}
            }
        }
        out
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.searches.is_empty() {
            s.push_str("search ");
            s.push_str(&self.searches.join(" "));
            s.push('\n');
        }
        for ns in &self.nameservers {
            s.push_str("nameserver ");
            s.push_str(ns);
            s.push('\n');
        }
        if !self.options.is_empty() {
            s.push_str("options ");
            s.push_str(&self.options.join(" "));
            s.push('\n');
        }
        s
    }
}

/// The resolv.conf for a pod. `host` is the node's resolv.conf (the kubelet's `--resolv-conf`).
pub fn pod_resolv_conf(
    spec: &PodSandboxSpec,
    cluster_dns: &[IpAddr],
    cluster_domain: &str,
    host: &ResolvConf,
) -> Result<ResolvConf, SandboxError> {
    let cluster = match spec.dns_policy {
        DnsPolicy::ClusterFirstWithHostNet => true,
        DnsPolicy::ClusterFirst => !spec.host_network,
        DnsPolicy::Default | DnsPolicy::None => false,
    };
    let mut out = if spec.dns_policy == DnsPolicy::None {
        let has_servers = spec
            .dns_config
            .as_ref()
            .is_some_and(|c| !c.nameservers.is_empty());
        if !has_servers {
            return Err(SandboxError::InvalidSpec {
                pod: spec.pod_name(),
                field: "spec.dnsConfig.nameservers",
                value: String::new(),
                reason: "dnsPolicy None needs spec.dnsConfig with at least one nameserver".into(),
            });
        }
        ResolvConf::default()
    } else if cluster && !cluster_dns.is_empty() {
        // Upstream appends the node's search domains after the cluster ones.
        let zone = cluster_domain.trim_end_matches('.');
        let mut searches = vec![
            format!("{}.svc.{zone}", spec.namespace),
            format!("svc.{zone}"),
            zone.to_string(),
        ];
        searches.extend(host.searches.iter().cloned());
        ResolvConf {
            nameservers: cluster_dns.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        // Default, ClusterFirst on the host network, and cluster DNS with no cluster DNS IP
        // configured (upstream falls back the same way).
        host.clone()
    };
    if let Some(cfg) = &spec.dns_config {
        out.nameservers.extend(cfg.nameservers.iter().cloned());
        out.searches.extend(cfg.searches.iter().cloned());
        for opt in &cfg.options {
            let text = match &opt.value {
                Some(v) => format!("{}:{v}", opt.name),
                None => opt.name.clone(),
            };
            // A pod option replaces the option of the same name (ndots:5 → ndots:2).
            match out.options.iter_mut().find(|o| option_name(o) == opt.name) {
                Some(existing) => *existing = text,
                None => out.options.push(text),
            }
        }
    }
    dedup(&mut out.nameservers);
    dedup(&mut out.searches);
    dedup(&mut out.options);
    out.nameservers.truncate(MAX_NAMESERVERS);
    out.searches.truncate(MAX_SEARCHES);
    while !out.searches.is_empty() && out.searches.join(" ").len() > MAX_SEARCH_CHARS {
        out.searches.pop();
    }
    Ok(out)
}

fn option_name(opt: &str) -> &str {
    opt.split(':').next().unwrap_or(opt)
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::sandbox::spec::{DnsOption, PodDnsConfig};

    const HOST: &str = "# host\nnameserver 192.0.2.53\nnameserver 192.0.2.54 ; second\nsearch corp.example. lab.example\noptions edns0 ndots:1\n";

    fn pod(policy: DnsPolicy, host_network: bool) -> PodSandboxSpec {
        PodSandboxSpec {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            hostname: "web-0".into(),
            host_network,
            dns_policy: policy,
            ..Default::default()
        }
    }

    fn render(spec: &PodSandboxSpec) -> String {
        let dns: Vec<IpAddr> = vec!["10.96.0.10".parse().unwrap()];
        pod_resolv_conf(spec, &dns, "cluster.local", &ResolvConf::parse(HOST))
            .unwrap()
            .render()
    }

    #[test]
    fn parses_host_resolv_conf() {
        let r = ResolvConf::parse(HOST);
        assert_eq!(r.nameservers, ["192.0.2.53", "192.0.2.54"]);
        assert_eq!(r.searches, ["corp.example", "lab.example"]);
        assert_eq!(r.options, ["edns0", "ndots:1"]);
    }

    #[test]
    fn cluster_first() {
        assert_eq!(
            render(&pod(DnsPolicy::ClusterFirst, false)),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn cluster_first_on_host_network_falls_back_to_default() {
        assert_eq!(
            render(&pod(DnsPolicy::ClusterFirst, true)),
            render(&pod(DnsPolicy::Default, false))
        );
        assert_eq!(
            render(&pod(DnsPolicy::Default, false)),
            "search corp.example lab.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0 ndots:1\n"
        );
    }

    #[test]
    fn cluster_first_with_host_net_uses_cluster_dns() {
        let text = render(&pod(DnsPolicy::ClusterFirstWithHostNet, true));
        assert!(text.starts_with("search shop.svc.cluster.local "), "{text}");
        assert!(text.contains("nameserver 10.96.0.10\n"));
    }

    #[test]
    fn no_cluster_dns_falls_back_to_host() {
        let spec = pod(DnsPolicy::ClusterFirst, false);
        let r = pod_resolv_conf(&spec, &[], "cluster.local", &ResolvConf::parse(HOST)).unwrap();
        assert_eq!(r.nameservers, ["192.0.2.53", "192.0.2.54"]);
    }

    #[test]
    fn none_needs_dns_config_and_uses_only_it() {
        let mut spec = pod(DnsPolicy::None, false);
        let err = pod_resolv_conf(&spec, &[], "cluster.local", &ResolvConf::default()).unwrap_err();
        assert!(
            err.to_string().contains("spec.dnsConfig.nameservers"),
            "{err}"
        );
        spec.dns_config = Some(PodDnsConfig {
            nameservers: vec!["1.2.3.4".into()],
            searches: vec!["ns1.svc.cluster-domain.example".into()],
            options: vec![
                DnsOption {
                    name: "ndots".into(),
                    value: Some("2".into()),
                },
                DnsOption {
                    name: "edns0".into(),
                    value: None,
                },
            ],
        });
        assert_eq!(
            render(&spec),
            "search ns1.svc.cluster-domain.example\nnameserver 1.2.3.4\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn dns_config_merges_and_overrides_options() {
        let mut spec = pod(DnsPolicy::ClusterFirst, false);
        spec.dns_config = Some(PodDnsConfig {
            nameservers: vec![
                "10.96.0.10".into(),
                "10.0.0.1".into(),
                "10.0.0.2".into(),
                "10.0.0.3".into(),
            ],
            searches: vec!["extra.example".into(), "svc.cluster.local".into()],
            options: vec![DnsOption {
                name: "ndots".into(),
                value: Some("1".into()),
            }],
        });
        let r = pod_resolv_conf(
            &spec,
            &["10.96.0.10".parse().unwrap()],
            "cluster.local",
            &ResolvConf::default(),
        )
        .unwrap();
        // Duplicates dropped, at most 3 nameservers.
        assert_eq!(r.nameservers, ["10.96.0.10", "10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            r.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "extra.example"
            ]
        );
        assert_eq!(r.options, ["ndots:1"]);
    }

    #[test]
    fn search_list_limits() {
        let mut spec = pod(DnsPolicy::ClusterFirst, false);
        spec.dns_config = Some(PodDnsConfig {
            searches: (0..40)
                .map(|i| format!("d{i}.{}", "x".repeat(100)))
                .collect(),
            ..Default::default()
        });
        let r = pod_resolv_conf(
            &spec,
            &["10.96.0.10".parse().unwrap()],
            "cluster.local",
            &ResolvConf::default(),
        )
        .unwrap();
        assert!(r.searches.len() <= MAX_SEARCHES);
        assert!(r.searches.join(" ").len() <= MAX_SEARCH_CHARS);
        assert_eq!(r.searches[0], "shop.svc.cluster.local");
    }
}
