//! Cluster DNS: the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0),
//! forwarding and a cache for every other name.
//!
//! Data flow: `watch` (kube-runtime watchers) → `model` (objects cut down to what DNS needs)
//! → `index` (per-source `records`, counted per name, updated per change) → `snapshot` (every
//! record pre-encoded, in copy-on-write shards, swapped with `ArcSwap`) →
//! `answer` (pure: question → records, rcode, SOA) → `wire` (our own encoder/decoder for the
//! hot path) → `server` (UDP with SO_REUSEPORT, TCP). Names outside the cluster go to
//! `forward` (upstreams + cache, hickory-proto messages). `metrics` renders Prometheus text.
//!
//! hickory-server is not used: its request handler builds a `Message` per query and a task per
//! request, which costs more than the whole lookup here; see `server` and `wire`.

pub mod answer;
#[doc(hidden)]
pub mod fixtures;
pub mod forward;
pub mod index;
pub mod metrics;
pub mod model;
pub mod names;
mod records;
mod server;
pub mod snapshot;
mod watch;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

pub use forward::ForwardConfig;
pub use index::Index;
pub use metrics::Metrics;
pub use model::Model;
pub use snapshot::{PodRecords, Snapshot, ZoneSettings};

/// The default record TTL (`--dns-ttl`).
pub const DEFAULT_TTL: u32 = 5;
/// The largest accepted record TTL.
pub const MAX_TTL: u32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS configuration: {0}")]
    Config(String),
    #[error("cannot listen for DNS on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// What the DNS server needs to know.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The cluster domain (`--cluster-domain`), e.g. `cluster.local`.
    pub zone: String,
    /// Record TTL in seconds, 0–3600 (`--dns-ttl`); also the negative-caching TTL.
    pub ttl: u32,
    /// Where to serve, UDP and TCP each (port 0: a free port, the same for both; see
    /// [`DnsServer::local_addrs`]).
    pub listen: Vec<SocketAddr>,
    /// Pod records (`--pods`).
    pub pods: PodRecords,
    /// UDP sockets per listen address (SO_REUSEPORT); 0: one per core.
    pub udp_sockets: usize,
    /// Longest wait from a change to the rebuild that includes it (changes within it are
    /// folded into one rebuild).
    pub debounce: Duration,
    /// Upstreams (`--dns-upstream`; default the host's resolv.conf), timeouts and cache.
    pub forward: ForwardConfig,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            zone: "cluster.local".into(),
            ttl: DEFAULT_TTL,
            listen: Vec::new(),
            pods: PodRecords::default(),
            udp_sockets: 0,
            debounce: Duration::from_millis(10),
            forward: ForwardConfig {
                upstreams: forward::system_upstreams(),
                ..ForwardConfig::default()
            },
        }
    }
}

/// Tells when the first full sync happened (every watch listed): until then, cluster names are
/// answered SERVFAIL.
#[derive(Debug, Clone)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once synced (at once if already). Never resolves if the server stopped first.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A bound DNS server: sockets open (so the caller can learn the ports), not yet serving.
#[derive(Debug)]
pub struct DnsServer {
    handler: Arc<server::Handler>,
    bound: server::Bound,
    addrs: Vec<SocketAddr>,
    settings: ZoneSettings,
    debounce: Duration,
    synced_tx: tokio::sync::watch::Sender<bool>,
}

