//! Counters for the controllers, rendered in the Prometheus text format (the tree has no metrics registry or HTTP endpoint yet to serve them from).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the namespace controller and the garbage collector have done.
#[derive(Debug, Default)]
pub struct Metrics {
    pub gc_objects_deleted: Counter,
    pub gc_owner_references_removed: Counter,
    pub gc_finalizers_removed: Counter,
    pub gc_errors: Counter,
    pub namespace_objects_deleted: Counter,
    pub namespaces_finalized: Counter,
    pub namespace_errors: Counter,
    pub reconcile_rounds: Counter,
}

impl Metrics {
    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "skiff_gc_objects_deleted_total",
                "Dependents deleted by the garbage collector.",
                &self.gc_objects_deleted,
            ),
            (
                "skiff_gc_owner_references_removed_total",
                "Objects whose ownerReferences the garbage collector rewrote.",
                &self.gc_owner_references_removed,
            ),
            (
                "skiff_gc_finalizers_removed_total",
                "orphan/foregroundDeletion finalizers removed.",
                &self.gc_finalizers_removed,
            ),
            (
                "skiff_gc_errors_total",
                "Garbage collection steps that failed (retried).",
                &self.gc_errors,
            ),
            (
                "skiff_namespace_objects_deleted_total",
                "Objects deleted from terminating namespaces.",
                &self.namespace_objects_deleted,
            ),
            (
                "skiff_namespaces_finalized_total",
                "Namespaces whose kubernetes finalizer was removed.",
                &self.namespaces_finalized,
            ),
            (
                "skiff_namespace_errors_total",
                "Namespace controller steps that failed (retried).",
                &self.namespace_errors,
            ),
            (
                "skiff_controller_reconcile_rounds_total",
                "Reconcile rounds run.",
                &self.reconcile_rounds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.gc_objects_deleted.inc();
        let text = m.render();
        assert!(text.contains("# TYPE skiff_gc_objects_deleted_total counter"));
        assert!(text.contains("skiff_gc_objects_deleted_total 1\n"));
    }
}
