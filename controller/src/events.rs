//! Events for every decision a user would look for: a recorder that posts `core/v1` Events about an object, as client-go's recorder does.
//!
//! Recording never fails the caller: an Event is information, so an API error is logged and
//! dropped. Repeats need no bookkeeping here: the API server folds an Event identical to an
//! existing one (same object, reason, message, type and source) into that one's `count`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, PostParams};

/// `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Posts Events as one component (`source.component`, `reportingComponent`).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// `component` as upstream names its controllers, e.g. `deployment-controller`,
    /// `default-scheduler`.
    pub fn new(client: kube::Client, component: impl Into<String>) -> Self {
        Self {
            client,
            component: component.into(),
            host: None,
        }
    }

    /// The node the component runs on (kubelets set it).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Records an Event about `object` (any typed Kubernetes object).
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, message: &str)
    where
        K: Resource<DynamicType = ()>,
    {
        let meta = object.meta();
        let reference = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        };
        self.publish_ref(reference, type_, reason, message).await;
    }

    /// Records an Event about the object `reference` names.
    pub async fn publish_ref(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let namespace = reference
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let event = self.event(reference, type_, reason, message);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(%error, reason, namespace, "could not record an event");
        }
    }

    fn event(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Event {
        let now = jiff::Timestamp::now();
        let object_name = reference.name.clone().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                // client-go's name: `<object>.<unix nanos in hex>` (a `generateName` ending in
                // `.` is not a valid name prefix).
                name: Some(format!("{object_name}.{:x}", now.as_nanosecond())),
                namespace: reference.namespace.clone(),
                ..ObjectMeta::default()
            },
            involved_object: reference,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
            type_: Some(type_.as_str().to_owned()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            action: Some(reason.to_owned()),
            ..Event::default()
        }
    }
}
