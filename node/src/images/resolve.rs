//! Resolution of a pod's `image` to an entrypoint: built-ins first, then `--image-map`, else `ErrImagePull`.

use std::path::PathBuf;

use super::builtin::Builtin;
use super::image_map::{ImageMap, ImageTarget};

/// Why an image cannot run. The `Display` text is what the pod shows as the reason's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Upstream's `ErrImagePull` / `ImagePullBackOff`.
    #[error(
        "image {image:?} is not available: skiff runs built-in images (skiff.dev/echo, skiff.dev/grpc-echo, skiff.dev/pause) and --image-map entries; no registry is reachable"
    )]
    NotFound { image: String },
    /// Upstream's `InvalidImageName`.
    #[error("invalid image name {image:?}: {reason}")]
    InvalidName { image: String, reason: String },
}

impl ImageError {
    /// The container `waiting.reason` the kubelet reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NotFound { .. } => "ErrImagePull",
            ImageError::InvalidName { .. } => "InvalidImageName",
        }
    }
}

/// Where a resolved image came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A built-in, named directly (`skiff.dev/echo[:tag][@sha256:...]`) or through the image map.
    Builtin(Builtin),
    /// An `--image-map` command entry, by its pattern.
    Mapped { pattern: String },
}

/// A runnable image: the entrypoint and what the image declares by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference as the pod wrote it.
    pub reference: String,
    pub source: ImageSource,
    /// Docker's ENTRYPOINT: replaced by a container's `command`.
    pub entrypoint: Vec<String>,
    /// Docker's CMD: replaced by a container's `args` (empty for every image skiff knows).
    pub default_args: Vec<String>,
    /// TCP ports the image listens on unless `PORT` says otherwise (Docker's EXPOSE).
    pub exposed_ports: Vec<u16>,
}

impl ResolvedImage {
    /// The process argv for a container with this image, Docker semantics: `command` replaces
    /// the entrypoint (and drops the default args), `args` replace the default args.
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let (head, tail): (&[String], &[String]) = match (command.is_empty(), args.is_empty()) {
            (false, _) => (command, args),
            (true, false) => (&self.entrypoint, args),
            (true, true) => (&self.entrypoint, &self.default_args),
        };
        head.iter().chain(tail).cloned().collect()
    }

    /// The built-in this image runs, if any.
    pub fn builtin(&self) -> Option<Builtin> {
        match self.source {
            ImageSource::Builtin(b) => Some(b),
            ImageSource::Mapped { .. } => None,
        }
    }
}

/// Turns image references into entrypoints. Pure: no I/O after construction.
#[derive(Clone, Debug)]
pub struct ImageResolver {
    image_map: Option<ImageMap>,
    builtin_exe: PathBuf,
}

impl ImageResolver {
    /// `builtin_exe` is the program whose `echo`, `grpc-echo` and `pause` subcommands run the
    /// built-ins: the `skiff` binary itself (`std::env::current_exe()`), or `skiff-builtin` in tests.
    pub fn new(image_map: Option<ImageMap>, builtin_exe: PathBuf) -> ImageResolver {
        ImageResolver {
            image_map,
            builtin_exe,
        }
    }

