//! Protobuf descriptors indexed by full name: messages, enums, services, and the lookup of a
//! unary method from its `:path`.

use std::collections::{BTreeMap, HashMap};

use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, MethodDescriptorProto,
    ServiceDescriptorProto,
};

/// Where descriptors came from, for the errors that name a missing service or type.
#[derive(Debug)]
pub(crate) struct Source {
    /// e.g. `in api.pb`, `on the server (by reflection)`.
    pub place: String,
    /// What to do about a type the descriptors lack.
    pub missing_hint: &'static str,
}

impl Source {
    pub fn missing(&self, what: &str, name: &str) -> String {
        format!(
            "{what} {name} is not in the descriptors {}{}",
            self.place, self.missing_hint
        )
    }
}

/// How a file's fields encode and when a default value is still sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Syntax {
    Proto2,
    Proto3,
    Editions,
}

/// A message type and the syntax of the file declaring it.
#[derive(Debug)]
pub(crate) struct MessageType {
    /// Full name without the leading dot, e.g. `skiff.echo.v1.EchoRequest`.
    pub name: String,
    pub proto: DescriptorProto,
    pub syntax: Syntax,
}

impl MessageType {
    pub fn is_map_entry(&self) -> bool {
        self.proto
            .options
            .as_ref()
            .and_then(|o| o.map_entry)
            .unwrap_or(false)
    }
}

/// Every type and service of a set of files.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    messages: HashMap<String, MessageType>,
    enums: HashMap<String, EnumDescriptorProto>,
    /// Full name → service; sorted for listing in errors.
    services: BTreeMap<String, ServiceDescriptorProto>,
}

impl Pool {
    pub fn new(files: impl IntoIterator<Item = FileDescriptorProto>) -> Pool {
        let mut pool = Pool::default();
        for file in files {
            let syntax = match file.syntax() {
                "proto3" => Syntax::Proto3,
                "editions" => Syntax::Editions,
                _ => Syntax::Proto2,
            };
            let package = file.package().to_owned();
            for message in file.message_type {
                pool.add_message(&package, message, syntax);
            }
            for e in file.enum_type {
                pool.enums.insert(qualify(&package, e.name()), e);
            }
            for service in file.service {
                pool.services
                    .insert(qualify(&package, service.name()), service);
            }
        }
        pool
    }

    fn add_message(&mut self, scope: &str, mut message: DescriptorProto, syntax: Syntax) {
        let name = qualify(scope, message.name());
        for nested in std::mem::take(&mut message.nested_type) {
            self.add_message(&name, nested, syntax);
        }
        for e in std::mem::take(&mut message.enum_type) {
            self.enums.insert(qualify(&name, e.name()), e);
        }
        self.messages.insert(
            name.clone(),
            MessageType {
                name,
                proto: message,
                syntax,
            },
        );
    }

    pub fn message(&self, name: &str) -> Option<&MessageType> {
        self.messages.get(name)
    }

    pub fn enumeration(&self, name: &str) -> Option<&EnumDescriptorProto> {
        self.enums.get(name)
    }

    /// The full name a field's `type_name` refers to from inside message `scope`: absolute
    /// (`.pkg.Type`, what protoc writes) or, in hand-made descriptors, relative (searched from
    /// the innermost scope outwards, as protoc resolves names).
    pub fn resolve(&self, scope: &str, type_name: &str) -> String {
        if let Some(absolute) = type_name.strip_prefix('.') {
            return absolute.to_owned();
        }
        let mut scope = scope;
        loop {
            let candidate = qualify(scope, type_name);
            if self.messages.contains_key(&candidate) || self.enums.contains_key(&candidate) {
                return candidate;
            }
            match scope.rfind('.') {
                Some(dot) => scope = &scope[..dot],
                None if !scope.is_empty() => scope = "",
                None => return type_name.to_owned(),
            }
        }
    }

    /// The unary method at `path` (`/pkg.Service/Method`) and its input type's full name.
    pub fn unary_method(
        &self,
        path: &str,
        source: &Source,
    ) -> Result<(&MethodDescriptorProto, String), String> {
        let (service_name, method_name) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .ok_or_else(|| {
                format!("{path:?} is not a gRPC method path: write /package.Service/Method")
            })?;
        let Some(service) = self.services.get(service_name) else {
            return Err(format!(
                "no service {service_name} {}; there are: {}",
                source.place,
                list(self.services.keys().map(String::as_str))
            ));
        };
        let Some(method) = service.method.iter().find(|m| m.name() == method_name) else {
            return Err(format!(
                "service {service_name} has no method {method_name:?} {}; its methods: {}",
                source.place,
                list(service.method.iter().map(|m| m.name()))
            ));
        };
        let streaming = match (method.client_streaming(), method.server_streaming()) {
            (false, false) => None,
            (true, false) => Some("client-streaming"),
            (false, true) => Some("server-streaming"),
            (true, true) => Some("bidirectional streaming"),
        };
        if let Some(kind) = streaming {
            return Err(format!(
                "{path} is a {kind} method: skiff bench calls unary methods only"
            ));
        }
        let input = self.resolve(service_name, method.input_type());
        if !self.messages.contains_key(&input) {
            return Err(format!(
                "{path} takes {}",
                source.missing("message type", &input)
            ));
        }
        Ok((method, input))
    }
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// `a, b, c` (the first 20), or `none`.
pub(crate) fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.len() {
        0 => "none".to_owned(),
        n if n > 20 => format!("{}, ... ({n} in all)", names[..20].join(", ")),
        _ => names.join(", "),
    }
}
