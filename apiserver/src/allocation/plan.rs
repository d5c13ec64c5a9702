//! What a Service create or update needs allocated (pure): IP-family defaulting, requested values checked against the ranges, immutability, and the values an update carries over or drops.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::Service;
use skiff_api::validation::FieldPath;
use skiff_api::{FieldError, FieldErrorType, FieldErrors};

use super::range::{Cidr, Family};

/// An address only one Service may have (the contract reserves `10.96.0.10` for kube-dns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub ip: IpAddr,
    pub namespace: String,
    pub name: String,
}

/// The service network: where ClusterIPs and NodePorts come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// `--service-cidr`: the first is the primary family, at most one per family.
    pub cidrs: Vec<Cidr>,
    /// `--service-node-port-range`.
    pub node_ports: RangeInclusive<u16>,
    /// Addresses kept for one named Service each.
    pub reserved: Vec<Reserved>,
}

impl ServiceNetwork {
    pub fn cidr_for(&self, family: Family) -> Option<&Cidr> {
        self.cidrs.iter().find(|c| c.family() == family)
    }

    fn families(&self) -> Vec<Family> {
        self.cidrs.iter().map(Cidr::family).collect()
    }

    /// Who an address is reserved for, if anyone.
    pub fn reserved_for(&self, ip: &IpAddr) -> Option<&Reserved> {
        self.reserved.iter().find(|r| &r.ip == ip)
    }
}

/// One ClusterIP to hold, in `clusterIPs` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSlot {
    /// This address (requested by the client, or kept from before).
    Given(IpAddr),
    /// Any free address of the family.
    Any(Family),
}

/// One port to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSlot {
    Given(u16),
    Any,
}

/// What the Service needs, after defaulting: `node_ports` has one slot per `spec.ports` entry
/// when the type needs node ports, none otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub ips: Vec<IpSlot>,
    pub node_ports: Vec<PortSlot>,
    pub health_check: Option<PortSlot>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.node_ports.is_empty() && self.health_check.is_none()
    }
}

fn service_type(svc: &Service) -> &str {
    svc.spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

fn needs_cluster_ip(svc: &Service) -> bool {
    service_type(svc) != "ExternalName"
}

fn needs_node_ports(svc: &Service) -> bool {
    match service_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc
            .spec
            .as_ref()
            .and_then(|s| s.allocate_load_balancer_node_ports)
            .unwrap_or(true),
        _ => false,
    }
}

fn needs_health_check(svc: &Service) -> bool {
    service_type(svc) == "LoadBalancer"
        && svc
            .spec
            .as_ref()
            .and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local")
}

/// The ClusterIPs a stored Service holds (not `None`).
pub fn held_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let ips = match (&spec.cluster_ips, &spec.cluster_ip) {
        (Some(ips), _) if !ips.is_empty() => ips.clone(),
        (_, Some(ip)) => vec![ip.clone()],
        _ => Vec::new(),
    };
    ips.iter().filter_map(|ip| ip.parse().ok()).collect()
}

