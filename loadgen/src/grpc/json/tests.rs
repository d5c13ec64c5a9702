//! The JSON encoder against prost's own encoding of the same messages, and its refusals.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};

use prost::Message as _;
use serde_json::json;

use super::well_known::duration;
use super::*;
use crate::grpc::{kitchen_pool, test_source};

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
enum Color {
    Unspecified = 0,
    Red = 1,
    Green = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Scalars {
    #[prost(double, tag = "1")]
    f_double: f64,
    #[prost(float, tag = "2")]
    f_float: f32,
    #[prost(int64, tag = "3")]
    f_int64: i64,
    #[prost(uint64, tag = "4")]
    f_uint64: u64,
    #[prost(int32, tag = "5")]
    f_int32: i32,
    #[prost(fixed64, tag = "6")]
    f_fixed64: u64,
    #[prost(fixed32, tag = "7")]
    f_fixed32: u32,
    #[prost(bool, tag = "8")]
    f_bool: bool,
    #[prost(string, tag = "9")]
    f_string: String,
    #[prost(bytes = "vec", tag = "10")]
    f_bytes: Vec<u8>,
    #[prost(uint32, tag = "11")]
    f_uint32: u32,
    #[prost(sfixed32, tag = "12")]
    f_sfixed32: i32,
    #[prost(sfixed64, tag = "13")]
    f_sfixed64: i64,
    #[prost(sint32, tag = "14")]
    f_sint32: i32,
    #[prost(sint64, tag = "15")]
    f_sint64: i64,
    #[prost(enumeration = "Color", tag = "16")]
    color: i32,
    #[prost(int32, optional, tag = "17")]
    maybe: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Item {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "2")]
    count: i32,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Payment {
    #[prost(string, tag = "8")]
    Card(String),
    #[prost(string, tag = "9")]
    Voucher(String),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, repeated, tag = "2")]
    items: Vec<Item>,
    #[prost(int32, repeated, tag = "3")]
    codes: Vec<i32>,
    #[prost(string, repeated, tag = "4")]
    tags: Vec<String>,
    #[prost(map = "string, int64", tag = "5")]
    totals: HashMap<String, i64>,
    #[prost(map = "int32, message", tag = "6")]
    by_number: HashMap<i32, Item>,
    #[prost(message, optional, tag = "7")]
    primary: Option<Item>,
    #[prost(oneof = "Payment", tags = "8, 9")]
    payment: Option<Payment>,
    #[prost(enumeration = "Color", repeated, tag = "10")]
    colors: Vec<i32>,
    #[prost(int32, repeated, packed = "false", tag = "11")]
    unpacked: Vec<i32>,
    #[prost(message, optional, tag = "12")]
    scalars: Option<Scalars>,
    #[prost(map = "bool, string", tag = "13")]
    flags: HashMap<bool, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WellKnown {
    #[prost(message, optional, tag = "1")]
    at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "2")]
    took: Option<prost_types::Duration>,
    #[prost(message, optional, tag = "3")]
    limit: Option<i32>,
    #[prost(message, optional, tag = "4")]
    label: Option<String>,
    #[prost(message, optional, tag = "5")]
    attrs: Option<prost_types::Struct>,
    #[prost(message, optional, tag = "6")]
    value: Option<prost_types::Value>,
    #[prost(message, optional, tag = "7")]
    mask: Option<prost_types::FieldMask>,
    #[prost(message, optional, tag = "8")]
    nothing: Option<()>,
    #[prost(message, optional, tag = "10")]
    list: Option<prost_types::ListValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Legacy {
    #[prost(string, required, tag = "1")]
    name: String,
    #[prost(int32, repeated, packed = "false", tag = "2")]
    nums: Vec<i32>,
    #[prost(int32, optional, tag = "3")]
    zero: Option<i32>,
}

fn enc(type_name: &str, json: Value) -> Result<Vec<u8>, EncodeError> {
    encode(&kitchen_pool(), type_name, &json, &test_source())
}

/// The error's text, which must name `path`.
fn refused(type_name: &str, json: Value, path: &str) -> String {
    let e = enc(type_name, json).unwrap_err();
    assert_eq!(e.path, path, "{e}");
    e.to_string()
}

