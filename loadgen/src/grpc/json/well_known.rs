//! The well-known types whose JSON form is not an object of their fields (Timestamp,
//! Duration, wrappers, Struct/Value/ListValue, FieldMask, Empty); their layout is fixed, so
//! they encode even when the descriptors leave their files out.

use prost_types::field_descriptor_proto::Type;
use serde_json::Value;

use super::{EncodeError, Encoder, Kind, Scalar, VALUE, describe, fail, put_len};

/// The wrapper types: a message of one field 1, written in JSON as its bare value.
fn wrapper_type(name: &str) -> Option<Type> {
    Some(match name {
        "google.protobuf.DoubleValue" => Type::Double,
        "google.protobuf.FloatValue" => Type::Float,
        "google.protobuf.Int64Value" => Type::Int64,
        "google.protobuf.UInt64Value" => Type::Uint64,
        "google.protobuf.Int32Value" => Type::Int32,
        "google.protobuf.UInt32Value" => Type::Uint32,
        "google.protobuf.BoolValue" => Type::Bool,
        "google.protobuf.StringValue" => Type::String,
        "google.protobuf.BytesValue" => Type::Bytes,
        _ => return None,
    })
}

impl Encoder<'_> {
    /// Encodes the well-known types with a special JSON form; `false` for the others.
    pub(super) fn well_known(
        &self,
        name: &str,
        value: &Value,
        path: &str,
        out: &mut Vec<u8>,
    ) -> Result<bool, EncodeError> {
        if let Some(ty) = wrapper_type(name) {
            let scalar = self.scalar(&Kind::Scalar(ty), value, path)?;
            if !scalar.is_default() {
                scalar.put(1, out);
            }
            return Ok(true);
        }
        match name {
            "google.protobuf.Timestamp" => {
                let Value::String(text) = value else {
                    return fail(
                        path,
                        format!(
                            "expected an RFC 3339 string (Timestamp), got {}",
                            describe(value)
                        ),
                    );
                };
                let ts: jiff::Timestamp = text.parse().map_err(|e| EncodeError {
                    path: path.to_owned(),
                    problem: format!(
                        "{text:?} is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z): {e}"
                    ),
                })?;
                let (mut seconds, mut nanos) = (ts.as_second(), ts.subsec_nanosecond());
                if nanos < 0 {
                    seconds -= 1;
                    nanos += 1_000_000_000;
                }
                seconds_nanos(seconds, nanos, out);
            }
            "google.protobuf.Duration" => {
                let Value::String(text) = value else {
                    return fail(
                        path,
                        format!(
                            "expected a string like \"1.5s\" (Duration), got {}",
                            describe(value)
                        ),
                    );
                };
                let (seconds, nanos) = duration(text).ok_or_else(|| EncodeError {
                    path: path.to_owned(),
                    problem: format!("{text:?} is not a duration: write seconds with an s, e.g. \"1.5s\" or \"-3s\""),
                })?;
                seconds_nanos(seconds, nanos, out);
            }
            "google.protobuf.FieldMask" => {
                let Value::String(text) = value else {
                    return fail(
                        path,
                        format!(
                            "expected a string like \"a.b,c\" (FieldMask), got {}",
                            describe(value)
                        ),
                    );
                };
                for mask in text.split(',').filter(|m| !m.is_empty()) {
                    let mut snake = String::new();
                    for c in mask.chars() {
                        if c.is_ascii_uppercase() {
                            snake.push('_');
                            snake.push(c.to_ascii_lowercase());
                        } else {
                            snake.push(c);
                        }
                    }
                    put_len(out, 1, snake.as_bytes());
                }
            }
            "google.protobuf.Empty" => match value {
                Value::Object(o) if o.is_empty() => {}
                other => {
                    return fail(
                        path,
                        format!("expected {{}} (Empty), got {}", describe(other)),
                    );
                }
            },
            "google.protobuf.Struct" => {
                let Value::Object(object) = value else {
                    return fail(
                        path,
                        format!("expected a JSON object (Struct), got {}", describe(value)),
                    );
                };
                for (key, item) in object {
                    let mut entry = Vec::new();
                    put_len(&mut entry, 1, key.as_bytes());
                    let mut inner = Vec::new();
                    self.message(VALUE, item, &format!("{path}[{key:?}]"), &mut inner)?;
                    put_len(&mut entry, 2, &inner);
                    put_len(out, 1, &entry);
                }
            }
            "google.protobuf.ListValue" => {
                let Value::Array(items) = value else {
                    return fail(
                        path,
                        format!("expected a JSON array (ListValue), got {}", describe(value)),
                    );
                };
                for (i, item) in items.iter().enumerate() {
                    let mut inner = Vec::new();
                    self.message(VALUE, item, &format!("{path}[{i}]"), &mut inner)?;
                    put_len(out, 1, &inner);
                }
            }
            VALUE => match value {
                Value::Null => Scalar::Varint(0).put(1, out),
                Value::Number(n) => {
                    Scalar::Fixed64(n.as_f64().unwrap_or(f64::NAN).to_bits()).put(2, out)
                }
                Value::String(s) => put_len(out, 3, s.as_bytes()),
                Value::Bool(b) => Scalar::Varint(u64::from(*b)).put(4, out),
                Value::Object(_) => {
                    let mut inner = Vec::new();
                    self.message("google.protobuf.Struct", value, path, &mut inner)?;
                    put_len(out, 5, &inner);
                }
                Value::Array(_) => {
                    let mut inner = Vec::new();
                    self.message("google.protobuf.ListValue", value, path, &mut inner)?;
                    put_len(out, 6, &inner);
                }
            },
            "google.protobuf.Any" => {
                return fail(
                    path,
                    "google.protobuf.Any is not supported (its JSON form needs the packed type's descriptors)",
                );
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn seconds_nanos(seconds: i64, nanos: i32, out: &mut Vec<u8>) {
    if seconds != 0 {
        Scalar::Varint(seconds as u64).put(1, out);
    }
    if nanos != 0 {
        Scalar::Varint(i64::from(nanos) as u64).put(2, out);
    }
}

/// `"-1.5s"` → (-1, -500000000): seconds and nanos of the same sign, as Duration requires.
pub(super) fn duration(text: &str) -> Option<(i64, i32)> {
    let number = text.strip_suffix('s')?;
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    // The range of google.protobuf.Duration: about ±10,000 years.
    if seconds > 315_576_000_000 {
        return None;
    }
    let nanos: i32 = format!("{fraction:0<9}").parse().ok()?;
    Some(if negative {
        (-seconds, -nanos)
    } else {
        (seconds, nanos)
    })
}