/// The node ports (and health-check node port) a stored Service holds, each once.
pub fn held_ports(svc: &Service) -> Vec<u16> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let node_ports = spec.ports.iter().flatten().filter_map(|p| p.node_port);
    for port in node_ports.chain(spec.health_check_node_port) {
        if let Ok(p) = u16::try_from(port)
            && p != 0
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// On update, what upstream's `patchAllocatedValues` and `dropTypeDependentFields` do: a
/// client that omits allocated values (a PUT of its own manifest) keeps them while the type
/// still needs them; values the new type no longer needs are dropped when left unchanged.
pub fn carry_over(old: &Service, new: &mut Service) {
    let old_spec = old.spec.clone().unwrap_or_default();
    let keep_ips = needs_cluster_ip(old) && needs_cluster_ip(new);
    let keep_ports = needs_node_ports(old) && needs_node_ports(new);
    let keep_hc = needs_health_check(old) && needs_health_check(new);
    let drop_ips = !needs_cluster_ip(new);
    let drop_ports = !needs_node_ports(new);
    let drop_hc = !needs_health_check(new);
    let Some(spec) = new.spec.as_mut() else {
        return;
    };
    if keep_ips {
        let empty = |s: &Option<String>| s.as_deref().unwrap_or("").is_empty();
        if empty(&spec.cluster_ip) && spec.cluster_ips.as_ref().is_none_or(Vec::is_empty) {
            spec.cluster_ip = old_spec.cluster_ip.clone();
            spec.cluster_ips = old_spec.cluster_ips.clone();
        } else if empty(&spec.cluster_ip) {
            spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|c| c.first().cloned());
        }
        if spec.ip_families.as_ref().is_none_or(Vec::is_empty) {
            spec.ip_families = old_spec.ip_families.clone();
        }
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy = old_spec.ip_family_policy.clone();
        }
    }
    // Downgrading to SingleStack drops the secondary address and family (upstream).
    let downgrade = spec.ip_family_policy.as_deref() == Some("SingleStack")
        && old_spec.ip_family_policy.as_deref() != Some("SingleStack");
    if keep_ips && downgrade {
        if spec.cluster_ips == old_spec.cluster_ips
            && let Some(ips) = spec.cluster_ips.as_mut()
        {
            ips.truncate(1);
        }
        if spec.ip_families == old_spec.ip_families
            && let Some(families) = spec.ip_families.as_mut()
        {
            families.truncate(1);
        }
    }
    if drop_ips {
        if spec.cluster_ip == old_spec.cluster_ip {
            spec.cluster_ip = None;
        }
        if spec.cluster_ips == old_spec.cluster_ips {
            spec.cluster_ips = None;
        }
        if spec.ip_families == old_spec.ip_families {
            spec.ip_families = None;
        }
        if spec.ip_family_policy == old_spec.ip_family_policy {
            spec.ip_family_policy = None;
        }
    }
    // Fields only some types allow go with the type when the client left them as they were.
    let external = |t: &str, ips: &Option<Vec<String>>| {
        matches!(t, "NodePort" | "LoadBalancer") || ips.as_ref().is_some_and(|i| !i.is_empty())
    };
    let new_type = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
    if !external(&new_type, &spec.external_ips)
        && spec.external_traffic_policy == old_spec.external_traffic_policy
    {
        spec.external_traffic_policy = None;
    }
    if new_type != "LoadBalancer" {
        if spec.allocate_load_balancer_node_ports == old_spec.allocate_load_balancer_node_ports {
            spec.allocate_load_balancer_node_ports = None;
        }
        if spec.load_balancer_class == old_spec.load_balancer_class {
            spec.load_balancer_class = None;
        }
    }
    let old_ports = old_spec.ports.clone().unwrap_or_default();
    for port in spec.ports.iter_mut().flatten() {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let before = old_ports.iter().find(|o| {
            o.port == port.port && o.protocol.clone().unwrap_or_else(|| "TCP".into()) == protocol
        });
        let before_np = before.and_then(|o| o.node_port);
        if keep_ports && port.node_port.unwrap_or(0) == 0 && before_np.is_some() {
            port.node_port = before_np;
        }
        if drop_ports && port.node_port.is_some() && port.node_port == before_np {
            port.node_port = None;
        }
    }
    if keep_hc && spec.health_check_node_port.unwrap_or(0) == 0 {
        spec.health_check_node_port = old_spec.health_check_node_port;
    }
    if drop_hc && spec.health_check_node_port == old_spec.health_check_node_port {
        spec.health_check_node_port = None;
    }
}

fn invalid(errs: &mut FieldErrors, field: &FieldPath, value: &str, detail: impl Into<String>) {
    errs.0.push(FieldError {
        field: field.to_string(),
        error_type: FieldErrorType::Invalid,
        value: Some(format!("{value:?}")),
        detail: detail.into(),
    });
}

fn invalid_num(errs: &mut FieldErrors, field: &FieldPath, value: i32, detail: impl Into<String>) {
    errs.0.push(FieldError {
        field: field.to_string(),
        error_type: FieldErrorType::Invalid,
        value: Some(value.to_string()),
        detail: detail.into(),
    });
}

