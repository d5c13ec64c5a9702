//! The socket load balancer: loading and attaching `bpf/sock_lb.c`, and its maps, typed.
//!
//! # How a service is updated without ever being seen half-updated
//!
//! A service's frontend (`services` map) holds `{slot, set, count, flags, timeout}`. `slot` is
//! stable for the life of the frontend (it indexes the per-service counters and the affinity
//! table); `set` names the backend list, stored in `backends` under `{set, 0..count}`.
//! An update never edits a live list. It
//! 1. writes the new list under a fresh, unused `set` id (invisible: nothing points to it),
//!    and, for a service with affinity, `affinity_members` `{set, backend} → index`,
//! 2. replaces the `services` value in one map update, which the kernel publishes atomically
//!    (the map is not preallocated, so a program still holding the old value reads a consistent
//!    old copy until its RCU grace period ends),
//! 3. deletes the old set's entries.
//!
//! A program that read the old value just before step 2 and looks up a backend after step 3
//! misses; it then reads `services` again, which by then holds the new set (step 2 happened
//! before step 3). So every connect sees either the complete old list or the complete new one:
//! never zero backends, never a mix. If writing the new list fails (a full map), the partial
//! set is deleted and the old service is left as it was.
//!
//! Work per update is proportional to that service's backends; an unchanged service is a
//! no-op (the loader remembers what it programmed).
//!
//! # Affinity
//!
//! A client is a network namespace (connect() runs before a source address is chosen, and
//! every socket of a pod has the pod's address). `affinity` remembers `{netns, slot} →
//! {backend, set, index, last use}`; a connection within the timeout of the last one reuses the
//! backend, found by index in the same set or through `affinity_members` after an update, so a
//! client keeps its backend while that backend stays in the list (as kube-proxy's ClientIP).

use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Write as _},
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, MapType, PerCpuArray},
    programs::{
        CgroupAttachMode, CgroupSockAddr, cgroup_sock_addr::CgroupSockAddrLinkId, links::FdLink,
    },
    util::KernelVersion,
};

use crate::{
    EbpfError,
    abi::{self, SvcVal},
    cgroup_v2_root,
    pins::{self, MapShape},
    sets::{self, BackendSets, Slots, is_not_found},
};

/// The compiled object, embedded so the binary carries its own programs.
static SOCK_LB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock_lb.o"));

/// The programs in `sock_lb.c`, by function name.
const PROGRAMS: [&str; 8] = [
    "skiff_connect4",
    "skiff_connect6",
    "skiff_sendmsg4",
    "skiff_sendmsg6",
    "skiff_recvmsg4",
    "skiff_recvmsg6",
    "skiff_getpeername4",
    "skiff_getpeername6",
];

/// The maps in `sock_lb.c` with the shapes `options` gives them (checked before pins are
/// reused).
fn map_shapes(options: &SockLbOptions) -> [MapShape; 7] {
    use std::mem::size_of;
    let shape = |name, map_type, key_size, value_size, max_entries| MapShape {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        shape("allowed_netns", MapType::Hash, 8, 1, options.max_netns),
        shape(
            "services",
            MapType::Hash,
            size_of::<abi::SvcKey>(),
            size_of::<abi::SvcValue>(),
            options.max_services,
        ),
        shape(
            "backends",
            MapType::Hash,
            size_of::<abi::BackendKey>(),
            size_of::<abi::BackendValue>(),
            options.max_backends,
        ),
        shape(
            "affinity",
            MapType::LruHash,
            size_of::<abi::AffinityKey>(),
            size_of::<abi::AffinityValue>(),
            options.max_affinity,
        ),
        shape(
            "affinity_members",
            MapType::Hash,
            size_of::<abi::MemberKey>(),
            4,
            options.max_affinity_backends,
        ),
        shape(
            "rev_nat",
            MapType::LruHash,
            size_of::<abi::RevNatKey>(),
            size_of::<abi::RevNatValue>(),
            options.max_rev_nat,
        ),
        shape(
            "counters",
            MapType::PerCpuArray,
            4,
            size_of::<abi::Counters>(),
            options.max_services,
        ),
    ]
}

