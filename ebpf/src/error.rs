//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong loading, attaching or programming the BPF side.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The embedded object could not be parsed or its maps created (pin reuse included).
    #[error("loading the BPF object: {}", chain(.0.as_ref()))]
    Load(Box<aya::EbpfError>),
    /// The kernel refused a program (the verifier log is in the source), or attaching failed.
    #[error("BPF program {name}: {}", chain(.error.as_ref()))]
    Program {
        /// Program (function) name.
        name: &'static str,
        /// What aya reported.
        error: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed (for example a full map).
    #[error("BPF map {name}: {}", chain(.error.as_ref()))]
    Map {
        /// Map name.
        name: &'static str,
        /// What aya reported.
        error: Box<aya::maps::MapError>,
    },
    /// The embedded object lacks a program or map this crate expects (a build mismatch).
    #[error("the BPF object has no {0}")]
    Missing(&'static str),
    /// No cgroup2 file system is mounted.
    #[error("no cgroup v2 mount in /proc/self/mountinfo")]
    NoCgroup2,
    /// A file or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path when there is one.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A service that cannot be programmed as given; nothing was changed.
    #[error("virtual address {vip}: {reason}")]
    InvalidService {
        /// The frontend.
        vip: String,
        /// Why.
        reason: String,
    },
    /// An option the loader cannot use as given.
    #[error("{option}: {reason}")]
    InvalidOption {
        /// The option (field) name.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// Every service slot is in use.
    #[error("all {0} service slots are in use")]
    SlotsExhausted(u32),
    /// A pin directory outside a BPF file system.
    #[error("{0} is not on a BPF file system (mount one: `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs(PathBuf),
    /// `attach` was called twice.
    #[error("already attached to {0}")]
    AlreadyAttached(PathBuf),
}

impl EbpfError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Self::Map {
            name,
            error: Box::new(source),
        }
    }

    pub(crate) fn program(name: &'static str, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            name,
            error: Box::new(source),
        }
    }
}

/// An error and its causes on one line. aya's errors name the failing call in their message
/// and keep the errno (and the verifier log) in their sources: a log line needs both. The aya
/// error is therefore rendered here instead of being exposed as `source()`, so reporters that
/// walk the chain do not print it twice.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        // transparent wrappers repeat their inner message
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}
