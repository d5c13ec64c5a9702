//! The `--image-map` file: an ordered YAML mapping of image pattern → `builtin:NAME` or a command.
//!
//! ```yaml
//! "nginx:*": builtin:echo                      # any nginx tag runs the echo server
//! "example.com/app@sha256:*": ["/usr/local/bin/app", "--serve"]
//! "busybox*": sh -c 'sleep 3600'               # split like a shell would; no shell runs
//! ```

use std::fmt;
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde_json::Value;

use super::builtin::Builtin;
use super::glob;
use super::shell_words;

/// What an image pattern maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageTarget {
    /// `builtin:NAME`.
    Builtin(Builtin),
    /// A program and its arguments (the image's entrypoint).
    Command(Vec<String>),
}

/// One `pattern: target` line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMapEntry {
    /// Glob over the full image reference, digest included (`*` any run, `?` one character).
    pub pattern: String,
    pub target: ImageTarget,
}

/// A loaded `--image-map`: entries in file order; the first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageMap {
    source: String,
    entries: Vec<ImageMapEntry>,
}

/// Why an image map could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageMapError {
    #[error("cannot read the image map {file}: {source}; check the --image-map path")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "image map {file} is not valid: {message}; write a YAML mapping of image pattern to `builtin:NAME` or a command, e.g. \"nginx:*\": builtin:echo"
    )]
    Syntax { file: String, message: String },
    #[error("image map {file}, entry {pattern:?}: {problem}")]
    Entry {
        file: String,
        pattern: String,
        problem: String,
    },
}

impl ImageMap {
    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<ImageMap, ImageMapError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ImageMapError::Read {
            file: file.clone(),
            source,
        })?;
        ImageMap::parse(&file, &text)
    }

    /// Parse `text`; `source` names it in errors (a path, usually).
    pub fn parse(source: &str, text: &str) -> Result<ImageMap, ImageMapError> {
        let syntax = |message: String| ImageMapError::Syntax {
            file: source.to_owned(),
            message,
        };
        let has_content = text.lines().any(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#') && line != "---"
        });
        let raw = if has_content {
            let mut options = serde_saphyr::Options::default();
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
            options.with_snippet = false;
            serde_saphyr::from_str_with_options::<RawEntries>(text, options)
                .map_err(|e| syntax(render(&e)))?
                .0
        } else {
            Vec::new()
        };
        let mut entries = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            let pattern = match key {
                Value::String(s) => s,
                other => {
                    return Err(ImageMapError::Entry {
                        file: source.to_owned(),
                        pattern: other.to_string(),
                        problem: format!(
                            "the pattern is {}, not a string: quote it",
                            describe(&other)
                        ),
                    });
                }
            };
            let entry_error = |problem: String| ImageMapError::Entry {
                file: source.to_owned(),
                pattern: pattern.clone(),
                problem,
            };
            if pattern.trim().is_empty() {
                return Err(entry_error(
                    "the pattern is empty: write an image reference or a glob such as \"nginx:*\""
                        .to_owned(),
                ));
            }
            let target = target(value).map_err(entry_error)?;
            entries.push(ImageMapEntry { pattern, target });
        }
        Ok(ImageMap {
            source: source.to_owned(),
            entries,
        })
    }

    /// The first entry whose pattern matches the whole `image` reference.
    pub fn find(&self, image: &str) -> Option<&ImageMapEntry> {
        self.entries
            .iter()
            .find(|e| glob::matches(&e.pattern, image))
    }

    pub fn entries(&self) -> &[ImageMapEntry] {
        &self.entries
    }

    /// Where the map came from (the file name given to `load`/`parse`).
    pub fn source(&self) -> &str {
        &self.source
    }
}

fn target(value: Value) -> Result<ImageTarget, String> {
    match value {
        Value::String(text) => {
            if let Some(name) = text.trim().strip_prefix("builtin:") {
                let name = name.trim();
                return Builtin::from_name(name).map(ImageTarget::Builtin).ok_or_else(|| {
                    format!(
                        "unknown built-in image {name:?}: use builtin:echo, builtin:grpc-echo or builtin:pause"
                    )
                });
            }
            let argv = shell_words::split(&text)
                .map_err(|e| format!("the command {text:?} has an {e}"))?;
            command(argv)
        }
        Value::Array(items) => {
            let mut argv = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => argv.push(s),
                    other => {
                        return Err(format!(
                            "command item {i} is {}: write every item as a string (quote numbers)",
                            describe(&other)
                        ));
                    }
                }
            }
            command(argv)
        }
        other => Err(format!(
            "the target is {}: write `builtin:NAME`, a command string, or a list of strings",
            describe(&other)
        )),
    }
}

