//! The north-south load balancer: loading `bpf/tc_nodeport.c`, attaching it at tc ingress of
//! interfaces inside a given network namespace, and its maps, typed.
//!
//! # What it does to a packet
//!
//! Attached at ingress of the node namespace's external interfaces and of its pod bridge, the
//! program translates packets to a frontend ([`NodePortLb::upsert_frontend`]: a NodePort on a
//! node address, a LoadBalancer IP, an externalIP) per flow: the backend is chosen by Maglev
//! (see [`crate::maglev`]) and remembered in an LRU flow table, the packet is DNATed and, with
//! [`FrontendOptions::snat`], SNATed to the node's address of its family
//! ([`NodePortLb::set_snat_addresses`]) with a port free for that backend. Replies, seen on
//! whichever attached interface they arrive, are translated back and sent to the client. The
//! program forwards translated packets itself (FIB lookup + `bpf_redirect_neigh`).
//!
//! # Updates
//!
//! As in [`crate::SockLb`]: a frontend's backends and Maglev table are written under a fresh
//! set id, the frontend is switched to it in one map update, then the old set is deleted; a
//! program that misses an entry of the set it read reads the frontend again. So a packet sees
//! the complete old or the complete new backend list, never a mix and never zero backends.
//! UDP frontends also keep `{slot, backend}` membership entries (added before the switch,
//! removed after): a UDP flow whose backend was removed is balanced again on its next packet,
//! while a TCP flow keeps its backend for as long as it lives (kube-proxy's conntrack
//! behaviour). Work per update is one frontend's backends plus `maglev_size / 256` chunks; an
//! unchanged frontend is a no-op.

use std::{
    collections::{HashMap, HashSet},
    fmt::{self, Write as _},
    fs::File,
    net::{IpAddr, SocketAddr},
    os::{fd::AsFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, MapType, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, links::FdLink, tc::SchedClassifierLinkId},
    util::KernelVersion,
};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::{
    BackendAddr, EbpfError, Protocol, ServiceSlot, Vip, abi, maglev,
    nodeport_abi::{self as nabi, NsSvc},
    pins::{self, MapShape},
    sets::{self, BackendSets, Slots, is_not_found},
};

/// The compiled object, embedded so the binary carries its own programs.
static TC_NODEPORT_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_nodeport.o"));

/// The program's function name.
const PROGRAM: &str = "skiff_nodeport";

/// Map sizes and the Maglev table size.
#[derive(Debug, Clone)]
pub struct NodePortOptions {
    /// Frontends (address + port + protocol); also the number of counter slots.
    pub max_frontends: u32,
    /// Backend entries over all frontends, plus room for one update in flight.
    pub max_backends: u32,
    /// Entries of each frontend's Maglev lookup table: a prime, at least the largest backend
    /// count. Larger spreads flows more evenly; each frontend costs `2 × size` bytes.
    pub maglev_size: u32,
    /// Flows remembered (LRU, one entry per direction): a flow evicted while idle is balanced
    /// again by Maglev, normally to the same backend.
    pub max_flows: u32,
    /// Pin the maps under this directory (on a BPF file system, e.g.
    /// `/sys/fs/bpf/skiff/<node>`) and adopt them when they exist, so a restarted process
    /// keeps the frontends and the flow and reply tables of established connections. May be
    /// the socket load balancer's directory (the map names differ). `None`: maps die with
    /// this process.
    pub pin_dir: Option<PathBuf>,
}

impl Default for NodePortOptions {
    fn default() -> Self {
        Self {
            max_frontends: 4096,
            max_backends: 65_536,
            maglev_size: maglev::DEFAULT_MAGLEV_SIZE,
            max_flows: 65_536,
            pin_dir: None,
        }
    }
}

