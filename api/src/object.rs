//! The typed `Object` enum over the served kinds, its JSON conversions and metadata accessors.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::kinds::{Kind, KindInfo};

macro_rules! objects {
    ($($variant:ident),* $(,)?) => {
        /// One object of a kind skiff serves. Variants are boxed: k8s-openapi types are large.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Object {
            $($variant(Box<$variant>),)*
        }

        impl Object {
            /// Which kind this is.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)*
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Object::$variant(o) => &o.metadata,)*
                }
            }

            /// The object's metadata, mutably.
            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Object::$variant(o) => &mut o.metadata,)*
                }
            }

            /// Serialize to Kubernetes JSON (with `apiVersion` and `kind`).
            pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self {
                    $(Object::$variant(o) => serde_json::to_value(o.as_ref()),)*
                }
            }

            /// Deserialize JSON of a known kind, leniently (unknown fields dropped, no paths).
            /// Use [`crate::manifest::decode_value`] for strictness and field paths.
            pub fn from_value_as(kind: Kind, value: serde_json::Value) -> Result<Object, serde_json::Error> {
                Ok(match kind {
                    $(Kind::$variant => Object::$variant(Box::new(serde_json::from_value(value)?)),)*
                })
            }
        }

        $(
            impl From<$variant> for Object {
                fn from(o: $variant) -> Object {
                    Object::$variant(Box::new(o))
                }
            }
        )*
    };
}

crate::kinds::for_all_kinds!(objects!());

impl Object {
    /// The registry row of this object's kind.
    pub fn info(&self) -> &'static KindInfo {
        self.kind().info()
    }

    /// `metadata.name`, or `""` when unset (e.g. only `generateName` given).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// `metadata.labels`, or an empty map.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata().labels.as_ref().unwrap_or(&EMPTY)
    }

    /// `metadata.annotations`, or an empty map.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.metadata().annotations.as_ref().unwrap_or(&EMPTY)
    }

    /// Namespace (empty for cluster-scoped kinds) and name.
    pub fn namespaced_name(&self) -> NamespacedName {
        let ns = if self.info().namespaced {
            self.namespace().unwrap_or("").to_string()
        } else {
            String::new()
        };
        NamespacedName::new(ns, self.name())
    }

    /// Deserialize JSON, picking the kind from its `apiVersion` and `kind`, leniently.
    pub fn from_value(value: serde_json::Value) -> Result<Object, crate::manifest::DecodeError> {
        crate::manifest::decode_value(&value, crate::manifest::Strictness::Ignore).map(|d| d.object)
    }
}

/// A namespace and a name; the namespace is empty for cluster-scoped objects.
/// Displays as `namespace/name` (or `name` when cluster-scoped), like Go's `types.NamespacedName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// A cluster-scoped name.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new("", name)
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors() {
        let v = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "ns", "labels": {"x": "y"}}});
        let o = Object::from_value(v).unwrap();
        assert_eq!(o.kind(), Kind::ConfigMap);
        assert_eq!(o.name(), "a");
        assert_eq!(o.namespace(), Some("ns"));
        assert_eq!(o.labels().get("x").map(String::as_str), Some("y"));
        assert!(o.annotations().is_empty());
        assert_eq!(o.namespaced_name().to_string(), "ns/a");
        let n = Object::from(Namespace {
            metadata: ObjectMeta {
                name: Some("n".into()),
                namespace: Some("x".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(n.namespaced_name(), NamespacedName::cluster("n"));
        assert_eq!(n.namespaced_name().to_string(), "n");
    }

    #[test]
    fn to_value_has_type_meta() {
        let o = Object::from(Pod::default());
        let v = o.to_value().unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Pod");
        let d = Object::from(Deployment::default()).to_value().unwrap();
        assert_eq!(d["apiVersion"], "apps/v1");
    }
}
