//! A small persistent ordered map: sorted chunks behind `Arc`s, so a clone is one pointer copy
//! and an update copies one chunk plus the chunk list (`len / CHUNK` pointers), not the map.
//!
//! Why not `BTreeMap`: every service table is an immutable snapshot (data planes, dump and the
//! health server hold them), so producing the next table after one change must not copy 100k
//! entries. Why not a crate (`im`, `rpds`): this needs insert, remove, lookup and ordered
//! iteration only, and the chunk structure also lets [`crate::diff::TableDiff::between`] skip
//! the chunks two tables share by pointer.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Target chunk size: a chunk splits at twice this and merges with a neighbour below half.
/// Small enough that copying one (Arc clones) costs a few microseconds, large enough that the
/// chunk list of 100k entries is ~1k pointers.
const CHUNK: usize = 64;

type Chunk<K, V> = Arc<Vec<(K, V)>>;

/// An ordered map with O(1) clone and copy-on-write updates of one chunk.
pub(crate) struct PMap<K, V> {
    /// Non-empty chunks, sorted, each sorted: every key of chunk i < every key of chunk i + 1.
    chunks: Arc<Vec<Chunk<K, V>>>,
    len: usize,
}

impl<K, V> Clone for PMap<K, V> {
    fn clone(&self) -> Self {
        PMap {
            chunks: Arc::clone(&self.chunks),
            len: self.len,
        }
    }
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        PMap {
            chunks: Arc::new(Vec::new()),
            len: 0,
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for PMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K, V> PMap<K, V> {
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            chunks: self.chunks.iter(),
            current: [].iter(),
            left: self.len,
        }
    }

    pub(crate) fn values(&self) -> impl ExactSizeIterator<Item = &V> {
        Values(self.iter())
    }

    /// The chunks, for walks that skip the ones two versions share (`Arc::ptr_eq`).
    pub(crate) fn chunks(&self) -> &[Chunk<K, V>] {
        &self.chunks
    }
}

impl<K: Ord + Clone, V: Clone> PMap<K, V> {
    /// The chunk that holds `key` if anything does: the first whose last key is ≥ `key`.
    fn chunk_of<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.chunks.partition_point(|c| match c.last() {
            Some((last, _)) => last.borrow() < key,
            None => true,
        })
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let chunk = self.chunks.get(self.chunk_of(key))?;
        let i = chunk.binary_search_by(|(k, _)| k.borrow().cmp(key)).ok()?;
        chunk.get(i).map(|(_, v)| v)
    }

    /// Inserts or replaces; returns the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let chunks = Arc::make_mut(&mut self.chunks);
        if chunks.is_empty() {
            chunks.push(Arc::new(vec![(key, value)]));
            self.len += 1;
            return None;
        }
        let at = chunks
            .partition_point(|c| c.last().is_some_and(|(last, _)| *last < key))
            .min(chunks.len() - 1);
        let chunk = Arc::make_mut(&mut chunks[at]);
        match chunk.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => return Some(std::mem::replace(&mut chunk[i].1, value)),
            Err(i) => chunk.insert(i, (key, value)),
        }
        self.len += 1;
        if chunk.len() >= 2 * CHUNK {
            let tail = chunk.split_off(CHUNK);
            chunks.insert(at + 1, Arc::new(tail));
        }
        None
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let at = self.chunk_of(key);
        let i = self
            .chunks
            .get(at)?
            .binary_search_by(|(k, _)| k.borrow().cmp(key))
            .ok()?;
        let chunks = Arc::make_mut(&mut self.chunks);
        let chunk = Arc::make_mut(&mut chunks[at]);
        let (_, value) = chunk.remove(i);
        self.len -= 1;
        if chunk.is_empty() {
            chunks.remove(at);
        } else if chunk.len() < CHUNK / 2 && at + 1 < chunks.len() {
            // Keeps chunks from shrinking to a few entries each after many removals (the list
            // of chunks, copied on every update, stays ~len / CHUNK long).
            if chunks[at].len() + chunks[at + 1].len() < 2 * CHUNK {
                let next = chunks.remove(at + 1);
                let chunk = Arc::make_mut(&mut chunks[at]);
                chunk.extend(next.iter().cloned());
            }
        }
        Some(value)
    }
}

/// Entries in key order.
pub(crate) struct Iter<'a, K, V> {
    chunks: std::slice::Iter<'a, Chunk<K, V>>,
    current: std::slice::Iter<'a, (K, V)>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.current.next() {
                self.left -= 1;
                return Some((k, v));
            }
            self.current = self.chunks.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

struct Values<'a, K, V>(Iter<'a, K, V>);

impl<'a, K, V> Iterator for Values<'a, K, V> {
    type Item = &'a V;

    fn next(&mut self) -> Option<&'a V> {
        self.0.next().map(|(_, v)| v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> ExactSizeIterator for Values<'_, K, V> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A deterministic sequence of inserts and removes agrees with `BTreeMap`, and old
    /// versions are not changed by updates to new ones.
    #[test]
    fn behaves_as_a_btreemap_and_versions_are_independent() {
        let mut map: PMap<u32, u32> = PMap::default();
        let mut reference = BTreeMap::new();
        let mut versions = Vec::new();
        let mut x: u64 = 12345;
        for step in 0..20_000u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = ((x >> 33) % 3000) as u32;
            if (x >> 20).is_multiple_of(3) {
                assert_eq!(map.remove(&key), reference.remove(&key));
            } else {
                assert_eq!(map.insert(key, step), reference.insert(key, step));
            }
            if step % 2000 == 0 {
                versions.push((map.clone(), reference.clone()));
            }
        }
        for (m, r) in versions.iter().chain([(map, reference)].iter()) {
            assert_eq!(m.iter().len(), r.len());
            assert!(
                m.iter()
                    .map(|(k, v)| (*k, *v))
                    .eq(r.iter().map(|(k, v)| (*k, *v)))
            );
            for k in 0..3000 {
                assert_eq!(m.get(&k), r.get(&k));
            }
            assert!(
                m.chunks()
                    .iter()
                    .all(|c| !c.is_empty() && c.len() < 2 * CHUNK)
            );
        }
    }
}
