//! The pod's `/etc/hosts`, as the kubelet's managed hosts file (pure).

use std::net::IpAddr;

use super::spec::{HostAlias, PodSandboxSpec};

/// The hosts file for a pod. `ips` are the pod's addresses; `node_hosts` is the node's own
/// hosts file, which hostNetwork pods get (plus their hostAliases).
pub fn pod_hosts(
    spec: &PodSandboxSpec,
    ips: &[IpAddr],
    cluster_domain: &str,
    node_hosts: &str,
) -> String {
    let mut s = String::new();
    if spec.host_network {
        s.push_str("# Kubernetes-managed hosts file (host network).\n");
        s.push_str(node_hosts);
        if !node_hosts.is_empty() && !node_hosts.ends_with('\n') {
            s.push('\n');
        }
    } else {
        s.push_str("# Kubernetes-managed hosts file.\n");
        s.push_str("127.0.0.1\tlocalhost\n");
        s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        s.push_str("fe00::0\tip6-localnet\n");
        s.push_str("fe00::0\tip6-mcastprefix\n");
        s.push_str("fe00::1\tip6-allnodes\n");
        s.push_str("fe00::2\tip6-allrouters\n");
        let host = &spec.hostname;
        let domain = spec
            .subdomain
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|sub| {
                format!(
                    "{sub}.{}.svc.{}",
                    spec.namespace,
                    cluster_domain.trim_end_matches('.')
                )
            });
        for ip in ips {
            match &domain {
                Some(d) => s.push_str(&format!("{ip}\t{host}.{d}\t{host}\n")),
                None => s.push_str(&format!("{ip}\t{host}\n")),
            }
        }
    }
    s.push_str(&aliases(&spec.host_aliases));
    s
}

fn aliases(list: &[HostAlias]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in list {
        s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> PodSandboxSpec {
        PodSandboxSpec {
            uid: "u".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            hostname: "web-0".into(),
            ..Default::default()
        }
    }

    const LOCAL: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";

    #[test]
    fn pod_ips_with_hostname() {
        let ips: Vec<IpAddr> = vec!["10.244.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let text = pod_hosts(&spec(), &ips, "cluster.local", "ignored");
        assert_eq!(text, format!("{LOCAL}10.244.0.5\tweb-0\nfd00::5\tweb-0\n"));
    }

    #[test]
    fn subdomain_gives_fqdn_and_aliases_are_appended() {
        let mut s = spec();
        s.subdomain = Some("web".into());
        s.host_aliases = vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: vec!["foo.local".into(), "bar".into()],
        }];
        let text = pod_hosts(&s, &["10.244.0.5".parse().unwrap()], "cluster.local.", "");
        assert_eq!(
            text,
            format!(
                "{LOCAL}10.244.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar\n"
            )
        );
    }

    #[test]
    fn host_network_gets_the_node_file() {
        let mut s = spec();
        s.host_network = true;
        s.host_aliases = vec![HostAlias {
            ip: "10.1.2.3".into(),
            hostnames: vec!["foo".into()],
        }];
        let text = pod_hosts(&s, &[], "cluster.local", "127.0.0.1 localhost node1");
        assert_eq!(
            text,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost node1\n\n# Entries added by HostAliases.\n10.1.2.3\tfoo\n"
        );
    }
}