fn forbidden(errs: &mut FieldErrors, field: &FieldPath, detail: impl Into<String>) {
    errs.0.push(FieldError {
        field: field.to_string(),
        error_type: FieldErrorType::Forbidden,
        value: None,
        detail: detail.into(),
    });
}

/// Defaults `ipFamilyPolicy`, `ipFamilies`, `clusterIP(s)` of `new` as upstream's
/// `initIPFamilyFields` does, checks requested values (range, reservation, immutability
/// against `old`) and says what must be allocated. `namespace`/`name` identify the Service
/// (reserved addresses are theirs only).
pub fn plan(
    net: &ServiceNetwork,
    namespace: &str,
    name: &str,
    old: Option<&Service>,
    new: &mut Service,
) -> Result<Plan, FieldErrors> {
    let mut errs = FieldErrors::default();
    let spec_path = FieldPath::new("spec");
    let mut plan = Plan::default();
    let wants_ips = needs_cluster_ip(new);
    let wants_ports = needs_node_ports(new);
    let wants_hc = needs_health_check(new);
    let has_selector = new
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    let Some(spec) = new.spec.as_mut() else {
        return Ok(plan);
    };

    if !wants_ips {
        if spec.cluster_ips.as_ref().is_some_and(|c| !c.is_empty()) {
            forbidden(
                &mut errs,
                &spec_path.child("clusterIPs"),
                "may not be set for ExternalName services",
            );
        }
        if spec.ip_families.as_ref().is_some_and(|f| !f.is_empty()) {
            forbidden(
                &mut errs,
                &spec_path.child("ipFamilies"),
                "may not be set when `type` is 'ExternalName'",
            );
        }
        if spec.ip_family_policy.is_some() {
            forbidden(
                &mut errs,
                &spec_path.child("ipFamilyPolicy"),
                "may not be set when `type` is 'ExternalName'",
            );
        }
    } else {
        // clusterIP and clusterIPs[0] say the same thing: fill whichever is missing.
        let cluster_ip = spec.cluster_ip.clone().filter(|s| !s.is_empty());
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        match (&cluster_ip, ips.is_empty()) {
            (Some(ip), true) => ips = vec![ip.clone()],
            (None, false) => spec.cluster_ip = ips.first().cloned(),
            _ => {}
        }
        let ips_path = spec_path.child("clusterIPs");
        let families_path = spec_path.child("ipFamilies");
        let policy_path = spec_path.child("ipFamilyPolicy");
        let headless = ips.first().is_some_and(|ip| ip == "None");
        if headless && ips.len() > 1 {
            invalid(
                &mut errs,
                &ips_path.index(1),
                &ips[1],
                "must not be set when clusterIPs[0] is 'None'",
            );
        }
        let requested: Vec<Option<IpAddr>> = if headless {
            Vec::new()
        } else {
            ips.iter().map(|ip| ip.parse().ok()).collect()
        };
        if requested.len() > 2 {
            invalid(
                &mut errs,
                &ips_path,
                &ips.join(","),
                "may only hold up to 2 values",
            );
        }
        let mut families: Vec<Family> = Vec::new();
        for (i, f) in spec.ip_families.iter().flatten().enumerate() {
            match Family::parse(f) {
                Some(f) if !families.contains(&f) => families.push(f),
                Some(_) => errs.0.push(FieldError {
                    field: families_path.index(i).to_string(),
                    error_type: FieldErrorType::Duplicate,
                    value: Some(format!("{f:?}")),
                    detail: String::new(),
                }),
                None => {} // validation already refused it
            }
        }
        // Families follow the requested addresses.
        for (i, ip) in requested.iter().enumerate() {
            let Some(ip) = ip else { continue };
            let family = Family::of(ip);
            match families.get(i) {
                Some(f) if *f != family => invalid(
                    &mut errs,
                    &families_path.index(i),
                    f.as_str(),
                    format!("must match the IP family of clusterIPs[{i}] ({ip})"),
                ),
                Some(_) => {}
                None if families.contains(&family) => invalid(
                    &mut errs,
                    &ips_path.index(i),
                    &ip.to_string(),
                    "may not have the same IP family as another clusterIP",
                ),
                None => families.push(family),
            }
        }
        let policy = match spec.ip_family_policy.clone() {
            Some(p) => p,
            None if families.len() > 1 || requested.len() > 1 => "RequireDualStack".to_owned(),
            None if headless && !has_selector => "RequireDualStack".to_owned(),
            None => "SingleStack".to_owned(),
        };
        // Selector-less headless Services take whatever families they ask for (upstream).
        let free_families = headless && !has_selector;
        let cluster_families = net.families();
        let dual_cluster = cluster_families.len() > 1;
        if policy == "SingleStack" && families.len() > 1 {
            invalid(
                &mut errs,
                &policy_path,
                &policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are \
                 specified",
            );
        }
        if policy == "RequireDualStack" && !dual_cluster && !free_families {
            invalid(
                &mut errs,
                &policy_path,
                &policy,
                "this cluster is not configured for dual-stack services",
            );
        }
        for (i, f) in families.iter().enumerate() {
            if !cluster_families.contains(f) && !free_families {
                invalid(
                    &mut errs,
                    &families_path.index(i),
                    f.as_str(),
                    "not configured on this cluster",
                );
            }
        }
        if families.is_empty()
            && let Some(primary) = cluster_families.first()
        {
            families.push(*primary);
        }
        if policy != "SingleStack" {
            for f in &cluster_families {
                if !families.contains(f) && families.len() < 2 {
                    families.push(*f);
                }
            }
        }
        if headless && has_selector {
            families.truncate(if policy == "SingleStack" { 1 } else { 2 });
        }
        // Immutability: the primary family and address stay; a secondary may come or go.
        if let Some(old) = old.filter(|o| needs_cluster_ip(o)) {
            let old_spec = old.spec.clone().unwrap_or_default();
            let old_families: Vec<Family> = old_spec
                .ip_families
                .iter()
                .flatten()
                .filter_map(|f| Family::parse(f))
                .collect();
            for (i, (was, is)) in old_families.iter().zip(&families).enumerate() {
                if was != is && (i == 0 || requested.len() > 1) {
                    invalid(
                        &mut errs,
                        &families_path.index(i),
                        is.as_str(),
                        "may not change once set",
                    );
                }
            }
            let old_ips = old_spec.cluster_ips.clone().unwrap_or_default();
            for (i, was) in old_ips.iter().enumerate() {
                let is = ips.get(i);
                let changed = match is {
                    Some(is) => is != was,
                    None => i == 0,
                };
                if changed && (i == 0 || requested.len() > 1) {
                    invalid(
                        &mut errs,
                        &ips_path.index(i),
                        is.map_or("", String::as_str),
                        "may not change once set",
                    );
                }
            }
        }
        if !headless {
            for (i, family) in families.iter().enumerate() {
                match requested.get(i).copied().flatten() {
                    Some(ip) => {
                        let path = ips_path.index(i);
                        let kept = old.is_some_and(|o| held_ips(o).contains(&ip));
                        match net.cidr_for(*family) {
                            Some(cidr) if cidr.offset_of(&ip).is_none() => invalid(
                                &mut errs,
                                &path,
                                &ip.to_string(),
                                format!(
                                    "provided IP is not in the valid range. The range of valid \
                                     IPs is {cidr}"
                                ),
                            ),
                            _ => {}
                        }
                        if let Some(r) = net.reserved_for(&ip)
                            && !kept
                            && (r.namespace != namespace || r.name != name)
                        {
                            invalid(
                                &mut errs,
                                &path,
                                &ip.to_string(),
                                format!(
                                    "provided IP is reserved for the Service {}/{}",
                                    r.namespace, r.name
                                ),
                            );
                        }
                        plan.ips.push(IpSlot::Given(ip));
                    }
                    None => {
                        // A reserved Service gets its reserved address by default.
                        let mine = net.reserved.iter().find(|r| {
                            r.namespace == namespace
                                && r.name == name
                                && Family::of(&r.ip) == *family
                        });
                        plan.ips.push(match mine {
                            Some(r) => IpSlot::Given(r.ip),
                            None => IpSlot::Any(*family),
                        });
                    }
                }
            }
        }
        spec.ip_family_policy = Some(policy);
        spec.ip_families = Some(families.iter().map(|f| f.as_str().to_owned()).collect());
        if headless {
            spec.cluster_ip = Some("None".into());
            spec.cluster_ips = Some(vec!["None".into()]);
        }
    }

    if wants_ports {
        let mut seen: HashSet<(u16, String)> = HashSet::new();
        for (i, port) in spec.ports.iter().flatten().enumerate() {
            let path = spec_path.child("ports").index(i).child("nodePort");
            match port.node_port.filter(|p| *p != 0) {
                Some(np) => match u16::try_from(np) {
                    Ok(p) if net.node_ports.contains(&p) => {
                        let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                        if !seen.insert((p, proto)) {
                            errs.0.push(FieldError {
                                field: path.to_string(),
                                error_type: FieldErrorType::Duplicate,
                                value: Some(np.to_string()),
                                detail: String::new(),
                            });
                        }
                        plan.node_ports.push(PortSlot::Given(p));
                    }
                    _ => invalid_num(
                        &mut errs,
                        &path,
                        np,
                        format!(
                            "provided port is not in the valid range. The range of valid ports \
                             is {}-{}",
                            net.node_ports.start(),
                            net.node_ports.end()
                        ),
                    ),
                },
                None => plan.node_ports.push(PortSlot::Any),
            }
        }
    }
    let hc_path = spec_path.child("healthCheckNodePort");
    match spec.health_check_node_port.filter(|p| *p != 0) {
        Some(hc) if !wants_hc => forbidden(
            &mut errs,
            &hc_path,
            format!(
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is \
                 'Local' (got {hc})"
            ),
        ),
        Some(hc) => match u16::try_from(hc) {
            Ok(p) if net.node_ports.contains(&p) => plan.health_check = Some(PortSlot::Given(p)),
            _ => invalid_num(
                &mut errs,
                &hc_path,
                hc,
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    net.node_ports.start(),
                    net.node_ports.end()
                ),
            ),
        },
        None if wants_hc => plan.health_check = Some(PortSlot::Any),
        None => {}
    }
    if errs.is_empty() { Ok(plan) } else { Err(errs) }
}

