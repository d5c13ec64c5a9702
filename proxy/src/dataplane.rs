//! The `Dataplane` trait: what the eBPF and userspace backends implement.
//!
//! The watcher owns the one writer loop; it calls `apply` with the new table and the diff from
//! the table last applied successfully, never concurrently. Reads on the packet/connection
//! path must use the data plane's own programmed state (maps, an `ArcSwap` of the table), never
//! call back into the watcher.

use std::sync::Arc;

use async_trait::async_trait;

use crate::diff::TableDiff;
use crate::table::ServiceTable;

/// Why a data plane could not program (the watcher logs it, counts it, and retries later with
/// a full resync).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The data plane cannot run here at all (no BPF, no cgroup v2...): the caller may fall
    /// back to another one, logging this reason.
    #[error("{dataplane} is unavailable: {reason}")]
    Unavailable {
        dataplane: &'static str,
        reason: String,
    },
    /// A system call or kernel operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Anything else, with what was being done.
    #[error("{0}")]
    Other(String),
}

/// A service data plane.
///
/// Contract:
/// - `apply` makes the programmed state equal to `table`. With `diff.full` it must also remove
///   whatever it programmed before that is not in `table` (first sync, or a retry after a
///   failed apply: a half-applied diff is repaired by the full resync that follows).
///   Otherwise it applies `diff.removed`, then `diff.added`, then `diff.changed`, and may
///   assume its state equals the table the diff started from.
/// - Per service port, an update is never visible half-done: backends are swapped so there is
///   no moment with zero backends for a port that keeps some (a new backend list, then the
///   pointer/count flip).
/// - An entry whose backend set for a frontend's family is empty rejects that traffic
///   (kube-proxy answers ICMP unreachable / TCP reset); it never lets it leave the node.
/// - A protocol the data plane cannot serve (SCTP) is logged and skipped for that entry; it is
///   not an error for the whole table.
/// - `shutdown` is called once when the proxy stops. Whether programmed state is kept (pinned
///   BPF maps, so established connections survive a restart) or removed is the data plane's
///   documented choice.
#[async_trait]
pub trait Dataplane: Send + Sync + std::fmt::Debug {
    /// Short name for logs and metrics (`ebpf`, `userspace`).
    fn name(&self) -> &'static str;

    /// Programs `table`; `diff` says what changed since the last successful `apply`.
    async fn apply(
        &self,
        table: &Arc<ServiceTable>,
        diff: &TableDiff,
    ) -> Result<(), DataplaneError>;

    /// Stops the data plane (see the trait documentation for what it keeps).
    async fn shutdown(&self) -> Result<(), DataplaneError>;

    /// What is programmed, as text for people (maps, listeners, counters).
    fn dump(&self) -> String {
        String::new()
    }
}
