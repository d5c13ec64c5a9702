//! Names outside the cluster: sent to the upstream servers (UDP, TCP when the answer comes back
//! truncated), answers kept in a bounded cache (positive and negative, TTLs capped), and a
//! fast SERVFAIL when the upstreams are down: every exchange has a deadline, and an upstream
//! that keeps failing is skipped for a while instead of being waited on by every query.
//!
//! Identical questions asked while one is already on its way upstream wait for that answer
//! instead of asking again, so a burst (every pod resolving the same name at once) costs one
//! upstream query. The cache evicts the entry that expires soonest when full.
//!
//! This is the slow path, so it uses hickory-proto's `Message` for decoding and encoding.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::metrics::Metrics;
use crate::wire::MAX_UDP_PAYLOAD;

/// Consecutive failures after which an upstream is skipped for [`ForwardConfig::down_for`].
const FAILURES_BEFORE_DOWN: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream DNS server configured")]
    NoUpstreams,
    #[error("every upstream DNS server is down")]
    AllDown,
    #[error("upstream {0} timed out")]
    Timeout(SocketAddr),
    #[error("upstream {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("upstream {0} sent an undecodable answer: {1}")]
    Decode(SocketAddr, String),
    #[error("cannot encode the query: {0}")]
    Encode(String),
    #[error("the same question, asked upstream for another client, failed: {0}")]
    Shared(String),
}

/// Forwarding settings.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    pub upstreams: Vec<SocketAddr>,
    /// Deadline of one exchange with one upstream (UDP, and TCP again if truncated).
    pub timeout: Duration,
    /// How long an upstream that failed [`FAILURES_BEFORE_DOWN`] times in a row is skipped.
    pub down_for: Duration,
    /// Most cached answers.
    pub cache_entries: usize,
    /// Cap on the TTL of cached positive answers, in seconds.
    pub max_positive_ttl: u32,
    /// Cap on the TTL of cached negative answers (NXDOMAIN, NODATA), in seconds.
    pub max_negative_ttl: u32,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            upstreams: Vec::new(),
            timeout: Duration::from_millis(1500),
            down_for: Duration::from_secs(2),
            cache_entries: 10_000,
            max_positive_ttl: 300,
            max_negative_ttl: 30,
        }
    }
}

/// The `nameserver` lines of a resolv.conf, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A link-local IPv6 server may carry a zone (`fe80::1%eth0`); std cannot parse those.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The host's upstreams: `/etc/resolv.conf` (empty when unreadable).
pub fn system_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| parse_resolv_conf(&t))
        .unwrap_or_default()
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    failures: AtomicU32,
    /// Milliseconds since the forwarder's epoch until which this upstream is skipped.
    down_until_ms: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    dnssec_ok: bool,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    message: Arc<Message>,
    stored: Instant,
    expires: Instant,
    /// Its place in [`CacheShard::by_expiry`].
    order: (Instant, u64),
}

/// One shard of the cache. Eviction takes the entry expiring soonest: expired entries go first
/// by construction, among live ones it has the least life left to serve, and unlike LRU a hit
/// changes nothing, so lookups only read (a shared lock).
#[derive(Debug, Default)]
struct CacheShard {
    entries: HashMap<CacheKey, CacheEntry>,
    /// (expiry, insertion number) → key.
    by_expiry: BTreeMap<(Instant, u64), CacheKey>,
    inserted: u64,
}