    pub fn resolve(&self, image: &str) -> Result<ResolvedImage, ImageError> {
        let invalid = |reason: &str| ImageError::InvalidName {
            image: image.to_owned(),
            reason: reason.to_owned(),
        };
        if image.is_empty() {
            return Err(invalid("the image is empty: set the container's image"));
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "it contains whitespace or control characters: remove them",
            ));
        }
        if let Some(builtin) = parse_builtin(image).map_err(|reason| invalid(&reason))? {
            return Ok(self.builtin(image, builtin));
        }
        if let Some(entry) = self.image_map.as_ref().and_then(|m| m.find(image)) {
            return Ok(match &entry.target {
                ImageTarget::Builtin(b) => self.builtin(image, *b),
                ImageTarget::Command(argv) => ResolvedImage {
                    reference: image.to_owned(),
                    source: ImageSource::Mapped {
                        pattern: entry.pattern.clone(),
                    },
                    entrypoint: argv.clone(),
                    default_args: Vec::new(),
                    exposed_ports: Vec::new(),
                },
            });
        }
        Err(ImageError::NotFound {
            image: image.to_owned(),
        })
    }

    fn builtin(&self, image: &str, builtin: Builtin) -> ResolvedImage {
        ResolvedImage {
            reference: image.to_owned(),
            source: ImageSource::Builtin(builtin),
            entrypoint: vec![
                self.builtin_exe.to_string_lossy().into_owned(),
                builtin.name().to_owned(),
            ],
            default_args: Vec::new(),
            exposed_ports: builtin.default_port().into_iter().collect(),
        }
    }
}

