//! The byte key-value store below the cache: the `ByteKeyValueStore` trait, its in-memory
//! implementation (keys grouped by all but their last [`GROUP_SUFFIX_LEN`] bytes in a hash
//! map, so one group's entries are found without comparing other groups' bytes), and the
//! contract test suite every implementation must pass. Owns ordered byte storage; must not know about sessions,
//! caching, record contexts or Kafka (the caching store above decides what is written).

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::store::error::StoreError;

/// Fixed per-entry cost counted by [`InMemoryBytesStore::approximate_bytes`] on top of the
/// key and value bytes: two `Bytes` handles, the group's prefix handle and a share of the
/// hash table.
pub const IN_MEMORY_ENTRY_OVERHEAD: usize = 112;

/// [`InMemoryBytesStore`] groups keys by all but their last this many bytes (a session
/// composite key's `end ‖ start` suffix: a group is one record key's sessions).
pub const GROUP_SUFFIX_LEN: usize = 16;

/// An ordered map of byte keys to byte values (keys compare as unsigned bytes).
///
/// Synchronous and `&mut self` for writes: a task owns its stores. Every operation returns
/// `Result` so a persistent implementation can report I/O failures.
pub trait ByteKeyValueStore: Send {
    /// Value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError>;
    /// Removes `key`, returning the value it had.
    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError>;
    /// Calls `visit` on every entry within the bounds, in ascending key order.
    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError>;
    /// Calls `visit` on every entry within the bounds whose key is `prefix` followed by
    /// exactly `suffix_len` bytes, in ascending key order. Stores that group keys by prefix
    /// answer it without visiting other prefixes; the default filters [`for_each_in`](Self::for_each_in).
    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        self.for_each_in(lo, hi, &mut |k, v| {
            if k.len() == prefix.len() + suffix_len && k.starts_with(prefix) {
                visit(k, v);
            }
        })
    }
    /// A hint that `key` is about to be read or written: a store may load what locating it
    /// touches into the CPU cache, so that the misses of several keys overlap. Changes
    /// nothing; the default does nothing.
    fn prefetch(&self, key: &[u8]) {
        let _ = key;
    }
    /// Removes every entry.
    fn clear(&mut self) -> Result<(), StoreError>;
    /// Number of entries.
    fn len(&self) -> usize;
    /// Approximate memory or disk footprint in bytes (keys, values and per-entry overhead).
    fn approximate_bytes(&self) -> usize;

    /// Whether the store holds no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every write so far durable on disk (a no-op for stores that keep nothing on
    /// disk). Called before a checkpoint names the changelog offset the store reflects.
    fn flush_durable(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the store keeps its entries on disk across a restart.
    fn is_persistent(&self) -> bool {
        false
    }

    /// Bytes of memory the store holds now (for an in-memory store, its contents; for a
    /// persistent one, its caches and write buffers, bounded by its configuration).
    fn memory_bytes(&self) -> usize {
        self.approximate_bytes()
    }

    /// Whether the store keeps its own index of grouped keys (at least [`GROUP_SUFFIX_LEN`]
    /// bytes) by the big-endian `i64` time in the first 8 bytes of their suffix (a session
    /// key's end), so that [`delete_timed_through`](Self::delete_timed_through) and
    /// [`max_time`](Self::max_time) cost what they find, not the store's size. A caller that
    /// expires keys by time keeps such an index itself when this is `false`.
    fn is_time_indexed(&self) -> bool {
        false
    }

    /// Deletes every grouped key whose time is at most `horizon`; returns how many. Stores
    /// without a time index delete nothing (see [`is_time_indexed`](Self::is_time_indexed)).
    fn delete_timed_through(&mut self, horizon: i64) -> Result<usize, StoreError> {
        let _ = horizon;
        Ok(0)
    }

    /// The largest time of a grouped key, if the store has a time index and any such key.
    fn max_time(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// Entries with `lo <= key < hi`, in ascending key order.
    fn range(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mut out = Vec::new();
        if lo < hi {
            self.for_each_in(Bound::Included(lo), Bound::Excluded(hi), &mut |k, v| {
                out.push((k.clone(), v.clone()))
            })?;
        }
        Ok(out)
    }

    /// Every entry, in ascending key order.
    fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, v| {
            out.push((k.clone(), v.clone()))
        })?;
        Ok(out)
    }
}

