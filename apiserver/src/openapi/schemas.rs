//! `components.schemas` for a group-version: k8s-openapi's schemars output, renamed and extended as upstream.

use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, networking};
use k8s_openapi::apimachinery::pkg::apis::meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};
use skiff_api::{Kind, KindInfo};

/// Where every `$ref` points: OpenAPI v3's components.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// A generator whose `$ref`s point into `#/components/schemas` and whose output is OpenAPI 3.0
/// (a `$ref` with a description beside it is wrapped in `allOf`, as upstream does).
pub fn generator() -> SchemaGenerator {
    SchemaGenerator::new(SchemaSettings::openapi3())
}

/// Registers `T` (and everything it references) and returns its upstream schema name.
fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    let _: Schema = generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Registers the k8s-openapi type of `kind`; returns its upstream schema name
/// (`io.k8s.api.core.v1.Pod`).
pub fn register_kind(generator: &mut SchemaGenerator, kind: Kind) -> String {
    match kind {
        Kind::Namespace => register::<core::v1::Namespace>(generator),
        Kind::Pod => register::<core::v1::Pod>(generator),
        Kind::Service => register::<core::v1::Service>(generator),
        Kind::Endpoints => register::<core::v1::Endpoints>(generator),
        Kind::EndpointSlice => register::<discovery::v1::EndpointSlice>(generator),
        Kind::ConfigMap => register::<core::v1::ConfigMap>(generator),
        Kind::Secret => register::<core::v1::Secret>(generator),
        Kind::Node => register::<core::v1::Node>(generator),
        Kind::Event => register::<core::v1::Event>(generator),
        Kind::Deployment => register::<apps::v1::Deployment>(generator),
        Kind::ReplicaSet => register::<apps::v1::ReplicaSet>(generator),
        Kind::StatefulSet => register::<apps::v1::StatefulSet>(generator),
        Kind::Ingress => register::<networking::v1::Ingress>(generator),
        Kind::IngressClass => register::<networking::v1::IngressClass>(generator),
        Kind::Lease => register::<coordination::v1::Lease>(generator),
    }
}

/// The schemas every operation refers to: request options, `Status`, `Patch`, `Scale`.
pub struct Common {
    pub delete_options: String,
    pub status: String,
    pub patch: String,
    pub scale: String,
    /// `core/v1` Binding (the body of `pods/{name}/binding`).
    pub binding: String,
}

pub fn register_common(generator: &mut SchemaGenerator) -> Common {
    Common {
        delete_options: register::<meta::v1::DeleteOptions>(generator),
        status: register::<meta::v1::Status>(generator),
        patch: register::<meta::v1::Patch>(generator),
        scale: register::<autoscaling::v1::Scale>(generator),
        binding: register::<core::v1::Binding>(generator),
    }
}

/// A `$ref` to a component.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// The list kind's schema name: `io.k8s.api.core.v1.Pod` → `io.k8s.api.core.v1.PodList`.
pub fn list_name(kind_schema: &str) -> String {
    format!("{kind_schema}List")
}

fn gvk(info: &KindInfo, kind: &str) -> Value {
    json!([{ "group": info.group, "version": info.version, "kind": kind }])
}

/// The `{Kind}List` schema upstream has (k8s-openapi models lists generically, without a schema).
fn list_schema(info: &KindInfo, kind_schema: &str, list_meta: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", info.name, info.name),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", info.plural),
                "type": "array",
                "items": reference(kind_schema),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "allOf": [reference(list_meta)],
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": gvk(info, &format!("{}List", info.name)),
    })
}

/// Takes the generator's definitions as `components.schemas`: adds the `{Kind}List` schemas and
/// `x-kubernetes-group-version-kind` on the top-level kinds (`kinds` pairs a row with its schema name).
pub fn components(
    mut generator: SchemaGenerator,
    kinds: &[(&'static KindInfo, String)],
) -> Map<String, Value> {
    let list_meta = register::<meta::v1::ListMeta>(&mut generator);
    let mut schemas = generator.take_definitions(true);
    super::extensions::add(&mut schemas);
    for (info, name) in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                gvk(info, info.name),
            );
        }
        schemas.insert(list_name(name), list_schema(info, name, &list_meta));
    }
    schemas
}
