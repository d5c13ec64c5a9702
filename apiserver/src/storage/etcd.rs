//! The etcd backend: objects in an existing etcd cluster (v3 API, etcd 3.4+), under a key prefix.
//!
//! Layout, as the Kubernetes API server does it:
//!
//! - `{prefix}/{resource}/{namespace}/{name}` for namespaced objects,
//!   `{prefix}/{resource}/{name}` for cluster-scoped ones (default prefix `/registry`);
//! - values are the [`Codec`]'s bytes (JSON, Secrets sealed), without `resourceVersion`;
//! - `resourceVersion` is the etcd revision: an object's `mod_revision`, a list's or a
//!   delete's response header revision;
//! - `{prefix}/compact_rev` records the revision history was compacted to, so every process
//!   sharing the cluster agrees on [`Store::compacted_revision`].
//!
//! Several processes may share one etcd (and one prefix): every write is an etcd transaction
//! guarded by the revision it read, and watches are etcd watches, so each process sees the
//! others' writes and changes.
//!
//! **Compaction is cluster-wide in etcd**: [`Store::compact`] drops the history of every key in
//! the cluster, not only this prefix's. Two skiff clusters sharing one etcd under different
//! prefixes therefore also share their compaction.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, EventType as EtcdEventType,
    GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;

use super::{
    Codec, EventType, ListResult, ObjectKey, Preconditions, ResourceName, Result, Revision, Scope,
    Store, StoreError, WatchEvent, WatchStream, meta,
};

/// The key prefix Kubernetes uses, and ours by default.
pub const DEFAULT_PREFIX: &str = "/registry";

/// Objects read per range request when listing (pages are read at one revision).
const LIST_PAGE: i64 = 500;

/// How many times an update or delete without a resourceVersion precondition re-reads and
/// retries when another writer got in between (Kubernetes' GuaranteedUpdate loops).
const MAX_RETRIES: usize = 64;

/// The largest response we accept (a list page, a watch batch): etcd's own client default.
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Timeouts for talking to etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// How long connecting (and the first health probe) may take before `connect` fails.
    pub connect_timeout: Duration,
    /// The deadline of every request (not of a watch stream, which lives as long as it is read).
    pub request_timeout: Duration,
    /// HTTP/2 keep-alive pings while watches are open, so an etcd that vanished without
    /// closing the connection (host down, partition) ends them with an error instead of
    /// leaving them hanging: (interval, timeout). etcd refuses pings more often than every 5 s.
    pub keep_alive: (Duration, Duration),
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive: (Duration::from_secs(10), Duration::from_secs(5)),
        }
    }
}

/// Parses the `--datastore` form `etcd://HOST:PORT[,HOST:PORT...]` into client endpoints
/// (`http://HOST:PORT`). IPv6 hosts are written in brackets: `etcd://[::1]:2379`.
pub fn parse_etcd_url(url: &str) -> Result<Vec<String>> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        StoreError::Invalid(format!(
            "datastore {url:?}: an etcd datastore is written etcd://HOST:PORT[,HOST:PORT...]"
        ))
    })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(StoreError::Invalid(format!(
            "datastore {url:?} names no etcd endpoint: write etcd://HOST:PORT[,HOST:PORT...]"
        )));
    }
    let mut endpoints = Vec::new();
    for part in rest.split(',') {
        let bad = |why: &str| {
            StoreError::Invalid(format!(
                "datastore {url:?}: endpoint {part:?} {why}; write etcd://HOST:PORT[,HOST:PORT...]"
            ))
        };
        let (host, port) = part.rsplit_once(':').ok_or_else(|| bad("has no :PORT"))?;
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        };
        if !host_ok {
            return Err(bad("has no valid host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("has no valid port (1-65535)")),
        }
        endpoints.push(format!("http://{host}:{port}"));
    }
    Ok(endpoints)
}

