//! Validation of networking.k8s.io (Ingress, IngressClass), discovery.k8s.io (EndpointSlice)
//! and coordination.k8s.io (Lease) kinds.

use std::collections::HashSet;
use std::net::IpAddr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::names;
use super::{FieldErrors, FieldPath};

pub(crate) fn endpoint_slice(es: &EndpointSlice, errs: &mut FieldErrors) {
    let at = es.address_type.as_str();
    errs.one_of(
        &FieldPath::new("addressType"),
        at,
        &["IPv4", "IPv6", "FQDN"],
    );
    let endpoints = &es.endpoints;
    if endpoints.len() > 1000 {
        errs.push(
            &FieldPath::new("endpoints"),
            super::FieldErrorType::TooMany,
            Some(endpoints.len().to_string()),
            "must have at most 1000 items",
        );
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let ap = FieldPath::new("endpoints").index(i).child("addresses");
        if ep.addresses.is_empty() || ep.addresses.len() > 100 {
            errs.required(&ap, "must contain at least 1 and at most 100 addresses");
        }
        for (j, a) in ep.addresses.iter().enumerate() {
            let p = ap.index(j);
            match at {
                "IPv4" if !matches!(a.parse::<IpAddr>(), Ok(IpAddr::V4(_))) => {
                    errs.invalid(&p, a.as_str(), "must be a valid IPv4 address");
                }
                "IPv6" if !matches!(a.parse::<IpAddr>(), Ok(IpAddr::V6(_))) => {
                    errs.invalid(&p, a.as_str(), "must be a valid IPv6 address");
                }
                "FQDN" => errs.invalid_msgs(&p, a.as_str(), names::dns1123_subdomain(a)),
                _ => {}
            }
        }
        if let Some(h) = ep.hostname.as_deref() {
            errs.invalid_msgs(
                &FieldPath::new("endpoints").index(i).child("hostname"),
                h,
                names::dns1123_label(h),
            );
        }
    }
    let mut port_names = HashSet::new();
    for (i, p) in es.ports.iter().flatten().enumerate() {
        let pp = FieldPath::new("ports").index(i);
        let name = p.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            errs.invalid_msgs(&pp.child("name"), name, names::dns1123_label(name));
        }
        if !port_names.insert(name) {
            errs.duplicate(&pp.child("name"), name);
        }
        if let Some(port) = p.port {
            errs.invalid_msgs(&pp.child("port"), port, names::port_number_or_zero(port));
        }
        if let Some(proto) = p.protocol.as_deref() {
            errs.one_of(&pp.child("protocol"), proto, super::core::PROTOCOLS);
        }
    }
}

/// Ingress host: a DNS subdomain, or `*.` then one; never an IP address.
fn ingress_host(host: &str, path: &FieldPath, errs: &mut FieldErrors) {
    if host.parse::<IpAddr>().is_ok() {
        errs.invalid(path, host, "must be a DNS name, not an IP address");
    } else if host.contains('*') {
        errs.invalid_msgs(path, host, names::wildcard_dns1123_subdomain(host));
    } else {
        errs.invalid_msgs(path, host, names::dns1123_subdomain(host));
    }
}

fn backend(b: &IngressBackend, path: &FieldPath, errs: &mut FieldErrors) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => {
            errs.invalid(path, "", "cannot set both resource and service backends")
        }
        (None, None) => errs.invalid(path, "", "resource or service backend is required"),
        (Some(svc), None) => {
            let sp = path.child("service");
            if svc.name.is_empty() {
                errs.required(&sp.child("name"), "");
            } else {
                errs.invalid_msgs(
                    &sp.child("name"),
                    svc.name.as_str(),
                    names::dns1035_label(&svc.name),
                );
            }
            let pp = sp.child("port");
            let port = svc.port.as_ref();
            let name = port
                .and_then(|p| p.name.as_deref())
                .filter(|n| !n.is_empty());
            let number = port.and_then(|p| p.number).filter(|n| *n != 0);
            match (name, number) {
                (Some(_), Some(_)) => {
                    errs.invalid(&pp, "", "cannot set both port name & port number")
                }
                (None, None) => errs.invalid(&pp, "", "port name or number is required"),
                (Some(n), None) => errs.invalid_msgs(&pp.child("name"), n, names::port_name(n)),
                (None, Some(n)) => errs.invalid_msgs(&pp.child("number"), n, names::port_number(n)),
            }
        }
        (None, Some(r)) => {
            let rp = path.child("resource");
            if r.kind.is_empty() {
                errs.required(&rp.child("kind"), "");
            }
            if r.name.is_empty() {
                errs.required(&rp.child("name"), "");
            }
        }
    }
}

