//! Walks a protobuf message along the schema table and builds the JSON object Kubernetes' JSON
//! encoding would give for the same Go value.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::ProtobufError;
use super::message::{Card, Field, Message, Ty, Zero};
use super::schema::ROOTS;
use super::wire::{Reader, Value as Wire};

/// `k8s\0`: the prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\x00";

/// Far beyond any served kind's nesting; bounds the work on a hostile body.
const MAX_DEPTH: usize = 32;

/// Decodes a whole request body (magic + `runtime.Unknown`) to a JSON object with
/// `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
    let envelope = Envelope::read(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(envelope.content_encoding));
    }
    // client-go types DeleteOptions with the group-version of the request (`apps/v1`).
    let message = ROOTS
        .iter()
        .find(|(v, k, _)| *v == envelope.api_version && *k == envelope.kind)
        .or_else(|| {
            (envelope.kind == "DeleteOptions")
                .then(|| ROOTS.iter().find(|(_, k, _)| *k == "DeleteOptions"))
                .flatten()
        })
        .map(|(_, _, m)| *m)
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        })?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(envelope.api_version));
    object.insert("kind".into(), Value::String(envelope.kind));
    decode_into(message, envelope.raw, 0, &mut object)?;
    Ok(Value::Object(object))
}

/// `runtime.Unknown`: typeMeta (1), raw (2), contentEncoding (3), contentType (4).
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn read(buf: &'a [u8]) -> Result<Self, ProtobufError> {
        const NAME: &str = "runtime.Unknown";
        let mut out = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(buf, NAME);
        while let Some((number, value)) = r.next_field()? {
            let bytes = expect_bytes(NAME, number, value)?;
            match number {
                1 => {
                    const TYPE_META: &str = "runtime.TypeMeta";
                    let mut t = Reader::new(bytes, TYPE_META);
                    while let Some((n, v)) = t.next_field()? {
                        let s = utf8(TYPE_META, "typeMeta", expect_bytes(TYPE_META, n, v)?)?;
                        match n {
                            1 => out.api_version = s,
                            2 => out.kind = s,
                            _ => {
                                return Err(ProtobufError::UnknownField {
                                    message: TYPE_META,
                                    field: n,
                                });
                            }
                        }
                    }
                }
                2 => out.raw = bytes,
                3 => out.content_encoding = utf8(NAME, "contentEncoding", bytes)?,
                // contentType names the encoding of `raw`; Kubernetes always leaves it empty.
                4 => {
                    let content_type = utf8(NAME, "contentType", bytes)?;
                    if !content_type.is_empty() && content_type != super::MEDIA_TYPE {
                        return Err(ProtobufError::ContentEncoding(content_type));
                    }
                }
                _ => {
                    return Err(ProtobufError::UnknownField {
                        message: NAME,
                        field: number,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn expect_bytes<'a>(
    message: &'static str,
    field: u64,
    value: Wire<'a>,
) -> Result<&'a [u8], ProtobufError> {
    match value {
        Wire::Bytes(b) => Ok(b),
        other => Err(ProtobufError::WireType {
            message,
            field,
            wire: other.wire_name().to_owned(),
        }),
    }
}

fn utf8(message: &'static str, field: &'static str, b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::InvalidValue {
        message,
        field,
        why: "not UTF-8".to_owned(),
    })
}

/// Decodes the fields of `message` in `buf` into `out` (which inline fields share).
fn decode_into(
    message: &'static Message,
    buf: &[u8],
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep(MAX_DEPTH));
    }
    let mut r = Reader::new(buf, message.name);
    while let Some((number, wire)) = r.next_field()? {
        let field = message.field(number).ok_or(ProtobufError::UnknownField {
            message: message.name,
            field: number,
        })?;
        let ctx = Ctx {
            message,
            field,
            depth,
        };
        match field.card {
            Card::Inline => match field.ty {
                Ty::Msg(inner) => decode_into(inner, ctx.bytes(wire)?, depth + 1, out)?,
                _ => return Err(ctx.invalid("an inline field must be a message")),
            },
            Card::One => {
                if let (Ty::Msg(inner), Some(Value::Object(existing))) =
                    (field.ty, out.get_mut(field.json))
                {
                    // A repeated embedded message merges into the earlier one (protobuf rules).
                    decode_into(inner, ctx.bytes(wire)?, depth + 1, existing)?;
                } else if let Some(value) = ctx.value(field.ty, wire)?
                    && (field.zero == Zero::Keep || !is_zero(&value))
                {
                    out.insert(field.json.to_owned(), value);
                }
            }
            Card::List => {
                let values = ctx.list_values(wire)?;
                let entry = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = entry {
                    items.extend(values);
                }
            }
            Card::Map => {
                let (key, value) = ctx.map_entry(wire)?;
                let entry = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(key, value.unwrap_or(Value::Null));
                }
            }
        }
    }
    Ok(())
}