impl DnsServer {
    /// Validates `config` and binds every listen address (UDP and TCP).
    pub async fn bind(config: DnsConfig) -> Result<DnsServer, DnsError> {
        let settings = ZoneSettings::new(&config.zone, config.ttl, config.pods)?;
        if config.listen.is_empty() {
            return Err(DnsError::Config("no listen address".into()));
        }
        let per_addr = match config.udp_sockets {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let bound = server::bind(&config.listen, per_addr)?;
        let addrs = bound.addrs.clone();
        let mut forward = config.forward;
        // Never forward to ourselves (a resolv.conf pointing at the address we serve on).
        forward.upstreams.retain(|u| !addrs.contains(u));
        let metrics = Arc::new(Metrics::default());
        let handler = Arc::new(server::Handler {
            zone: settings.zone.clone(),
            snapshot: Arc::new(ArcSwapOption::empty()),
            forwarder: Arc::new(forward::Forwarder::new(forward, metrics.clone())),
            metrics,
        });
        let (synced_tx, _) = tokio::sync::watch::channel(false);
        Ok(DnsServer {
            handler,
            bound,
            addrs,
            settings,
            debounce: config.debounce,
            synced_tx,
        })
    }

    /// The bound addresses, one per listen address, in order (UDP and TCP on the same port).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The server's counters (render with [`Metrics::render`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.handler.metrics.clone()
    }

    /// When the first full sync happened.
    pub fn synced(&self) -> Synced {
        Synced(self.synced_tx.subscribe())
    }

    /// The zone settings snapshots are built with.
    pub fn settings(&self) -> &ZoneSettings {
        &self.settings
    }

    /// Serves `model` (built now) instead of a watch: tests, benchmarks, or a caller with its
    /// own source of objects. Marks the server synced.
    pub fn install(&self, model: &Model) {
        self.install_snapshot(Snapshot::build(&self.settings, model));
    }

    /// Serves `snap` (built by the caller, e.g. from its own [`Index`]); marks the server synced.
    pub fn install_snapshot(&self, snap: Snapshot) {
        self.handler
            .metrics
            .snapshot_names
            .store(snap.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.handler.snapshot.store(Some(Arc::new(snap)));
        self.synced_tx.send_replace(true);
    }

    /// Serves, with records from the API through `client`, until `shutdown` resolves.
    pub async fn run(
        self,
        client: kube::Client,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DnsError> {
        let tasks = server::spawn(self.bound, self.handler.clone());
        let watching = watch::watch(
            client,
            self.settings,
            self.debounce,
            self.handler.snapshot.clone(),
            self.handler.metrics.clone(),
            self.synced_tx,
        );
        tokio::select! {
            () = shutdown => {}
            () = watching => tracing::warn!("DNS watches ended"),
        }
        drop(tasks);
        Ok(())
    }

    /// Serves only what [`DnsServer::install`] put in, until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
        let tasks = server::spawn(self.bound, self.handler.clone());
        shutdown.await;
        drop(tasks);
        Ok(())
    }

    /// A handle to install snapshots while [`DnsServer::serve`] runs (tests: change records
    /// under a live server).
    pub fn installer(&self) -> Installer {
        Installer {
            handler: self.handler.clone(),
            settings: self.settings.clone(),
            synced: self.synced_tx.clone(),
        }
    }
}

/// See [`DnsServer::installer`].
#[derive(Debug, Clone)]
pub struct Installer {
    handler: Arc<server::Handler>,
    settings: ZoneSettings,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Installer {
    pub fn install(&self, model: &Model) {
        self.handler
            .snapshot
            .store(Some(Arc::new(Snapshot::build(&self.settings, model))));
        self.synced.send_replace(true);
    }
}

/// Binds `config.listen` and serves the cluster zone from the API through `client` until
/// `shutdown`. To learn the bound ports or the first sync, use [`DnsServer`] instead.
pub async fn run(
    client: kube::Client,
    config: DnsConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DnsError> {
    DnsServer::bind(config).await?.run(client, shutdown).await
}

/// Answers one raw query from a snapshot without any I/O: the whole synchronous path of the
/// server (parse, lookup, encode, truncation at the UDP limit). `false` when the packet gets no
/// answer from cluster data (dropped, or it needs an upstream). For benchmarks and fuzzing.
pub fn respond(snapshot: &Snapshot, packet: &[u8], out: &mut Vec<u8>) -> bool {
    matches!(
        server::respond_fast(
            &snapshot.settings.zone,
            Some(snapshot),
            packet,
            server::Transport::Udp,
            out
        ),
        server::Step::Reply { .. }
    )
}