/// Exact/Prefix paths must be absolute and clean; ImplementationSpecific ones absolute if set.
fn http_path(path_type: &str, p: &str, fp: &FieldPath, errs: &mut FieldErrors) {
    match path_type {
        "Exact" | "Prefix" => {
            if !p.starts_with('/') {
                errs.invalid(fp, p, "must be an absolute path");
                return;
            }
            for bad in ["//", "/./", "/../", "%2f", "%2F"] {
                if p.contains(bad) {
                    errs.invalid(fp, p, format!("must not contain '{bad}'"));
                }
            }
            for bad in ["/..", "/."] {
                if p.ends_with(bad) {
                    errs.invalid(fp, p, format!("cannot end with '{bad}'"));
                }
            }
        }
        "ImplementationSpecific" if !p.is_empty() && !p.starts_with('/') => {
            errs.invalid(fp, p, "must be an absolute path");
        }
        _ => {}
    }
}

pub(crate) fn ingress(ing: &Ingress, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &ing.spec else {
        errs.required(&path, "");
        return;
    };
    let rules = spec.rules.as_deref().unwrap_or(&[]);
    if rules.is_empty() && spec.default_backend.is_none() {
        errs.invalid(
            &path,
            "",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(b) = &spec.default_backend {
        backend(b, &path.child("defaultBackend"), errs);
    }
    if let Some(c) = spec.ingress_class_name.as_deref() {
        errs.invalid_msgs(
            &path.child("ingressClassName"),
            c,
            names::dns1123_subdomain(c),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = path.child("rules").index(i);
        if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            ingress_host(h, &rp.child("host"), errs);
        }
        let Some(http) = &rule.http else { continue };
        let hp = rp.child("http").child("paths");
        if http.paths.is_empty() {
            errs.required(&hp, "");
        }
        for (j, p) in http.paths.iter().enumerate() {
            let pp = hp.index(j);
            let path_str = p.path.as_deref().unwrap_or("");
            if p.path_type.is_empty() {
                errs.required(&pp.child("pathType"), "pathType must be specified");
            } else {
                errs.one_of(
                    &pp.child("pathType"),
                    &p.path_type,
                    &["Exact", "Prefix", "ImplementationSpecific"],
                );
            }
            http_path(&p.path_type, path_str, &pp.child("path"), errs);
            backend(&p.backend, &pp.child("backend"), errs);
        }
    }
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        let tp = path.child("tls").index(i);
        for (j, h) in tls.hosts.iter().flatten().enumerate() {
            ingress_host(h, &tp.child("hosts").index(j), errs);
        }
        if let Some(s) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            errs.invalid_msgs(&tp.child("secretName"), s, names::dns1123_subdomain(s));
        }
    }
}

pub(crate) fn ingress_class(ic: &IngressClass, errs: &mut FieldErrors) {
    let path = FieldPath::new("spec");
    let Some(spec) = &ic.spec else { return };
    let cp = path.child("controller");
    match spec.controller.as_deref().unwrap_or("") {
        "" => errs.required(&cp, ""),
        c => {
            if c.len() > 250 {
                errs.push(
                    &cp,
                    super::FieldErrorType::TooLong,
                    None,
                    "must have at most 250 bytes",
                );
            }
            match c.split_once('/') {
                Some((domain, rest)) if !domain.is_empty() && !rest.is_empty() => {
                    errs.invalid_msgs(&cp, c, names::dns1123_subdomain(domain));
                }
                _ => errs.invalid(
                    &cp,
                    c,
                    "must be a domain-prefixed path (such as \"acme.io/foo\")",
                ),
            }
        }
    }
    if let Some(p) = &spec.parameters {
        let pp = path.child("parameters");
        if p.kind.is_empty() {
            errs.required(&pp.child("kind"), "");
        }
        if p.name.is_empty() {
            errs.required(&pp.child("name"), "");
        }
        if let Some(scope) = p.scope.as_deref() {
            errs.one_of(&pp.child("scope"), scope, &["Cluster", "Namespace"]);
            if scope == "Namespace" && p.namespace.as_deref().is_none_or(str::is_empty) {
                errs.required(
                    &pp.child("namespace"),
                    "`parameters.scope` is set to 'Namespace'",
                );
            }
        }
    }
}

pub(crate) fn lease(l: &Lease, errs: &mut FieldErrors) {
    let Some(spec) = &l.spec else { return };
    let path = FieldPath::new("spec");
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errs.invalid(
            &path.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        );
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errs.invalid(
            &path.child("leaseTransitions"),
            t,
            "must be greater than or equal to 0",
        );
    }
    if spec
        .preferred_holder
        .as_deref()
        .is_some_and(|h| !h.is_empty())
        && spec.strategy.is_none()
    {
        errs.forbidden(
            &path.child("strategy"),
            "must be specified when preferredHolder is set",
        );
    }
}