/// A zero scalar that Go's JSON would drop (`omitempty`); objects and arrays are never zero.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The field being decoded, for its values and errors.
struct Ctx {
    message: &'static Message,
    field: &'static Field,
    depth: usize,
}

impl Ctx {
    fn invalid(&self, why: impl Into<String>) -> ProtobufError {
        ProtobufError::InvalidValue {
            message: self.message.name,
            field: self.field.json,
            why: why.into(),
        }
    }

    fn wire_error(&self, wire: Wire<'_>) -> ProtobufError {
        ProtobufError::WireType {
            message: self.message.name,
            field: u64::from(self.field.number),
            wire: wire.wire_name().to_owned(),
        }
    }

    fn bytes<'a>(&self, wire: Wire<'a>) -> Result<&'a [u8], ProtobufError> {
        match wire {
            Wire::Bytes(b) => Ok(b),
            other => Err(self.wire_error(other)),
        }
    }

    fn varint(&self, wire: Wire<'_>) -> Result<u64, ProtobufError> {
        match wire {
            Wire::Varint(v) => Ok(v),
            other => Err(self.wire_error(other)),
        }
    }

    /// One value of type `ty`; `None` when it is JSON `null` (a zero `Time`, empty raw JSON).
    fn value(&self, ty: Ty, wire: Wire<'_>) -> Result<Option<Value>, ProtobufError> {
        let value = match ty {
            Ty::Str => Value::String(utf8(self.message.name, self.field.json, self.bytes(wire)?)?),
            Ty::Bytes => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(self.bytes(wire)?))
            }
            Ty::Bool => Value::Bool(self.varint(wire)? != 0),
            // int32 travels sign-extended to 64 bits; truncation is the protobuf rule.
            Ty::I32 => Value::from(self.varint(wire)? as i64 as i32),
            Ty::I64 => Value::from(self.varint(wire)? as i64),
            Ty::U32 => Value::from(self.varint(wire)? as u32),
            Ty::U64 => Value::from(self.varint(wire)?),
            Ty::F64 => match wire {
                Wire::Fixed64(bits) => Number::from_f64(f64::from_bits(bits))
                    .map(Value::Number)
                    .ok_or_else(|| self.invalid("not a finite number"))?,
                other => return Err(self.wire_error(other)),
            },
            Ty::Msg(inner) => {
                let mut object = Map::new();
                decode_into(inner, self.bytes(wire)?, self.depth + 1, &mut object)?;
                Value::Object(object)
            }
            Ty::Time => return self.time(self.bytes(wire)?, false),
            Ty::MicroTime => return self.time(self.bytes(wire)?, true),
            Ty::Quantity => {
                let fields = self.special(self.bytes(wire)?, "resource.Quantity", 1)?;
                match fields[0] {
                    Some(Wire::Bytes(b)) => Value::String(utf8("resource.Quantity", "string", b)?),
                    Some(other) => return Err(self.wire_error(other)),
                    None => Value::String("0".to_owned()),
                }
            }
            Ty::IntOrString => self.int_or_string(self.bytes(wire)?)?,
            Ty::RawJson => {
                let fields = self.special(self.bytes(wire)?, "RawJSON", 1)?;
                match fields[0] {
                    Some(Wire::Bytes(b)) if !b.is_empty() => serde_json::from_slice(b)
                        .map_err(|e| self.invalid(format!("not JSON: {e}")))?,
                    Some(Wire::Bytes(_)) | None => return Ok(None),
                    Some(other) => return Err(self.wire_error(other)),
                }
            }
        };
        Ok(Some(value))
    }

    /// The values of one occurrence of a repeated field (several if packed).
    fn list_values(&self, wire: Wire<'_>) -> Result<Vec<Value>, ProtobufError> {
        let varint_type = matches!(
            self.field.ty,
            Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64
        );
        if let (true, Wire::Bytes(b)) = (varint_type, wire) {
            return Reader::new(b, self.message.name)
                .packed_varints()?
                .into_iter()
                .map(|v| self.value(self.field.ty, Wire::Varint(v)))
                .filter_map(Result::transpose)
                .collect();
        }
        Ok(self.value(self.field.ty, wire)?.into_iter().collect())
    }

    /// A map entry: key (1, string) and value (2).
    fn map_entry(&self, wire: Wire<'_>) -> Result<(String, Option<Value>), ProtobufError> {
        let mut r = Reader::new(self.bytes(wire)?, self.message.name);
        let (mut key, mut value) = (String::new(), None);
        while let Some((n, v)) = r.next_field()? {
            match n {
                1 => key = utf8(self.message.name, self.field.json, self.bytes(v)?)?,
                2 => value = self.value(self.field.ty, v)?,
                _ => {
                    return Err(ProtobufError::UnknownField {
                        message: self.message.name,
                        field: n,
                    });
                }
            }
        }
        // An absent value is the type's zero, as in Go.
        let value = match (value, self.field.ty) {
            (Some(v), _) => Some(v),
            (None, Ty::Str | Ty::Bytes | Ty::Quantity) => Some(Value::String(String::new())),
            (None, Ty::Msg(_)) => Some(Value::Object(Map::new())),
            (None, _) => None,
        };
        Ok((key, value))
    }

    /// The fields `1..=N` of a small special message, refusing any other number.
    fn special<'a>(
        &self,
        buf: &'a [u8],
        name: &'static str,
        n: usize,
    ) -> Result<Vec<Option<Wire<'a>>>, ProtobufError> {
        let mut fields = vec![None; n];
        let mut r = Reader::new(buf, name);
        while let Some((number, value)) = r.next_field()? {
            let slot = usize::try_from(number)
                .ok()
                .and_then(|i| fields.get_mut(i.wrapping_sub(1)))
                .ok_or(ProtobufError::UnknownField {
                    message: name,
                    field: number,
                })?;
            *slot = Some(value);
        }
        Ok(fields)
    }

    /// `meta/v1.Time` / `MicroTime`: a `Timestamp` (seconds 1, nanos 2). Empty is the zero
    /// time, which JSON writes as `null`. `Time` keeps whole seconds, as upstream's decoder does.
    fn time(&self, buf: &[u8], micro: bool) -> Result<Option<Value>, ProtobufError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let name = if micro { "MicroTime" } else { "Time" };
        let fields = self.special(buf, name, 2)?;
        let int = |w: Option<Wire<'_>>| match w {
            None => Ok(0),
            Some(Wire::Varint(v)) => Ok(v as i64),
            Some(other) => Err(self.wire_error(other)),
        };
        let seconds = int(fields[0])?;
        let nanos = int(fields[1])?;
        let ts = jiff::Timestamp::from_second(seconds)
            .map_err(|e| self.invalid(format!("time out of range: {e}")))?;
        let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        let text = if micro {
            if !(0..1_000_000_000).contains(&nanos) {
                return Err(self.invalid(format!("nanos {nanos} out of range")));
            }
            format!("{base}.{:06}Z", nanos / 1000)
        } else {
            format!("{base}Z")
        };
        Ok(Some(Value::String(text)))
    }

    /// `intstr.IntOrString`: type (1: 0 int, 1 string), intVal (2), strVal (3).
    fn int_or_string(&self, buf: &[u8]) -> Result<Value, ProtobufError> {
        const NAME: &str = "intstr.IntOrString";
        let fields = self.special(buf, NAME, 3)?;
        let kind = match fields[0] {
            None => 0,
            Some(Wire::Varint(v)) => v,
            Some(other) => return Err(self.wire_error(other)),
        };
        match kind {
            0 => match fields[1] {
                None => Ok(Value::from(0)),
                Some(Wire::Varint(v)) => Ok(Value::from(v as i64 as i32)),
                Some(other) => Err(self.wire_error(other)),
            },
            1 => match fields[2] {
                None => Ok(Value::String(String::new())),
                Some(Wire::Bytes(b)) => Ok(Value::String(utf8(NAME, "strVal", b)?)),
                Some(other) => Err(self.wire_error(other)),
            },
            other => Err(self.invalid(format!("IntOrString type {other} is neither 0 nor 1"))),
        }
    }
}