/// Transport protocol of a virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (connect).
    Tcp,
    /// UDP (connect and unconnected sendmsg).
    Udp,
}

impl Protocol {
    pub(crate) fn number(self) -> u8 {
        match self {
            Protocol::Tcp => abi::IPPROTO_TCP,
            Protocol::Udp => abi::IPPROTO_UDP,
        }
    }

    pub(crate) fn from_number(n: u8) -> Option<Self> {
        match n {
            abi::IPPROTO_TCP => Some(Protocol::Tcp),
            abi::IPPROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A virtual address: what a client connects to and the programs translate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    /// Address and port (IPv4 or IPv6).
    pub addr: SocketAddr,
    /// Protocol.
    pub proto: Protocol,
}

impl Vip {
    /// A TCP virtual address.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            addr,
            proto: Protocol::Tcp,
        }
    }

    /// A UDP virtual address.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            addr,
            proto: Protocol::Udp,
        }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, self.addr)
    }
}

/// A backend's real address, what a virtual address is translated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr(pub SocketAddr);

impl From<SocketAddr> for BackendAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr)
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Per-service behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceOptions {
    /// Client affinity: every connection from one network namespace goes to the same backend
    /// while it keeps connecting at least this often (rounded up to whole seconds). `None` =
    /// a random backend per connection.
    pub affinity_timeout: Option<Duration>,
}

/// A service's stable slot: index of its counters, unchanged by backend updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceSlot(pub u32);

impl fmt::Display for ServiceSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Counters of one service slot, summed over CPUs, since the slot was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotCounters {
    /// connect() calls translated to a backend (TCP, and UDP sockets that connect).
    pub connects: u64,
    /// Unconnected UDP datagrams (sendto/sendmsg) translated.
    pub datagrams: u64,
    /// connect()/sendmsg() calls refused because the service had no backend.
    pub rejected: u64,
}

/// Map sizes and pinning.
#[derive(Debug, Clone)]
pub struct SockLbOptions {
    /// Frontends (virtual address + port + protocol); also the number of counter slots.
    pub max_services: u32,
    /// Backend entries over all services, plus room for one service's update in flight.
    pub max_backends: u32,
    /// Affinity entries (LRU: the least recently used client is forgotten first).
    pub max_affinity: u32,
    /// Backends of services with affinity, over all such services (an index by address that
    /// lets a client keep its backend when the list changes around it).
    pub max_affinity_backends: u32,
    /// Reverse translations (LRU) for recvmsg/getpeername, one per translated socket and
    /// backend. An evicted entry makes getpeername/recvfrom show the backend address.
    pub max_rev_nat: u32,
    /// Allowed network namespaces.
    pub max_netns: u32,
    /// Pin the maps under this directory (e.g. `/sys/fs/bpf/skiff/<instance>`) and reuse
    /// them when they already exist, so a restart keeps services, affinity and the reverse
    /// translations of established connections. `None`: maps die with this process.
    pub pin_dir: Option<PathBuf>,
}

impl Default for SockLbOptions {
    fn default() -> Self {
        Self {
            max_services: 65_536,
            max_backends: 262_144,
            max_affinity: 65_536,
            max_affinity_backends: 65_536,
            max_rev_nat: 262_144,
            max_netns: 1024,
            pin_dir: None,
        }
    }
}

/// What the loader last programmed for one frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    slot: u32,
    set: u32,
    backends: Vec<BackendAddr>,
    options: ServiceOptions,
}

/// The loaded socket load balancer. Dropping it detaches the programs and, unless the maps
/// are pinned, frees the maps.
pub struct SockLb {
    // Owns the programs and their links: aya detaches every link when this drops.
    bpf: Ebpf,
    allowed_netns: BpfHashMap<MapData, u64, u8>,
    services: BpfHashMap<MapData, abi::SvcKey, abi::SvcValue>,
    backends: BackendSets,
    affinity: BpfHashMap<MapData, abi::AffinityKey, abi::AffinityValue>,
    affinity_members: BpfHashMap<MapData, abi::MemberKey, u32>,
    rev_nat: BpfHashMap<MapData, abi::RevNatKey, abi::RevNatValue>,
    counters: PerCpuArray<MapData, abi::Counters>,
    programmed: HashMap<Vip, Programmed>,
    slots: Slots,
    attached: Option<(PathBuf, Vec<(&'static str, CgroupSockAddrLinkId)>)>,
}

impl fmt::Debug for SockLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SockLb")
            .field("services", &self.programmed.len())
            .field("attached", &self.attached.as_ref().map(|(p, _)| p))
            .finish_non_exhaustive()
    }
}