impl CacheShard {
    fn insert(&mut self, key: CacheKey, mut entry: CacheEntry, capacity: usize) {
        if let Some(old) = self.entries.remove(&key) {
            self.by_expiry.remove(&old.order);
        }
        while self.entries.len() >= capacity.max(1) {
            let Some((_, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
        self.inserted += 1;
        entry.order = (entry.expires, self.inserted);
        self.by_expiry.insert(entry.order, key.clone());
        self.entries.insert(key, entry);
    }
}

/// What waiters on an upstream question get: the answer, or the error's text.
type SharedAnswer = Option<Result<Arc<Message>, String>>;

/// An upstream answer, from the cache or fresh.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub message: Arc<Message>,
    /// Seconds it spent in the cache: subtracted from every TTL when it is served.
    pub age: u32,
}

/// Upstream servers plus the cache.
#[derive(Debug)]
pub struct Forwarder {
    config: ForwardConfig,
    upstreams: Vec<Upstream>,
    epoch: Instant,
    shards: Vec<RwLock<CacheShard>>,
    /// Questions on their way upstream; later askers of the same question wait on these.
    in_flight: Mutex<HashMap<CacheKey, tokio::sync::watch::Receiver<SharedAnswer>>>,
    metrics: Arc<Metrics>,
}

/// Removes a question from [`Forwarder::in_flight`] however its asker ends (answered, failed or
/// cancelled); dropping the sender with it wakes waiters, who then ask themselves.
struct InFlight<'f> {
    forwarder: &'f Forwarder,
    key: CacheKey,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.forwarder.in_flight.lock() {
            map.remove(&self.key);
        }
    }
}

const SHARDS: usize = 16;

impl Forwarder {
    pub fn new(config: ForwardConfig, metrics: Arc<Metrics>) -> Forwarder {
        let upstreams = config
            .upstreams
            .iter()
            .map(|&addr| Upstream {
                addr,
                failures: AtomicU32::new(0),
                down_until_ms: AtomicU64::new(0),
            })
            .collect();
        Forwarder {
            config,
            upstreams,
            epoch: Instant::now(),
            shards: (0..SHARDS)
                .map(|_| RwLock::new(CacheShard::default()))
                .collect(),
            in_flight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    fn shard(&self, key: &CacheKey) -> &RwLock<CacheShard> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// The answer for one question: the cache, else the upstreams in order.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
    ) -> Result<Resolved, ForwardError> {
        let key = CacheKey {
            name: name.to_lowercase(),
            qtype,
            qclass,
            dnssec_ok,
        };
        let now = Instant::now();
        if let Some(hit) = self.lookup(&key, now) {
            self.metrics.cache_hits.inc();
            return Ok(hit);
        }
        self.metrics.cache_misses.inc();
        // Ask upstream, unless the same question is already on its way: then wait for that
        // answer. A waiter whose asker went away (cancelled) asks itself.
        let waiting = {
            let Ok(mut map) = self.in_flight.lock() else {
                return Err(ForwardError::Shared("in-flight table poisoned".into()));
            };
            match map.get(&key) {
                Some(rx) => Err(rx.clone()),
                // Answered and cached between the lookup above and this lock.
                None if let Some(hit) = self.lookup(&key, now) => return Ok(hit),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    map.insert(key.clone(), rx);
                    Ok(tx)
                }
            }
        };
        let tx = match waiting {
            Ok(tx) => tx,
            Err(mut rx) => {
                self.metrics.upstream_merged.inc();
                if let Ok(shared) = rx.wait_for(Option::is_some).await {
                    return match shared.clone() {
                        Some(Ok(message)) => Ok(Resolved { message, age: 0 }),
                        Some(Err(e)) => Err(ForwardError::Shared(e)),
                        None => Err(ForwardError::Shared("no answer".into())),
                    };
                }
                let message = Arc::new(self.ask_upstreams(name, qtype, qclass, dnssec_ok).await?);
                return Ok(Resolved { message, age: 0 });
            }
        };
        let guard = InFlight {
            forwarder: self,
            key: key.clone(),
        };
        let result = self.ask_upstreams(name, qtype, qclass, dnssec_ok).await;
        let result = result.map(Arc::new);
        if let Ok(message) = &result
            && let Some(ttl) = self.cache_ttl(message)
        {
            // Cached before the question leaves the in-flight table, so no asker in between
            // goes upstream again.
            self.insert(
                key,
                CacheEntry {
                    message: message.clone(),
                    stored: now,
                    expires: now + ttl,
                    order: (now, 0),
                },
            );
        }
        tx.send_replace(Some(
            result.as_ref().map(Arc::clone).map_err(ToString::to_string),
        ));
        drop(guard);
        Ok(Resolved {
            message: result?,
            age: 0,
        })
    }

