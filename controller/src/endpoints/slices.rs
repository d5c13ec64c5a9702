//! The EndpointSlices a Service should have, as the fewest writes from the ones it has (upstream's slice reconciler).
//!
//! Endpoints are grouped by (address type, ports): pods whose named `targetPort` resolves to
//! different numbers land in different slices. Existing slices keep the endpoints still
//! desired (refreshed in place); new endpoints first fill slices already being rewritten, then
//! ones with room, then new slices of at most [`MAX_ENDPOINTS`]. A slice whose content is
//! unchanged is never written. A Service without endpoints keeps one empty placeholder slice.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::endpoint::{Desired, address_types, is_headless, sort_ports};

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's `managed-by` value (upstream's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label on the slices and Endpoints of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceOp {
    Create(EndpointSlice),
    /// A replacement carrying the stored `resourceVersion` (optimistic concurrency).
    Update(EndpointSlice),
    Delete(String),
}

/// The labels this controller gives a Service's slices (upstream `setEndpointSliceLabels`).
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(MANAGED_BY_LABEL);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Service as the controller owner of its slices.
pub fn service_owner(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

type GroupKey = (String, String);

fn group_key(address_type: &str, ports: &[EndpointPort]) -> GroupKey {
    let mut ports = ports.to_vec();
    sort_ports(&mut ports);
    (
        address_type.to_owned(),
        serde_json::to_string(&ports).unwrap_or_default(),
    )
}

fn endpoint_key(ep: &Endpoint) -> String {
    ep.addresses.join(",")
}

fn sorted(mut eps: Vec<Endpoint>) -> Vec<Endpoint> {
    eps.sort_by_key(endpoint_key);
    eps
}

struct Working {
    slice: EndpointSlice,
    endpoints: Vec<Endpoint>,
    changed: bool,
}

/// The writes that take `existing` (this controller's slices of `service`) to `desired`.
pub fn plan(service: &Service, desired: Vec<Desired>, existing: &[EndpointSlice]) -> Vec<SliceOp> {
    let labels = slice_labels(service);
    let owner = service_owner(service);
    let mut groups: BTreeMap<GroupKey, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)> =
        BTreeMap::new();
    for d in desired {
        let key = group_key(d.address_type, &d.ports);
        groups
            .entry(key)
            .or_insert_with(|| (d.ports.clone(), BTreeMap::new()))
            .1
            .insert(endpoint_key(&d.endpoint), d.endpoint);
    }

    let mut existing: Vec<&EndpointSlice> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut ops = Vec::new();

    if groups.values().all(|(_, eps)| eps.is_empty()) {
        return placeholder(service, &labels, &owner, &existing);
    }

    let mut kept: BTreeSet<String> = BTreeSet::new();
    for (key, (ports, mut wanted)) in groups {
        let mut working: Vec<Working> = Vec::new();
        for slice in existing
            .iter()
            .filter(|s| group_key(&s.address_type, s.ports.as_deref().unwrap_or_default()) == key)
        {
            let mut endpoints = Vec::new();
            for ep in &slice.endpoints {
                if let Some(fresh) = wanted.remove(&endpoint_key(ep)) {
                    endpoints.push(fresh);
                }
            }
            let endpoints = sorted(endpoints);
            let changed = endpoints != sorted(slice.endpoints.clone())
                || slice.metadata.labels.as_ref() != Some(&labels)
                || !owned_by(slice, &owner);
            working.push(Working {
                slice: (*slice).clone(),
                endpoints,
                changed,
            });
        }
        // New endpoints: slices being rewritten anyway first, then any with room.
        let mut order: Vec<usize> = (0..working.len()).collect();
        order.sort_by_key(|&i| (!working[i].changed, working[i].endpoints.is_empty()));
        let mut rest = wanted.into_values();
        for i in order {
            let w = &mut working[i];
            let mut added = false;
            while w.endpoints.len() < MAX_ENDPOINTS {
                let Some(ep) = rest.next() else { break };
                w.endpoints.push(ep);
                added = true;
            }
            if added {
                w.endpoints = sorted(std::mem::take(&mut w.endpoints));
                w.changed = true;
            }
        }
        for w in working {
            let name = w.slice.metadata.name.clone().unwrap_or_default();
            if w.endpoints.is_empty() {
                ops.push(SliceOp::Delete(name));
                continue;
            }
            kept.insert(name);
            if w.changed {
                let mut slice = w.slice;
                slice.endpoints = w.endpoints;
                slice.metadata.labels = Some(labels.clone());
                slice.metadata.owner_references = Some(vec![owner.clone()]);
                ops.push(SliceOp::Update(slice));
            }
        }
        let rest: Vec<Endpoint> = rest.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS) {
            ops.push(SliceOp::Create(new_slice(
                service,
                &labels,
                &owner,
                &key.0,
                Some(ports.clone()),
                sorted(chunk.to_vec()),
            )));
        }
    }
    // Slices of groups that no longer exist.
    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let key = group_key(
            &slice.address_type,
            slice.ports.as_deref().unwrap_or_default(),
        );
        let handled = ops
            .iter()
            .any(|op| matches!(op, SliceOp::Delete(n) if *n == name));
        if !kept.contains(&name) && !handled {
            tracing::trace!(slice = name, ?key, "slice of a group no longer desired");
            ops.push(SliceOp::Delete(name));
        }
    }
    ops
}