impl<T: ByteKeyValueStore + ?Sized> ByteKeyValueStore for Box<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        (**self).get(key)
    }
    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        (**self).put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        (**self).delete(key)
    }
    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        (**self).for_each_in(lo, hi, visit)
    }
    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        (**self).for_each_in_group(prefix, suffix_len, lo, hi, visit)
    }
    fn prefetch(&self, key: &[u8]) {
        (**self).prefetch(key)
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        (**self).clear()
    }
    fn len(&self) -> usize {
        (**self).len()
    }
    fn approximate_bytes(&self) -> usize {
        (**self).approximate_bytes()
    }
    fn flush_durable(&mut self) -> Result<(), StoreError> {
        (**self).flush_durable()
    }
    fn is_persistent(&self) -> bool {
        (**self).is_persistent()
    }
    fn memory_bytes(&self) -> usize {
        (**self).memory_bytes()
    }
    fn is_time_indexed(&self) -> bool {
        (**self).is_time_indexed()
    }
    fn delete_timed_through(&mut self, horizon: i64) -> Result<usize, StoreError> {
        (**self).delete_timed_through(horizon)
    }
    fn max_time(&self) -> Result<Option<i64>, StoreError> {
        (**self).max_time()
    }
}

/// One group's entries, sorted by key (all keys of a group have the same length, so key
/// order is suffix order). One entry, the common case, is held inline.
type Group = SmallVec<[(Bytes, Bytes); 1]>;

/// In-memory [`ByteKeyValueStore`]: keys of at least [`GROUP_SUFFIX_LEN`] bytes live in
/// groups by their prefix (all but the last [`GROUP_SUFFIX_LEN`] bytes), each group's
/// entries sorted; shorter keys in a `BTreeMap`. The groups sit in a slab (`Vec`, freed
/// slots reused) and a hash table of slab indices finds a group by its prefix, read from
/// the group's first key: no prefix is stored twice and the table holds 4 bytes a group,
/// so memory per entry stays close to the keys and values themselves. Point operations
/// and [`for_each_in_group`](ByteKeyValueStore::for_each_in_group) hash the prefix once
/// and never compare other groups' bytes (bar a hash collision); an ordered scan over
/// groups ([`for_each_in`](ByteKeyValueStore::for_each_in)) sorts what it visits
/// (snapshots and reopen scans, not the per-record path).
#[derive(Debug, Default, Clone)]
pub struct InMemoryBytesStore {
    index: HashTable<u32>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    hasher: foldhash::fast::RandomState,
    short: BTreeMap<Bytes, Bytes>,
    len: usize,
    bytes: usize,
}

impl InMemoryBytesStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
        key.len() + value.len() + IN_MEMORY_ENTRY_OVERHEAD
    }

    fn prefix_of(key: &[u8]) -> Option<&[u8]> {
        key.len().checked_sub(GROUP_SUFFIX_LEN).map(|n| &key[..n])
    }

    fn removed(&mut self, key: &[u8], old: &Option<Bytes>) {
        if let Some(v) = old {
            self.bytes -= Self::entry_bytes(key, v);
            self.len -= 1;
        }
    }

    /// Slab index of the group of `prefix`, if it has entries.
    fn find_group(&self, prefix: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(prefix);
        let groups = &self.groups;
        self.index
            .find(hash, |&g| group_prefix(&groups[g as usize]) == prefix)
            .copied()
    }

    /// The group of `prefix`, created empty if missing.
    fn group_mut_or_insert(&mut self, prefix: &[u8]) -> &mut Group {
        let hash = self.hasher.hash_one(prefix);
        let Self {
            index,
            groups,
            free_groups,
            hasher,
            ..
        } = self;
        let found = index
            .find(hash, |&g| group_prefix(&groups[g as usize]) == prefix)
            .copied();
        let g = match found {
            Some(g) => g,
            None => {
                let g = match free_groups.pop() {
                    Some(g) => g,
                    None => {
                        groups.push(Group::new());
                        u32::try_from(groups.len() - 1).expect("fewer than 2^32 groups")
                    }
                };
                // Growing the table rehashes the groups already in it (each has a first
                // entry to read its prefix from); the new one joins after, empty until the
                // caller inserts its first entry.
                index.insert_unique(hash, g, |&h| {
                    hasher.hash_one(group_prefix(&groups[h as usize]))
                });
                g
            }
        };
        &mut groups[g as usize]
    }

    /// Frees group `g` (now empty) of `prefix`.
    fn remove_group(&mut self, prefix: &[u8], g: u32) {
        let hash = self.hasher.hash_one(prefix);
        if let Ok(entry) = self.index.find_entry(hash, |&h| h == g) {
            entry.remove();
        }
        self.groups[g as usize] = Group::new();
        self.free_groups.push(g);
    }
}