    fn lookup(&self, key: &CacheKey, now: Instant) -> Option<Resolved> {
        let shard = self.shard(key).read().ok()?;
        let e = shard.entries.get(key).filter(|e| e.expires > now)?;
        Some(Resolved {
            message: e.message.clone(),
            age: now.duration_since(e.stored).as_secs() as u32,
        })
    }

    /// How long an answer may be cached (RFC 2308 §5 for negative ones; no SOA, no caching).
    fn cache_ttl(&self, m: &Message) -> Option<Duration> {
        let rcode = m.metadata.response_code;
        let secs = if rcode == ResponseCode::NoError && !m.answers.is_empty() {
            m.answers
                .iter()
                .map(|r| r.ttl)
                .min()?
                .min(self.config.max_positive_ttl)
        } else if rcode == ResponseCode::NoError || rcode == ResponseCode::NXDomain {
            let soa = m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?;
            soa.min(self.config.max_negative_ttl)
        } else {
            return None;
        };
        (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
    }

    fn insert(&self, key: CacheKey, entry: CacheEntry) {
        let per_shard = (self.config.cache_entries / SHARDS).max(1);
        if let Ok(mut shard) = self.shard(&key).write() {
            shard.insert(key, entry, per_shard);
        }
    }

    /// How many answers are cached.
    pub fn cached(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|s| s.entries.len()).unwrap_or(0))
            .sum()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn ask_upstreams(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
    ) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        let mut q = Query::query(name.clone(), qtype);
        q.set_query_class(qclass);
        query.add_query(q);
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns.set_dnssec_ok(dnssec_ok);
        query.set_edns(edns);
        let bytes = query
            .to_vec()
            .map_err(|e| ForwardError::Encode(e.to_string()))?;

