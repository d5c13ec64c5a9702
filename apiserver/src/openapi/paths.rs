//! `paths` of a group-version document: upstream's operations per resource, with kubectl's patch metadata.

use serde_json::{Map, Value, json};
use skiff_api::KindInfo;

use super::schemas::{Common, list_name, reference};

/// The content types a `patch` operation accepts; kubectl reads them to pick server-side validation.
pub const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// `Pod` in `apps/v1` → `AppsV1`, `""`/`v1` → `CoreV1`, `networking.k8s.io` → `NetworkingV1`.
fn operation_group(info: &KindInfo) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group.split('.').next().unwrap_or(info.group)
    };
    let mut chars = group.chars();
    let head = chars.next().map(|c| c.to_ascii_uppercase().to_string());
    let mut version = info.version.chars();
    let vhead = version.next().map(|c| c.to_ascii_uppercase().to_string());
    format!(
        "{}{}{}{}",
        head.unwrap_or_default(),
        chars.as_str(),
        vhead.unwrap_or_default(),
        version.as_str()
    )
}

fn query_param(name: &str, description: &str, ty: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn field_validation() -> Value {
    query_param(
        "fieldValidation",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        "string",
    )
}

fn dry_run() -> Value {
    query_param(
        "dryRun",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
        "string",
    )
}

fn field_manager() -> Value {
    query_param(
        "fieldManager",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
        "string",
    )
}

fn json_content(schema: Value) -> Value {
    json!({
        "application/json": { "schema": schema.clone() },
        "application/yaml": { "schema": schema },
    })
}

fn ok(schema: Value) -> Value {
    json!({ "description": "OK", "content": json_content(schema) })
}

/// One operation; `action` is upstream's `x-kubernetes-action`.
struct Op<'a> {
    info: &'a KindInfo,
    verb: &'a str,
    action: &'a str,
    id_suffix: String,
    description: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Op<'_> {
    fn build(self) -> Value {
        let mut op = json!({
            "tags": [operation_group(self.info).to_lowercase()],
            "description": self.description,
            "operationId": format!("{}{}{}", self.verb, operation_group(self.info), self.id_suffix),
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": {
                "group": self.info.group,
                "version": self.info.version,
                "kind": self.info.name,
            },
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

fn prefix(info: &KindInfo) -> String {
    if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    }
}

/// Adds every path of `info` (whose schema is `schema`) to `paths`.
pub fn add_resource(
    paths: &mut Map<String, Value>,
    info: &KindInfo,
    schema: &str,
    common: &Common,
) {
    let kind_ref = reference(schema);
    let list_ref = reference(&list_name(schema));
    let status_ref = reference(&common.status);
    let (base, scope, ns_params) = if info.namespaced {
        (
            format!("{}/namespaces/{{namespace}}/{}", prefix(info), info.plural),
            "Namespaced",
            vec![path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )],
        )
    } else {
        (format!("{}/{}", prefix(info), info.plural), "", Vec::new())
    };
    let name = info.name;
    let mk = |verb: &'static str, action: &'static str, suffix: String, description: String| Op {
        info,
        verb,
        action,
        id_suffix: suffix,
        description,
        params: Vec::new(),
        body: None,
        responses: json!({}),
    };

    // The collection: list, create, deletecollection.
    let mut list = mk(
        "list",
        "list",
        format!("{scope}{name}"),
        format!("list or watch objects of kind {name}"),
    );
    list.params = vec![
        query_param(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
            "string",
        ),
        query_param(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
            "string",
        ),
        query_param(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
            "string",
        ),
        query_param(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
            "boolean",
        ),
    ];
    list.responses =
        json!({ "200": ok(list_ref.clone()), "401": { "description": "Unauthorized" } });
    let mut create = mk(
        "create",
        "post",
        format!("{scope}{name}"),
        format!("create a {name}"),
    );
    create.params = vec![dry_run(), field_manager(), field_validation()];
    create.body = Some(json!({ "required": true, "content": json_content(kind_ref.clone()) }));
    create.responses = json!({
        "200": ok(kind_ref.clone()),
        "201": { "description": "Created", "content": json_content(kind_ref.clone()) },
        "202": { "description": "Accepted", "content": json_content(kind_ref.clone()) },
        "401": { "description": "Unauthorized" },
    });
    let mut collection = json!({
        "get": list.build(),
        "post": create.build(),
        "parameters": ns_params.clone(),
    });
    if info.verbs.contains(&"deletecollection") {
        let mut dc = mk(
            "deletecollection",
            "deletecollection",
            format!("Collection{scope}{name}"),
            format!("delete collection of {name}"),
        );
        dc.params = vec![dry_run()];
        dc.body = Some(json!({ "content": json_content(reference(&common.delete_options)) }));
        dc.responses =
            json!({ "200": ok(status_ref.clone()), "401": { "description": "Unauthorized" } });
        collection["delete"] = dc.build();
    }
    paths.insert(base.clone(), collection);

    // Across namespaces: list only.
    if info.namespaced {
        let mut all = mk(
            "list",
            "list",
            format!("{name}ForAllNamespaces"),
            format!("list or watch objects of kind {name}"),
        );
        all.responses = json!({ "200": ok(list_ref), "401": { "description": "Unauthorized" } });
        paths.insert(
            format!("{}/{}", prefix(info), info.plural),
            json!({ "get": all.build() }),
        );
    }

    // One object, and its status / scale subresources.
    let mut item_params = vec![path_param("name", &format!("name of the {name}"))];
    item_params.extend(ns_params);
    let object_ops = |suffix: &str, what: &str, target: &Value| {
        let mut get = mk(
            "read",
            "get",
            format!("{scope}{name}{suffix}"),
            format!("read {what} of the specified {name}"),
        );
        get.responses =
            json!({ "200": ok(target.clone()), "401": { "description": "Unauthorized" } });
        let mut put = mk(
            "replace",
            "put",
            format!("{scope}{name}{suffix}"),
            format!("replace {what} of the specified {name}"),
        );
        put.params = vec![dry_run(), field_manager(), field_validation()];
        put.body = Some(json!({ "required": true, "content": json_content(target.clone()) }));
        put.responses = json!({
            "200": ok(target.clone()),
            "201": { "description": "Created", "content": json_content(target.clone()) },
            "401": { "description": "Unauthorized" },
        });
        let mut patch = mk(
            "patch",
            "patch",
            format!("{scope}{name}{suffix}"),
            format!("partially update {what} of the specified {name}"),
        );
        patch.params = vec![
            dry_run(),
            field_manager(),
            field_validation(),
            query_param(
                "force",
                "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
                "boolean",
            ),
        ];
        let content: Map<String, Value> = PATCH_CONTENT_TYPES
            .iter()
            .map(|ct| {
                (
                    (*ct).to_owned(),
                    json!({ "schema": reference(&common.patch) }),
                )
            })
            .collect();
        patch.body = Some(json!({ "required": true, "content": content }));
        patch.responses = json!({
            "200": ok(target.clone()),
            "201": { "description": "Created", "content": json_content(target.clone()) },
            "401": { "description": "Unauthorized" },
        });
        json!({ "get": get.build(), "put": put.build(), "patch": patch.build() })
    };
    let mut item = object_ops("", "the", &kind_ref);
    let mut delete = mk(
        "delete",
        "delete",
        format!("{scope}{name}"),
        format!("delete a {name}"),
    );
    delete.params = vec![dry_run()];
    delete.body = Some(json!({ "content": json_content(reference(&common.delete_options)) }));
    delete.responses = json!({
        "200": ok(kind_ref.clone()),
        "202": { "description": "Accepted", "content": json_content(kind_ref.clone()) },
        "401": { "description": "Unauthorized" },
    });
    item["delete"] = delete.build();
    item["parameters"] = Value::Array(item_params.clone());
    paths.insert(format!("{base}/{{name}}"), item);
    for (sub, suffix, target) in [
        ("status", "Status", kind_ref.clone()),
        ("scale", "Scale", reference(&common.scale)),
    ] {
        if info.has_subresource(sub) {
            let mut ops = object_ops(suffix, sub, &target);
            if sub == "scale" {
                for verb in ["get", "put", "patch"] {
                    ops[verb]["x-kubernetes-group-version-kind"] =
                        json!({ "group": "autoscaling", "version": "v1", "kind": "Scale" });
                }
            }
            ops["parameters"] = Value::Array(item_params.clone());
            paths.insert(format!("{base}/{{name}}/{sub}"), ops);
        }
    }
    if info.has_subresource("binding") {
        let binding_ref = reference(&common.binding);
        let mut post = mk(
            "create",
            "post",
            format!("{scope}{name}Binding"),
            format!("create binding of a {name}"),
        );
        post.params = vec![dry_run(), field_manager(), field_validation()];
        post.body = Some(json!({ "required": true, "content": json_content(binding_ref.clone()) }));
        post.responses = json!({
            "201": { "description": "Created", "content": json_content(binding_ref) },
            "401": { "description": "Unauthorized" },
        });
        let mut post = post.build();
        post["x-kubernetes-group-version-kind"] =
            json!({ "group": "", "version": "v1", "kind": "Binding" });
        paths.insert(
            format!("{base}/{{name}}/binding"),
            json!({ "post": post, "parameters": item_params }),
        );
    }
}