/// A [`Store`] over an etcd cluster. Cheap to share (`Arc<dyn Store>`); one gRPC connection
/// per endpoint carries every request and watch.
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    endpoints: Vec<String>,
    /// The key prefix without a trailing slash (`/registry`).
    prefix: String,
    codec: Codec,
    options: EtcdOptions,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("codec", &self.inner.codec)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`HOST:PORT` or `http://HOST:PORT`) and
    /// checks that it answers, with the default timeouts. Keys live under `prefix`
    /// (e.g. [`DEFAULT_PREFIX`]).
    pub async fn connect(endpoints: &[String], prefix: &str, codec: Codec) -> Result<EtcdStore> {
        Self::connect_with(endpoints, prefix, codec, EtcdOptions::default()).await
    }

    /// [`EtcdStore::connect`] with explicit timeouts.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        codec: Codec,
        options: EtcdOptions,
    ) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoint given".into()));
        }
        let prefix = normalize_prefix(prefix)?;
        let unreachable = |why: String| {
            StoreError::Backend(format!(
                "cannot reach etcd at {}: {why}. Check that etcd is running and listening there \
                 (etcd --listen-client-urls / --advertise-client-urls), and that --datastore \
                 names its client URLs as etcd://HOST:PORT[,HOST:PORT...]",
                endpoints.join(",")
            ))
        };
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(options.keep_alive.0, options.keep_alive.1)
            // Pings only while streams are open (watches): etcd's keep-alive policy does not
            // permit pings on a connection without streams.
            .with_keep_alive_while_idle(false)
            // A member that lost quorum must fail requests and end watches, not go silent
            // (what kube-apiserver does with WithRequireLeader).
            .with_require_leader(true);
        let client = tokio::time::timeout(
            options.connect_timeout,
            Client::connect(endpoints, Some(connect_options)),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", options.connect_timeout)))?
        .map_err(|e| unreachable(e.to_string()))?;
        let store = EtcdStore {
            inner: Arc::new(Inner {
                client,
                endpoints: endpoints.to_vec(),
                prefix,
                codec,
                options: options.clone(),
            }),
        };
        // The client connects lazily: probe with a cheap read so a wrong address fails here.
        let mut kv = store.inner.kv();
        let probe = kv.get(
            store.inner.compact_key(),
            Some(GetOptions::new().with_count_only()),
        );
        match tokio::time::timeout(options.connect_timeout, probe).await {
            Err(_) => Err(unreachable(format!(
                "no answer within {:?}",
                options.connect_timeout
            ))),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Ok(Ok(_)) => Ok(store),
        }
    }

    /// The key prefix (without a trailing slash).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }
}

fn normalize_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() || !trimmed.starts_with('/') || trimmed.contains("//") {
        return Err(StoreError::Invalid(format!(
            "etcd key prefix {prefix:?}: it must start with '/' and name a path, like {DEFAULT_PREFIX:?}"
        )));
    }
    Ok(trimmed.to_owned())
}

/// A namespace or name must be one key path segment.
/// A txn that applies `op` only if `etcd_key` is still at `mod_revision`, else reads it back.
fn guarded(etcd_key: &str, mod_revision: i64, op: TxnOp) -> Txn {
    Txn::new()
        .when([Compare::mod_revision(
            etcd_key,
            CompareOp::Equal,
            mod_revision,
        )])
        .and_then([op])
        .or_else([TxnOp::get(etcd_key, None)])
}

fn gave_up(key: &ObjectKey) -> StoreError {
    StoreError::Conflict {
        key: key.clone(),
        message: format!("gave up after {MAX_RETRIES} concurrent modifications; try again"),
    }
}