/// The maps of `tc_nodeport.c` with the shapes `options` gives them.
fn map_shapes(options: &NodePortOptions, maglev_entries: u32) -> [MapShape; 8] {
    use std::mem::size_of;
    let shape = |name, map_type, key_size, value_size, max_entries| MapShape {
        name,
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    [
        shape(
            "ns_services",
            MapType::Hash,
            size_of::<abi::SvcKey>(),
            size_of::<nabi::NsSvcValue>(),
            options.max_frontends,
        ),
        shape(
            "ns_backends",
            MapType::Hash,
            size_of::<abi::BackendKey>(),
            size_of::<abi::BackendValue>(),
            options.max_backends,
        ),
        shape(
            "ns_maglev",
            MapType::Hash,
            size_of::<abi::BackendKey>(),
            size_of::<nabi::MaglevChunk>(),
            maglev_entries,
        ),
        shape(
            "ns_members",
            MapType::Hash,
            size_of::<abi::MemberKey>(),
            1,
            options.max_backends,
        ),
        shape(
            "ns_flows",
            MapType::LruHash,
            size_of::<nabi::Tuple>(),
            size_of::<nabi::Flow>(),
            options.max_flows,
        ),
        shape(
            "ns_replies",
            MapType::LruHash,
            size_of::<nabi::Tuple>(),
            size_of::<nabi::Reply>(),
            options.max_flows,
        ),
        shape("ns_snat", MapType::Array, 4, size_of::<nabi::SnatAddr>(), 2),
        shape(
            "ns_counters",
            MapType::PerCpuArray,
            4,
            size_of::<nabi::Counters>(),
            options.max_frontends,
        ),
    ]
}

/// Per-frontend behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrontendOptions {
    /// Source NAT to the node's address (`externalTrafficPolicy: Cluster`), so replies come
    /// back through this node whatever the backend's node. Off: the client address is kept
    /// (`Local`; the backends must then be this node's, which route replies through it).
    pub snat: bool,
    /// Hash only the client address, so a client stays on one backend while the backend set
    /// is unchanged (sessionAffinity ClientIP; no timeout).
    pub affinity: bool,
}

/// Counters of one frontend slot, summed over CPUs, since the slot was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodePortCounters {
    /// Client → backend packets translated.
    pub packets: u64,
    /// Backend → client packets translated back.
    pub replies: u64,
    /// New flows balanced.
    pub flows: u64,
    /// Packets to the frontend while it had no backend.
    pub no_backend: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Programmed {
    slot: u32,
    set: u32,
    backends: Vec<BackendAddr>,
    options: FrontendOptions,
}

#[derive(Debug)]
struct Attachment {
    netns: PathBuf,
    interface: String,
    link: SchedClassifierLinkId,
}

/// The loaded north-south balancer. Dropping it detaches the program from every interface.
pub struct NodePortLb {
    bpf: Ebpf,
    services: BpfHashMap<MapData, abi::SvcKey, nabi::NsSvcValue>,
    backends: BackendSets,
    maglev: BpfHashMap<MapData, abi::BackendKey, nabi::MaglevChunk>,
    members: BpfHashMap<MapData, abi::MemberKey, u8>,
    flows: BpfHashMap<MapData, nabi::Tuple, nabi::Flow>,
    replies: BpfHashMap<MapData, nabi::Tuple, nabi::Reply>,
    snat: Array<MapData, nabi::SnatAddr>,
    counters: PerCpuArray<MapData, nabi::Counters>,
    programmed: HashMap<Vip, Programmed>,
    slots: Slots,
    maglev_size: u32,
    attached: Vec<Attachment>,
}

impl fmt::Debug for NodePortLb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePortLb")
            .field("frontends", &self.programmed.len())
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn take_map(bpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, EbpfError> {
    bpf.take_map(name).ok_or(EbpfError::Missing(name))
}

/// Runs `f` on a short-lived thread inside the network namespace at `netns` (setns changes
/// only the calling thread, and interface names and indexes are per namespace).
fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, EbpfError> {
    let file =
        File::open(netns).map_err(|e| EbpfError::io(format!("opening {}", netns.display()), e))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(|e| EbpfError::io(format!("setns {}", netns.display()), e.into()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(EbpfError::io(
                    "netns thread",
                    std::io::Error::other("panicked"),
                ))
            })
    })
}