#[test]
fn each_scalar_type_encodes_as_prost_does() {
    let bytes = enc(
        "skiff.test.v1.Scalars",
        json!({
            "fDouble": 1.5, "fFloat": -2.25, "fInt64": "-9007199254740993",
            "fUint64": "18446744073709551615", "fInt32": -7, "fFixed64": 42,
            "fFixed32": 4294967295u32, "fBool": true, "fString": "héllo",
            "fBytes": "AAEC/w==", "fUint32": 7e2, "fSfixed32": -3, "fSfixed64": "-4",
            "fSint32": -2147483648, "fSint64": 9223372036854775807i64, "color": "GREEN",
            "maybe": 0
        }),
    )
    .unwrap();
    let expected = Scalars {
        f_double: 1.5,
        f_float: -2.25,
        f_int64: -9_007_199_254_740_993,
        f_uint64: u64::MAX,
        f_int32: -7,
        f_fixed64: 42,
        f_fixed32: u32::MAX,
        f_bool: true,
        f_string: "héllo".into(),
        f_bytes: vec![0, 1, 2, 255],
        f_uint32: 700,
        f_sfixed32: -3,
        f_sfixed64: -4,
        f_sint32: i32::MIN,
        f_sint64: i64::MAX,
        color: Color::Green as i32,
        // proto3 `optional`: sent even at its default.
        maybe: Some(0),
    };
    assert_eq!(bytes, expected.encode_to_vec());
}

#[test]
fn proto_names_special_floats_enum_numbers_and_url_safe_base64_are_accepted() {
    let bytes = enc(
        "skiff.test.v1.Scalars",
        json!({"f_double": "-Infinity", "f_float": "NaN", "color": 1, "f_bytes": "-_8",
               "f_int32": 0, "f_string": "", "f_bool": false, "f_int64": null}),
    )
    .unwrap();
    let decoded = Scalars::decode(bytes.as_slice()).unwrap();
    assert_eq!(decoded.f_double, f64::NEG_INFINITY);
    assert!(decoded.f_float.is_nan());
    assert_eq!(decoded.color, Color::Red as i32);
    assert_eq!(decoded.f_bytes, vec![0xfb, 0xff]);
    // proto3 defaults are not sent: the bytes are the three non-default fields only.
    let expected = Scalars {
        f_double: f64::NEG_INFINITY,
        f_float: f32::NAN,
        f_bytes: vec![0xfb, 0xff],
        color: 1,
        ..Scalars::default()
    };
    assert_eq!(bytes, expected.encode_to_vec());
}