fn backend(what: &str, e: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd {what}: {e}"))
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

fn is_future_revision(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision is a future revision"))
}

fn to_revision(rev: i64) -> Result<Revision> {
    Revision::try_from(rev)
        .map_err(|_| StoreError::Incompatible(format!("etcd returned revision {rev}")))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision> {
    let header =
        header.ok_or_else(|| StoreError::Backend("etcd response without a header".into()))?;
    to_revision(header.revision())
}

fn to_etcd_revision(rev: Revision) -> Result<i64> {
    i64::try_from(rev).map_err(|_| StoreError::Invalid(format!("revision {rev} is out of range")))
}

impl Inner {
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn compact_key(&self) -> String {
        format!("{}/compact_rev", self.prefix)
    }

    fn object_key(&self, key: &ObjectKey) -> Result<String> {
        key.validate()?;
        match &key.namespace {
            Some(ns) => Ok(format!(
                "{}/{}/{}/{}",
                self.prefix, key.resource, ns, key.name
            )),
            None => Ok(format!("{}/{}/{}", self.prefix, key.resource, key.name)),
        }
    }

    /// The key prefix of a scope, ending in '/', so `pods` never matches `podsx`.
    fn scope_prefix(&self, scope: &Scope) -> Result<String> {
        match &scope.namespace {
            Some(ns) => {
                if ns.is_empty() || ns.contains('/') {
                    return Err(StoreError::Invalid(format!(
                        "namespace {ns:?} cannot be a storage key"
                    )));
                }
                Ok(format!("{}/{}/{}/", self.prefix, scope.resource, ns))
            }
            None => Ok(format!("{}/{}/", self.prefix, scope.resource)),
        }
    }

    /// The object key of an etcd key under `{prefix}/{resource}/`.
    fn parse_key(&self, resource: &ResourceName, raw: &[u8]) -> Result<ObjectKey> {
        let bad = || {
            StoreError::Incompatible(format!(
                "etcd key {:?} is not {}/{resource}/[NAMESPACE/]NAME",
                String::from_utf8_lossy(raw),
                self.prefix
            ))
        };
        let text = std::str::from_utf8(raw).map_err(|_| bad())?;
        let rest = text
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(resource.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(bad)?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) if !name.is_empty() => {
                Ok(ObjectKey::new(resource.clone(), None, name))
            }
            (Some(ns), Some(name), None) if !ns.is_empty() && !name.is_empty() => {
                Ok(ObjectKey::new(resource.clone(), Some(ns), name))
            }
            _ => Err(bad()),
        }
    }

    /// Decodes a stored value and sets its resourceVersion.
    fn decode(&self, key: &ObjectKey, value: &[u8], revision: Revision) -> Result<Value> {
        let mut object = self.codec.decode(key, value)?;
        meta::set_revision(&mut object, revision);
        Ok(object)
    }

    /// Runs one etcd request under the request timeout (the client's balancer would otherwise
    /// wait for a ready endpoint forever while etcd is down).
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<std::result::Result<T, etcd_client::Error>> {
        tokio::time::timeout(self.options.request_timeout, fut)
            .await
            .map_err(|_| {
                StoreError::Backend(format!(
                    "etcd {what}: no answer from {} within {:?}",
                    self.endpoints.join(","),
                    self.options.request_timeout
                ))
            })
    }

    /// The current key-value of `etcd_key`, if any.
    async fn read(&self, etcd_key: &str) -> Result<Option<KeyValue>> {
        let mut kv = self.kv();
        let mut resp = self
            .call("get", kv.get(etcd_key, None))
            .await?
            .map_err(|e| backend("get", e))?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// The recorded compacted revision (0 if never compacted).
    async fn recorded_compaction(&self) -> Result<Revision> {
        let Some(kv) = self.read(&self.compact_key()).await? else {
            return Ok(0);
        };
        let text = std::str::from_utf8(kv.value()).unwrap_or_default();
        text.trim().parse::<Revision>().map_err(|_| {
            StoreError::Incompatible(format!(
                "{} holds {:?}, not a revision",
                self.compact_key(),
                String::from_utf8_lossy(kv.value())
            ))
        })
    }
}

/// What the guarded write of an update or delete found when its compare failed: the object
/// as it is now (None: gone).
fn else_current(resp: &etcd_client::TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
        _ => None,
    })
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &ObjectKey, mut object: Value) -> Result<Value> {
        let inner = &self.inner;
        let etcd_key = inner.object_key(key)?;
        meta::prepare_create(key, &mut object)?;
        let bytes = inner.codec.encode(key, &object)?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(etcd_key.as_str(), bytes, None)]);
        let mut kv = inner.kv();
        let resp = inner
            .call("create", kv.txn(txn))
            .await?
            .map_err(|e| backend("create", e))?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        meta::set_revision(&mut object, header_revision(resp.header())?);
        Ok(object)
    }

    async fn get(&self, key: &ObjectKey) -> Result<Value> {
        let inner = &self.inner;
        let etcd_key = inner.object_key(key)?;
        let kv = inner
            .read(&etcd_key)
            .await?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        inner.decode(key, kv.value(), to_revision(kv.mod_revision())?)
    }

    async fn update(
        &self,
        key: &ObjectKey,
        object: Value,
        preconditions: &Preconditions,
    ) -> Result<Value> {
        let inner = &self.inner;
        let etcd_key = inner.object_key(key)?;
        let object_revision = meta::revision_of(key, &object)?;
        let mut current = inner.read(&etcd_key).await?;
        for _ in 0..MAX_RETRIES {
            let kv = current
                .take()
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let stored_revision = to_revision(kv.mod_revision())?;
            let stored = inner.codec.decode(key, kv.value())?;
            meta::check_preconditions(
                key,
                stored_revision,
                &stored,
                object_revision,
                preconditions,
            )?;
            let mut new = object.clone();
            meta::prepare_update(key, &mut new, &stored)?;
            let bytes = inner.codec.encode(key, &new)?;
            let txn = guarded(
                &etcd_key,
                kv.mod_revision(),
                TxnOp::put(etcd_key.as_str(), bytes, None),
            );
            let mut client = inner.kv();
            let resp = inner
                .call("update", client.txn(txn))
                .await?
                .map_err(|e| backend("update", e))?;
            if resp.succeeded() {
                meta::set_revision(&mut new, header_revision(resp.header())?);
                return Ok(new);
            }
            // Someone else wrote in between. With a resourceVersion precondition the next
            // round reports the conflict (or NotFound); without, it retries on the new state.
            current = else_current(&resp);
        }
        Err(gave_up(key))
    }

    async fn delete(&self, key: &ObjectKey, preconditions: &Preconditions) -> Result<Value> {
        let inner = &self.inner;
        let etcd_key = inner.object_key(key)?;
        let mut current = inner.read(&etcd_key).await?;
        for _ in 0..MAX_RETRIES {
            let kv = current
                .take()
                .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            let stored_revision = to_revision(kv.mod_revision())?;
            let mut stored = inner.codec.decode(key, kv.value())?;
            meta::check_preconditions(key, stored_revision, &stored, None, preconditions)?;
            let txn = guarded(
                &etcd_key,
                kv.mod_revision(),
                TxnOp::delete(etcd_key.as_str(), None),
            );
            let mut client = inner.kv();
            let resp = inner
                .call("delete", client.txn(txn))
                .await?
                .map_err(|e| backend("delete", e))?;
            if resp.succeeded() {
                meta::set_revision(&mut stored, header_revision(resp.header())?);
                return Ok(stored);
            }
            current = else_current(&resp);
        }
        Err(gave_up(key))
    }

    async fn list(&self, scope: &Scope) -> Result<ListResult> {
        let inner = &self.inner;
        let start = inner.scope_prefix(scope)?;
        // The prefix ends in '/'; the range end is the same with '/' + 1 = '0'.
        let mut end = start.clone();
        end.pop();
        end.push('0');
        'restart: for _ in 0..MAX_RETRIES {
            let mut items: Vec<(ObjectKey, Value)> = Vec::new();
            let mut revision: Option<i64> = None;
            let mut from = start.clone().into_bytes();
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.as_str())
                    .with_limit(LIST_PAGE);
                if let Some(rev) = revision {
                    options = options.with_revision(rev);
                }
                let mut kv = inner.kv();
                let mut resp = match inner
                    .call("list", kv.get(from.clone(), Some(options)))
                    .await?
                {
                    Ok(resp) => resp,
                    // The snapshot revision was compacted between two pages: start over.
                    Err(e) if revision.is_some() && is_compacted(&e) => continue 'restart,
                    Err(e) => return Err(backend("list", e)),
                };
                let rev = match revision {
                    Some(rev) => rev,
                    None => {
                        let rev = to_etcd_revision(header_revision(resp.header())?)?;
                        revision = Some(rev);
                        rev
                    }
                };
                let more = resp.more();
                let kvs = resp.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                for kv in &kvs {
                    let key = inner.parse_key(&scope.resource, kv.key())?;
                    let object = inner.decode(&key, kv.value(), to_revision(kv.mod_revision())?)?;
                    items.push((key, object));
                }
                if !more || kvs.is_empty() {
                    // etcd orders by key bytes; the contract orders by (namespace, name).
                    items.sort_by(|a, b| {
                        (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name))
                    });
                    return Ok(ListResult {
                        items: items.into_iter().map(|(_, o)| o).collect(),
                        revision: to_revision(rev)?,
                    });
                }
            }
        }
        Err(StoreError::Backend(
            "etcd list: history was compacted under every attempt to read a consistent snapshot"
                .into(),
        ))
    }

    async fn watch(&self, scope: &Scope, after: Revision) -> Result<WatchStream> {
        let inner = &self.inner;
        let prefix = inner.scope_prefix(scope)?;
        let compacted = inner.recorded_compaction().await?;
        if after < compacted {
            return Err(StoreError::Expired {
                requested: after,
                compacted,
            });
        }
        let start = to_etcd_revision(after.saturating_add(1))?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_prev_key();
        // A watch response can batch up to 1000 revisions, each with its previous value: far
        // above the client's 4 MB default when a watcher replays history of large objects.
        let mut client = inner
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut stream = inner
            .call("watch", client.watch(prefix.as_str(), Some(options)))
            .await?
            .map_err(|e| backend("watch", e))?;
        // etcd answers a new watch with a "created" response; wait for it, so the watch is
        // registered when this returns and an immediate refusal is reported here.
        let first = inner
            .call("watch", stream.message())
            .await?
            .map_err(|e| backend("watch", e))?
            .ok_or_else(|| StoreError::Backend("etcd closed the watch stream at once".into()))?;
        let mut state = WatchState {
            inner: inner.clone(),
            scope: scope.clone(),
            after,
            stream,
            pending: VecDeque::new(),
            done: false,
        };
        state.absorb(first);
        if matches!(state.pending.front(), Some(Err(_)))
            && let Some(Err(e)) = state.pending.pop_front()
        {
            return Err(e);
        }
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn current_revision(&self) -> Result<Revision> {
        let inner = &self.inner;
        let mut kv = inner.kv();
        let resp = inner
            .call(
                "get",
                kv.get(
                    inner.compact_key(),
                    Some(GetOptions::new().with_count_only()),
                ),
            )
            .await?
            .map_err(|e| backend("get", e))?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = &self.inner;
        let target = to_etcd_revision(revision)?;
        if target == 0 {
            return Ok(());
        }
        let mut kv = inner.kv();
        let result = inner
            .call(
                "compact",
                kv.compact(target, Some(CompactionOptions::new().with_physical())),
            )
            .await?;
        match result {
            Ok(_) => {}
            // Another process (or an earlier try of ours) compacted at least this far.
            Err(e) if is_compacted(&e) => {}
            Err(e) if is_future_revision(&e) => {
                return Err(StoreError::Invalid(format!(
                    "cannot compact to revision {revision}: it is newer than the store's"
                )));
            }
            Err(e) => return Err(backend("compact", e)),
        }
        // Record it (only ever raising it) so every process sharing the prefix agrees.
        let compact_key = inner.compact_key();
        for _ in 0..MAX_RETRIES {
            let current = inner.read(&compact_key).await?;
            let (recorded, guard) = match &current {
                None => (
                    0,
                    Compare::create_revision(compact_key.as_str(), CompareOp::Equal, 0),
                ),
                Some(kv) => (
                    std::str::from_utf8(kv.value())
                        .ok()
                        .and_then(|t| t.trim().parse::<Revision>().ok())
                        .unwrap_or(0),
                    Compare::mod_revision(
                        compact_key.as_str(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    ),
                ),
            };
            if recorded >= revision {
                return Ok(());
            }
            let txn = Txn::new().when([guard]).and_then([TxnOp::put(
                compact_key.as_str(),
                revision.to_string(),
                None,
            )]);
            let mut kv = inner.kv();
            let resp = inner
                .call("compact", kv.txn(txn))
                .await?
                .map_err(|e| backend("compact", e))?;
            if resp.succeeded() {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "etcd compact: could not record {compact_key}"
        )))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        self.inner.recorded_compaction().await
    }
}