fn command(argv: Vec<String>) -> Result<ImageTarget, String> {
    match argv.first() {
        None => Err("the command is empty: give a program and its arguments".to_owned()),
        Some(program) if program.is_empty() => {
            Err("the program (first word of the command) is empty".to_owned())
        }
        Some(_) => Ok(ImageTarget::Command(argv)),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn render(e: &serde_saphyr::Error) -> String {
    let mut options = serde_saphyr::RenderOptions::default();
    options.snippets = serde_saphyr::SnippetMode::Off;
    e.render_with_options(options)
}

/// The top-level mapping with its order kept (serde_json's map would sort it).
struct RawEntries(Vec<(Value, Value)>);

impl<'de> serde::Deserialize<'de> for RawEntries {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawEntries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping of image pattern to `builtin:NAME` or a command")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawEntries, E> {
        Ok(RawEntries(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Value>()? {
            let value = map.next_value::<Value>()?;
            entries.push((key, value));
        }
        Ok(RawEntries(entries))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        ImageMap::parse("/etc/skiff/images.yaml", text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn parses_every_target_form_in_file_order() {
        let map = ImageMap::parse(
            "m.yaml",
            r#"
# comments are fine
"z:*": builtin:grpc-echo
a: " builtin: pause "
"m@sha256:*": ["/bin/app", "--flag=1", ""]
b: sh -c 'sleep 10 && echo "done"'
"#,
        )
        .unwrap();
        let entries = map.entries();
        assert_eq!(map.source(), "m.yaml");
        assert_eq!(
            entries
                .iter()
                .map(|e| e.pattern.as_str())
                .collect::<Vec<_>>(),
            ["z:*", "a", "m@sha256:*", "b"]
        );
        assert_eq!(entries[0].target, ImageTarget::Builtin(Builtin::GrpcEcho));
        assert_eq!(entries[1].target, ImageTarget::Builtin(Builtin::Pause));
        assert_eq!(
            entries[2].target,
            ImageTarget::Command(vec!["/bin/app".into(), "--flag=1".into(), String::new()])
        );
        assert_eq!(
            entries[3].target,
            ImageTarget::Command(vec![
                "sh".into(),
                "-c".into(),
                r#"sleep 10 && echo "done""#.into()
            ])
        );
    }

    #[test]
    fn empty_files_are_empty_maps() {
        for text in ["", "\n# nothing yet\n", "---\n", "{}"] {
            let map = ImageMap::parse("m.yaml", text).unwrap();
            assert!(map.entries().is_empty(), "{text:?}");
            assert!(map.find("nginx").is_none());
        }
    }

    #[test]
    fn entry_errors_name_the_file_the_entry_and_the_problem() {
        let e = error("\"nginx:*\": builtin:nginx\n");
        assert!(e.contains("/etc/skiff/images.yaml"), "{e}");
        assert!(e.contains("\"nginx:*\""), "{e}");
        assert!(e.contains("unknown built-in image \"nginx\""), "{e}");
        assert!(
            e.contains("builtin:echo, builtin:grpc-echo or builtin:pause"),
            "{e}"
        );

        let e = error("app: sh -c 'unterminated\n");
        assert!(
            e.contains("entry \"app\"") && e.contains("unterminated single quote"),
            "{e}"
        );

        let e = error("app: \"\"\n");
        assert!(
            e.contains("entry \"app\"") && e.contains("command is empty"),
            "{e}"
        );

        let e = error("app: []\n");
        assert!(e.contains("command is empty"), "{e}");

        let e = error("app: [\"/bin/x\", 80]\n");
        assert!(e.contains("command item 1 is a number"), "{e}");

        let e = error("app:\n  cmd: x\n");
        assert!(e.contains("the target is a mapping"), "{e}");

        let e = error("app:\n");
        assert!(e.contains("the target is empty (null)"), "{e}");

        let e = error("\"\": builtin:echo\n");
        assert!(e.contains("the pattern is empty"), "{e}");

        let e = error("1.25: builtin:echo\n");
        assert!(e.contains("not a string: quote it"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_say_what_to_write() {
        for text in [
            "- a\n- b\n",
            "just a string\n",
            "a: [unclosed\n",
            "a: x\na: y\n",
        ] {
            let e = error(text);
            assert!(
                e.starts_with("image map /etc/skiff/images.yaml is not valid"),
                "{text:?}: {e}"
            );
            assert!(e.contains("YAML mapping of image pattern"), "{e}");
        }
    }

    #[test]
    fn load_reads_the_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.yaml");
        std::fs::write(&path, "\"redis:*\": builtin:echo\n").unwrap();
        let map = ImageMap::load(&path).unwrap();
        assert_eq!(map.find("redis:7").unwrap().pattern, "redis:*");

        let missing = dir.path().join("nope.yaml");
        let e = ImageMap::load(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.yaml") && e.contains("--image-map"), "{e}");
    }
}
