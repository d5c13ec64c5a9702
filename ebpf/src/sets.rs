//! What both balancers keep the same way: numbered backend sets in one BPF hash map
//! (`(set, index)` → backend address; an update writes a new set, then switches its frontend
//! to it, so no program sees a half-written list), service slots (indexes of the per-CPU
//! counters), and sweeps of entries whose set nothing points to.

use std::collections::HashSet;

use aya::Pod;
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuValues};

use crate::{BackendAddr, EbpfError, abi};

/// A missing key, however the kernel or aya says it.
pub(crate) fn is_not_found(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound)
        || matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOENT))
}

/// Backend sets in one map: which set ids are in use, and the entries under each.
pub(crate) struct BackendSets {
    map: BpfHashMap<MapData, abi::BackendKey, abi::BackendValue>,
    /// The map's name, for errors.
    name: &'static str,
    in_use: HashSet<u32>,
    next: u32,
}

impl BackendSets {
    pub(crate) fn new(
        map: BpfHashMap<MapData, abi::BackendKey, abi::BackendValue>,
        name: &'static str,
    ) -> BackendSets {
        BackendSets {
            map,
            name,
            in_use: HashSet::new(),
            next: 1,
        }
    }

    /// A set id nothing uses, now taken.
    pub(crate) fn alloc(&mut self) -> u32 {
        // u32 ids and at most as many in use as services: this finds a free one at once
        while !self.in_use.insert(self.next) {
            self.next = self.next.wrapping_add(1);
        }
        let set = self.next;
        self.next = self.next.wrapping_add(1);
        set
    }

    /// Marks `set` (found in pinned maps) as in use.
    pub(crate) fn adopt(&mut self, set: u32) {
        self.in_use.insert(set);
        self.next = self.next.max(set.wrapping_add(1));
    }

    /// Gives `set` back without touching its entries (a sweep deletes them).
    pub(crate) fn forget(&mut self, set: u32) {
        self.in_use.remove(&set);
    }

    pub(crate) fn in_use(&self, set: u32) -> bool {
        self.in_use.contains(&set)
    }

    /// Writes `backends` under `set`, index by index.
    pub(crate) fn write(&mut self, set: u32, backends: &[BackendAddr]) -> Result<(), EbpfError> {
        for (index, backend) in (0u32..).zip(backends) {
            self.map
                .insert(
                    abi::backend_key(set, index),
                    abi::sockaddr_value(backend.0),
                    0,
                )
                .map_err(|e| EbpfError::map(self.name, e))?;
        }
        Ok(())
    }

    /// The backend list stored under `set`, or `None` when an entry is missing.
    pub(crate) fn read(&self, set: u32, count: u16) -> Result<Option<Vec<BackendAddr>>, EbpfError> {
        let mut backends = Vec::with_capacity(usize::from(count));
        for index in 0..u32::from(count) {
            match self.map.get(&abi::backend_key(set, index), 0) {
                Ok(b) => backends.push(BackendAddr(abi::parse_sockaddr_value(&b))),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(EbpfError::map(self.name, e)),
            }
        }
        Ok(Some(backends))
    }

    /// One entry, for dumps (`None`: missing or unreadable).
    pub(crate) fn get(&self, set: u32, index: u32) -> Option<std::net::SocketAddr> {
        self.map
            .get(&abi::backend_key(set, index), 0)
            .ok()
            .map(|b| abi::parse_sockaddr_value(&b))
    }

    /// Deletes the `count` entries of `set` (absent ones are fine) and frees the id.
    pub(crate) fn delete(&mut self, set: u32, count: usize) {
        for index in 0..count as u32 {
            if let Err(e) = self.map.remove(&abi::backend_key(set, index))
                && !is_not_found(&e)
            {
                // a leftover entry is unreachable (no service points to its set) and is
                // swept by the next load's adoption; not worth failing an update for
                tracing::warn!(map = self.name, set, index, error = %e, "deleting a stale backend entry");
            }
        }
        self.in_use.remove(&set);
    }

    /// Deletes the entries of every set not in use.
    pub(crate) fn sweep(&mut self) -> Result<usize, EbpfError> {
        let in_use = &self.in_use;
        remove_where(&mut self.map, self.name, |k| {
            !in_use.contains(&abi::parse_backend_key(k).0)
        })
    }

    /// How many entries the map holds.
    pub(crate) fn entries(&self) -> Result<usize, EbpfError> {
        let mut n = 0;
        for key in self.map.keys() {
            key.map_err(|e| EbpfError::map(self.name, e))?;
            n += 1;
        }
        Ok(n)
    }
}

/// Deletes every key of `map` for which `orphan` holds. Returns how many.
pub(crate) fn remove_where<K: Pod, V: Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    name: &'static str,
    orphan: impl Fn(&K) -> bool,
) -> Result<usize, EbpfError> {
    let mut orphans = Vec::new();
    for key in map.keys() {
        let key = key.map_err(|e| EbpfError::map(name, e))?;
        if orphan(&key) {
            orphans.push(key);
        }
    }
    for key in &orphans {
        match map.remove(key) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(EbpfError::map(name, e)),
        }
    }
    Ok(orphans.len())
}

/// Service slots `0..max`: indexes of the per-CPU counters, reused after a removal.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Vec<u32>,
    next: u32,
    max: u32,
}

impl Slots {
    pub(crate) fn new(max: u32) -> Slots {
        Slots {
            free: Vec::new(),
            next: 0,
            max,
        }
    }

    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// Makes `used` (found in pinned maps) the slots in use.
    pub(crate) fn adopt(&mut self, used: &HashSet<u32>) {
        self.next = used.iter().max().map_or(0, |m| m + 1);
        self.free = (0..self.next).filter(|s| !used.contains(s)).rev().collect();
    }

    /// A free slot, its counters (`N` bytes per CPU) set to zero: a reused slot starts
    /// counting from nothing.
    pub(crate) fn alloc<const N: usize>(
        &mut self,
        counters: &mut PerCpuArray<MapData, [u8; N]>,
        name: &'static str,
    ) -> Result<u32, EbpfError>
    where
        [u8; N]: Pod,
    {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.next < self.max => {
                self.next += 1;
                self.next - 1
            }
            None => return Err(EbpfError::SlotsExhausted(self.max)),
        };
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| EbpfError::io(what, e))?;
        let zeros = PerCpuValues::try_from(vec![[0u8; N]; cpus])
            .map_err(|e| EbpfError::io("per-CPU counter values", e))?;
        if let Err(e) = counters.set(slot, zeros, 0) {
            self.free.push(slot);
            return Err(EbpfError::map(name, e));
        }
        Ok(slot)
    }

    pub(crate) fn free(&mut self, slot: u32) {
        self.free.push(slot);
    }
}