impl NodePortLb {
    /// Loads the program and creates its maps. Nothing is translated until
    /// [`NodePortLb::attach`].
    pub fn load(options: NodePortOptions) -> Result<Self, EbpfError> {
        let started = Instant::now();
        if !maglev::is_prime(options.maglev_size) {
            return Err(EbpfError::InvalidOption {
                option: "maglev_size",
                reason: format!("{} is not a prime", options.maglev_size),
            });
        }
        if options.maglev_size > u32::from(u16::MAX) + 2 {
            return Err(EbpfError::InvalidOption {
                option: "maglev_size",
                reason: format!("{} is above 65537", options.maglev_size),
            });
        }
        let chunks = options.maglev_size.div_ceil(nabi::MAGLEV_CHUNK as u32);
        // every frontend's table, plus one more while a frontend is being switched
        let maglev_entries = chunks
            .saturating_mul(options.max_frontends.saturating_add(1))
            .max(1);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("ns_services", options.max_frontends)
            .map_max_entries("ns_backends", options.max_backends)
            .map_max_entries("ns_maglev", maglev_entries)
            .map_max_entries("ns_members", options.max_backends)
            .map_max_entries("ns_flows", options.max_flows)
            .map_max_entries("ns_replies", options.max_flows)
            .map_max_entries("ns_counters", options.max_frontends);
        loader.override_global("maglev_size", &options.maglev_size, true);
        let pin_paths = match &options.pin_dir {
            Some(dir) => pins::prepare(dir, &map_shapes(&options, maglev_entries))?,
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut bpf = loader
            .load(TC_NODEPORT_OBJECT)
            .map_err(|e| EbpfError::Load(Box::new(e)))?;
        let program: &mut SchedClassifier = bpf
            .program_mut(PROGRAM)
            .ok_or(EbpfError::Missing(PROGRAM))?
            .try_into()
            .map_err(|e| EbpfError::program(PROGRAM, e))?;
        program.load().map_err(|e| EbpfError::program(PROGRAM, e))?;
        let map_err = |name: &'static str| move |e| EbpfError::map(name, e);
        let services = BpfHashMap::try_from(take_map(&mut bpf, "ns_services")?)
            .map_err(map_err("ns_services"))?;
        let backends = BackendSets::new(
            BpfHashMap::try_from(take_map(&mut bpf, "ns_backends")?)
                .map_err(map_err("ns_backends"))?,
            "ns_backends",
        );
        let maglev =
            BpfHashMap::try_from(take_map(&mut bpf, "ns_maglev")?).map_err(map_err("ns_maglev"))?;
        let members = BpfHashMap::try_from(take_map(&mut bpf, "ns_members")?)
            .map_err(map_err("ns_members"))?;
        let flows =
            BpfHashMap::try_from(take_map(&mut bpf, "ns_flows")?).map_err(map_err("ns_flows"))?;
        let replies = BpfHashMap::try_from(take_map(&mut bpf, "ns_replies")?)
            .map_err(map_err("ns_replies"))?;
        let snat = Array::try_from(take_map(&mut bpf, "ns_snat")?).map_err(map_err("ns_snat"))?;
        let counters = PerCpuArray::try_from(take_map(&mut bpf, "ns_counters")?)
            .map_err(map_err("ns_counters"))?;
        let mut lb = NodePortLb {
            bpf,
            services,
            backends,
            maglev,
            members,
            flows,
            replies,
            snat,
            counters,
            programmed: HashMap::new(),
            slots: Slots::new(options.max_frontends),
            maglev_size: options.maglev_size,
            attached: Vec::new(),
        };
        // Pinned maps may hold a previous run's frontends: adopt them (nothing is attached
        // yet, so repairs cannot race a packet).
        lb.adopt_existing()?;
        tracing::info!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            maglev_size = options.maglev_size,
            frontends = lb.programmed.len(),
            pinned = options.pin_dir.is_some(),
            "north-south load balancer loaded"
        );
        Ok(lb)
    }

