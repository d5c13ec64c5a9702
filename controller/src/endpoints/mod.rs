//! The EndpointSlice controller, with upstream's legacy Endpoints controller folded in: a Service's selected pods become its EndpointSlices and its Endpoints.
//!
//! kube-runtime style: reflector stores of Services (the controller's own), Pods, EndpointSlices,
//! Endpoints and Nodes; pod changes trigger the Services whose selector matches them (or whose
//! slices list them, for pods whose labels stopped matching). `reconcile` computes the desired
//! slices ([`slices::plan`]) and Endpoints ([`legacy::desired`]) and writes only what differs.
//! Services without a selector are left alone: their slices and Endpoints are the user's.

pub mod endpoint;
pub mod legacy;
pub mod slices;
pub mod tracker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::events::{EventType, Recorder};
use crate::podutil;
use slices::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SliceOp};
use tracker::{ServiceKey, Tracker};

/// Upstream's component name for Events.
pub const COMPONENT: &str = "endpointslice-controller";

const RETRY: Duration = Duration::from_secs(1);
/// After a conflict or a store that has not caught up: soon, the next event usually comes first.
const SOON: Duration = Duration::from_millis(20);
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("EndpointSlices of Service {service}: {source}")]
    Slices {
        service: String,
        source: kube::Error,
    },
    #[error("Endpoints of Service {service}: {source}")]
    Endpoints {
        service: String,
        source: kube::Error,
    },
}

struct Ctx {
    client: kube::Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
    tracker: Tracker,
    recorder: Recorder,
}

fn reflect<K>(
    client: &kube::Client,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    (store, stream)
}

/// Runs the controller until the task is dropped.
pub async fn run(client: kube::Client) {
    let (pods, pod_events) = reflect::<Pod>(&client);
    let (slices, slice_events) = reflect::<EndpointSlice>(&client);
    let (endpoints, endpoints_events) = reflect::<Endpoints>(&client);
    let (nodes, node_events) = reflect::<Node>(&client);
    let controller = Controller::new(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let slices_for_map = slices.clone();
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT),
        client,
        pods,
        slices,
        endpoints,
        nodes,
        tracker: Tracker::default(),
    });
    // Nodes only feed zones; keep their store current without triggering anything.
    let nodes_task = node_events.for_each(|_| async {});
    let run = controller
        .watches_stream(pod_events, move |pod: Pod| {
            services_of_pod(&services, &slices_for_map, &pod)
        })
        .owns_stream(slice_events)
        .watches_stream(endpoints_events, |e: Endpoints| {
            Some(
                ObjectRef::<Service>::new(e.metadata.name.as_deref().unwrap_or(""))
                    .within(e.metadata.namespace.as_deref().unwrap_or("")),
            )
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "endpointslice reconcile");
            }
        });
    futures::join!(run, nodes_task);
}

/// The Services a pod change concerns: those whose selector matches it now, and those whose
/// slices list it (its labels may have stopped matching).
fn services_of_pod(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref();
    let mut refs: Vec<ObjectRef<Service>> = services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            selector(s)
                .is_some_and(|sel| podutil::map_selector_matches(sel, pod.metadata.labels.as_ref()))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect();
    for slice in slices.state() {
        if slice.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        let lists_pod = slice
            .endpoints
            .iter()
            .any(|e| e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == name);
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let (true, Some(service)) = (lists_pod, service) {
            refs.push(ObjectRef::new(service).within(ns));
        }
    }
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    refs.dedup();
    refs
}

