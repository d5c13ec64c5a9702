//! The request of any unary gRPC method: descriptors from `--proto-set` or server reflection,
//! the method checked (exists, is unary), the JSON payload encoded once before the run.

mod json;
mod pool;
pub(crate) mod reflection;

use std::path::Path;

use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use crate::Error;
use pool::Pool;
pub(crate) use pool::Source;

/// The files of a serialized `FileDescriptorSet` file.
pub(crate) fn read_proto_set(path: &Path) -> Result<Vec<FileDescriptorProto>, Error> {
    let bad = |problem: String| Error::Config {
        field: "--proto-set",
        problem,
    };
    let bytes =
        std::fs::read(path).map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let looks_like_source = std::str::from_utf8(&bytes).is_ok_and(|text| {
        text.contains("syntax") || text.contains("message ") || text.contains("service ")
    });
    let not_a_set = |detail: String| {
        let hint = if looks_like_source {
            "; it looks like .proto source: compile it first with `protoc --include_imports -o FILE.pb FILE.proto`"
        } else {
            " (`protoc --include_imports -o FILE.pb` and `buf build -o FILE.pb` write one)"
        };
        bad(format!(
            "{} is not a serialized google.protobuf.FileDescriptorSet{detail}{hint}",
            path.display()
        ))
    };
    let set =
        FileDescriptorSet::decode(bytes.as_slice()).map_err(|e| not_a_set(format!(" ({e})")))?;
    if set.file.is_empty() || set.file.iter().any(|f| f.name.is_none()) {
        return Err(not_a_set(String::new()));
    }
    Ok(set.file)
}

/// The encoded request message of the unary method `method` (`/pkg.Service/Method`) from the
/// JSON `payload` (empty: `{}`); `source` says where the descriptors came from, for errors.
pub(crate) fn encode_request(
    files: Vec<FileDescriptorProto>,
    method: &str,
    payload: &[u8],
    source: &Source,
) -> Result<Vec<u8>, Error> {
    let pool = Pool::new(files);
    let (_, input) = pool
        .unary_method(method, source)
        .map_err(|problem| Error::Config {
            field: "--method",
            problem,
        })?;
    let json: serde_json::Value = if payload.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(payload).map_err(|e| Error::Config {
            field: "--payload",
            problem: format!(
                "the request message {input} is given as JSON, and this is not JSON: {e}"
            ),
        })?
    };
    json::encode(&pool, &input, &json, source).map_err(|e| Error::Config {
        field: "--payload",
        problem: format!("{input}: {e}"),
    })
}

/// The service part of `/pkg.Service/Method`.
pub(crate) fn service_of(method: &str) -> &str {
    method
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or(method, |(service, _)| service)
}

/// The test descriptors: `testdata/kitchen.proto` and `legacy.proto` compiled by
/// `protoc -I . -I /usr/include --include_imports -o kitchen.pb kitchen.proto legacy.proto`.
#[cfg(test)]
pub(crate) fn kitchen_pool() -> Pool {
    let set =
        FileDescriptorSet::decode(&include_bytes!("testdata/kitchen.pb")[..]).unwrap_or_default();
    Pool::new(set.file)
}

#[cfg(test)]
pub(crate) fn test_source() -> Source {
    Source {
        place: "in kitchen.pb".into(),
        missing_hint: "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn unary_methods_are_found_and_streaming_ones_refused() {
        let pool = kitchen_pool();
        let source = test_source();
        let (method, input) = pool
            .unary_method("/skiff.test.v1.Shop/Place", &source)
            .unwrap();
        assert_eq!(method.name(), "Place");
        assert_eq!(input, "skiff.test.v1.Order");
        for (name, kind) in [
            ("Watch", "a server-streaming method"),
            ("Upload", "a client-streaming method"),
            ("Chat", "a bidirectional streaming method"),
        ] {
            let e = pool
                .unary_method(&format!("/skiff.test.v1.Shop/{name}"), &source)
                .unwrap_err();
            assert_eq!(
                e,
                format!(
                    "/skiff.test.v1.Shop/{name} is {kind}: skiff bench calls unary methods only"
                )
            );
        }
        let e = pool
            .unary_method("/skiff.test.v1.Shop/Buy", &source)
            .unwrap_err();
        assert_eq!(
            e,
            "service skiff.test.v1.Shop has no method \"Buy\" in kitchen.pb; its methods: \
             Place, Watch, Upload, Chat"
        );
        let e = pool
            .unary_method("/skiff.test.v1.Store/Place", &source)
            .unwrap_err();
        assert_eq!(
            e,
            "no service skiff.test.v1.Store in kitchen.pb; there are: skiff.test.v1.Shop"
        );
        assert!(pool.unary_method("Place", &source).is_err());
    }

    #[test]
    fn payloads_that_are_not_json_or_not_the_type_are_refused_naming_the_flag() {
        let files = || {
            FileDescriptorSet::decode(&include_bytes!("testdata/kitchen.pb")[..])
                .unwrap()
                .file
        };
        let method = "/skiff.test.v1.Shop/Place";
        let ok = encode_request(files(), method, br#"{"id": "a"}"#, &test_source()).unwrap();
        assert_eq!(ok, b"\x0a\x01a");
        // Nothing given: the empty message.
        assert!(
            encode_request(files(), method, b" \n", &test_source())
                .unwrap()
                .is_empty()
        );
        let e = encode_request(files(), method, b"{id: 1}", &test_source())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "--payload: the request message skiff.test.v1.Order is given as JSON, and this is not JSON: key must be a string"
            ),
            "{e}"
        );
        let e = encode_request(files(), method, br#"{"id": 1}"#, &test_source())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--payload: skiff.test.v1.Order: field id: expected a JSON string (string), got 1"
        );
        let e = encode_request(files(), "/skiff.test.v1.Shop/Chat", b"{}", &test_source())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--method: /skiff.test.v1.Shop/Chat is a bidirectional"),
            "{e}"
        );
    }

    #[test]
    fn proto_set_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("api.proto");
        std::fs::write(&source, "syntax = \"proto3\";\nmessage A {}\n").unwrap();
        let e = read_proto_set(&source).unwrap_err().to_string();
        assert!(
            e.starts_with("--proto-set: ") && e.contains("is not a serialized google.protobuf.FileDescriptorSet")
                && e.contains("it looks like .proto source: compile it first with `protoc --include_imports -o FILE.pb FILE.proto`"),
            "{e}"
        );
        let missing = dir.path().join("missing.pb");
        let e = read_proto_set(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("--proto-set: cannot read ") && e.contains("missing.pb"),
            "{e}"
        );
        let empty = dir.path().join("empty.pb");
        std::fs::write(&empty, b"").unwrap();
        let e = read_proto_set(&empty).unwrap_err().to_string();
        assert!(e.contains("empty.pb is not a serialized"), "{e}");
        let good = dir.path().join("good.pb");
        std::fs::write(&good, include_bytes!("testdata/kitchen.pb")).unwrap();
        assert_eq!(read_proto_set(&good).unwrap().len(), 9);
    }
}
