//! What a data plane programs, frontend by frontend: a pure plan from the table and its diff,
//! shared by the eBPF and userspace data planes so both read the table the same way.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::diff::TableDiff;
use crate::model::Protocol;
use crate::table::{FrontendKind, ServicePortEntry, ServiceTable};

/// One frontend as a data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendProgram {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub kind: FrontendKind,
    /// Empty: reject.
    pub backends: Vec<SocketAddr>,
    /// ClientIP session affinity timeout, seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` on an external frontend.
    pub preserve_client_ip: bool,
}

impl FrontendProgram {
    pub fn key(&self) -> (SocketAddr, Protocol) {
        (self.addr, self.protocol)
    }
}

/// Every frontend of `entry` with the backends of its family and policy.
pub fn frontends(entry: &ServicePortEntry) -> impl Iterator<Item = FrontendProgram> + '_ {
    entry.frontends.iter().map(move |f| FrontendProgram {
        addr: SocketAddr::new(f.ip, f.port),
        protocol: entry.key.protocol,
        kind: f.kind,
        backends: entry
            .backends_for(f)
            .iter()
            .map(|b| SocketAddr::new(b.ip, b.port))
            .collect(),
        affinity_timeout: entry.affinity_timeout,
        preserve_client_ip: entry.preserves_client_ip(f),
    })
}

/// The work of one `apply`: frontends to stop serving, then frontends to (re)program.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<(SocketAddr, Protocol)>,
    pub upsert: Vec<FrontendProgram>,
}

/// The plan that takes a data plane to `table`, following `diff`; with `diff.full`, by
/// comparing with what `programmed` says the data plane serves (asked only then, so an
/// incremental apply stays proportional to the change). A frontend that moved between
/// entries is removed and then programmed again, so it ends programmed.
pub fn plan(
    table: &ServiceTable,
    diff: &TableDiff,
    programmed: impl FnOnce() -> BTreeSet<(SocketAddr, Protocol)>,
) -> Plan {
    let mut plan = Plan::default();
    if diff.full {
        let programmed = programmed();
        let desired: Vec<FrontendProgram> = table.ports().flat_map(|e| frontends(e)).collect();
        let keep: BTreeSet<(SocketAddr, Protocol)> =
            desired.iter().map(FrontendProgram::key).collect();
        plan.remove = programmed
            .iter()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        plan.upsert = desired;
        return plan;
    }
    for entry in &diff.removed {
        plan.remove.extend(frontends(entry).map(|p| p.key()));
    }
    for change in &diff.changed {
        plan.remove.extend(
            change
                .frontends_removed
                .iter()
                .map(|f| (SocketAddr::new(f.ip, f.port), change.old.key.protocol)),
        );
    }
    // Whatever is programmed again below must not be removed after all.
    let mut upsert: Vec<FrontendProgram> = diff.added.iter().flat_map(|e| frontends(e)).collect();
    upsert.extend(diff.changed.iter().flat_map(|c| frontends(&c.new)));
    let again: BTreeSet<(SocketAddr, Protocol)> = upsert.iter().map(FrontendProgram::key).collect();
    plan.remove.retain(|k| !again.contains(k));
    plan.remove.sort();
    plan.remove.dedup();
    plan.upsert = upsert;
    plan
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::table::NodeInfo;

    fn table(yaml: &str) -> ServiceTable {
        let manifests =
            skiff_api::parse_manifests("t.yaml", yaml, skiff_api::Strictness::Strict).unwrap();
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for m in manifests {
            match m.object {
                skiff_api::Object::Service(s) => services.push(*s),
                skiff_api::Object::EndpointSlice(s) => slices.push(*s),
                _ => {}
            }
        }
        let node = NodeInfo {
            name: "n1".into(),
            zone: None,
            addresses: vec!["192.0.2.1".parse().unwrap()],
        };
        ServiceTable::build(&node, services.iter(), slices.iter(), None)
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  type: NodePort
  clusterIP: 10.96.0.20
  clusterIPs: [10.96.0.20]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.244.0.5]
  conditions: {ready: true}
"#;

    #[test]
    fn a_full_plan_programs_every_frontend_and_removes_strays() {
        let t = table(WEB);
        let stray = ("10.96.0.99:80".parse().unwrap(), Protocol::Tcp);
        let programmed: BTreeSet<_> = [stray].into_iter().collect();
        let p = plan(&t, &TableDiff::full(&t), || programmed);
        assert_eq!(p.remove, vec![stray]);
        let mut addrs: Vec<String> = p.upsert.iter().map(|f| f.addr.to_string()).collect();
        addrs.sort();
        assert_eq!(addrs, ["10.96.0.20:80", "192.0.2.1:30080"]);
        assert!(
            p.upsert
                .iter()
                .all(|f| f.backends == ["10.244.0.5:8080".parse().unwrap()])
        );
    }

    #[test]
    fn a_diff_plan_touches_only_what_changed() {
        let old = table(WEB);
        let more = "- addresses: [10.244.0.6]\n  conditions: {ready: true}\n";
        let new = table(&format!("{WEB}{more}"));
        let d = TableDiff::between(&old, &new);
        let p = plan(&new, &d, BTreeSet::new);
        assert!(p.remove.is_empty());
        assert_eq!(p.upsert.len(), 2);
        assert!(p.upsert.iter().all(|f| f.backends.len() == 2));
        let gone = ServiceTable::empty(new.node().clone());
        let d = TableDiff::between(&new, &gone);
        let p = plan(&gone, &d, BTreeSet::new);
        assert_eq!(p.remove.len(), 2);
        assert!(p.upsert.is_empty());
    }
}