/// A non-empty group's prefix: its first key without the suffix.
fn group_prefix(group: &Group) -> &[u8] {
    group
        .first()
        .map_or(&[][..], |(k, _)| &k[..k.len() - GROUP_SUFFIX_LEN])
}

/// The order of two keys of one group (same prefix, so same length): their
/// [`GROUP_SUFFIX_LEN`]-byte suffixes compared as big-endian integers, which is their byte
/// order, without comparing the shared prefix again. Keys shorter than the suffix (the
/// cache's group of short keys) are compared whole.
#[inline]
pub(crate) fn in_group_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if a.len() < GROUP_SUFFIX_LEN || b.len() < GROUP_SUFFIX_LEN {
        return a.cmp(b);
    }
    debug_assert_eq!(
        a[..a.len() - GROUP_SUFFIX_LEN],
        b[..b.len() - GROUP_SUFFIX_LEN]
    );
    suffix(a).cmp(&suffix(b))
}

fn suffix(key: &[u8]) -> u128 {
    let mut s = [0u8; GROUP_SUFFIX_LEN];
    s.copy_from_slice(&key[key.len() - GROUP_SUFFIX_LEN..]);
    u128::from_be_bytes(s)
}

/// Whether `key` lies within the bounds.
pub(crate) fn in_bounds(key: &[u8], lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => key >= l,
        Bound::Excluded(l) => key > l,
    };
    above
        && match hi {
            Bound::Unbounded => true,
            Bound::Included(h) => key <= h,
            Bound::Excluded(h) => key < h,
        }
}

impl ByteKeyValueStore for InMemoryBytesStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let Some(prefix) = Self::prefix_of(key) else {
            return Ok(self.short.get(key).cloned());
        };
        Ok(self.find_group(prefix).and_then(|g| {
            let g = &self.groups[g as usize];
            g.binary_search_by(|(k, _)| in_group_cmp(k, key))
                .ok()
                .map(|i| g[i].1.clone())
        }))
    }

    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let Some(prefix_len) = key.len().checked_sub(GROUP_SUFFIX_LEN) else {
            let (k, v) = (key.clone(), value.clone());
            let old = self.short.insert(key, value);
            self.bytes += Self::entry_bytes(&k, &v);
            match old {
                Some(old) => self.bytes -= Self::entry_bytes(&k, &old),
                None => self.len += 1,
            }
            return Ok(());
        };
        let (len, value_len) = (key.len(), value.len());
        let group = self.group_mut_or_insert(&key[..prefix_len]);
        let old = match group.binary_search_by(|(k, _)| in_group_cmp(k, &key)) {
            Ok(i) => Some(std::mem::replace(&mut group[i].1, value)),
            Err(i) => {
                group.insert(i, (key, value));
                None
            }
        };
        self.bytes += len + value_len + IN_MEMORY_ENTRY_OVERHEAD;
        match old {
            Some(old) => self.bytes -= len + old.len() + IN_MEMORY_ENTRY_OVERHEAD,
            None => self.len += 1,
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let Some(prefix) = Self::prefix_of(key) else {
            let old = self.short.remove(key);
            self.removed(key, &old);
            return Ok(old);
        };
        let Some(g) = self.find_group(prefix) else {
            return Ok(None);
        };
        let group = &mut self.groups[g as usize];
        let old = match group.binary_search_by(|(k, _)| in_group_cmp(k, key)) {
            Ok(i) => Some(group.remove(i).1),
            Err(_) => None,
        };
        if group.is_empty() {
            self.remove_group(prefix, g);
        }
        self.removed(key, &old);
        Ok(old)
    }

    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        if !bounds_non_empty(lo, hi) {
            return Ok(());
        }
        let mut hits: Vec<(&Bytes, &Bytes)> = self
            .groups
            .iter()
            .flat_map(|g| g.iter().map(|(k, v)| (k, v)))
            .filter(|(k, _)| in_bounds(k, lo, hi))
            .collect();
        hits.extend(self.short.range::<[u8], _>((lo, hi)));
        hits.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in hits {
            visit(k, v);
        }
        Ok(())
    }

    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        if suffix_len != GROUP_SUFFIX_LEN {
            return self.for_each_in(lo, hi, &mut |k, v| {
                if k.len() == prefix.len() + suffix_len && k.starts_with(prefix) {
                    visit(k, v);
                }
            });
        }
        if let Some(g) = self.find_group(prefix) {
            for (k, v) in self.groups[g as usize]
                .iter()
                .filter(|(k, _)| in_bounds(k, lo, hi))
            {
                visit(k, v);
            }
        }
        Ok(())
    }

    fn prefetch(&self, key: &[u8]) {
        let group = Self::prefix_of(key)
            .and_then(|prefix| self.find_group(prefix))
            .map(|g| &self.groups[g as usize]);
        if let Some((_, value)) = group.and_then(|g| g.first()) {
            std::hint::black_box(value.first());
        }
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.index.clear();
        self.groups.clear();
        self.free_groups.clear();
        self.short.clear();
        self.len = 0;
        self.bytes = 0;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes
    }
}

