//! Compaction of change history on a schedule, as the Kubernetes API server does it.
//!
//! Every `interval` the store is compacted to the revision seen one interval earlier, so a
//! watcher always has at least one interval of history to resume from.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{Revision, Store};

/// Kubernetes' default compaction interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Runs compaction forever on `store`; abort the handle to stop it.
pub fn spawn_compactor(store: Arc<dyn Store>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Revision> = None;
        loop {
            ticker.tick().await;
            if let Some(target) = previous
                && let Err(e) = compact_once(store.as_ref(), target).await
            {
                tracing::warn!(error = %e, revision = target, "compaction failed; retrying next interval");
            }
            match store.current_revision().await {
                Ok(rev) => previous = Some(rev),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the current revision for compaction failed")
                }
            }
        }
    })
}

/// Compacts to `target` unless history is already compacted that far.
pub async fn compact_once(store: &dyn Store, target: Revision) -> Result<(), super::StoreError> {
    let done = store.compacted_revision().await?;
    if target <= done {
        return Ok(());
    }
    store.compact(target).await?;
    tracing::info!(revision = target, "compacted storage history");
    Ok(())
}
