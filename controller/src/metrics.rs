//! Counters for the controllers, rendered in the Prometheus text format (served on `/metrics` by `skiff controller`, see `standalone`).

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

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
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
    pub scheduler_bindings: Counter,
    pub scheduler_bind_errors: Counter,
    pub scheduler_unschedulable: Counter,
    /// 1 while this process holds the leader Lease (`skiff controller`), else 0.
    pub leader: Gauge,
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
            (
                "skiff_scheduler_bindings_total",
                "Pods the scheduler bound to a node.",
                &self.scheduler_bindings,
            ),
            (
                "skiff_scheduler_bind_errors_total",
                "Bindings that failed (the pod was requeued).",
                &self.scheduler_bind_errors,
            ),
            (
                "skiff_scheduler_unschedulable_total",
                "Scheduling attempts that found no fitting node.",
                &self.scheduler_unschedulable,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP skiff_controller_leader 1 while this process holds the leader Lease.\n\
             # TYPE skiff_controller_leader gauge\nskiff_controller_leader {}",
            self.leader.get()
        );
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
