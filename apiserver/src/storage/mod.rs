//! Durable object storage behind one `Store` trait, with SQLite and etcd backends.
//!
//! Objects are stored as real Kubernetes JSON (`serde_json::Value`). The store owns three
//! metadata fields: `metadata.resourceVersion` (the global revision of the object's last
//! write, never persisted inside the value), and `metadata.uid` / `metadata.creationTimestamp`
//! (assigned on create, preserved on update whatever the caller sends).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::Value;

/// A global revision: strictly increasing across every write to the whole store.
/// Rendered as the decimal `metadata.resourceVersion` string.
pub type Revision = u64;

/// What a store call can fail with. The API layer maps these to Kubernetes `Status` codes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// 404: no object under that key.
    #[error("{0} not found")]
    NotFound(ObjectKey),
    /// 409: create of a key that exists.
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    /// 409: an update or delete whose precondition (resourceVersion or uid) no longer holds.
    #[error("conflict on {key}: {message}")]
    Conflict { key: ObjectKey, message: String },
    /// 410: a watch or list asked for a revision older than the compacted history.
    #[error("resourceVersion {requested} is too old: history starts after {compacted}")]
    Expired {
        requested: Revision,
        compacted: Revision,
    },
    /// 400: the caller passed something the store cannot store (not an object, bad key, bad RV).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The database file or cluster holds data this build cannot read (newer schema, bad key).
    #[error("incompatible storage: {0}")]
    Incompatible(String),
    /// Encrypting or decrypting a value failed (wrong key, corrupted ciphertext).
    #[error("encryption at rest: {0}")]
    Crypto(String),
    /// The backend itself failed (I/O, SQLite, etcd unreachable). Retryable by the caller.
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The collection an object lives in: the group-qualified plural resource, as Kubernetes
/// names it in `GroupResource.String()`: `pods`, `deployments.apps`,
/// `ingresses.networking.k8s.io`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceName(String);

impl ResourceName {
    /// Lower-case DNS-like characters only, so it can be a key path segment.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if ok {
            Ok(Self(name))
        } else {
            Err(StoreError::Invalid(format!("resource name {name:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one object lives: its resource, its namespace (None for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub resource: ResourceName,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(resource: ResourceName, namespace: Option<&str>, name: &str) -> Self {
        Self {
            resource,
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// Refuses names and namespaces that cannot be a storage key on every backend (empty,
    /// containing `/`, `.` or `..`), so both backends accept exactly the same keys.
    pub fn validate(&self) -> Result<()> {
        let segments = std::iter::once(("name", &self.name))
            .chain(self.namespace.iter().map(|ns| ("namespace", ns)));
        for (what, segment) in segments {
            if segment.is_empty() || segment.contains('/') || segment == "." || segment == ".." {
                return Err(StoreError::Invalid(format!(
                    "{self}: {what} {segment:?} cannot be a storage key"
                )));
            }
        }
        Ok(())
    }

    /// The scope that lists exactly this object's namespace.
    pub fn scope(&self) -> Scope {
        Scope {
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} \"{}/{}\"", self.resource, ns, self.name),
            None => write!(f, "{} \"{}\"", self.resource, self.name),
        }
    }
}

/// A set of objects to list or watch: one resource, in one namespace or (None) in all of them.
/// For a cluster-scoped resource the namespace is always None.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub resource: ResourceName,
    pub namespace: Option<String>,
}

impl Scope {
    pub fn all(resource: ResourceName) -> Self {
        Self {
            resource,
            namespace: None,
        }
    }

    pub fn namespace(resource: ResourceName, namespace: &str) -> Self {
        Self {
            resource,
            namespace: Some(namespace.to_owned()),
        }
    }

    /// Whether a key belongs to this scope.
    pub fn contains(&self, key: &ObjectKey) -> bool {
        key.resource == self.resource
            && match &self.namespace {
                None => true,
                Some(ns) => key.namespace.as_deref() == Some(ns.as_str()),
            }
    }
}

/// A condition an update or delete must meet, checked atomically with the write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The write applies only if the stored object is at this revision.
    pub resource_version: Option<Revision>,
    /// The write applies only if the stored object has this uid.
    pub uid: Option<String>,
}

/// A consistent snapshot of a scope: every object as of `revision`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListResult {
    /// Objects sorted by key (namespace, then name), each with its `metadata.resourceVersion`.
    pub items: Vec<Value>,
    /// The store revision the snapshot was taken at (the list's `metadata.resourceVersion`).
    pub revision: Revision,
}

/// A consistent snapshot of a scope as stored JSON, for answering lists without decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct RawList {
    /// Objects sorted by key (namespace, then name).
    pub items: Vec<RawObject>,
    /// The store revision the snapshot was taken at.
    pub revision: Revision,
}

/// One object as plain (decrypted) JSON bytes, without `metadata.resourceVersion`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawObject {
    /// The revision of the object's last write (its resourceVersion).
    pub revision: Revision,
    pub json: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, delivered to watchers in revision order, exactly once. Cloning is cheap: the