/// Writes what was allocated into the Service: `ips` for the plan's IP slots, `ports` for its
/// node-port slots, `health_check` for the health-check slot.
pub fn write(svc: &mut Service, ips: &[IpAddr], ports: &[u16], health_check: Option<u16>) {
    let Some(spec) = svc.spec.as_mut() else {
        return;
    };
    if !ips.is_empty() {
        let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
        spec.cluster_ip = ips.first().cloned();
        spec.cluster_ips = Some(ips);
    }
    for (port, np) in spec.ports.iter_mut().flatten().zip(ports) {
        port.node_port = Some(i32::from(*np));
    }
    if let Some(hc) = health_check {
        spec.health_check_node_port = Some(i32::from(hc));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn net(cidrs: &[&str]) -> ServiceNetwork {
        ServiceNetwork {
            cidrs: cidrs.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            node_ports: 30000..=32767,
            reserved: vec![Reserved {
                ip: "10.96.0.10".parse().unwrap(),
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            }],
        }
    }

    fn dual() -> ServiceNetwork {
        net(&["10.96.0.0/12", "fd00:10:96::/112"])
    }

    fn svc(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "s", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn families(s: &Service) -> Vec<String> {
        s.spec
            .as_ref()
            .unwrap()
            .ip_families
            .clone()
            .unwrap_or_default()
    }

    fn policy(s: &Service) -> String {
        s.spec
            .as_ref()
            .unwrap()
            .ip_family_policy
            .clone()
            .unwrap_or_default()
    }

    fn err(result: Result<Plan, FieldErrors>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn single_stack_by_default_in_the_primary_family() {
        let mut s = svc(json!({"ports": [{"port": 80}]}));
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(p.ips, vec![IpSlot::Any(Family::V4)]);
        assert_eq!(families(&s), ["IPv4"]);
        assert_eq!(policy(&s), "SingleStack");
        assert!(p.node_ports.is_empty() && p.health_check.is_none());
    }

    #[test]
    fn dual_stack_policies() {
        let mut s = svc(json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}));
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(
            p.ips,
            vec![IpSlot::Any(Family::V4), IpSlot::Any(Family::V6)]
        );
        assert_eq!(families(&s), ["IPv4", "IPv6"]);

        let mut s = svc(json!({"ipFamilies": ["IPv6", "IPv4"], "ports": [{"port": 80}]}));
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(policy(&s), "RequireDualStack");
        assert_eq!(
            p.ips,
            vec![IpSlot::Any(Family::V6), IpSlot::Any(Family::V4)]
        );

        // PreferDualStack on a single-stack cluster is single-stack; Require is refused.
        let v4 = net(&["10.96.0.0/12"]);
        let mut s = svc(json!({"ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}));
        assert_eq!(
            plan(&v4, "default", "s", None, &mut s).unwrap().ips.len(),
            1
        );
        let mut s = svc(json!({"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}));
        assert!(err(plan(&v4, "default", "s", None, &mut s)).contains(
            "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services"
        ));
        let mut s = svc(json!({"ipFamilies": ["IPv6"], "ports": [{"port": 80}]}));
        assert!(err(plan(&v4, "default", "s", None, &mut s)).contains(
            "spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"
        ));
        let mut s = svc(
            json!({"ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4", "IPv6"], "ports": [{"port": 80}]}),
        );
        assert!(err(plan(&dual(), "default", "s", None, &mut s)).contains("spec.ipFamilyPolicy"));
    }

    #[test]
    fn requested_addresses_set_the_families_and_must_be_in_range() {
        let mut s = svc(json!({"clusterIP": "fd00:10:96::5", "ports": [{"port": 80}]}));
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(p.ips, vec![IpSlot::Given("fd00:10:96::5".parse().unwrap())]);
        assert_eq!(families(&s), ["IPv6"]);
        assert_eq!(
            s.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("fd00:10:96::5")
        );

        let mut s = svc(json!({"clusterIP": "10.200.0.1", "ports": [{"port": 80}]}));
        assert!(err(plan(&dual(), "default", "s", None, &mut s)).contains(
            "spec.clusterIPs[0]: Invalid value: \"10.200.0.1\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
        ));
        let mut s = svc(json!({"clusterIPs": ["10.96.0.4", "10.96.0.5"], "ports": [{"port": 80}]}));
        assert!(err(plan(&dual(), "default", "s", None, &mut s)).contains("spec.clusterIPs[1]"));
        let mut s = svc(
            json!({"clusterIPs": ["10.96.0.4"], "ipFamilies": ["IPv6"], "ports": [{"port": 80}]}),
        );
        assert!(err(plan(&dual(), "default", "s", None, &mut s)).contains("spec.ipFamilies[0]"));
    }

    #[test]
    fn reserved_address_is_for_its_service_only() {
        let mut s = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        assert!(err(plan(&dual(), "default", "s", None, &mut s)).contains(
            "spec.clusterIPs[0]: Invalid value: \"10.96.0.10\": provided IP is reserved for the Service kube-system/kube-dns"
        ));
        let mut s = svc(json!({"ports": [{"port": 53}]}));
        let p = plan(&dual(), "kube-system", "kube-dns", None, &mut s).unwrap();
        assert_eq!(p.ips, vec![IpSlot::Given("10.96.0.10".parse().unwrap())]);
    }

    #[test]
    fn headless_and_external_name_get_no_address() {
        let mut s =
            svc(json!({"clusterIP": "None", "selector": {"a": "b"}, "ports": [{"port": 80}]}));
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            s.spec.as_ref().unwrap().cluster_ips,
            Some(vec!["None".to_owned()])
        );
        assert_eq!(families(&s), ["IPv4"]);
        // Selector-less headless services are dual-stack by default (upstream).
        let mut s = svc(json!({"clusterIP": "None"}));
        plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(policy(&s), "RequireDualStack");
        assert_eq!(families(&s), ["IPv4", "IPv6"]);

        let mut s = svc(json!({"type": "ExternalName", "externalName": "a.example"}));
        assert!(
            plan(&dual(), "default", "s", None, &mut s)
                .unwrap()
                .is_empty()
        );
        assert!(s.spec.as_ref().unwrap().ip_families.is_none());
    }

    #[test]
    fn node_ports_and_health_check() {
        let mut s = svc(
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}, {"name": "b", "port": 81}]}),
        );
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(p.node_ports, vec![PortSlot::Given(30080), PortSlot::Any]);
        assert_eq!(p.health_check, None);

        let mut s = svc(
            json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
        );
        let p = plan(&dual(), "default", "s", None, &mut s).unwrap();
        assert_eq!(p.health_check, Some(PortSlot::Any));
        let mut s = svc(
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}),
        );
        assert!(
            plan(&dual(), "default", "s", None, &mut s)
                .unwrap()
                .node_ports
                .is_empty()
        );

        let mut s =
            svc(json!({"type": "NodePort", "healthCheckNodePort": 30001, "ports": [{"port": 80}]}));
        assert!(
            err(plan(&dual(), "default", "s", None, &mut s))
                .contains("spec.healthCheckNodePort: Forbidden")
        );
    }

    #[test]
    fn updates_keep_values_and_refuse_changes() {
        let old = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}),
        );
        // A PUT of the manifest without the allocated values keeps them.
        let mut new = svc(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        carry_over(&old, &mut new);
        let p = plan(&dual(), "default", "s", Some(&old), &mut new).unwrap();
        assert_eq!(p.ips, vec![IpSlot::Given("10.96.0.7".parse().unwrap())]);
        assert_eq!(p.node_ports, vec![PortSlot::Given(30080)]);

        let mut new =
            svc(json!({"type": "NodePort", "clusterIP": "10.96.0.8", "ports": [{"port": 80}]}));
        carry_over(&old, &mut new);
        assert!(
            err(plan(&dual(), "default", "s", Some(&old), &mut new)).contains(
                "spec.clusterIPs[0]: Invalid value: \"10.96.0.8\": may not change once set"
            )
        );

        // Upgrading to dual-stack adds a secondary.
        let mut new = svc(
            json!({"type": "NodePort", "ipFamilyPolicy": "PreferDualStack", "ports": [{"port": 80}]}),
        );
        carry_over(&old, &mut new);
        new.spec.as_mut().unwrap().ip_family_policy = Some("PreferDualStack".into());
        let p = plan(&dual(), "default", "s", Some(&old), &mut new).unwrap();
        assert_eq!(
            p.ips,
            vec![
                IpSlot::Given("10.96.0.7".parse().unwrap()),
                IpSlot::Any(Family::V6)
            ]
        );

        // NodePort → ClusterIP drops the node port; → ExternalName drops the addresses.
        let mut new = old.clone();
        new.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        carry_over(&old, &mut new);
        let p = plan(&dual(), "default", "s", Some(&old), &mut new).unwrap();
        assert!(p.node_ports.is_empty());
        assert_eq!(
            new.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
            None
        );
        let mut new = old.clone();
        let spec = new.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("a.example".into());
        carry_over(&old, &mut new);
        assert!(
            plan(&dual(), "default", "s", Some(&old), &mut new)
                .unwrap()
                .is_empty()
        );
        assert_eq!(new.spec.as_ref().unwrap().cluster_ip, None);
    }

    #[test]
    fn write_fills_the_spec() {
        let mut s = svc(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        write(&mut s, &["10.96.0.3".parse().unwrap()], &[30111], None);
        let spec = s.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.3"));
        assert_eq!(spec.cluster_ips, Some(vec!["10.96.0.3".to_owned()]));
        assert_eq!(spec.ports.unwrap()[0].node_port, Some(30111));
    }
}
