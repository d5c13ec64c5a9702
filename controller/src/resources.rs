//! kube-rs handles for skiff's kinds: the `ApiResource` of each registry row and `Api`s scoped to an object or to every namespace.

use kube::api::{Api, ApiResource, DynamicObject};
use skiff_api::Kind;

use crate::cache::ObjectRef;

/// The dynamic-type description kube-rs needs, from skiff's kind registry.
pub fn api_resource(kind: Kind) -> ApiResource {
    let info = kind.info();
    ApiResource {
        group: info.group.to_owned(),
        version: info.version.to_owned(),
        api_version: info.api_version(),
        kind: info.name.to_owned(),
        plural: info.plural.to_owned(),
    }
}

/// Every object of `kind`, across namespaces.
pub fn all_api(client: kube::Client, kind: Kind) -> Api<DynamicObject> {
    Api::all_with(client, &api_resource(kind))
}

/// The collection `object` lives in (its namespace, or the cluster).
pub fn api_for(client: kube::Client, object: &ObjectRef) -> Api<DynamicObject> {
    let resource = api_resource(object.kind);
    match &object.namespace {
        Some(ns) if object.kind.info().namespaced => Api::namespaced_with(client, ns, &resource),
        _ => Api::all_with(client, &resource),
    }
}

/// The kind an owner reference names (`apiVersion` + `kind`), if skiff serves it.
pub fn owner_kind(api_version: &str, kind: &str) -> Option<Kind> {
    skiff_api::kinds::by_api_version_kind(api_version, kind).map(|k| k.kind)
}
