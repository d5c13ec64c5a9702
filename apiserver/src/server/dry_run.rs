//! `dryRun=All`: a `Store` that reads through to the real one and answers writes as if made.
//!
//! Every check the real store makes on a write (existence, identity, preconditions) runs here
//! against the current object, so a dry run fails exactly where the write would; nothing is
//! written and no resourceVersion changes. A dry-run create answers with a fresh `uid` and
//! `creationTimestamp` and no `resourceVersion`, as upstream does.

use std::sync::Arc;

use serde_json::Value;

use super::Ctx;
use super::status::ApiError;
use crate::storage::meta::{
    check_preconditions, prepare_create, prepare_update, revision_of, set_revision,
};
use crate::storage::{
    ListResult, ObjectKey, Preconditions, RawList, Result, Revision, Scope, Store, StoreError,
    WatchStream,
};

/// Parses the `dryRun` query values: only `All` is defined (upstream's message otherwise).
pub(crate) fn parse(values: &[String]) -> Result<bool, ApiError> {
    let mut dry = false;
    for v in values.iter().filter(|v| !v.is_empty()) {
        if v != "All" {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: unsupported dry run option {v:?}: the only supported \
                 value is \"All\""
            )));
        }
        dry = true;
    }
    Ok(dry)
}

/// The store a write goes to: the real one, or a [`DryRunStore`] over it.
pub(crate) fn store_for(ctx: &Ctx, dry_run: bool) -> Arc<dyn Store> {
    if dry_run {
        Arc::new(DryRunStore::new(ctx.store.clone()))
    } else {
        ctx.store.clone()
    }
}

/// Reads go to `inner`; writes are checked against it and answered without being made.
#[derive(Debug)]
pub(crate) struct DryRunStore {
    inner: Arc<dyn Store>,
}

impl DryRunStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner }
    }
}

/// The stored object's revision (it always carries one when read from a store).
fn stored_revision(key: &ObjectKey, stored: &Value) -> Result<Revision> {
    revision_of(key, stored)?
        .ok_or_else(|| StoreError::Backend(format!("{key}: stored object has no resourceVersion")))
}

#[async_trait::async_trait]
impl Store for DryRunStore {
    async fn create(&self, key: &ObjectKey, mut object: Value) -> Result<Value> {
        match self.inner.get(key).await {
            Ok(_) => return Err(StoreError::AlreadyExists(key.clone())),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        prepare_create(key, &mut object)?;
        Ok(object)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Value> {
        self.inner.get(key).await
    }

    async fn update(
        &self,
        key: &ObjectKey,
        mut object: Value,
        preconditions: &Preconditions,
    ) -> Result<Value> {
        let stored = self.inner.get(key).await?;
        let revision = stored_revision(key, &stored)?;
        let sent = revision_of(key, &object)?;
        check_preconditions(key, revision, &stored, sent, preconditions)?;
        prepare_update(key, &mut object, &stored)?;
        set_revision(&mut object, revision);
        Ok(object)
    }

    async fn delete(&self, key: &ObjectKey, preconditions: &Preconditions) -> Result<Value> {
        let stored = self.inner.get(key).await?;
        let revision = stored_revision(key, &stored)?;
        check_preconditions(key, revision, &stored, None, preconditions)?;
        Ok(stored)
    }

    async fn list(&self, scope: &Scope) -> Result<ListResult> {
        self.inner.list(scope).await
    }

    async fn list_raw(&self, scope: &Scope) -> Result<RawList> {
        self.inner.list_raw(scope).await
    }

    async fn watch(&self, scope: &Scope, after: Revision) -> Result<WatchStream> {
        self.inner.watch(scope, after).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    async fn compact(&self, _revision: Revision) -> Result<()> {
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.compacted_revision().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_all_is_accepted() {
        assert_eq!(parse(&[]).ok(), Some(false));
        assert_eq!(parse(&["All".into()]).ok(), Some(true));
        assert_eq!(parse(&[String::new()]).ok(), Some(false));
        let err = parse(&["Some".into()]).err().map(|e| e.code);
        assert_eq!(err, Some(400));
    }
}