/// A Service's selector, `None` for selector-less Services (empty counts as none, as the
/// API round-trips `{}` to nothing).
fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn error_policy(service: Arc<Service>, error: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(%error, service = service.metadata.name.as_deref().unwrap_or(""), "endpointslice");
    Action::requeue(RETRY)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409)
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    for ready in [
        ctx.pods.wait_until_ready().await,
        ctx.slices.wait_until_ready().await,
        ctx.endpoints.wait_until_ready().await,
        ctx.nodes.wait_until_ready().await,
    ] {
        ready.ok();
    }
    let namespace = service.metadata.namespace.clone().unwrap_or_default();
    let name = service.metadata.name.clone().unwrap_or_default();
    let key: ServiceKey = (namespace.clone(), name.clone());
    if service.metadata.deletion_timestamp.is_some() {
        ctx.tracker.forget(&key);
        return Ok(Action::await_change());
    }
    let Some(selector) = selector(&service) else {
        ctx.tracker.forget(&key);
        return Ok(Action::await_change());
    };
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && podutil::map_selector_matches(selector, p.metadata.labels.as_ref())
        })
        .collect();
    let zones: BTreeMap<String, String> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(endpoint::ZONE_LABEL)?;
            Some((n.metadata.name.clone()?, zone.clone()))
        })
        .collect();
    let existing: Vec<EndpointSlice> = ctx
        .slices
        .state()
        .iter()
        .filter(|s| {
            let labels = s.metadata.labels.as_ref();
            s.metadata.namespace.as_deref() == Some(namespace.as_str())
                && labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&name)
                && labels
                    .and_then(|l| l.get(MANAGED_BY_LABEL))
                    .map(String::as_str)
                    == Some(MANAGED_BY)
        })
        .map(|s| s.as_ref().clone())
        .collect();
    if !ctx.tracker.in_sync(
        &key,
        existing.iter().filter_map(|s| s.metadata.name.as_deref()),
    ) {
        return Ok(Action::requeue(SOON));
    }

    let desired = pods
        .iter()
        .flat_map(|p| endpoint::pod_endpoints(&service, p, &zones))
        .collect();
    let ops = slices::plan(&service, desired, &existing);
    let mut conflict = false;
    if let Err(source) = apply_slices(&ctx, &key, ops).await {
        if is_conflict(&source) {
            conflict = true;
        } else {
            ctx.recorder
                .publish(
                    service.as_ref(),
                    EventType::Warning,
                    "FailedToUpdateEndpointSlices",
                    &format!(
                        "Error updating Endpoint Slices for Service {namespace}/{name}: {source}"
                    ),
                )
                .await;
            return Err(Error::Slices {
                service: name,
                source,
            });
        }
    }

    let refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let wanted = legacy::desired(&service, &refs);
    let stored = ctx.endpoints.get(&ObjectRef::new(&name).within(&namespace));
    if let Err(source) = apply_endpoints(&ctx, &namespace, stored.as_deref(), wanted).await {
        if is_conflict(&source) {
            conflict = true;
        } else {
            ctx.recorder
                .publish(
                    service.as_ref(),
                    EventType::Warning,
                    "FailedToUpdateEndpoint",
                    &format!("Failed to update endpoint {namespace}/{name}: {source}"),
                )
                .await;
            return Err(Error::Endpoints {
                service: name,
                source,
            });
        }
    }
    Ok(Action::requeue(if conflict { SOON } else { RESYNC }))
}

async fn apply_slices(ctx: &Ctx, key: &ServiceKey, ops: Vec<SliceOp>) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.0);
    for op in ops {
        match op {
            SliceOp::Create(slice) => {
                let created = api.create(&PostParams::default(), &slice).await?;
                if let Some(n) = created.metadata.name {
                    ctx.tracker.created(key, n);
                }
            }
            SliceOp::Update(slice) => {
                let n = slice.metadata.name.clone().unwrap_or_default();
                api.replace(&n, &PostParams::default(), &slice).await?;
            }
            SliceOp::Delete(n) => match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => ctx.tracker.deleted(key, n),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(())
}

async fn apply_endpoints(
    ctx: &Ctx,
    namespace: &str,
    stored: Option<&Endpoints>,
    mut wanted: Endpoints,
) -> Result<(), kube::Error> {
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    match stored {
        Some(stored) if legacy::up_to_date(stored, &wanted) => Ok(()),
        Some(stored) => {
            wanted.metadata.resource_version = stored.metadata.resource_version.clone();
            let name = wanted.metadata.name.clone().unwrap_or_default();
            api.replace(&name, &PostParams::default(), &wanted).await?;
            Ok(())
        }
        None => {
            api.create(&PostParams::default(), &wanted).await?;
            Ok(())
        }
    }
}
