//! `networking.k8s.io/v1`, `discovery.k8s.io/v1` and `coordination.k8s.io/v1` printers:
//! ingresses, ingressclasses, endpointslices, leases.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Column, Row, age, age_col, arr, at, col, list_with_more, load_balancer_ingress, name, name_col,
    s,
};

// ---------------------------------------------------------------------------------------------
// Ingresses and ingress classes
// ---------------------------------------------------------------------------------------------

pub const INGRESS_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    age_col(),
];

/// Upstream `formatHosts`: up to three hosts, `*` when none, `+ N more...` past three rules.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = s(rule, "host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len().saturating_sub(MAX))
    } else {
        ret
    }
}

pub fn ingress_row(ing: &Value, now: Timestamp) -> Row {
    let class = match s(ing, "spec.ingressClassName") {
        "" if at(ing, "spec.ingressClassName").is_none_or(Value::is_null) => "<none>",
        c => c,
    };
    let ports = if arr(ing, "spec.tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    Row::new(vec![
        name(ing),
        json!(class),
        json!(format_hosts(arr(ing, "spec.rules"))),
        json!(load_balancer_ingress(at(ing, "status.loadBalancer"))),
        json!(ports),
        age(ing, now),
    ])
}

pub const INGRESSCLASS_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    age_col(),
];

pub fn ingressclass_row(ic: &Value, now: Timestamp) -> Row {
    let parameters = match at(ic, "spec.parameters").filter(|p| p.is_object()) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut out = s(p, "kind").to_string();
            if let Some(group) = p.get("apiGroup").and_then(Value::as_str) {
                out.push('.');
                out.push_str(group);
            }
            out.push('/');
            out.push_str(s(p, "name"));
            out
        }
    };
    Row::new(vec![
        name(ic),
        json!(s(ic, "spec.controller")),
        json!(parameters),
        age(ic, now),
    ])
}

// ---------------------------------------------------------------------------------------------
// EndpointSlices
// ---------------------------------------------------------------------------------------------

pub const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    age_col(),
];

/// Upstream `formatDiscoveryPorts`.
fn format_discovery_ports(ports: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut more = false;
    for p in ports {
        if list.len() < MAX {
            let port = match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "*".to_string(),
            };
            list.push(port);
        } else if list.len() == MAX {
            more = true;
        }
    }
    list_with_more(&list, more, ports.len(), MAX)
}

/// Upstream `formatDiscoveryEndpoints`.
fn format_discovery_endpoints(endpoints: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ep in endpoints {
        for addr in arr(ep, "addresses") {
            if list.len() < MAX {
                list.push(addr.as_str().unwrap_or("").to_string());
            } else if list.len() == MAX {
                more = true;
            }
            count += 1;
        }
    }
    list_with_more(&list, more, count, MAX)
}

pub fn endpointslice_row(slice: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(slice),
        json!(s(slice, "addressType")),
        json!(format_discovery_ports(arr(slice, "ports"))),
        json!(format_discovery_endpoints(arr(slice, "endpoints"))),
        age(slice, now),
    ])
}

// ---------------------------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------------------------

pub const LEASE_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    age_col(),
];

pub fn lease_row(lease: &Value, now: Timestamp) -> Row {
    Row::new(vec![
        name(lease),
        json!(s(lease, "spec.holderIdentity")),
        age(lease, now),
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{ago, names, now};
    use super::*;
    use skiff_api::Kind;

    #[test]
    fn ingress_cells() {
        assert_eq!(
            names(Kind::Ingress),
            vec![
                ("Name", 0),
                ("Class", 0),
                ("Hosts", 0),
                ("Address", 0),
                ("Ports", 0),
                ("Age", 0)
            ]
        );
        let ing = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(120)},
            "spec": {"ingressClassName": "skiff",
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}],
                     "tls": [{"hosts": ["a.example.com"]}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}
        });
        assert_eq!(
            ingress_row(&ing, now()).cells,
            vec![
                json!("web"),
                json!("skiff"),
                json!("a.example.com,b.example.com"),
                json!("192.168.1.10"),
                json!("80, 443"),
                json!("2m")
            ]
        );
        let bare = json!({"metadata": {"name": "x"}, "spec": {"rules": [{}]}});
        let c = ingress_row(&bare, now()).cells;
        assert_eq!(c[1], "<none>");
        assert_eq!(c[2], "*");
        assert_eq!(c[3], "");
        assert_eq!(c[4], "80");
        let many = json!({"spec": {"rules": [{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {"host": "e"}]}});
        assert_eq!(ingress_row(&many, now()).cells[2], "a,b,c + 2 more...");
    }

    #[test]
    fn ingressclass_cells() {
        assert_eq!(
            names(Kind::IngressClass),
            vec![
                ("Name", 0),
                ("Controller", 0),
                ("Parameters", 0),
                ("Age", 0)
            ]
        );
        let ic = json!({"metadata": {"name": "skiff"},
            "spec": {"controller": "skiff.dev/ingress",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            ingressclass_row(&ic, now()).cells,
            vec![
                json!("skiff"),
                json!("skiff.dev/ingress"),
                json!("IngressParameters.k8s.example.com/p"),
                json!("<unknown>")
            ]
        );
        let plain = json!({"metadata": {"name": "x"}, "spec": {"controller": "c"}});
        assert_eq!(ingressclass_row(&plain, now()).cells[2], "<none>");
    }

    #[test]
    fn endpointslice_cells() {
        assert_eq!(
            names(Kind::EndpointSlice),
            vec![
                ("Name", 0),
                ("AddressType", 0),
                ("Ports", 0),
                ("Endpoints", 0),
                ("Age", 0)
            ]
        );
        let slice = json!({
            "metadata": {"name": "web-abcde", "creationTimestamp": ago(30)},
            "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}, {"port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]},
                          {"addresses": ["10.0.0.4"]}]
        });
        assert_eq!(
            endpointslice_row(&slice, now()).cells,
            vec![
                json!("web-abcde"),
                json!("IPv4"),
                json!("80,named,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("30s")
            ]
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
        let c = endpointslice_row(&empty, now()).cells;
        assert_eq!(c[2], "<unset>");
        assert_eq!(c[3], "<unset>");
    }

    #[test]
    fn lease_cells() {
        assert_eq!(
            names(Kind::Lease),
            vec![("Name", 0), ("Holder", 0), ("Age", 0)]
        );
        let lease = json!({"metadata": {"name": "n1", "creationTimestamp": ago(7200)},
                           "spec": {"holderIdentity": "n1"}});
        assert_eq!(
            lease_row(&lease, now()).cells,
            vec![json!("n1"), json!("n1"), json!("120m")]
        );
        assert_eq!(lease_row(&json!({}), now()).cells[1], "");
    }
}
