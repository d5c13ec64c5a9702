//! Field paths as upstream `field.Path` prints them: `spec.ports[0].port`, `data[tls.crt]`.

use std::fmt;

/// A field path; cheap to extend (clones a short string).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// The root path of a top-level field, e.g. `FieldPath::new("spec")`.
    pub fn new(field: &str) -> Self {
        Self(field.to_string())
    }

    /// `parent.child`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `parent[i]`.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `parent[key]`.
    pub fn key(&self, key: &str) -> Self {
        Self(format!("{}[{key}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