/// objects are shared by every watcher of the change.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchEvent {
    pub kind: EventType,
    pub key: ObjectKey,
    /// The revision of this change. For `Deleted` it is the deletion's revision.
    pub revision: Revision,
    /// The object after the change; for `Deleted`, its last state, with
    /// `metadata.resourceVersion` set to the deletion's revision (as Kubernetes does).
    pub object: Arc<Value>,
    /// For `Modified`, the object before the change, so a filtered watch can tell an object
    /// that left its selector from one that changed inside it. `None` for `Added` and
    /// `Deleted`, and when that state is no longer known (history compacted).
    pub prev_object: Option<Arc<Value>>,
    /// The object's wire form, made by the first watcher that sends it and reused by the
    /// others: one change, many watchers, one encoding.
    pub encoded: EncodedOnce,
}

impl WatchEvent {
    pub fn new(
        kind: EventType,
        key: ObjectKey,
        revision: Revision,
        object: Value,
        prev_object: Option<Value>,
    ) -> Self {
        WatchEvent {
            kind,
            key,
            revision,
            object: Arc::new(object),
            prev_object: prev_object.map(Arc::new),
            encoded: EncodedOnce::default(),
        }
    }
}

/// A once-filled slot for an event's encoded object, keyed by the encoding (e.g. the API
/// version it was written for), shared by the clones of one [`WatchEvent`].
#[derive(Clone, Debug, Default)]
pub struct EncodedOnce(Arc<std::sync::OnceLock<(String, bytes::Bytes)>>);

impl EncodedOnce {
    /// The bytes encoded under `key`: made by `make` the first time, shared after. A caller
    /// with another key (a different API version of the resource) gets its own, uncached.
    pub fn get_or_make(&self, key: &str, make: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        if let Some((k, bytes)) = self.0.get() {
            if k == key {
                return bytes.clone();
            }
            return make();
        }
        let bytes = make();
        let _ = self.0.set((key.to_owned(), bytes.clone()));
        bytes
    }
}

impl PartialEq for EncodedOnce {
    /// A cache is no part of an event's identity.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A live stream of changes. Ends with `Err(Expired)` if the watcher falls so far behind that
/// history it still needs was dropped, or `Err(Backend)` if the backend fails.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// The storage every API-server component uses. Implementations must be safe to share across
/// tasks (`Arc<dyn Store>`); every write is durable when its future resolves.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates `object` under `key`. Assigns `metadata.uid` and `metadata.creationTimestamp`
    /// (RFC 3339, seconds, UTC) and the new revision; any `resourceVersion` in the input must
    /// be absent or empty. Returns the stored object. `AlreadyExists` if the key is taken.
    async fn create(&self, key: &ObjectKey, object: Value) -> Result<Value>;

    /// The current object, with its `metadata.resourceVersion`.
    async fn get(&self, key: &ObjectKey) -> Result<Value>;

    /// Replaces the object under `key`. If `object.metadata.resourceVersion` is non-empty it
    /// is a precondition (stale → `Conflict`), as are `preconditions`. `uid` and
    /// `creationTimestamp` are carried over from the stored object. Returns the stored object.
    async fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        preconditions: &Preconditions,
    ) -> Result<Value>;

    /// Deletes the object under `key`, returning its last state with the deletion revision.
    async fn delete(&self, key: &ObjectKey, preconditions: &Preconditions) -> Result<Value>;

    /// Every object in `scope` as of one revision.
    async fn list(&self, scope: &Scope) -> Result<ListResult>;

    /// [`Store::list`] as JSON bytes without `metadata.resourceVersion`, so a large list can
    /// be answered without building a `Value` per object. Backends that keep JSON override it;
    /// this default encodes what `list` returns.
    async fn list_raw(&self, scope: &Scope) -> Result<RawList> {
        let list = self.list(scope).await?;
        let items = list
            .items
            .into_iter()
            .map(|mut object| {
                let revision = object["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|rv| rv.parse().ok())
                    .unwrap_or(list.revision);
                meta::strip_revision(&mut object);
                let json = serde_json::to_vec(&object).map_err(|e| {
                    StoreError::Invalid(format!("cannot encode a listed object: {e}"))
                })?;
                Ok(RawObject { revision, json })
            })
            .collect::<Result<_>>()?;
        Ok(RawList {
            items,
            revision: list.revision,
        })
    }

    /// Changes in `scope` with a revision strictly greater than `after`, in order, each once,
    /// then live changes as they happen. `Expired` if `after` is older than the compacted
    /// history. Watching from the revision of a `list` misses nothing and repeats nothing.
    async fn watch(&self, scope: &Scope, after: Revision) -> Result<WatchStream>;

    /// The newest revision written to the store.
    async fn current_revision(&self) -> Result<Revision>;

    /// Drops change history up to and including `revision` (never the current objects).
    /// Afterwards `watch(after < revision)` fails with `Expired`.
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The revision up to which history was compacted (0 if never).
    async fn compacted_revision(&self) -> Result<Revision>;
}

pub mod codec;
pub mod compactor;
pub mod etcd;
pub mod meta;
pub mod sqlite;

pub use codec::{Codec, EncryptionKey};
pub use etcd::{EtcdOptions, EtcdStore, parse_etcd_url};
pub use sqlite::SqliteStore;
pub mod datastore;
pub use datastore::Datastore;
