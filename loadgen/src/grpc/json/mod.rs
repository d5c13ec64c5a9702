//! JSON to protobuf binary for one message type of a [`Pool`], per the proto3 JSON mapping:
//! scalars (64-bit integers also as strings), strings, bytes as base64, enums by name or number,
//! nested messages, repeated (packed where the syntax says so), maps, and the well-known types
//! whose JSON form is not an object (Timestamp, Duration, wrappers, Struct/Value/ListValue,
//! FieldMask, Empty). Every refusal names the field's path.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use prost_types::FieldDescriptorProto;
use prost_types::field_descriptor_proto::{Label, Type};
use serde_json::{Map, Value};

use super::pool::{MessageType, Pool, Source, Syntax, list};

/// Why a JSON document is not a message of the type: the field's path (`items[2].name`,
/// empty for the message itself) and the problem.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", if path.is_empty() { String::new() } else { format!("field {path}: ") })]
pub(crate) struct EncodeError {
    pub path: String,
    pub problem: String,
}

/// `json` encoded as the message type `type_name` (full name, no leading dot); `source` says
/// where the descriptors came from, for a type they lack.
pub(crate) fn encode(
    pool: &Pool,
    type_name: &str,
    json: &Value,
    source: &Source,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    Encoder { pool, source }.message(type_name, json, "", &mut out)?;
    Ok(out)
}

fn fail<T>(path: &str, problem: impl Into<String>) -> Result<T, EncodeError> {
    Err(EncodeError {
        path: path.to_owned(),
        problem: problem.into(),
    })
}

/// A short rendering of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Object(_) => "an object".into(),
        Value::Array(_) => "an array".into(),
        Value::String(s) if s.chars().count() > 40 => {
            format!("{:?}...", s.chars().take(40).collect::<String>())
        }
        other => other.to_string(),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A field's type with its referenced type resolved to a full name.
#[derive(Clone, Debug)]
enum Kind {
    Scalar(Type),
    Enum(String),
    Message(String),
}

/// One encoded scalar value, before its tag.
#[derive(Debug, PartialEq)]
enum Scalar {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(Vec<u8>),
}

impl Scalar {
    fn is_default(&self) -> bool {
        match self {
            Scalar::Varint(v) | Scalar::Fixed64(v) => *v == 0,
            Scalar::Fixed32(v) => *v == 0,
            Scalar::Bytes(b) => b.is_empty(),
        }
    }