    /// Rebuilds `programmed` from the maps of an earlier process: frontends whose set is
    /// incomplete are removed (the next full resync programs them again), tables built for
    /// another Maglev size are rebuilt, and sets, Maglev chunks and UDP memberships nothing
    /// points to are deleted (that process died inside an update).
    fn adopt_existing(&mut self) -> Result<(), EbpfError> {
        let mut entries = Vec::new();
        for item in self.services.iter() {
            entries.push(item.map_err(|e| EbpfError::map("ns_services", e))?);
        }
        let chunks = self.maglev_size.div_ceil(nabi::MAGLEV_CHUNK as u32);
        let mut used_slots = HashSet::new();
        let mut rebuild = Vec::new();
        for (key, value) in entries {
            let (ip, port, proto) = abi::parse_svc_key(&key);
            let v = NsSvc::decode(&value);
            let usable = Protocol::from_number(proto).filter(|_| v.slot < self.slots.max());
            let backends = match usable {
                Some(_) => self.backends.read(v.set, v.count)?,
                None => None,
            };
            let (Some(proto), Some(backends)) = (usable, backends) else {
                tracing::warn!(
                    frontend = %SocketAddr::new(ip, port),
                    proto,
                    set = v.set,
                    "pinned frontend with an incomplete backend set: removed"
                );
                match self.services.remove(&key) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(EbpfError::map("ns_services", e)),
                }
                continue;
            };
            let vip = Vip {
                addr: SocketAddr::new(ip, port),
                proto,
            };
            let options = FrontendOptions {
                snat: v.flags & nabi::NS_F_SNAT != 0,
                affinity: v.flags & nabi::NS_F_AFFINITY != 0,
            };
            let table_ok = v.count == 0
                || (v.maglev_size == self.maglev_size
                    && (0..chunks)
                        .all(|c| self.maglev.get(&abi::backend_key(v.set, c), 0).is_ok()));
            used_slots.insert(v.slot);
            self.backends.adopt(v.set);
            self.programmed.insert(
                vip,
                Programmed {
                    slot: v.slot,
                    set: v.set,
                    backends,
                    options,
                },
            );
            if !table_ok {
                rebuild.push(vip);
            }
        }
        self.slots.adopt(&used_slots);
        for vip in rebuild {
            if let Some(p) = self.programmed.get(&vip).cloned() {
                tracing::info!(frontend = %vip, "rebuilding a pinned Maglev table");
                self.rewrite(vip, &p)?;
            }
        }
        self.sweep_orphans()
    }

    /// Programs `p` again under a fresh set (the same switch as an update).
    fn rewrite(&mut self, vip: Vip, p: &Programmed) -> Result<(), EbpfError> {
        let set = self.backends.alloc();
        if let Err(e) = self.write_set(set, &p.backends) {
            self.delete_set(set, p.backends.len());
            return Err(e);
        }
        let key = abi::svc_key(vip.addr.ip(), vip.addr.port(), vip.proto.number());
        let value = self.svc_value(p.slot, set, &p.backends, p.options);
        if let Err(e) = self.services.insert(key, value.encode(), 0) {
            self.delete_set(set, p.backends.len());
            return Err(EbpfError::map("ns_services", e));
        }
        // the old set's backends stay (deleted by the sweep: nothing points to that set now)
        self.backends.forget(p.set);
        if let Some(entry) = self.programmed.get_mut(&vip) {
            entry.set = set;
        }
        Ok(())
    }

    /// Deletes backend entries, Maglev chunks and UDP memberships no adopted frontend uses,
    /// and adds the memberships an adopted UDP frontend lacks.
    fn sweep_orphans(&mut self) -> Result<(), EbpfError> {
        self.backends.sweep()?;
        let sets = &self.backends;
        sets::remove_where(&mut self.maglev, "ns_maglev", |k| {
            !sets.in_use(abi::parse_backend_key(k).0)
        })?;
        let wanted: HashSet<(u32, SocketAddr)> = self
            .programmed
            .iter()
            .filter(|(vip, _)| vip.proto == Protocol::Udp)
            .flat_map(|(_, p)| p.backends.iter().map(|b| (p.slot, b.0)))
            .collect();
        let mut present = HashSet::new();
        let mut orphans = Vec::new();
        for key in self.members.keys() {
            let key = key.map_err(|e| EbpfError::map("ns_members", e))?;
            let member = nabi::parse_member_key(&key);
            if wanted.contains(&member) {
                present.insert(member);
            } else {
                orphans.push(key);
            }
        }
        for key in orphans {
            self.members
                .remove(&key)
                .map_err(|e| EbpfError::map("ns_members", e))?;
        }
        for (slot, backend) in wanted.difference(&present) {
            self.members
                .insert(abi::member_key(*slot, *backend), 1u8, 0)
                .map_err(|e| EbpfError::map("ns_members", e))?;
        }
        Ok(())
    }

    fn svc_value(
        &self,
        slot: u32,
        set: u32,
        backends: &[BackendAddr],
        options: FrontendOptions,
    ) -> NsSvc {
        let mut flags = 0;
        if options.snat {
            flags |= nabi::NS_F_SNAT;
        }
        if options.affinity {
            flags |= nabi::NS_F_AFFINITY;
        }
        NsSvc {
            slot,
            set,
            // checked by the caller: at most the Maglev size, itself at most 65537
            count: u16::try_from(backends.len()).unwrap_or(u16::MAX),
            flags,
            maglev_size: self.maglev_size,
        }
    }

    /// Every programmed frontend with its backends (after a load with pins: what the
    /// previous process left).
    pub fn frontends(&self) -> Vec<(Vip, Vec<BackendAddr>)> {
        let mut all: Vec<_> = self
            .programmed
            .iter()
            .map(|(vip, p)| (*vip, p.backends.clone()))
            .collect();
        all.sort();
        all
    }

    fn program(&mut self) -> Result<&mut SchedClassifier, EbpfError> {
        self.bpf
            .program_mut(PROGRAM)
            .ok_or(EbpfError::Missing(PROGRAM))?
            .try_into()
            .map_err(|e| EbpfError::program(PROGRAM, e))
    }

    /// Attaches the program at tc ingress of `interface` inside the network namespace at
    /// `netns` (`/run/netns/NAME`). On Linux 6.6+ this is a tcx link owned by this process,
    /// which the kernel drops when it exits or dies; older kernels get a clsact qdisc and a
    /// direct-action filter, which outlives a crash: a filter of this program left there by
    /// an earlier process is removed first. Attaching twice to one interface is a no-op.
    pub fn attach(&mut self, netns: &Path, interface: &str) -> Result<(), EbpfError> {
        if self
            .attached
            .iter()
            .any(|a| a.netns == netns && a.interface == interface)
        {
            return Ok(());
        }
        let program = self.program()?;
        let link = in_netns(netns, || {
            if !has_tcx() {
                remove_filters(interface);
                // netlink attachment needs the clsact qdisc; it may exist already
                if let Err(e) = aya::programs::tc::qdisc_add_clsact(interface) {
                    tracing::debug!(interface, error = %e, "clsact qdisc (may exist)");
                }
            }
            program.attach(interface, TcAttachType::Ingress)
        })?
        .map_err(|e| EbpfError::program(PROGRAM, e))?;
        tracing::info!(netns = %netns.display(), interface, "north-south load balancer attached");
        self.attached.push(Attachment {
            netns: netns.to_owned(),
            interface: interface.to_owned(),
            link,
        });
        Ok(())
    }

    /// Detaches the program from one interface (not attached: no-op). Returns whether it was.
    pub fn detach(&mut self, netns: &Path, interface: &str) -> bool {
        let Some(at) = self
            .attached
            .iter()
            .position(|a| a.netns == netns && a.interface == interface)
        else {
            return false;
        };
        let a = self.attached.remove(at);
        self.detach_one(a);
        true
    }

    fn detach_one(&mut self, a: Attachment) {
        let netns = a.netns.clone();
        let result = self.program().and_then(|p| {
            // netlink filters must be removed from inside their namespace
            in_netns(&netns, || p.detach(a.link))?.map_err(|e| EbpfError::program(PROGRAM, e))
        });
        if let Err(e) = result {
            // a deleted namespace or interface took the attachment with it
            tracing::debug!(interface = a.interface, error = %e, "detaching");
        }
    }

    /// The interfaces the program is attached to, as (netns, interface).
    pub fn attachments(&self) -> Vec<(PathBuf, String)> {
        self.attached
            .iter()
            .map(|a| (a.netns.clone(), a.interface.clone()))
            .collect()
    }

    /// Hands the attachments over to the next process: on Linux 6.6+ each tcx link is pinned
    /// in `dir` as `link_tc_<netns inode>_<interface>` and keeps the program attached after
    /// this one exits, until a process calls [`crate::release_links`] on `dir` (after
    /// attaching its own). Older kernels' filters are detached (the next attach replaces
    /// leftovers anyway). Returns how many were handed over.
    pub fn hand_over(&mut self, dir: &Path) -> Result<usize, EbpfError> {
        if !has_tcx() {
            self.detach_all();
            return Ok(0);
        }
        let mut handed = 0;
        let mut first_error = None;
        for a in std::mem::take(&mut self.attached) {
            let ino = std::fs::metadata(&a.netns).map(|m| m.ino()).unwrap_or(0);
            let name = format!("tc_{ino}_{}", a.interface);
            let result = self
                .program()
                .and_then(|p| {
                    p.take_link(a.link)
                        .map_err(|e| EbpfError::program(PROGRAM, e))
                })
                .and_then(|link| {
                    FdLink::try_from(link).map_err(|e| {
                        EbpfError::io("a tcx link as a BPF link", std::io::Error::other(e))
                    })
                })
                .and_then(|fd| crate::handover::pin(dir, &name, fd));
            match result {
                Ok(()) => handed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(handed), Err)
    }

    /// Detaches the program from every interface (also done on drop). Maps stay.
    pub fn detach_all(&mut self) {
        for a in std::mem::take(&mut self.attached) {
            self.detach_one(a);
        }
    }

    /// The source addresses for SNAT ([`FrontendOptions::snat`]), per family: the node's
    /// address reachable from the backends. A family without one keeps client addresses.
    pub fn set_snat_addresses(
        &mut self,
        v4: Option<IpAddr>,
        v6: Option<IpAddr>,
    ) -> Result<(), EbpfError> {
        for (index, ip, want_v4) in [(0u32, v4, true), (1u32, v6, false)] {
            if let Some(ip) = ip
                && abi::is_v4(ip) != want_v4
            {
                return Err(EbpfError::InvalidOption {
                    option: "snat address",
                    reason: format!("{ip} is not of the family of slot {index}"),
                });
            }
            self.snat
                .set(index, nabi::snat_addr(ip), 0)
                .map_err(|e| EbpfError::map("ns_snat", e))?;
        }
        Ok(())
    }

    /// The SNAT sources as programmed (IPv4, IPv6).
    pub fn snat_addresses(&self) -> Result<(Option<IpAddr>, Option<IpAddr>), EbpfError> {
        let get = |i: u32| {
            self.snat
                .get(&i, 0)
                .map(|a| nabi::parse_snat_addr(&a))
                .map_err(|e| EbpfError::map("ns_snat", e))
        };
        Ok((get(0)?, get(1)?))
    }

    /// Number of programmed frontends.
    pub fn frontend_count(&self) -> usize {
        self.programmed.len()
    }

    /// The slot of a programmed frontend.
    pub fn slot_of(&self, vip: &Vip) -> Option<ServiceSlot> {
        self.programmed.get(vip).map(|p| ServiceSlot(p.slot))
    }

    /// Programs `vip` to balance over `backends` (empty: packets to it are answered by the
    /// node's stack when the node owns the address, dropped otherwise). Atomic per frontend
    /// (see the module doc); a no-op when nothing changed. Backends must be of the frontend's
    /// family, at most the Maglev table size.
    pub fn upsert_frontend(
        &mut self,
        vip: Vip,
        backends: &[BackendAddr],
        options: FrontendOptions,
    ) -> Result<ServiceSlot, EbpfError> {
        let invalid = |reason: String| EbpfError::InvalidService {
            vip: vip.to_string(),
            reason,
        };
        if backends.len() > self.maglev_size as usize || backends.len() > usize::from(u16::MAX) {
            return Err(invalid(format!(
                "{} backends, more than the Maglev table's {} entries",
                backends.len(),
                self.maglev_size
            )));
        }
        let v4 = abi::is_v4(vip.addr.ip());
        if let Some(b) = backends.iter().find(|b| abi::is_v4(b.0.ip()) != v4) {
            return Err(invalid(format!(
                "backend {b} is not of the frontend's family"
            )));
        }
        let previous = self.programmed.get(&vip).cloned();
        if let Some(p) = &previous
            && p.backends == backends
            && p.options == options
        {
            return Ok(ServiceSlot(p.slot));
        }
        let (slot, new_slot) = match &previous {
            Some(p) => (p.slot, false),
            None => (self.slots.alloc(&mut self.counters, "ns_counters")?, true),
        };
        let set = self.backends.alloc();
        let udp = vip.proto == Protocol::Udp;
        // 1. the new backends, table and (UDP) memberships, under a set nothing points to
        let mut failure = self.write_set(set, backends).err();
        let old_members: &[BackendAddr] = previous.as_ref().map_or(&[], |p| &p.backends);
        if failure.is_none() && udp {
            failure = self.add_members(slot, backends, old_members).err();
        }
        // 2. switch the frontend in one update
        if failure.is_none() {
            let value = self.svc_value(slot, set, backends, options);
            let key = abi::svc_key(vip.addr.ip(), vip.addr.port(), vip.proto.number());
            if let Err(e) = self.services.insert(key, value.encode(), 0) {
                failure = Some(EbpfError::map("ns_services", e));
            }
        }
        if let Some(e) = failure {
            self.delete_set(set, backends.len());
            if udp {
                // memberships only the new list added go again; the old ones stay valid
                self.remove_members(slot, backends, old_members);
            }
            if new_slot {
                self.slots.free(slot);
            }
            return Err(e);
        }
        // 3. the old set, now unreachable, and memberships of removed UDP backends
        if let Some(p) = &previous {
            self.delete_set(p.set, p.backends.len());
            if udp {
                self.remove_members(slot, &p.backends, backends);
            }
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

    /// Removes a frontend: its packets are left to the node's stack. Flows through it die
    /// with it (their entries age out of the LRU tables). Returns whether it was programmed.
    pub fn remove_frontend(&mut self, vip: &Vip) -> Result<bool, EbpfError> {
        let Some(p) = self.programmed.get(vip).cloned() else {
            return Ok(false);
        };
        let key = abi::svc_key(vip.addr.ip(), vip.addr.port(), vip.proto.number());
        match self.services.remove(&key) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EbpfError::map("ns_services", e)),
        }
        self.programmed.remove(vip);
        self.delete_set(p.set, p.backends.len());
        if vip.proto == Protocol::Udp {
            self.remove_members(p.slot, &p.backends, &[]);
        }
        self.slots.free(p.slot);
        Ok(true)
    }

    /// Counters of a slot, summed over CPUs.
    pub fn counters(&self, slot: ServiceSlot) -> Result<NodePortCounters, EbpfError> {
        let values = self
            .counters
            .get(&slot.0, 0)
            .map_err(|e| EbpfError::map("ns_counters", e))?;
        Ok(values.iter().fold(NodePortCounters::default(), |acc, v| {
            let (packets, replies, flows, no_backend) = nabi::parse_counters(v);
            NodePortCounters {
                packets: acc.packets + packets,
                replies: acc.replies + replies,
                flows: acc.flows + flows,
                no_backend: acc.no_backend + no_backend,
            }
        }))
    }

    /// Writes a backend list and its Maglev table under `set`.
    fn write_set(&mut self, set: u32, backends: &[BackendAddr]) -> Result<(), EbpfError> {
        self.backends.write(set, backends)?;
        if backends.is_empty() {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.0).collect();
        let table = maglev::table(&addrs, self.maglev_size);
        for (chunk, entries) in (0u32..).zip(table.chunks(nabi::MAGLEV_CHUNK)) {
            self.maglev
                .insert(abi::backend_key(set, chunk), nabi::maglev_chunk(entries), 0)
                .map_err(|e| EbpfError::map("ns_maglev", e))?;
        }
        Ok(())
    }

    /// Deletes what [`NodePortLb::write_set`] wrote (absent entries are fine).
    fn delete_set(&mut self, set: u32, count: usize) {
        self.backends.delete(set, count);
        if count > 0 {
            let chunks = self.maglev_size.div_ceil(nabi::MAGLEV_CHUNK as u32);
            for chunk in 0..chunks {
                if let Err(e) = self.maglev.remove(&abi::backend_key(set, chunk))
                    && !is_not_found(&e)
                {
                    tracing::warn!(set, chunk, error = %e, "deleting a stale Maglev chunk");
                }
            }
        }
    }

    /// Membership entries for the backends of `now` that `before` lacked.
    fn add_members(
        &mut self,
        slot: u32,
        now: &[BackendAddr],
        before: &[BackendAddr],
    ) -> Result<(), EbpfError> {
        for b in now.iter().filter(|b| !before.contains(b)) {
            self.members
                .insert(abi::member_key(slot, b.0), 1u8, 0)
                .map_err(|e| EbpfError::map("ns_members", e))?;
        }
        Ok(())
    }

    /// Removes the membership of the backends of `before` that `now` lacks.
    fn remove_members(&mut self, slot: u32, before: &[BackendAddr], now: &[BackendAddr]) {
        for b in before.iter().filter(|b| !now.contains(b)) {
            if let Err(e) = self.members.remove(&abi::member_key(slot, b.0))
                && !is_not_found(&e)
            {
                tracing::warn!(slot, backend = %b, error = %e, "deleting a UDP membership");
            }
        }
    }

    /// The maps' contents as text (for `skiff proxy dump`).
    pub fn dump(&self) -> Result<String, EbpfError> {
        let mut out = String::new();
        let (v4, v6) = self.snat_addresses()?;
        let show = |ip: Option<IpAddr>| ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
        let _ = writeln!(
            out,
            "maglev_size {} snat v4={} v6={}",
            self.maglev_size,
            show(v4),
            show(v6)
        );
        for a in &self.attached {
            let _ = writeln!(
                out,
                "attached ingress {} in {}",
                a.interface,
                a.netns.display()
            );
        }
        let mut frontends = Vec::new();
        for item in self.services.iter() {
            let (k, v) = item.map_err(|e| EbpfError::map("ns_services", e))?;
            let (ip, port, proto) = abi::parse_svc_key(&k);
            let proto =
                Protocol::from_number(proto).map_or_else(|| proto.to_string(), |p| p.to_string());
            frontends.push((proto, SocketAddr::new(ip, port), NsSvc::decode(&v)));
        }
        frontends.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let _ = writeln!(out, "frontends ({}):", frontends.len());
        for (proto, addr, v) in &frontends {
            let c = self.counters(ServiceSlot(v.slot)).unwrap_or_default();
            let _ = write!(
                out,
                "  {proto} {addr} slot={} set={} backends={}{}{} packets={} replies={} flows={} no_backend={} ->",
                v.slot,
                v.set,
                v.count,
                if v.flags & nabi::NS_F_SNAT != 0 {
                    " snat"
                } else {
                    " client-ip"
                },
                if v.flags & nabi::NS_F_AFFINITY != 0 {
                    " affinity"
                } else {
                    ""
                },
                c.packets,
                c.replies,
                c.flows,
                c.no_backend
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
        const LISTED: usize = 64;
        let flows: Vec<_> = self.flows.iter().collect();
        let _ = writeln!(out, "flows ({} entries):", flows.len());
        for item in flows.into_iter().take(LISTED) {
            let (k, v) = item.map_err(|e| EbpfError::map("ns_flows", e))?;
            let (src, dst, proto) = nabi::parse_tuple(&k);
            let (backend, nat, slot) = nabi::parse_flow(&v);
            let nat = nat.map_or_else(String::new, |n| format!(" snat {n}"));
            let _ = writeln!(out, "  {proto} {src} -> {dst}: {backend}{nat} slot={slot}");
        }
        let replies: Vec<_> = self.replies.iter().collect();
        let _ = writeln!(out, "replies ({} entries):", replies.len());
        for item in replies.into_iter().take(LISTED) {
            let (k, v) = item.map_err(|e| EbpfError::map("ns_replies", e))?;
            let (src, dst, proto) = nabi::parse_tuple(&k);
            let (from, to, slot) = nabi::parse_reply(&v);
            let _ = writeln!(
                out,
                "  {proto} {src} -> {dst}: as {from} -> {to} slot={slot}"
            );
        }
        Ok(out)
    }
}

/// Whether tc programs attach as tcx links (Linux 6.6+), which die with their process.
fn has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Removes netlink tc filters of this program from ingress of `interface` (in the calling
/// thread's namespace); returns whether there were any.
fn remove_filters(interface: &str) -> bool {
    match aya::programs::tc::qdisc_detach_program(interface, TcAttachType::Ingress, PROGRAM) {
        Ok(()) => {
            tracing::info!(interface, "removed a tc filter left by an earlier process");
            true
        }
        // none there, or no clsact qdisc at all
        Err(e) => {
            tracing::debug!(interface, error = %e, "no leftover tc filter");
            false
        }
    }
}

/// Removes what a crashed process may have left on `interface` inside the network namespace
/// at `netns`: on kernels before 6.6, this program's netlink tc filter (a tcx link, on 6.6+,
/// dies with its process, so there is nothing to remove). Returns whether one was removed.
pub fn detach_leftover_filters(netns: &Path, interface: &str) -> Result<bool, EbpfError> {
    in_netns(netns, || remove_filters(interface))
}

impl Drop for NodePortLb {
    fn drop(&mut self) {
        self.detach_all();
    }
}
