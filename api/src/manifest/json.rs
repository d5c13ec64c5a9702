//! JSON manifest parsing into `serde_json::Value` that rejects duplicate keys and deep nesting.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::MAX_DEPTH;

/// Why the strict JSON reader stopped, beyond serde_json's own syntax errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    DuplicateKey { path: String, key: String },
    TooDeep,
}

/// A path node on the stack while parsing, so a duplicate key's path costs nothing until needed.
enum Seg<'a> {
    Root,
    Key(&'a Node<'a>, &'a str),
    Index(&'a Node<'a>, usize),
}

struct Node<'a>(Seg<'a>);

impl fmt::Display for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Seg::Root => Ok(()),
            Seg::Key(parent, key) => {
                if matches!(parent.0, Seg::Root) {
                    write!(f, "{key}")
                } else {
                    write!(f, "{parent}.{key}")
                }
            }
            Seg::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

struct ValueSeed<'a> {
    node: &'a Node<'a>,
    depth: usize,
    stop: &'a RefCell<Option<Stop>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            *self.stop.borrow_mut() = Some(Stop::TooDeep);
            return Err(de::Error::custom("nesting too deep"));
        }
        let mut out = Vec::new();
        loop {
            let node = Node(Seg::Index(self.node, out.len()));
            let seed = ValueSeed {
                node: &node,
                depth: self.depth + 1,
                stop: self.stop,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            *self.stop.borrow_mut() = Some(Stop::TooDeep);
            return Err(de::Error::custom("nesting too deep"));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let path = Node(Seg::Key(self.node, &key)).to_string();
                *self.stop.borrow_mut() = Some(Stop::DuplicateKey {
                    path,
                    key: key.clone(),
                });
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let node = Node(Seg::Key(self.node, &key));
            let v = map.next_value_seed(ValueSeed {
                node: &node,
                depth: self.depth + 1,
                stop: self.stop,
            })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// One JSON document of a stream: its value and byte range, or the error with position.
pub(crate) struct JsonDoc {
    pub value: Value,
    pub start: usize,
    pub end: usize,
}

/// A JSON stream error: serde_json's error plus our own reason when we stopped it.
pub(crate) struct JsonError {
    pub error: serde_json::Error,
    pub stop: Option<Stop>,
}

thread_local! {
    /// Why the current thread's strict JSON parse stopped (serde errors cannot carry it).
    static STOP: RefCell<Option<Stop>> = const { RefCell::new(None) };
}

/// A value parsed by [`ValueSeed`], usable with serde_json's `StreamDeserializer`.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stop = RefCell::new(None);
        let root = Node(Seg::Root);
        let seed = ValueSeed {
            node: &root,
            depth: 0,
            stop: &stop,
        };
        let result = seed.deserialize(d);
        if let Some(s) = stop.into_inner() {
            STOP.with(|cell| *cell.borrow_mut() = Some(s));
        }
        result.map(StrictValue)
    }
}

/// Parse a stream of concatenated JSON values (`{...} {...}`), strictly. Stops at the first error.
pub(crate) fn parse_stream(text: &str) -> Vec<Result<JsonDoc, JsonError>> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<StrictValue>();
    let mut prev_end = 0;
    loop {
        STOP.with(|cell| *cell.borrow_mut() = None);
        match stream.next() {
            None => break,
            Some(Ok(StrictValue(value))) => {
                let end = stream.byte_offset();
                let gap = text.get(prev_end..end).unwrap_or("");
                let start = prev_end + (gap.len() - gap.trim_start().len());
                prev_end = end;
                out.push(Ok(JsonDoc { value, start, end }));
            }
            Some(Err(error)) => {
                let stop = STOP.with(|cell| cell.borrow_mut().take());
                out.push(Err(JsonError { error, stop }));
                break;
            }
        }
    }
    out
}
