//! Reading manifests from files and folders (`-f PATH`), as kubectl does, and checking them
//! offline with skiff-api: parse, default, validate.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use skiff_api::manifest::MAX_INPUT_BYTES;
use skiff_api::{Manifest, Strictness, ValidationConfig};

/// File extensions a folder contributes (kubectl: `.json`, `.yaml`, `.yml`).
const EXTENSIONS: &[&str] = &["json", "yaml", "yml"];

/// The files `-f` paths name: a file as given (`-` is standard input), a folder's manifest
/// files in name order; with `recursive`, a folder's subfolders contribute too (kubectl's
/// `-R`), each after the files beside it, in name order.
pub fn expand_with(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            files.push(path.clone());
            continue;
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read manifest path {}", path.display()))?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list folder {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| EXTENSIONS.contains(&e))
                })
                .collect();
            found.sort();
            files.extend(found);
            if recursive {
                let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)
                    .with_context(|| format!("cannot list folder {}", path.display()))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                files.extend(expand_with(&dirs, true)?);
            }
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Reads one manifest file, refusing one over the parser's size limit before reading it.
pub fn read(path: &Path) -> anyhow::Result<String> {
    let limit = MAX_INPUT_BYTES as u64;
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit + 1)
            .read_to_string(&mut text)
            .context("cannot read manifests from standard input")?;
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open manifest {}", path.display()))?;
        file.take(limit + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read manifest {} as UTF-8 text", path.display()))?;
    }
    if text.len() as u64 > limit {
        anyhow::bail!(
            "{}: larger than {} bytes, the most skiff reads from one manifest file: split it",
            path.display(),
            MAX_INPUT_BYTES
        );
    }
    Ok(text)
}

/// The outcome of checking one file: the objects that passed, and one message per failure.
#[derive(Debug, Default)]
pub struct Checked {
    pub valid: Vec<Manifest>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Parses, defaults and validates every object of one file's text.
pub fn check(source: &str, text: &str, mode: Strictness, config: &ValidationConfig) -> Checked {
    let mut out = Checked::default();
    let manifests = match skiff_api::parse_manifests(source, text, mode) {
        Ok(m) => m,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    for mut manifest in manifests {
        let mut place = format!("{source}: document {} (1-based)", manifest.document + 1);
        if let Some(line) = manifest.line {
            place.push_str(&format!(", line {line}"));
        }
        for w in &manifest.warnings {
            out.warnings.push(format!("{place}: {w}"));
        }
        skiff_api::apply_defaults(&mut manifest.object);
        match skiff_api::validate(&manifest.object, config) {
            Ok(()) => out.valid.push(manifest),
            Err(errors) => out.errors.push(format!(
                "{place}: {}",
                errors.status_message(manifest.object.info().name, manifest.object.name())
            )),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
    }

    #[test]
    fn every_example_manifest_is_valid_in_strict_mode() {
        let mut folders = vec![examples()];
        folders.extend(
            std::fs::read_dir(examples())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.is_dir()),
        );
        let files = expand_with(&folders, false).unwrap();
        assert!(!files.is_empty(), "no example manifests found");
        for file in files {
            let text = read(&file).unwrap();
            let checked = check(
                &file.display().to_string(),
                &text,
                Strictness::Strict,
                &ValidationConfig::default(),
            );
            assert!(checked.errors.is_empty(), "{:?}", checked.errors);
            assert!(
                !checked.valid.is_empty(),
                "{} has no objects",
                file.display()
            );
        }
    }

    #[test]
    fn folders_contribute_manifest_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yaml", "a.json", "c.yml", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let files = expand_with(&[dir.path().to_owned()], false).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.json", "b.yaml", "c.yml"]);
        std::fs::write(dir.path().join("sub.yaml").join("d.yaml"), "").unwrap();
        let nested = expand_with(&[dir.path().to_owned()], true).unwrap();
        let last = nested.last().unwrap().strip_prefix(dir.path()).unwrap();
        assert_eq!(nested.len(), 4);
        assert_eq!(last, Path::new("sub.yaml/d.yaml"));
        let err = expand_with(&[dir.path().join("missing.yaml")], false).unwrap_err();
        assert!(format!("{err:#}").contains("missing.yaml"));
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_INPUT_BYTES as u64 + 10).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("split it"), "{err}");
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 70000\n";
        let checked = check(
            "app.yaml",
            text,
            Strictness::Strict,
            &ValidationConfig::default(),
        );
        assert_eq!(checked.valid.len(), 1);
        assert_eq!(checked.errors.len(), 1);
        let err = &checked.errors[0];
        assert!(
            err.contains("app.yaml: document 2 (1-based), line 5"),
            "{err}"
        );
        assert!(err.contains("spec.ports[0].port"), "{err}");
    }
}
