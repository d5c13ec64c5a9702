//! The shape of skiff's protobuf schema table: messages, their fields and how each maps to JSON.

/// One protobuf message as Kubernetes' JSON sees it.
#[derive(Debug)]
pub struct Message {
    /// The upstream message name, for error messages (`ObjectMeta`).
    pub name: &'static str,
    pub fields: &'static [Field],
}

impl Message {
    pub(crate) fn field(&self, number: u64) -> Option<&'static Field> {
        self.fields.iter().find(|f| u64::from(f.number) == number)
    }
}

/// One field: its number on the wire, its JSON name and type.
#[derive(Debug)]
pub struct Field {
    pub number: u32,
    pub json: &'static str,
    pub ty: Ty,
    pub card: Card,
    pub zero: Zero,
}

/// What a field holds; the special apimachinery messages have their own JSON forms.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str,
    /// JSON: base64.
    Bytes,
    Bool,
    I32,
    I64,
    U32,
    U64,
    F64,
    Msg(&'static Message),
    /// `meta/v1.Time`: RFC 3339 with seconds.
    Time,
    /// `meta/v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `resource.Quantity`: its string.
    Quantity,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `FieldsV1` / `runtime.RawExtension`: bytes that are themselves JSON.
    RawJson,
}

/// How many values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    One,
    List,
    /// `map<string, ty>`: repeated entries with key 1 and value 2.
    Map,
    /// A Go struct embedded with `json:",inline"`: its fields join the parent's JSON object.
    Inline,
}

/// What a zero scalar on the wire means. Go's marshaller writes every non-pointer field, so a
/// zero is usually "unset" (JSON `omitempty` drops it); for pointer and JSON-required fields it
/// is data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    Omit,
    Keep,
}