/// The state behind one watch stream: the etcd stream and events decoded but not yet taken.
struct WatchState {
    inner: Arc<Inner>,
    scope: Scope,
    after: Revision,
    stream: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    self.done = true;
                    self.pending.clear();
                }
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => self.fail(StoreError::Backend(format!(
                    "etcd at {} closed the watch stream",
                    self.inner.endpoints.join(",")
                ))),
                Err(e) => self.fail(StoreError::Backend(format!(
                    "etcd watch at {} failed: {e}",
                    self.inner.endpoints.join(",")
                ))),
            }
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
    }

    /// Turns one etcd watch response into events (or the error that ends the stream).
    fn absorb(&mut self, resp: etcd_client::WatchResponse) {
        if resp.compact_revision() > 0 {
            // The watch started (or fell) behind etcd's compacted history.
            self.fail(StoreError::Expired {
                requested: self.after,
                compacted: Revision::try_from(resp.compact_revision()).unwrap_or_default(),
            });
            return;
        }
        for event in resp.events() {
            let item = self.convert(event);
            let stop = item.is_err();
            if let Ok(Some(ev)) = &item {
                self.after = self.after.max(ev.revision);
            }
            match item {
                Ok(Some(ev)) => self.pending.push_back(Ok(ev)),
                Ok(None) => {}
                Err(e) => self.pending.push_back(Err(e)),
            }
            if stop {
                return;
            }
        }
        if resp.canceled() {
            let reason = resp.cancel_reason();
            self.fail(StoreError::Backend(format!(
                "etcd canceled the watch{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )));
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Option<WatchEvent>> {
        let inner = &self.inner;
        let kv = event
            .kv()
            .ok_or_else(|| StoreError::Backend("etcd watch event without a key".into()))?;
        let key = inner.parse_key(&self.scope.resource, kv.key())?;
        if !self.scope.contains(&key) {
            return Ok(None);
        }
        let revision = to_revision(kv.mod_revision())?;
        let (kind, object, prev_object) = match event.event_type() {
            EtcdEventType::Put => {
                let object = inner.decode(&key, kv.value(), revision)?;
                if kv.create_revision() == kv.mod_revision() {
                    (EventType::Added, object, None)
                } else {
                    let prev = match event.prev_kv() {
                        Some(prev) => Some(inner.decode(
                            &key,
                            prev.value(),
                            to_revision(prev.mod_revision())?,
                        )?),
                        None => None,
                    };
                    (EventType::Modified, object, prev)
                }
            }
            EtcdEventType::Delete => {
                let prev = event.prev_kv().ok_or_else(|| {
                    StoreError::Backend(format!(
                        "etcd reported the deletion of {key} without its previous value"
                    ))
                })?;
                (
                    EventType::Deleted,
                    inner.decode(&key, prev.value(), revision)?,
                    None,
                )
            }
        };
        Ok(Some(WatchEvent::new(
            kind,
            key,
            revision,
            object,
            prev_object,
        )))
    }
}

impl EtcdStore {
    /// A raw etcd client on the same connection (for tools and tests that need etcd itself).
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_datastore_urls() {
        assert_eq!(
            parse_etcd_url("etcd://127.0.0.1:2379").unwrap(),
            vec!["http://127.0.0.1:2379"]
        );
        assert_eq!(
            parse_etcd_url("etcd://a:1,b.example:2,[::1]:3").unwrap(),
            vec!["http://a:1", "http://b.example:2", "http://[::1]:3"]
        );
        for (bad, part) in [
            ("etcd://a:1,b", "\"b\""),
            ("etcd://a:1,:2", "\":2\""),
            ("etcd://a:x", "\"a:x\""),
            ("etcd://a:0", "\"a:0\""),
            ("etcd://a:1,,b:2", "\"\""),
            ("etcd://[zz]:2", "\"[zz]:2\""),
        ] {
            let err = parse_etcd_url(bad).unwrap_err().to_string();
            assert!(err.contains(part), "{bad}: {err}");
        }
        assert!(
            parse_etcd_url("sqlite:///x")
                .unwrap_err()
                .to_string()
                .contains("etcd://HOST:PORT")
        );
        assert!(parse_etcd_url("etcd://").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("/registry/").unwrap(), "/registry");
        assert_eq!(normalize_prefix("/a/b").unwrap(), "/a/b");
        assert!(normalize_prefix("").is_err());
        assert!(normalize_prefix("/").is_err());
        assert!(normalize_prefix("registry").is_err());
    }
}