#[test]
fn nested_repeated_maps_and_oneofs_encode() {
    let bytes = enc(
        "skiff.test.v1.Order",
        json!({
            "id": "o-1",
            "items": [{"name": "a", "count": 1}, {"name": "b"}],
            "codes": [1, 2, 300],
            "tags": ["x", "y"],
            "totals": {"eur": "12", "usd": -3},
            "byNumber": {"7": {"name": "seven"}},
            "primary": {"count": 2},
            "voucher": "V",
            "colors": ["RED", 2],
            "unpacked": [5, 6],
            "scalars": {"fInt32": 9},
            "flags": {"true": "yes", "false": "no"}
        }),
    )
    .unwrap();
    let decoded = Order::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        decoded,
        Order {
            id: "o-1".into(),
            items: vec![
                Item {
                    name: "a".into(),
                    count: 1
                },
                Item {
                    name: "b".into(),
                    count: 0
                }
            ],
            codes: vec![1, 2, 300],
            tags: vec!["x".into(), "y".into()],
            totals: HashMap::from([("eur".into(), 12), ("usd".into(), -3)]),
            by_number: HashMap::from([(
                7,
                Item {
                    name: "seven".into(),
                    count: 0
                }
            )]),
            primary: Some(Item {
                name: String::new(),
                count: 2
            }),
            payment: Some(Payment::Voucher("V".into())),
            colors: vec![1, 2],
            unpacked: vec![5, 6],
            scalars: Some(Scalars {
                f_int32: 9,
                ..Scalars::default()
            }),
            flags: HashMap::from([(true, "yes".into()), (false, "no".into())]),
        }
    );
    // proto3 packs repeated scalars (one length-delimited run) unless told not to.
    let packed_codes = [0x1a, 0x04, 0x01, 0x02, 0xac, 0x02];
    assert!(bytes.windows(6).any(|w| w == packed_codes), "{bytes:02x?}");
    let unpacked = [0x58, 0x05, 0x58, 0x06];
    assert!(bytes.windows(4).any(|w| w == unpacked), "{bytes:02x?}");
    // Empty and null collections are not sent.
    assert!(
        enc(
            "skiff.test.v1.Order",
            json!({"codes": [], "items": null, "totals": {}})
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn well_known_types_use_their_json_forms() {
    let bytes = enc(
        "skiff.test.v1.WellKnown",
        json!({
            "at": "1969-12-31T23:59:59.5Z",
            "took": "-1.5s",
            "limit": 0,
            "label": "l",
            "attrs": {"a": 1, "b": [true, null, "s"], "c": {"d": null}},
            "value": null,
            "mask": "user.displayName,id",
            "nothing": {},
            "list": [1, "two"]
        }),
    )
    .unwrap();
    use prost_types::value::Kind as K;
    let v = |kind| prost_types::Value { kind: Some(kind) };
    let expected = WellKnown {
        at: Some(prost_types::Timestamp {
            seconds: -1,
            nanos: 500_000_000,
        }),
        took: Some(prost_types::Duration {
            seconds: -1,
            nanos: -500_000_000,
        }),
        limit: Some(0),
        label: Some("l".into()),
        attrs: Some(prost_types::Struct {
            fields: BTreeMap::from([
                ("a".into(), v(K::NumberValue(1.0))),
                (
                    "b".into(),
                    v(K::ListValue(prost_types::ListValue {
                        values: vec![
                            v(K::BoolValue(true)),
                            v(K::NullValue(0)),
                            v(K::StringValue("s".into())),
                        ],
                    })),
                ),
                (
                    "c".into(),
                    v(K::StructValue(prost_types::Struct {
                        fields: BTreeMap::from([("d".into(), v(K::NullValue(0)))]),
                    })),
                ),
            ]),
        }),
        value: Some(v(K::NullValue(0))),
        mask: Some(prost_types::FieldMask {
            paths: vec!["user.display_name".into(), "id".into()],
        }),
        nothing: Some(()),
        list: Some(prost_types::ListValue {
            values: vec![v(K::NumberValue(1.0)), v(K::StringValue("two".into()))],
        }),
    };
    assert_eq!(WellKnown::decode(bytes.as_slice()).unwrap(), expected);
}

#[test]
fn proto2_sends_defaults_unpacked_and_requires_required() {
    let bytes = enc(
        "skiff.test.v2.Legacy",
        json!({"name": "n", "nums": [1, 2], "zero": 0}),
    )
    .unwrap();
    let expected = Legacy {
        name: "n".into(),
        nums: vec![1, 2],
        zero: Some(0),
    };
    assert_eq!(bytes, expected.encode_to_vec());
    assert_eq!(
        refused("skiff.test.v2.Legacy", json!({"nums": [1]}), "name"),
        "field name: required by skiff.test.v2.Legacy (proto2) but missing"
    );
    assert_eq!(
        refused(
            "skiff.test.v2.Legacy",
            json!({"name": "n", "grp": {"x": 1}}),
            "grp"
        ),
        "field grp: group fields (proto2 groups, delimited encoding) are not supported"
    );
}

#[test]
fn mistyped_and_unknown_fields_are_refused_by_path() {
    let order = "skiff.test.v1.Order";
    let scalars = "skiff.test.v1.Scalars";
    for (ty, json, path, text) in [
        (
            scalars,
            json!({"fInt32": "ten"}),
            "fInt32",
            "expected an integer (int32), got \"ten\"",
        ),
        (
            scalars,
            json!({"fInt32": 2147483648u64}),
            "fInt32",
            "2147483648 is out of range for int32 (-2147483648..=2147483647)",
        ),
        (
            scalars,
            json!({"fUint32": -1}),
            "fUint32",
            "-1 is out of range for uint32 (0..=4294967295)",
        ),
        (
            scalars,
            json!({"fInt64": 1.5}),
            "fInt64",
            "expected an integer (int64), got 1.5",
        ),
        (
            scalars,
            json!({"fFloat": 1e300}),
            "fFloat",
            "1e+300 is out of range for float",
        ),
        (
            scalars,
            json!({"fDouble": "fast"}),
            "fDouble",
            "expected a number (double; or \"NaN\", \"Infinity\", \"-Infinity\"), got \"fast\"",
        ),
        (
            scalars,
            json!({"fBool": "true"}),
            "fBool",
            "expected true or false (bool), got \"true\"",
        ),
        (
            scalars,
            json!({"fString": ["a"]}),
            "fString",
            "expected a JSON string (string), got an array",
        ),
        (
            scalars,
            json!({"fBytes": "not base64!"}),
            "fBytes",
            "\"not base64!\" is not base64 (bytes): Invalid symbol 32, offset 3.",
        ),
        (
            scalars,
            json!({"color": "BLUE"}),
            "color",
            "\"BLUE\" is not a value of skiff.test.v1.Color; its values: COLOR_UNSPECIFIED, RED, GREEN",
        ),
        (
            scalars,
            json!({"color": true}),
            "color",
            "expected an enum value name or number (skiff.test.v1.Color), got true",
        ),
        (
            scalars,
            json!({"fInt32": 1, "f_int32": 2}),
            "f_int32",
            "given twice (by its JSON name and its proto name)",
        ),
        (
            order,
            json!({"idd": "x"}),
            "idd",
            "no such field in skiff.test.v1.Order; its fields: id, items, codes, tags, totals, by_number, primary, card, voucher, colors, unpacked, scalars, flags",
        ),
        (
            order,
            json!({"items": [{"name": "a"}, {"count": "x"}]}),
            "items[1].count",
            "expected an integer (int32), got \"x\"",
        ),
        (
            order,
            json!({"items": {"name": "a"}}),
            "items",
            "expected a JSON array (repeated field), got an object",
        ),
        (
            order,
            json!({"codes": [1, null]}),
            "codes[1]",
            "expected an integer (int32), got null",
        ),
        (
            order,
            json!({"tags": ["a", null]}),
            "tags[1]",
            "null is not allowed in a repeated field",
        ),
        (
            order,
            json!({"primary": "a"}),
            "primary",
            "expected a JSON object (skiff.test.v1.Item), got \"a\"",
        ),
        (
            order,
            json!({"card": "c", "voucher": "v"}),
            "voucher",
            "card and voucher are both members of oneof payment: give one",
        ),
        (
            order,
            json!({"totals": {"eur": "x"}}),
            "totals[\"eur\"]",
            "expected an integer (int64), got \"x\"",
        ),
        (
            order,
            json!({"byNumber": {"seven": {}}}),
            "byNumber[\"seven\"]",
            "expected an integer (int32), got \"seven\"",
        ),
        (
            order,
            json!({"flags": {"yes": "y"}}),
            "flags[\"yes\"]",
            "a bool map key is \"true\" or \"false\"",
        ),
        (
            order,
            json!({"scalars": {"fSint64": {}}}),
            "scalars.fSint64",
            "expected an integer (sint64), got an object",
        ),
        (
            "skiff.test.v1.WellKnown",
            json!({"at": "yesterday"}),
            "at",
            "\"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            "skiff.test.v1.WellKnown",
            json!({"took": "5m"}),
            "took",
            "\"5m\" is not a duration: write seconds with an s, e.g. \"1.5s\" or \"-3s\"",
        ),
        (
            "skiff.test.v1.WellKnown",
            json!({"packed": {"@type": "x"}}),
            "packed",
            "google.protobuf.Any is not supported (its JSON form needs the packed type's descriptors)",
        ),
        (
            "skiff.test.v1.WellKnown",
            json!({"limit": "many"}),
            "limit",
            "expected an integer (int32), got \"many\"",
        ),
    ] {
        let e = refused(ty, json.clone(), path);
        assert!(
            e.starts_with(&format!("field {path}: {text}")),
            "{json}: {e}"
        );
    }
    // A one-of member given as null is not set, so the other may be.
    assert!(enc(order, json!({"card": null, "voucher": "v"})).is_ok());
    // The message itself must be an object.
    let e = enc(order, json!([1])).unwrap_err();
    assert_eq!(e.path, "");
    assert_eq!(
        e.to_string(),
        "expected a JSON object (skiff.test.v1.Order), got an array"
    );
}

#[test]
fn types_the_descriptors_lack_are_named() {
    let e = encode(
        &kitchen_pool(),
        "skiff.test.v1.Nope",
        &json!({}),
        &Source {
            place: "in x.pb".into(),
            missing_hint: " (add --include_imports)",
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "message type skiff.test.v1.Nope is not in the descriptors in x.pb (add --include_imports)"
    );
}

#[test]
fn durations_parse() {
    assert_eq!(duration("1s"), Some((1, 0)));
    assert_eq!(duration("0.000000001s"), Some((0, 1)));
    assert_eq!(duration("-0.5s"), Some((0, -500_000_000)));
    for bad in [
        "1",
        "s",
        "1.s5",
        "1.0000000001s",
        "+1s",
        "1e3s",
        "999999999999999s",
    ] {
        assert_eq!(duration(bad), None, "{bad}");
    }
}