fn take_map(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    bpf.take_map(name).ok_or(EbpfError::Missing(name))
}

impl SockLb {
    /// Loads the programs into the kernel and creates (or, with `pin_dir`, reuses) the maps.
    /// Nothing acts on sockets until [`SockLb::attach`].
    pub fn load(options: SockLbOptions) -> Result<Self, EbpfError> {
        let started = Instant::now();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("allowed_netns", options.max_netns)
            .map_max_entries("services", options.max_services)
            .map_max_entries("backends", options.max_backends)
            .map_max_entries("affinity", options.max_affinity)
            .map_max_entries("affinity_members", options.max_affinity_backends)
            .map_max_entries("rev_nat", options.max_rev_nat)
            .map_max_entries("counters", options.max_services);
        // bpf_set_retval (5.18+) turns a refused connect's EPERM into ECONNREFUSED; older
        // kernels never verify the call (see sock_lb.c), so the programs load everywhere.
        let have_set_retval =
            u8::from(KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 18, 0)));
        loader.override_global("have_set_retval", &have_set_retval, true);
        let pin_paths = match &options.pin_dir {
            Some(dir) => pins::prepare(dir, &map_shapes(&options))?,
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .load(SOCK_LB_OBJECT)
            .map_err(|e| EbpfError::Load(Box::new(e)))?;
        for name in PROGRAMS {
            let program: &mut CgroupSockAddr = bpf
                .program_mut(name)
                .ok_or(EbpfError::Missing(name))?
                .try_into()
                .map_err(|e| EbpfError::program(name, e))?;
            program.load().map_err(|e| EbpfError::program(name, e))?;
        }
        let map_err = |name: &'static str| move |e| EbpfError::map(name, e);
        let allowed_netns = BpfHashMap::try_from(take_map(&mut bpf, "allowed_netns")?)
            .map_err(map_err("allowed_netns"))?;
        let services =
            BpfHashMap::try_from(take_map(&mut bpf, "services")?).map_err(map_err("services"))?;
        let backends = BackendSets::new(
            BpfHashMap::try_from(take_map(&mut bpf, "backends")?).map_err(map_err("backends"))?,
            "backends",
        );
        let affinity =
            BpfHashMap::try_from(take_map(&mut bpf, "affinity")?).map_err(map_err("affinity"))?;
        let affinity_members = BpfHashMap::try_from(take_map(&mut bpf, "affinity_members")?)
            .map_err(map_err("affinity_members"))?;
        let rev_nat =
            BpfHashMap::try_from(take_map(&mut bpf, "rev_nat")?).map_err(map_err("rev_nat"))?;
        let counters =
            PerCpuArray::try_from(take_map(&mut bpf, "counters")?).map_err(map_err("counters"))?;
        let mut lb = SockLb {
            bpf,
            allowed_netns,
            services,
            backends,
            affinity,
            affinity_members,
            rev_nat,
            counters,
            programmed: HashMap::new(),
            slots: Slots::new(options.max_services),
            attached: None,
        };
        // Pinned maps may hold a previous run's services: adopt them, so updates stay
        // incremental and slots/sets are not handed out twice.
        lb.adopt_existing()?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            services = lb.programmed.len(),
            pinned = options.pin_dir.is_some(),
            "socket load balancer loaded"
        );
        Ok(lb)
    }

    /// Rebuilds `programmed` from the maps, and deletes backend sets nothing points to (a
    /// previous process died between steps 1 and 3 of an update).
    fn adopt_existing(&mut self) -> Result<(), EbpfError> {
        let mut entries = Vec::new();
        for item in self.services.iter() {
            entries.push(item.map_err(|e| EbpfError::map("services", e))?);
        }
        let mut used_slots = HashSet::new();
        for (key, value) in entries {
            let (ip, port, proto) = abi::parse_svc_key(&key);
            let v = SvcVal::decode(&value);
            let backends = match Protocol::from_number(proto) {
                Some(_) if v.slot < self.slots.max() => self.backends.read(v.set, v.count)?,
                _ => None,
            };
            let (Some(proto), Some(backends)) = (Protocol::from_number(proto), backends) else {
                // Never written by this crate's update protocol: drop it rather than serve a
                // partial list; the next full resync programs the service again.
                tracing::warn!(
                    frontend = %SocketAddr::new(ip, port),
                    proto,
                    set = v.set,
                    "pinned service with an incomplete backend set: removed"
                );
                match self.services.remove(&key) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(EbpfError::map("services", e)),
                }
                continue;
            };
            let options = ServiceOptions {
                affinity_timeout: (v.flags & abi::SVC_F_AFFINITY != 0)
                    .then(|| Duration::from_secs(u64::from(v.affinity_timeout))),
            };
            if options.affinity_timeout.is_some() {
                // the by-address index of the live set (idempotent; pins made before it was
                // pinned lack it)
                for (index, backend) in (0u32..).zip(&backends) {
                    self.affinity_members
                        .insert(abi::member_key(v.set, backend.0), index, 0)
                        .map_err(|e| EbpfError::map("affinity_members", e))?;
                }
            }
            used_slots.insert(v.slot);
            self.backends.adopt(v.set);
            self.programmed.insert(
                Vip {
                    addr: SocketAddr::new(ip, port),
                    proto,
                },
                Programmed {
                    slot: v.slot,
                    set: v.set,
                    backends,
                    options,
                },
            );
        }
        self.slots.adopt(&used_slots);
        self.backends.sweep()?;
        let sets = &self.backends;
        sets::remove_where(&mut self.affinity_members, "affinity_members", |k| {
            !sets.in_use(abi::member_key_set(k))
        })?;
        Ok(())
    }

    /// Every programmed virtual address with its backends (after a load with pins: what the
    /// previous process left, so a caller can tell which of them its new table lacks).
    pub fn services(&self) -> Vec<(Vip, Vec<BackendAddr>)> {
        let mut all: Vec<_> = self
            .programmed
            .iter()
            .map(|(vip, p)| (*vip, p.backends.clone()))
            .collect();
        all.sort();
        all
    }

    /// Attaches every program to the cgroup v2 directory `cgroup` (the hierarchy's root for a
    /// node: it then sees every socket of the machine, and acts only on allowed namespaces).
    /// Other programs on the same hooks keep running (BPF links never replace each other).
    pub fn attach(&mut self, cgroup: impl AsRef<Path>) -> Result<(), EbpfError> {
        let cgroup = cgroup.as_ref();
        if let Some((path, _)) = &self.attached {
            return Err(EbpfError::AlreadyAttached(path.clone()));
        }
        let started = Instant::now();
        let dir = File::open(cgroup)
            .map_err(|e| EbpfError::io(format!("opening {}", cgroup.display()), e))?;
        let mut links = Vec::with_capacity(PROGRAMS.len());
        for name in PROGRAMS {
            let result = self.program(name).and_then(|p| {
                // On 5.7+ kernels aya attaches with a BPF link, which the kernel always runs
                // alongside other programs on the hook (links are multi-attach by nature and
                // refuse BPF_F_ALLOW_MULTI): Single is the mode that asks for no flag.
                p.attach(&dir, CgroupAttachMode::Single)
                    .map_err(|e| EbpfError::program(name, e))
            });
            match result {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    // all or nothing: a half-attached balancer would translate connect but
                    // not getpeername, say
                    self.detach_links(links);
                    return Err(e);
                }
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            cgroup = %cgroup.display(),
            "socket load balancer attached"
        );
        self.attached = Some((cgroup.to_owned(), links));
        Ok(())
    }

    /// [`SockLb::attach`] at the cgroup v2 root ([`cgroup_v2_root`]).
    pub fn attach_root(&mut self) -> Result<PathBuf, EbpfError> {
        let root = cgroup_v2_root()?;
        self.attach(&root)?;
        Ok(root)
    }

    /// Detaches the programs (also done on drop). Maps and their contents stay.
    pub fn detach(&mut self) {
        if let Some((_, links)) = self.attached.take() {
            self.detach_links(links);
        }
    }

    /// Hands the attachments over to the next process: each link is pinned in `dir` as
    /// `link_sock_<program>` and keeps its program attached after this one exits, until a
    /// process calls [`crate::release_links`] on `dir` (after attaching its own). Links the
    /// kernel cannot pin (made by the pre-5.7 attach call) are detached. Returns how many
    /// were handed over.
    pub fn hand_over(&mut self, dir: &Path) -> Result<usize, EbpfError> {
        let Some((_, links)) = self.attached.take() else {
            return Ok(0);
        };
        let mut handed = 0;
        let mut first_error = None;
        for (name, id) in links {
            let link = match self
                .program(name)
                .and_then(|p| p.take_link(id).map_err(|e| EbpfError::program(name, e)))
            {
                Ok(link) => link,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match FdLink::try_from(link) {
                Ok(fd) => match crate::handover::pin(dir, &format!("sock_{name}"), fd) {
                    Ok(()) => handed += 1,
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                },
                // dropping the owned link detaches it
                Err(e) => tracing::debug!(program = name, error = %e, "not a BPF link: detached"),
            }
        }
        first_error.map_or(Ok(handed), Err)
    }

    fn detach_links(&mut self, links: Vec<(&'static str, CgroupSockAddrLinkId)>) {
        for (name, link) in links {
            if let Err(e) = self
                .program(name)
                .and_then(|p| p.detach(link).map_err(|e| EbpfError::program(name, e)))
            {
                tracing::warn!(program = name, error = %e, "detaching");
            }
        }
    }

    fn program(&mut self, name: &'static str) -> Result<&mut CgroupSockAddr, EbpfError> {
        self.bpf
            .program_mut(name)
            .ok_or(EbpfError::Missing(name))?
            .try_into()
            .map_err(|e| EbpfError::program(name, e))
    }

    /// Lets the programs act on sockets of the network namespace with this cookie.
    pub fn allow_netns(&mut self, cookie: u64) -> Result<(), EbpfError> {
        self.allowed_netns
            .insert(cookie, 1u8, 0)
            .map_err(|e| EbpfError::map("allowed_netns", e))
    }

    /// Makes `cookies` the allowed namespaces, nothing more: the new ones are added first, so
    /// one that stays is never left out for a moment. Returns how many others were removed
    /// (a previous process's, found in pinned maps).
    pub fn set_allowed_netns(&mut self, cookies: &[u64]) -> Result<usize, EbpfError> {
        for cookie in cookies {
            self.allow_netns(*cookie)?;
        }
        let mut stale = Vec::new();
        for k in self.allowed_netns.keys() {
            let k = k.map_err(|e| EbpfError::map("allowed_netns", e))?;
            if !cookies.contains(&k) {
                stale.push(k);
            }
        }
        for cookie in &stale {
            self.forbid_netns(*cookie)?;
        }
        Ok(stale.len())
    }

    /// Stops acting on that namespace's sockets (absent: no-op).
    pub fn forbid_netns(&mut self, cookie: u64) -> Result<(), EbpfError> {
        match self.allowed_netns.remove(&cookie) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(EbpfError::map("allowed_netns", e)),
        }
    }

    /// The slot of a programmed virtual address.
    pub fn slot_of(&self, vip: &Vip) -> Option<ServiceSlot> {
        self.programmed.get(vip).map(|p| ServiceSlot(p.slot))
    }

    /// Number of programmed virtual addresses.
    pub fn service_count(&self) -> usize {
        self.programmed.len()
    }

    /// Programs `vip` to balance over `backends` (empty: connects fail with EPERM, as
    /// kube-proxy rejects services without endpoints). Atomic per service (see the module
    /// doc); a no-op when nothing changed. Backends must be of the VIP's family.
    pub fn upsert_service(
        &mut self,
        vip: Vip,
        backends: &[BackendAddr],
        options: ServiceOptions,
    ) -> Result<ServiceSlot, EbpfError> {
        let invalid = |reason: String| EbpfError::InvalidService {
            vip: vip.to_string(),
            reason,
        };
        let count = u16::try_from(backends.len())
            .map_err(|_| invalid(format!("{} backends, at most {}", backends.len(), u16::MAX)))?;
        let v4 = abi::is_v4(vip.addr.ip());
        if let Some(b) = backends.iter().find(|b| abi::is_v4(b.0.ip()) != v4) {
            return Err(invalid(format!(
                "backend {b} is not of the virtual address's family"
            )));
        }
        let affinity_timeout = match options.affinity_timeout {
            // whole seconds, rounded up, at least 1: kube's timeoutSeconds is whole anyway
            Some(t) => u32::try_from(t.as_secs() + u64::from(t.subsec_nanos() > 0))
                .unwrap_or(u32::MAX)
                .max(1),
            None => 0,
        };
        let previous = self.programmed.get(&vip).cloned();
        if let Some(p) = &previous
            && p.backends == backends
            && p.options == options
        {
            return Ok(ServiceSlot(p.slot));
        }
        let (slot, new_slot) = match &previous {
            Some(p) => (p.slot, false),
            None => (self.slots.alloc(&mut self.counters, "counters")?, true),
        };
        let set = self.backends.alloc();
        // 1. the new list, under a set nothing points to yet
        let with_members = options.affinity_timeout.is_some();
        let mut failure = self.write_set(set, backends, with_members).err();
        // 2. switch the frontend in one update
        if failure.is_none() {
            let value = SvcVal {
                slot,
                set,
                count,
                flags: if options.affinity_timeout.is_some() {
                    abi::SVC_F_AFFINITY
                } else {
                    0
                },
                affinity_timeout,
            };
            let key = abi::svc_key(vip.addr.ip(), vip.addr.port(), vip.proto.number());
            if let Err(e) = self.services.insert(key, value.encode(), 0) {
                failure = Some(EbpfError::map("services", e));
            }
        }
        if let Some(e) = failure {
            // the old service is untouched: drop the partial list and give back what we took
            self.delete_set(set, backends, with_members);
            if new_slot {
                self.slots.free(slot);
            }
            return Err(e);
        }
        // 3. the old list, now unreachable
        if let Some(p) = &previous {
            self.delete_set(p.set, &p.backends, p.options.affinity_timeout.is_some());
        }
        self.programmed.insert(
            vip,
            Programmed {
                slot,
                set,
                backends: backends.to_vec(),
                options,
            },
        );
        Ok(ServiceSlot(slot))
    }

    /// Removes a virtual address: connects to it are no longer translated. Returns whether it
    /// was programmed.
    pub fn remove_service(&mut self, vip: &Vip) -> Result<bool, EbpfError> {
        let Some(p) = self.programmed.get(vip).cloned() else {
            return Ok(false);
        };
        let key = abi::svc_key(vip.addr.ip(), vip.addr.port(), vip.proto.number());
        match self.services.remove(&key) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EbpfError::map("services", e)),
        }
        self.programmed.remove(vip);
        // frontend first, list second: a connect in between retries, finds no service and
        // is left alone, exactly as after the removal
        self.delete_set(p.set, &p.backends, p.options.affinity_timeout.is_some());
        self.slots.free(p.slot);
        Ok(true)
    }

    /// Counters of a slot, summed over CPUs.
    pub fn counters(&self, slot: ServiceSlot) -> Result<SlotCounters, EbpfError> {
        let values = self
            .counters
            .get(&slot.0, 0)
            .map_err(|e| EbpfError::map("counters", e))?;
        Ok(values.iter().fold(SlotCounters::default(), |acc, v| {
            let (connects, datagrams, rejected) = abi::parse_counters(v);
            SlotCounters {
                connects: acc.connects + connects,
                datagrams: acc.datagrams + datagrams,
                rejected: acc.rejected + rejected,
            }
        }))
    }

    /// Writes a backend list (and, for affinity, its by-address index) under `set`.
    fn write_set(
        &mut self,
        set: u32,
        backends: &[BackendAddr],
        with_members: bool,
    ) -> Result<(), EbpfError> {
        self.backends.write(set, backends)?;
        if with_members {
            for (index, backend) in (0u32..).zip(backends) {
                self.affinity_members
                    .insert(abi::member_key(set, backend.0), index, 0)
                    .map_err(|e| EbpfError::map("affinity_members", e))?;
            }
        }
        Ok(())
    }

    /// Deletes what [`SockLb::write_set`] wrote (entries already absent are fine: this also
    /// cleans up a partial write).
    fn delete_set(&mut self, set: u32, backends: &[BackendAddr], with_members: bool) {
        if with_members {
            for backend in backends {
                if let Err(e) = self
                    .affinity_members
                    .remove(&abi::member_key(set, backend.0))
                    && !is_not_found(&e)
                {
                    tracing::warn!(set, %backend, error = %e, "deleting a stale affinity index entry");
                }
            }
        }
        self.backends.delete(set, backends.len());
    }

    /// The maps' contents as text, read back from the kernel (for `skiff proxy dump`).
    pub fn dump(&self) -> Result<String, EbpfError> {
        let mut out = String::new();
        let mut cookies = Vec::new();
        for k in self.allowed_netns.keys() {
            cookies.push(k.map_err(|e| EbpfError::map("allowed_netns", e))?);
        }
        cookies.sort_unstable();
        let _ = writeln!(out, "allowed_netns ({}): {cookies:?}", cookies.len());
        let mut services = Vec::new();
        for item in self.services.iter() {
            let (k, v) = item.map_err(|e| EbpfError::map("services", e))?;
            let (ip, port, proto) = abi::parse_svc_key(&k);
            let proto =
                Protocol::from_number(proto).map_or_else(|| proto.to_string(), |p| p.to_string());
            services.push((proto, SocketAddr::new(ip, port), SvcVal::decode(&v)));
        }
        services.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let _ = writeln!(out, "services ({}):", services.len());
        for (proto, addr, v) in &services {
            let counters = self.counters(ServiceSlot(v.slot)).unwrap_or_default();
            let _ = write!(
                out,
                "  {proto} {addr} slot={} set={} backends={}",
                v.slot, v.set, v.count
            );
            if v.flags & abi::SVC_F_AFFINITY != 0 {
                let _ = write!(out, " affinity={}s", v.affinity_timeout);
            }
            let _ = write!(
                out,
                " connects={} datagrams={} rejected={} ->",
                counters.connects, counters.datagrams, counters.rejected
            );
            for index in 0..u32::from(v.count) {
                match self.backends.get(v.set, index) {
                    Some(b) => {
                        let _ = write!(out, " {b}");
                    }
                    None => out.push_str(" <missing>"),
                }
            }
            out.push('\n');
        }
        let _ = writeln!(out, "backends: {} entries", self.backends.entries()?);
        // LRU tables can hold hundreds of thousands of entries: list the first few, count all
        const LISTED: usize = 64;
        let affinity: Vec<_> = self.affinity.iter().collect();
        let _ = writeln!(out, "affinity ({} entries):", affinity.len());
        for item in affinity.into_iter().take(LISTED) {
            let (k, v) = item.map_err(|e| EbpfError::map("affinity", e))?;
            let (netns, slot) = abi::parse_affinity_key(&k);
            let (last_used, set, index, backend) = abi::parse_affinity_value(&v);
            let _ = writeln!(
                out,
                "  netns={netns} slot={slot} -> {backend} (set={set} index={index}) last_used_ns={last_used}"
            );
        }
        let rev_nat: Vec<_> = self.rev_nat.iter().collect();
        let _ = writeln!(out, "rev_nat ({} entries):", rev_nat.len());
        for item in rev_nat.into_iter().take(LISTED) {
            let (k, v) = item.map_err(|e| EbpfError::map("rev_nat", e))?;
            let (cookie, backend) = abi::parse_revnat_key(&k);
            let _ = writeln!(
                out,
                "  socket={cookie} {backend} -> {}",
                abi::parse_sockaddr_value(&v)
            );
        }
        Ok(out)
    }
}
