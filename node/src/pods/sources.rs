//! What container environments read besides the pod: cached ConfigMaps, Secrets and Services.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::config::NodeAllocatable;
use crate::env::EnvSources;

/// The reflector caches the kubelet keeps for environment resolution.
#[derive(Clone)]
pub struct Caches {
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
    pub services: Store<Service>,
    pub allocatable: NodeAllocatable,
    /// Marked changed whenever a watched ConfigMap or Secret changes, so the pod workers
    /// refresh their configMap/secret/projected volumes.
    pub volume_sources: tokio::sync::watch::Receiver<()>,
}

/// [`EnvSources`] for one namespace, read from [`Caches`].
pub struct NamespaceSources<'a> {
    pub caches: &'a Caches,
    pub namespace: &'a str,
}

impl EnvSources for NamespaceSources<'_> {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let cm = self
            .caches
            .config_maps
            .get(&ObjectRef::new(name).within(self.namespace))?;
        Some(cm.data.clone().unwrap_or_default())
    }

    fn secret(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self
            .caches
            .secrets
            .get(&ObjectRef::new(name).within(self.namespace))?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        // stringData is write-only upstream, but a store may keep it: it wins, as on write.
        for (k, v) in s.string_data.clone().unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        Some(out)
    }

    fn services(&self) -> Vec<Service> {
        self.caches
            .services
            .state()
            .iter()
            .filter(|s| {
                let ns = s.metadata.namespace.as_deref();
                ns == Some(self.namespace)
                    || (ns == Some("default") && s.metadata.name.as_deref() == Some("kubernetes"))
            })
            .map(|s| (**s).clone())
            .collect()
    }

    fn allocatable(&self, resource: &str) -> Option<String> {
        match resource {
            "cpu" => self.caches.allocatable.cpu.clone(),
            "memory" => self.caches.allocatable.memory.clone(),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("allocatable", &self.allocatable)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NamespaceSources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamespaceSources")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}