    /// The value without its tag (as inside a packed run).
    fn put_value(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Varint(v) => put_varint(out, *v),
            Scalar::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Scalar::Bytes(b) => {
                put_varint(out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }

    fn put(&self, number: i32, out: &mut Vec<u8>) {
        let wire = match self {
            Scalar::Varint(_) => 0,
            Scalar::Fixed64(_) => 1,
            Scalar::Bytes(_) => 2,
            Scalar::Fixed32(_) => 5,
        };
        put_tag(out, number, wire);
        self.put_value(out);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, number: i32, wire: u8) {
    put_varint(out, ((number as u64) << 3) | u64::from(wire));
}

fn put_len(out: &mut Vec<u8>, number: i32, bytes: &[u8]) {
    put_tag(out, number, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn type_name(ty: Type) -> &'static str {
    match ty {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Group => "group",
        Type::Message => "message",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Enum => "enum",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
    }
}

/// The JSON name protoc derives when a descriptor does not carry one: `foo_bar` → `fooBar`.
fn json_name(field: &FieldDescriptorProto) -> String {
    if let Some(name) = &field.json_name {
        return name.clone();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in field.name().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

const VALUE: &str = "google.protobuf.Value";
const NULL_VALUE: &str = "google.protobuf.NullValue";

struct Encoder<'a> {
    pool: &'a Pool,
    source: &'a Source,
}

impl Encoder<'_> {
    fn message(
        &self,
        name: &str,
        value: &Value,
        path: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if name.starts_with("google.protobuf.") && self.well_known(name, value, path, out)? {
            return Ok(());
        }
        let Some(ty) = self.pool.message(name) else {
            return fail(path, self.source.missing("message type", name));
        };
        let Value::Object(object) = value else {
            return fail(
                path,
                format!("expected a JSON object ({name}), got {}", describe(value)),
            );
        };
        let given = self.match_fields(ty, object, path)?;
        for (field, given) in ty.proto.field.iter().zip(given) {
            match given {
                Some((key, value)) => self.field(ty, field, value, &child(path, key), out)?,
                None if field.label() == Label::Required => {
                    return fail(
                        &child(path, &json_name(field)),
                        format!("required by {name} (proto2) but missing"),
                    );
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Each JSON key matched to its field (by JSON name or proto name), in field order.
    fn match_fields<'v>(
        &self,
        ty: &MessageType,
        object: &'v Map<String, Value>,
        path: &str,
    ) -> Result<Vec<Option<(&'v str, &'v Value)>>, EncodeError> {
        let fields = &ty.proto.field;
        let mut given: Vec<Option<(&str, &Value)>> = vec![None; fields.len()];
        for (key, value) in object {
            let Some(i) = fields
                .iter()
                .position(|f| json_name(f) == *key || f.name() == key)
            else {
                return fail(
                    &child(path, key),
                    format!(
                        "no such field in {}; its fields: {}",
                        ty.name,
                        list(fields.iter().map(|f| f.name()))
                    ),
                );
            };
            if given[i].is_some() {
                return fail(
                    &child(path, key),
                    "given twice (by its JSON name and its proto name)",
                );
            }
            given[i] = Some((key.as_str(), value));
        }
        // At most one member of each (real) oneof; `null` means not set.
        let mut set: HashMap<i32, &str> = HashMap::new();
        for (field, given) in fields.iter().zip(&given) {
            let (Some((key, value)), Some(oneof)) = (given, field.oneof_index) else {
                continue;
            };
            if field.proto3_optional() || (value.is_null() && !field.type_name().ends_with(VALUE)) {
                continue;
            }
            if let Some(other) = set.insert(oneof, key) {
                let oneof_name = usize::try_from(oneof)
                    .ok()
                    .and_then(|i| ty.proto.oneof_decl.get(i))
                    .map_or("?", |o| o.name());
                return fail(
                    &child(path, key),
                    format!("{other} and {key} are both members of oneof {oneof_name}: give one"),
                );
            }
        }
        Ok(given)
    }

    fn kind(
        &self,
        ty: &MessageType,
        field: &FieldDescriptorProto,
        path: &str,
    ) -> Result<Kind, EncodeError> {
        let resolved = || self.pool.resolve(&ty.name, field.type_name());
        let kind = match field.r#type {
            // Hand-made descriptors may leave the type out and name it only.
            None => {
                let name = resolved();
                if self.pool.enumeration(&name).is_some() {
                    Kind::Enum(name)
                } else {
                    Kind::Message(name)
                }
            }
            Some(_) => match field.r#type() {
                Type::Message => Kind::Message(resolved()),
                Type::Enum => Kind::Enum(resolved()),
                Type::Group => {
                    return fail(
                        path,
                        "group fields (proto2 groups, delimited encoding) are not supported",
                    );
                }
                scalar => Kind::Scalar(scalar),
            },
        };
        Ok(kind)
    }

    fn field(
        &self,
        ty: &MessageType,
        field: &FieldDescriptorProto,
        value: &Value,
        path: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let kind = self.kind(ty, field, path)?;
        let number = field.number();
        if field.label() == Label::Repeated {
            if let Kind::Message(name) = &kind
                && let Some(entry) = self.pool.message(name)
                && entry.is_map_entry()
            {
                return self.map(entry, number, value, path, out);
            }
            let items = match value {
                Value::Null => return Ok(()),
                Value::Array(items) => items,
                other => {
                    return fail(
                        path,
                        format!(
                            "expected a JSON array (repeated field), got {}",
                            describe(other)
                        ),
                    );
                }
            };
            let packable = matches!(&kind, Kind::Enum(_))
                || matches!(&kind, Kind::Scalar(t) if !matches!(t, Type::String | Type::Bytes));
            let packed = packable
                && field
                    .options
                    .as_ref()
                    .and_then(|o| o.packed)
                    .unwrap_or(ty.syntax != Syntax::Proto2);
            if packed {
                if items.is_empty() {
                    return Ok(());
                }
                let mut run = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    self.scalar(&kind, item, &format!("{path}[{i}]"))?
                        .put_value(&mut run);
                }
                put_len(out, number, &run);
                return Ok(());
            }
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                if item.is_null() && !matches!(&kind, Kind::Message(n) if n == VALUE) {
                    return fail(&path, "null is not allowed in a repeated field");
                }
                self.single(&kind, number, item, &path, false, out)?;
            }
            return Ok(());
        }
        if value.is_null() && !matches!(&kind, Kind::Message(n) if n == VALUE) {
            // JSON null: the field's default, i.e. not sent.
            return Ok(());
        }
        // proto3 fields without presence: a default value is not sent.
        let implicit = ty.syntax == Syntax::Proto3
            && !field.proto3_optional()
            && field.oneof_index.is_none()
            && !matches!(kind, Kind::Message(_));
        self.single(&kind, number, value, path, implicit, out)
    }

    fn single(
        &self,
        kind: &Kind,
        number: i32,
        value: &Value,
        path: &str,
        skip_default: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if let Kind::Message(name) = kind {
            let mut inner = Vec::new();
            self.message(name, value, path, &mut inner)?;
            put_len(out, number, &inner);
            return Ok(());
        }
        let scalar = self.scalar(kind, value, path)?;
        if !(skip_default && scalar.is_default()) {
            scalar.put(number, out);
        }
        Ok(())
    }

    /// A map field: a JSON object, each entry a message of key (1) and value (2).
    fn map(
        &self,
        entry: &MessageType,
        number: i32,
        value: &Value,
        path: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let object = match value {
            Value::Null => return Ok(()),
            Value::Object(object) => object,
            other => {
                return fail(
                    path,
                    format!(
                        "expected a JSON object (map field), got {}",
                        describe(other)
                    ),
                );
            }
        };
        let (Some(key_field), Some(value_field)) = (
            entry.proto.field.iter().find(|f| f.number() == 1),
            entry.proto.field.iter().find(|f| f.number() == 2),
        ) else {
            return fail(
                path,
                format!("map entry {} lacks its key or value field", entry.name),
            );
        };
        let key_kind = self.kind(entry, key_field, path)?;
        let value_kind = self.kind(entry, value_field, path)?;
        for (key, item) in object {
            let path = format!("{path}[{key:?}]");
            let key_scalar = match &key_kind {
                Kind::Scalar(Type::String) => Scalar::Bytes(key.as_bytes().to_vec()),
                Kind::Scalar(Type::Bool) => match key.as_str() {
                    "true" => Scalar::Varint(1),
                    "false" => Scalar::Varint(0),
                    _ => return fail(&path, "a bool map key is \"true\" or \"false\""),
                },
                kind => self.scalar(kind, &Value::String(key.clone()), &path)?,
            };
            if item.is_null() && !matches!(&value_kind, Kind::Message(n) if n == VALUE) {
                return fail(&path, "null is not allowed as a map value");
            }
            let mut inner = Vec::new();
            key_scalar.put(1, &mut inner);
            self.single(&value_kind, 2, item, &path, false, &mut inner)?;
            put_len(out, number, &inner);
        }
        Ok(())
    }

    fn scalar(&self, kind: &Kind, value: &Value, path: &str) -> Result<Scalar, EncodeError> {
        let ty = match kind {
            Kind::Scalar(ty) => *ty,
            Kind::Enum(name) => {
                return self
                    .enum_value(name, value, path)
                    .map(|n| Scalar::Varint(i64::from(n) as u64));
            }
            Kind::Message(name) => {
                return fail(path, format!("a message ({name}) cannot be packed"));
            }
        };
        let name = type_name(ty);
        Ok(match ty {
            Type::Int32 => {
                Scalar::Varint(
                    integer(value, path, name, i32::MIN.into(), i32::MAX.into())? as i64 as u64,
                )
            }
            Type::Sint32 => {
                let v = integer(value, path, name, i32::MIN.into(), i32::MAX.into())? as i32;
                Scalar::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
            }
            Type::Sfixed32 => {
                Scalar::Fixed32(
                    integer(value, path, name, i32::MIN.into(), i32::MAX.into())? as i32 as u32,
                )
            }
            Type::Int64 => {
                Scalar::Varint(
                    integer(value, path, name, i64::MIN.into(), i64::MAX.into())? as i64 as u64,
                )
            }
            Type::Sint64 => {
                let v = integer(value, path, name, i64::MIN.into(), i64::MAX.into())? as i64;
                Scalar::Varint(((v << 1) ^ (v >> 63)) as u64)
            }
            Type::Sfixed64 => {
                Scalar::Fixed64(
                    integer(value, path, name, i64::MIN.into(), i64::MAX.into())? as i64 as u64,
                )
            }
            Type::Uint32 => Scalar::Varint(integer(value, path, name, 0, u32::MAX.into())? as u64),
            Type::Fixed32 => {
                Scalar::Fixed32(integer(value, path, name, 0, u32::MAX.into())? as u32)
            }
            Type::Uint64 => Scalar::Varint(integer(value, path, name, 0, u64::MAX.into())? as u64),
            Type::Fixed64 => {
                Scalar::Fixed64(integer(value, path, name, 0, u64::MAX.into())? as u64)
            }
            Type::Double => Scalar::Fixed64(float(value, path, name)?.to_bits()),
            Type::Float => {
                let v = float(value, path, name)?;
                let narrow = v as f32;
                if v.is_finite() && narrow.is_infinite() {
                    return fail(
                        path,
                        format!("{} is out of range for float", describe(value)),
                    );
                }
                Scalar::Fixed32(narrow.to_bits())
            }
            Type::Bool => match value {
                Value::Bool(b) => Scalar::Varint(u64::from(*b)),
                other => {
                    return fail(
                        path,
                        format!("expected true or false (bool), got {}", describe(other)),
                    );
                }
            },
            Type::String => match value {
                Value::String(s) => Scalar::Bytes(s.as_bytes().to_vec()),
                other => {
                    return fail(
                        path,
                        format!("expected a JSON string (string), got {}", describe(other)),
                    );
                }
            },
            Type::Bytes => match value {
                Value::String(s) => {
                    Scalar::Bytes(base64_decode(s).map_err(|problem| EncodeError {
                        path: path.to_owned(),
                        problem,
                    })?)
                }
                other => {
                    return fail(
                        path,
                        format!(
                            "expected a base64 JSON string (bytes), got {}",
                            describe(other)
                        ),
                    );
                }
            },
            Type::Message | Type::Group | Type::Enum => {
                return fail(path, format!("a {name} is not a scalar"));
            }
        })
    }

    fn enum_value(&self, name: &str, value: &Value, path: &str) -> Result<i32, EncodeError> {
        if name == NULL_VALUE && (value.is_null() || value.as_str() == Some("NULL_VALUE")) {
            return Ok(0);
        }
        match value {
            Value::String(text) => {
                let Some(e) = self.pool.enumeration(name) else {
                    return fail(path, self.source.missing("enum type", name));
                };
                match e.value.iter().find(|v| v.name() == text) {
                    Some(v) => Ok(v.number()),
                    None => fail(
                        path,
                        format!(
                            "{text:?} is not a value of {name}; its values: {}",
                            list(e.value.iter().map(|v| v.name()))
                        ),
                    ),
                }
            }
            Value::Number(_) => {
                Ok(integer(value, path, "enum number", i32::MIN.into(), i32::MAX.into())? as i32)
            }
            other => fail(
                path,
                format!(
                    "expected an enum value name or number ({name}), got {}",
                    describe(other)
                ),
            ),
        }
    }
}

/// An integer from a JSON number (integral) or a string of one, within `min..=max`.
fn integer(
    value: &Value,
    path: &str,
    name: &str,
    min: i128,
    max: i128,
) -> Result<i128, EncodeError> {
    let parsed: Option<i128> = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().and_then(integral)),
        Value::String(s) => s
            .parse::<i128>()
            .ok()
            .or_else(|| s.parse::<f64>().ok().and_then(integral)),
        other => {
            return fail(
                path,
                format!("expected an integer ({name}), got {}", describe(other)),
            );
        }
    };
    match parsed {
        None => fail(
            path,
            format!("expected an integer ({name}), got {}", describe(value)),
        ),
        Some(v) if v < min || v > max => fail(
            path,
            format!("{v} is out of range for {name} ({min}..={max})"),
        ),
        Some(v) => Ok(v),
    }
}

/// `f` as an integer if it is one (1e3, 7.0), and small enough to be exact.
fn integral(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
}

fn float(value: &Value, path: &str, name: &str) -> Result<f64, EncodeError> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s => s.parse::<f64>().ok().filter(|f| f.is_finite()),
        },
        _ => None,
    };
    parsed.ok_or_else(|| EncodeError {
        path: path.to_owned(),
        problem: format!(
            "expected a number ({name}; or \"NaN\", \"Infinity\", \"-Infinity\"), got {}",
            describe(value)
        ),
    })
}

/// Standard or URL-safe base64, padded or not (the proto3 JSON mapping accepts each).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engine = if text.contains(['-', '_']) {
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, config)
    } else {
        GeneralPurpose::new(&base64::alphabet::STANDARD, config)
    };
    engine.decode(text).map_err(|e| {
        format!(
            "{} is not base64 (bytes): {e}",
            describe(&Value::String(text.to_owned()))
        )
    })
}

#[cfg(test)]
mod tests;
mod well_known;