        let now = self.now_ms();
        let mut last = ForwardError::AllDown;
        for up in &self.upstreams {
            if up.down_until_ms.load(Ordering::Relaxed) > now {
                continue;
            }
            match self.exchange(up.addr, &bytes, &query).await {
                Ok(m) => {
                    up.failures.store(0, Ordering::Relaxed);
                    return Ok(m);
                }
                Err(e) => {
                    self.metrics.upstream_errors.inc();
                    tracing::debug!(upstream = %up.addr, error = %e, "upstream failed");
                    if up.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FAILURES_BEFORE_DOWN {
                        up.down_until_ms.store(
                            self.now_ms() + self.config.down_for.as_millis() as u64,
                            Ordering::Relaxed,
                        );
                        up.failures.store(0, Ordering::Relaxed);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn exchange(
        &self,
        up: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> Result<Message, ForwardError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let udp = tokio::time::timeout_at(deadline, udp_exchange(up, bytes, query))
            .await
            .map_err(|_| ForwardError::Timeout(up))??;
        if !udp.metadata.truncation {
            return Ok(udp);
        }
        tokio::time::timeout_at(deadline, tcp_exchange(up, bytes, query))
            .await
            .map_err(|_| ForwardError::Timeout(up))?
    }
}

fn matches(query: &Message, resp: &Message) -> bool {
    resp.metadata.id == query.metadata.id
        && match (query.queries.first(), resp.queries.first()) {
            (Some(q), Some(r)) => q.name().eq_case(r.name()) || q.name() == r.name(),
            _ => false,
        }
}

async fn udp_exchange(
    up: SocketAddr,
    bytes: &[u8],
    query: &Message,
) -> Result<Message, ForwardError> {
    let io = |e| ForwardError::Io(up, e);
    let bind: SocketAddr = if up.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    // A fresh socket (random source port) per query, connected so ICMP errors surface as
    // ECONNREFUSED at once instead of as a timeout.
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(up).await.map_err(io)?;
    sock.send(bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await.map_err(io)?;
        // Anything that does not answer our query (a late or forged datagram) is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n])
            && matches(query, &m)
        {
            return Ok(m);
        }
    }
}

async fn tcp_exchange(
    up: SocketAddr,
    bytes: &[u8],
    query: &Message,
) -> Result<Message, ForwardError> {
    let io = |e| ForwardError::Io(up, e);
    let mut stream = TcpStream::connect(up).await.map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    stream.write_all(&out).await.map_err(io)?;
    loop {
        let len = stream.read_u16().await.map_err(io)?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.map_err(io)?;
        let m = Message::from_vec(&buf).map_err(|e| ForwardError::Decode(up, e.to_string()))?;
        if matches(query, &m) {
            return Ok(m);
        }
    }
}

/// The client's response built from an upstream answer: the client's id, flags and question,
/// the upstream's records with TTLs aged by the time spent in the cache, our OPT if the client
/// sent one; truncated (TC, no records) when over `udp_limit`.
pub fn client_response(
    request: &Message,
    upstream: &Resolved,
    prefix: &[Record],
    rcode_from_upstream: bool,
    udp_limit: Option<usize>,
) -> Result<Vec<u8>, ForwardError> {
    let up = &upstream.message;
    let mut m = Message::response(request.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.checking_disabled = request.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.metadata.authoritative = !prefix.is_empty();
    m.metadata.response_code = if rcode_from_upstream {
        up.metadata.response_code
    } else {
        ResponseCode::NoError
    };
    m.queries = request.queries.clone();
    let age = |r: &Record| {
        let mut r = r.clone();
        r.ttl = r.ttl.saturating_sub(upstream.age);
        r
    };
    m.answers = prefix
        .iter()
        .cloned()
        .chain(up.answers.iter().map(age))
        .collect();
    m.authorities = up.authorities.iter().map(age).collect();
    m.additionals = up.additionals.iter().map(age).collect();
    finish(m, request, udp_limit)
}

/// Adds the OPT (if the client sent one) and encodes, truncating for UDP.
pub fn finish(
    mut m: Message,
    request: &Message,
    udp_limit: Option<usize>,
) -> Result<Vec<u8>, ForwardError> {
    if let Some(e) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        edns.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(edns);
    } else {
        m.edns = None;
    }
    let bytes = m
        .to_vec()
        .map_err(|e| ForwardError::Encode(e.to_string()))?;
    match udp_limit {
        Some(limit) if bytes.len() > limit => m
            .truncate()
            .to_vec()
            .map_err(|e| ForwardError::Encode(e.to_string())),
        _ => Ok(bytes),
    }
}

/// A SERVFAIL for `request` (upstreams down, nothing cached).
pub fn servfail(request: &Message) -> Result<Vec<u8>, ForwardError> {
    let mut m = Message::error_msg(request.metadata.id, OpCode::Query, ResponseCode::ServFail);
    m.metadata.recursion_desired = request.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = request.queries.clone();
    finish(m, request, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch a b\nnameserver 10.0.0.1\nnameserver fd00::53\nnameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse().expect("addr"),
                "[fd00::53]:53".parse().expect("addr")
            ]
        );
    }

    fn entry(expires_in: u64, now: Instant) -> CacheEntry {
        CacheEntry {
            message: Arc::new(Message::query()),
            stored: now,
            expires: now + Duration::from_secs(expires_in),
            order: (now, 0),
        }
    }

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: Name::from_ascii(name).expect("name"),
            qtype: RecordType::A,
            qclass: DNSClass::IN,
            dnssec_ok: false,
        }
    }

    #[test]
    fn a_full_cache_evicts_what_expires_soonest() {
        let now = Instant::now();
        let mut shard = CacheShard::default();
        shard.insert(key("a."), entry(10, now), 2);
        shard.insert(key("b."), entry(5, now), 2);
        // Replacing an entry is no eviction.
        shard.insert(key("a."), entry(30, now), 2);
        assert_eq!(shard.entries.len(), 2);
        shard.insert(key("c."), entry(20, now), 2);
        assert!(!shard.entries.contains_key(&key("b.")), "b expires first");
        assert!(shard.entries.contains_key(&key("a.")));
        assert!(shard.entries.contains_key(&key("c.")));
        shard.insert(key("d."), entry(1, now), 2);
        assert!(
            !shard.entries.contains_key(&key("c.")),
            "c (20 s) before a (30 s)"
        );
        assert_eq!(shard.entries.len(), 2);
        assert_eq!(
            shard.by_expiry.len(),
            2,
            "the expiry index follows the entries"
        );
    }