fn owned_by(slice: &EndpointSlice, owner: &OwnerReference) -> bool {
    slice.metadata.owner_references.as_deref() == Some(std::slice::from_ref(owner))
}

/// No endpoints: keep (or create) one empty slice, as upstream does, and drop the others.
fn placeholder(
    service: &Service,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    existing: &[&EndpointSlice],
) -> Vec<SliceOp> {
    let mut ops = Vec::new();
    let keep = existing
        .iter()
        .position(|s| s.endpoints.is_empty())
        .or((!existing.is_empty()).then_some(0));
    for (i, slice) in existing.iter().enumerate() {
        if Some(i) != keep {
            ops.push(SliceOp::Delete(
                slice.metadata.name.clone().unwrap_or_default(),
            ));
        }
    }
    match keep.map(|i| existing[i]) {
        Some(slice) => {
            if slice.metadata.labels.as_ref() != Some(labels)
                || !owned_by(slice, owner)
                || !slice.endpoints.is_empty()
                || slice.ports.is_some()
            {
                let mut slice = slice.clone();
                slice.endpoints = Vec::new();
                slice.ports = None;
                slice.metadata.labels = Some(labels.clone());
                slice.metadata.owner_references = Some(vec![owner.clone()]);
                ops.push(SliceOp::Update(slice));
            }
        }
        None => {
            let family = address_types(service).first().copied().unwrap_or("IPv4");
            ops.push(SliceOp::Create(new_slice(
                service,
                labels,
                owner,
                family,
                None,
                Vec::new(),
            )));
        }
    }
    ops
}

fn new_slice(
    service: &Service,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
    address_type: &str,
    ports: Option<Vec<EndpointPort>>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    // Upstream: the Service name, cut so that generated names stay within 63 characters.
    let prefix: String = name.chars().take(57).collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: address_type.to_owned(),
        endpoints,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::pod_endpoints;
    use super::super::endpoint::tests::{pod, service};
    use super::*;
    use serde_json::json;

    fn desired(svc: &Service, pods: &[k8s_openapi::api::core::v1::Pod]) -> Vec<Desired> {
        pods.iter()
            .flat_map(|p| pod_endpoints(svc, p, &BTreeMap::new()))
            .collect()
    }

    fn stored(op: &SliceOp, name: &str) -> EndpointSlice {
        let SliceOp::Create(s) = op else {
            return EndpointSlice::default();
        };
        let mut s = s.clone();
        s.metadata.name = Some(name.into());
        s.metadata.generate_name = None;
        s
    }

    #[test]
    fn named_ports_split_slices_and_no_churn() {
        let svc = service(json!({}));
        let pods = [
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", true, 9090),
            pod("c", "10.0.0.3", false, 8080),
        ];
        let ops = plan(&svc, desired(&svc, &pods), &[]);
        assert_eq!(ops.len(), 2, "{ops:?}");
        let slices: Vec<EndpointSlice> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| stored(op, &format!("web-{i}")))
            .collect();
        let sizes: Vec<usize> = slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [2, 1]);
        assert_eq!(
            slices[0].metadata.labels.clone().unwrap_or_default()[SERVICE_NAME_LABEL],
            "web"
        );
        // Same input again: nothing to write.
        assert_eq!(plan(&svc, desired(&svc, &pods), &slices), vec![]);
        // One pod turns ready: only its slice is rewritten.
        let pods2 = [
            pods[0].clone(),
            pods[1].clone(),
            pod("c", "10.0.0.3", true, 8080),
        ];
        let ops = plan(&svc, desired(&svc, &pods2), &slices);
        assert_eq!(ops.len(), 1);
        assert!(
            matches!(&ops[0], SliceOp::Update(s) if s.metadata.name.as_deref() == Some("web-0"))
        );
    }

    #[test]
    fn at_most_100_per_slice_and_placeholder() {
        let svc = service(json!({}));
        let pods: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.0.{}.{}", i / 200, i % 200),
                    true,
                    80,
                )
            })
            .collect();
        let ops = plan(&svc, desired(&svc, &pods), &[]);
        let sizes: Vec<usize> = ops
            .iter()
            .map(|op| match op {
                SliceOp::Create(s) => s.endpoints.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let slices: Vec<EndpointSlice> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| stored(op, &format!("web-{i}")))
            .collect();
        let ops = plan(&svc, Vec::new(), &slices);
        assert_eq!(ops.len(), 3, "two deleted, one emptied: {ops:?}");
        let empty = plan(&svc, Vec::new(), &[]);
        assert!(
            matches!(&empty[..], [SliceOp::Create(s)] if s.endpoints.is_empty() && s.ports.is_none())
        );
    }
}
