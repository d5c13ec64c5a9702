//! The Kubernetes object model skiff serves: types, manifest parsing, defaulting and validation. No I/O.

pub mod admission;
pub mod defaults;
pub mod kinds;
pub mod manifest;
pub mod object;
pub mod quantity;
pub mod validation;

pub use defaults::apply_defaults;
pub use kinds::{Kind, KindInfo};
pub use manifest::{
    DecodeError, Decoded, ErrorKind, Manifest, ManifestError, Strictness, decode_value,
    parse_manifests,
};
pub use object::{NamespacedName, Object};
pub use validation::{FieldError, FieldErrorType, FieldErrors, ValidationConfig, validate};