    /// An upstream on loopback that answers `A 192.0.2.1` (TTL 0: nothing cached) to every
    /// question, but only once `release` is notified; counts what it receives.
    async fn held_upstream() -> (SocketAddr, Arc<AtomicU32>, Arc<tokio::sync::Notify>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let count = Arc::new(AtomicU32::new(0));
        let release = Arc::new(tokio::sync::Notify::new());
        let (c, r) = (count.clone(), release.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    got = sock.recv_from(&mut buf) => {
                        let Ok((n, peer)) = got else { return };
                        c.fetch_add(1, Ordering::SeqCst);
                        held.push((buf[..n].to_vec(), peer));
                    }
                    () = r.notified() => {
                        for (q, peer) in held.drain(..) {
                            let Ok(q) = Message::from_vec(&q) else { continue };
                            let mut m = Message::response(q.metadata.id, OpCode::Query);
                            m.queries = q.queries.clone();
                            if let Some(qq) = q.queries.first() {
                                m.answers.push(Record::from_rdata(
                                    qq.name().clone(),
                                    0,
                                    RData::A(hickory_proto::rr::rdata::A::new(192, 0, 2, 1)),
                                ));
                            }
                            let _ = sock.send_to(&m.to_vec().expect("encode"), peer).await;
                        }
                    }
                }
            }
        });
        (addr, count, release)
    }

    fn forwarder(upstream: SocketAddr) -> Arc<Forwarder> {
        Arc::new(Forwarder::new(
            ForwardConfig {
                upstreams: vec![upstream],
                timeout: Duration::from_secs(30),
                ..ForwardConfig::default()
            },
            Arc::new(Metrics::default()),
        ))
    }

    #[tokio::test]
    async fn a_burst_of_one_question_makes_one_upstream_query() {
        let (addr, count, release) = held_upstream().await;
        let f = forwarder(addr);
        let name = Name::from_ascii("burst.example.").expect("name");
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (f, name) = (f.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                f.resolve(&name, RecordType::A, DNSClass::IN, false).await
            }));
        }
        // Every asker but the first is waiting on the first before the upstream answers.
        while f.metrics.upstream_merged.get() < 19 || count.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        for t in tasks {
            let r = t.await.expect("task").expect("answer");
            assert_eq!(r.message.answers.len(), 1);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "one upstream query");
        assert!(f.in_flight.lock().expect("lock").is_empty());
        // A different question (type) is not merged with it.
        let other = {
            let (f, name) = (f.clone(), name.clone());
            tokio::spawn(async move {
                f.resolve(&name, RecordType::AAAA, DNSClass::IN, false)
                    .await
            })
        };
        while count.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        other.await.expect("task").expect("answer");
    }

    #[tokio::test]
    async fn waiters_ask_themselves_when_the_first_asker_goes_away() {
        let (addr, count, release) = held_upstream().await;
        let f = forwarder(addr);
        let name = Name::from_ascii("cancel.example.").expect("name");
        let first = {
            let (f, name) = (f.clone(), name.clone());
            tokio::spawn(async move { f.resolve(&name, RecordType::A, DNSClass::IN, false).await })
        };
        while count.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let second = {
            let (f, name) = (f.clone(), name.clone());
            tokio::spawn(async move { f.resolve(&name, RecordType::A, DNSClass::IN, false).await })
        };
        while f.metrics.upstream_merged.get() < 1 {
            tokio::task::yield_now().await;
        }
        first.abort();
        let _ = first.await;
        while count.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        let r = second.await.expect("task").expect("answer");
        assert_eq!(r.message.answers.len(), 1);
    }
}