/// Whether a pair of bounds can hold any key. `BTreeMap::range` panics on inverted or
/// empty-excluded bounds; callers pass input-derived bounds, so they are checked first.
pub fn bounds_non_empty(lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    match (lo, hi) {
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
    }
}

/// Contract tests every [`ByteKeyValueStore`] implementation must pass. Instantiate them
/// with [`byte_store_contract_tests!`](crate::byte_store_contract_tests) and a factory of
/// empty stores.
#[cfg(test)]
pub(crate) mod contract;

/// Generates one `#[test]` per contract case for a store type: `byte_store_contract_tests!(
/// module_name, || MyStore::new())`.
#[cfg(test)]
#[macro_export]
macro_rules! byte_store_contract_tests {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::store::bytes_store::contract;
            #[test]
            fn starts_empty() {
                contract::starts_empty(($make)());
            }
            #[test]
            fn prefetch_changes_nothing() {
                contract::prefetch_changes_nothing(($make)());
            }
            #[test]
            fn put_get_overwrite() {
                contract::put_get_overwrite(($make)());
            }
            #[test]
            fn delete_returns_old_and_is_idempotent() {
                contract::delete_returns_old_and_is_idempotent(($make)());
            }
            #[test]
            fn range_is_half_open_and_ordered() {
                contract::range_is_half_open_and_ordered(($make)());
            }
            #[test]
            fn clear_empties() {
                contract::clear_empties(($make)());
            }
            #[test]
            fn approximate_bytes_tracks_contents() {
                contract::approximate_bytes_tracks_contents(($make)());
            }
            #[test]
            fn group_scan_matches_filtered_range() {
                contract::group_scan_matches_filtered_range(($make)());
            }
            #[test]
            fn time_index_deletes_through_the_horizon() {
                contract::time_index_deletes_through_the_horizon(($make)());
            }
            #[test]
            fn matches_btreemap_model() {
                contract::matches_btreemap_model(($make)());
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::byte_store_contract_tests!(in_memory, InMemoryBytesStore::new);
    crate::byte_store_contract_tests!(boxed_dyn, || -> Box<dyn ByteKeyValueStore> {
        Box::new(InMemoryBytesStore::new())
    });

    #[test]
    fn inverted_bounds_do_not_panic() {
        let mut s = InMemoryBytesStore::new();
        s.put(Bytes::from_static(b"m"), Bytes::new()).unwrap();
        let mut seen = 0;
        s.for_each_in(
            Bound::Excluded(&b"m"[..]),
            Bound::Excluded(&b"m"[..]),
            &mut |_, _| seen += 1,
        )
        .unwrap();
        s.for_each_in(
            Bound::Included(&b"z"[..]),
            Bound::Included(&b"a"[..]),
            &mut |_, _| seen += 1,
        )
        .unwrap();
        assert_eq!(seen, 0);
    }
}