/// `Some` when `image` names a built-in (`REPO[:TAG][@sha256:HEX64]`); an error when it names
/// one with a malformed tag or digest; `None` for any other image.
fn parse_builtin(image: &str) -> Result<Option<Builtin>, String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_slash..].find(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let Some(builtin) = Builtin::from_repository(repository) else {
        return Ok(None);
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if !valid {
            return Err(format!(
                "the tag {tag:?} is not valid: use letters, digits, `_`, `.` and `-` (at most 128), e.g. {builtin}:latest"
            ));
        }
    }
    if let Some(digest) = digest {
        let valid = digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        });
        if !valid {
            return Err(format!(
                "the digest {digest:?} is not valid: write sha256: and 64 lowercase hex digits"
            ));
        }
    }
    Ok(Some(builtin))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn resolver(map: Option<&str>) -> ImageResolver {
        let map = map.map(|text| ImageMap::parse("map.yaml", text).unwrap());
        ImageResolver::new(map, PathBuf::from("/opt/skiff"))
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn builtins_resolve_with_tag_and_digest() {
        let r = resolver(None);
        for (image, builtin) in [
            ("skiff.dev/echo", Builtin::Echo),
            ("skiff.dev/echo:latest", Builtin::Echo),
            ("skiff.dev/grpc-echo:v1.2_3", Builtin::GrpcEcho),
            (&format!("skiff.dev/pause@{DIGEST}"), Builtin::Pause),
            (&format!("skiff.dev/echo:1.0@{DIGEST}"), Builtin::Echo),
        ] {
            let resolved = r.resolve(image).unwrap();
            assert_eq!(resolved.source, ImageSource::Builtin(builtin), "{image}");
            assert_eq!(resolved.reference, image);
            assert_eq!(resolved.entrypoint, ["/opt/skiff", builtin.name()]);
            assert!(resolved.default_args.is_empty());
        }
        assert_eq!(r.resolve("skiff.dev/echo").unwrap().exposed_ports, [3000]);
        assert_eq!(
            r.resolve("skiff.dev/grpc-echo").unwrap().exposed_ports,
            [50051]
        );
        assert!(
            r.resolve("skiff.dev/pause")
                .unwrap()
                .exposed_ports
                .is_empty()
        );
    }

    #[test]
    fn lookalikes_are_not_builtins() {
        let r = resolver(None);
        for image in [
            "skiff.dev/echo2",
            "docker.io/skiff.dev/echo",
            "skiff.dev/echo/x",
            "echo",
            "skiff.dev:5000/echo",
        ] {
            assert!(
                matches!(r.resolve(image), Err(ImageError::NotFound { .. })),
                "{image}"
            );
        }
    }

    #[test]
    fn malformed_builtin_tags_and_digests_are_invalid_names() {
        let r = resolver(None);
        for image in [
            "skiff.dev/echo:",
            "skiff.dev/echo:-x",
            "skiff.dev/echo@sha256:abc",
            "skiff.dev/echo@md5:0123",
            &format!("skiff.dev/echo@{}", DIGEST.to_uppercase()),
        ] {
            let err = r.resolve(image).unwrap_err();
            assert_eq!(err.reason(), "InvalidImageName", "{image}: {err}");
        }
        assert_eq!(r.resolve("").unwrap_err().reason(), "InvalidImageName");
        assert_eq!(
            r.resolve("nginx latest").unwrap_err().reason(),
            "InvalidImageName"
        );
    }

    #[test]
    fn unknown_images_say_why_they_cannot_be_pulled() {
        let err = resolver(None).resolve("nginx:1.25").unwrap_err();
        assert_eq!(err.reason(), "ErrImagePull");
        assert_eq!(
            err.to_string(),
            "image \"nginx:1.25\" is not available: skiff runs built-in images (skiff.dev/echo, skiff.dev/grpc-echo, skiff.dev/pause) and --image-map entries; no registry is reachable"
        );
    }

    #[test]
    fn image_map_first_match_in_file_order_wins() {
        let r = resolver(Some(
            r#"
"nginx:1.25": builtin:echo
"nginx:*": python3 -m http.server
"*@sha256:*": ["/bin/app", "--digest"]
"nginx*": builtin:pause
"#,
        ));
        let exact = r.resolve("nginx:1.25").unwrap();
        assert_eq!(exact.source, ImageSource::Builtin(Builtin::Echo));
        assert_eq!(exact.entrypoint, ["/opt/skiff", "echo"]);
        assert_eq!(exact.reference, "nginx:1.25");

        let other = r.resolve("nginx:1.26").unwrap();
        assert_eq!(
            other.source,
            ImageSource::Mapped {
                pattern: "nginx:*".to_owned()
            }
        );
        assert_eq!(other.entrypoint, ["python3", "-m", "http.server"]);

        // The pattern sees the digest: `nginx:*` comes first and matches it too.
        let digest = r.resolve(&format!("nginx:1@{DIGEST}")).unwrap();
        assert_eq!(digest.entrypoint, ["python3", "-m", "http.server"]);
        let digest = r.resolve(&format!("redis@{DIGEST}")).unwrap();
        assert_eq!(digest.entrypoint, ["/bin/app", "--digest"]);

        assert_eq!(
            r.resolve("nginx").unwrap().source,
            ImageSource::Builtin(Builtin::Pause)
        );
        assert!(matches!(
            r.resolve("redis:7"),
            Err(ImageError::NotFound { .. })
        ));
    }

    #[test]
    fn builtins_come_before_the_image_map() {
        let r = resolver(Some(r#""skiff.dev/*": /bin/false"#));
        assert_eq!(
            r.resolve("skiff.dev/echo").unwrap().builtin(),
            Some(Builtin::Echo)
        );
        assert_eq!(
            r.resolve("skiff.dev/other").unwrap().entrypoint,
            ["/bin/false"]
        );
    }

    #[test]
    fn argv_follows_docker_semantics() {
        let image = ResolvedImage {
            reference: "x".to_owned(),
            source: ImageSource::Mapped {
                pattern: "x".to_owned(),
            },
            entrypoint: strings(&["/bin/app", "--serve"]),
            default_args: strings(&["--port", "80"]),
            exposed_ports: Vec::new(),
        };
        assert_eq!(
            image.argv(&[], &[]),
            ["/bin/app", "--serve", "--port", "80"]
        );
        assert_eq!(
            image.argv(&[], &strings(&["--port", "90"])),
            ["/bin/app", "--serve", "--port", "90"]
        );
        assert_eq!(image.argv(&strings(&["sh"]), &[]), ["sh"]);
        assert_eq!(
            image.argv(&strings(&["sh", "-c"]), &strings(&["exit 3"])),
            ["sh", "-c", "exit 3"]
        );

        let echo = resolver(None).resolve("skiff.dev/echo").unwrap();
        assert_eq!(
            echo.argv(&[], &strings(&["--port", "8080"])),
            ["/opt/skiff", "echo", "--port", "8080"]
        );
    }
}
