//! The record cache: `NamedCache` (one per store) and `CacheBudget` (one per worker, shared
//! by all of its caches: `statestore.cache.max.bytes`). Owns LRU order, the dirty set in
//! insertion order and byte accounting. Does no I/O and knows no store: when it must evict
//! a dirty entry it hands that cache's dirty entries to the caller's flush listener, which
//! writes them through before they leave the cache.
//!
//! Eviction follows Kafka Streams' `ThreadCache` and `NamedCache`: after a put, while the
//! budget's total is over its maximum, the least recently used entry of the cache that was
//! written is evicted; if it is dirty, it is flushed together with all other dirty entries
//! of that cache: the evicted one first, then the others in dirty order (the order their
//! writes were made). A key that is dirtied again moves to the end of the dirty order. A
//! clean tombstone is dropped from the cache after a flush: the store below already
//! reflects it. Entries are sized as Java sizes them ([`CACHE_ENTRY_OVERHEAD`]), so a
//! budget holds as many entries as the same `statestore.cache.max.bytes` does in Java.

use std::hash::BuildHasher;
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::HashTable;
use smallvec::SmallVec;

use crate::store::bytes_store::{bounds_non_empty, in_bounds, in_group_cmp, GROUP_SUFFIX_LEN};
use crate::store::context::RecordContext;

mod budget;
mod lists;

pub use budget::CacheBudget;
use lists::{Link, List, Which, EMPTY_LIST, NIL, UNLINKED};

/// Fixed bytes counted per cache entry on top of key, value and topic, as Kafka Streams
/// 4.4.0 counts them, so that a budget holds as many entries as Java's: `LRUNode.size()`
/// adds 24 for its three references to the key's length, `LRUCacheEntry` 1 for the dirty
/// flag and `ProcessorRecordContext.residentMemorySizeEstimate()` 20 for timestamp, offset
/// and partition (plus the topic's UTF-16 length and the headers, which kstate's input
/// records do not carry); and Java's cache key is the session key behind the 8-byte segment
/// id of `SegmentedCacheFunction`.
pub const CACHE_ENTRY_OVERHEAD: usize = 24 + 1 + 20 + 8;

/// A cached value: `None` is a tombstone. `dirty` entries have not reached the store below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Cached value; `None` marks a removed key.
    pub value: Option<Bytes>,
    /// Whether the entry still has to be written to the store below.
    pub dirty: bool,
    /// Context of the write that produced this entry.
    pub context: RecordContext,
}

/// A dirty entry handed to a flush listener, in dirty order.
pub type DirtyEntry = (Bytes, CacheEntry);

/// The eviction flush listener: it takes (drains) the dirty entries from the buffer it is
/// handed; the cache reuses the buffer.
pub type FlushListener<'a> = dyn FnMut(&mut Vec<DirtyEntry>) + 'a;

/// Counters of one cache. Plain counters: the store layer does not depend on a metrics
/// crate; the runtime reads them and publishes them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheMetrics {
    /// Lookups answered by the cache: a [`get`](NamedCache::get) that found the key, or a
    /// range lookup the caller [recorded](NamedCache::record_lookup) as answered.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries evicted to stay within budget.
    pub evictions: u64,
    /// Flushes triggered by evicting a dirty entry.
    pub eviction_flushes: u64,
    /// Flushes asked for by the caller ([`flush`](NamedCache::flush): a commit or a close).
    pub commit_flushes: u64,
}

/// One entry of the slab. A free slot has `in_use == false`, an empty key and no value.
#[derive(Debug)]
struct Slot {
    key: Bytes,
    entry: CacheEntry,
    size: usize,
    in_use: bool,
    lru: Link,
    dirty: Link,
}

/// The slots of one group, sorted by key. A key of at least [`GROUP_SUFFIX_LEN`] bytes
/// belongs to the group of its prefix (a session composite key: one record key's
/// sessions); shorter keys share one group of their own.
type Group = SmallVec<[u32; 2]>;

/// The cache of one store: a slab of entries threaded by an intrusive LRU list and an
/// intrusive dirty list, and an index of the slabs' entries grouped like the in-memory
/// store (see [`InMemoryBytesStore`](crate::store::InMemoryBytesStore)), so the entries of
/// one record key are found by one hash lookup without comparing other keys' bytes. Slots,
/// groups and the flush buffer are reused: once they have grown, a put allocates nothing.
/// Byte usage is charged to the shared [`CacheBudget`].
#[derive(Debug)]
pub struct NamedCache {
    name: String,
    budget: CacheBudget,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    /// Group indices of keys with a prefix, hashed by prefix.
    index: HashTable<u32>,
    /// Group of the keys shorter than [`GROUP_SUFFIX_LEN`].
    short_group: Option<u32>,
    hasher: foldhash::fast::RandomState,
    lru: List,
    dirty: List,
    len: usize,
    bytes: usize,
    metrics: CacheMetrics,
    /// Reused by eviction flushes.
    flush_buf: Vec<DirtyEntry>,
}

/// A key's prefix, or `None` for a short key.
fn prefix_of(key: &[u8]) -> Option<&[u8]> {
    key.len().checked_sub(GROUP_SUFFIX_LEN).map(|n| &key[..n])
}

impl NamedCache {
    /// An empty cache named `name` charging `budget`.
    pub fn new(name: impl Into<String>, budget: CacheBudget) -> Self {
        Self {
            name: name.into(),
            budget,
            slots: Vec::new(),
            free_slots: Vec::new(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            index: HashTable::new(),
            short_group: None,
            hasher: foldhash::fast::RandomState::default(),
            lru: EMPTY_LIST,
            dirty: EMPTY_LIST,
            len: 0,
            bytes: 0,
            metrics: CacheMetrics::default(),
            flush_buf: Vec::new(),
        }
    }

    /// The cache's name (the store name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shared budget.
    pub fn budget(&self) -> &CacheBudget {
        &self.budget
    }

    /// Number of entries, clean and dirty.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of dirty entries.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len
    }

    /// Bytes charged by this cache.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Counters.
    pub fn metrics(&self) -> CacheMetrics {
        self.metrics
    }

    /// Looks `key` up and marks it most recently used.
    pub fn get(&mut self, key: &[u8]) -> Option<&CacheEntry> {
        match self.find(key) {
            Some((_, _, s)) => {
                self.unlink(Which::Lru, s);
                self.push_back(Which::Lru, s);
                self.metrics.hits += 1;
                Some(&self.slots[s as usize].entry)
            }
            None => {
                self.metrics.misses += 1;
                None
            }
        }
    }

    /// Counts a lookup the caller answered from [`range`](Self::range) or
    /// [`range_in_group`](Self::range_in_group) (which count nothing themselves): a hit
    /// when the cache held what was looked for.
    pub fn record_lookup(&mut self, hit: bool) {
        if hit {
            self.metrics.hits += 1;
        } else {
            self.metrics.misses += 1;
        }
    }

    /// Looks `key` up without touching the LRU order.
    pub fn peek(&self, key: &[u8]) -> Option<&CacheEntry> {
        self.find(key)
            .map(|(_, _, s)| &self.slots[s as usize].entry)
    }

    /// Entries whose key is `prefix` followed by exactly [`GROUP_SUFFIX_LEN`] bytes (one
    /// record key's sessions) within `lo <= key < hi`, in ascending key order (no LRU
    /// update). One hash lookup; other prefixes' keys are never compared.
    pub fn range_in_group<'a>(
        &'a self,
        prefix: &[u8],
        lo: &'a [u8],
        hi: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a CacheEntry)> + 'a {
        let members: &[u32] = match self.find_group(Some(prefix)) {
            Some(g) if lo < hi => &self.groups[g as usize],
            _ => &[],
        };
        members
            .iter()
            .map(move |&s| &self.slots[s as usize])
            .filter(move |slot| lo <= &slot.key[..] && &slot.key[..] < hi)
            .map(|slot| (&slot.key, &slot.entry))
    }

    /// Marks the entries [`range_in_group`](Self::range_in_group) yields for the same
    /// arguments, and `touched` accepts, most recently used, in ascending key order: what
    /// Kafka Streams' cache iterator does to every key it passes (it reads each with
    /// `NamedCache.get`).
    pub fn touch_in_group(
        &mut self,
        prefix: &[u8],
        lo: &[u8],
        hi: &[u8],
        mut touched: impl FnMut(&[u8]) -> bool,
    ) {
        let Some(g) = self.find_group(Some(prefix)) else {
            return;
        };
        for i in 0..self.groups[g as usize].len() {
            let s = self.groups[g as usize][i];
            let key = &self.slots[s as usize].key[..];
            if lo <= key && key < hi && touched(key) {
                self.unlink(Which::Lru, s);
                self.push_back(Which::Lru, s);
            }
        }
    }

    /// Entries with `lo <= key < hi` in ascending key order (no LRU update). Visits every
    /// group and sorts what it found: for scans, not the per-record path
    /// ([`range_in_group`](Self::range_in_group) is).
    pub fn range<'a>(
        &'a self,
        lo: &'a [u8],
        hi: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a CacheEntry)> + 'a {
        self.range_bounds(Bound::Included(lo), Bound::Excluded(hi))
    }

    /// Entries within the bounds in ascending key order (no LRU update); a scan like
    /// [`range`](Self::range).
    pub fn range_bounds<'a>(
        &'a self,
        lo: Bound<&'a [u8]>,
        hi: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a CacheEntry)> + 'a {
        let mut hits: Vec<&Slot> = if bounds_non_empty(lo, hi) {
            self.slots
                .iter()
                .filter(|s| s.in_use && in_bounds(&s.key, lo, hi))
                .collect()
        } else {
            Vec::new()
        };
        hits.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        hits.into_iter().map(|s| (&s.key, &s.entry))
    }

    /// Every entry in ascending key order (no LRU update).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &CacheEntry)> {
        self.range_bounds(Bound::Unbounded, Bound::Unbounded)
    }

    /// Stages `value` under `key` as a dirty entry (a `None` value is a tombstone), marks
    /// it most recently used and moves it to the end of the dirty order. Then, while the
    /// shared budget is exceeded, evicts this cache's LRU entries; evicting a dirty entry
    /// first hands every dirty entry of this cache to `on_flush` (see the module doc).
    pub fn put(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        context: RecordContext,
        on_flush: &mut FlushListener<'_>,
    ) {
        self.insert(key, value, context);
        self.evict_while_over_budget(on_flush);
    }

    /// [`put`](Self::put) of several entries with one eviction pass after the last: they
    /// enter the dirty order together, in the order given, and an eviction flush hands
    /// them to `on_flush` all at once (one processing step's writes, see
    /// `CachingSessionStore::replace`).
    pub fn put_all(
        &mut self,
        entries: impl IntoIterator<Item = (Bytes, Option<Bytes>)>,
        context: RecordContext,
        on_flush: &mut FlushListener<'_>,
    ) {
        for (key, value) in entries {
            self.insert(key, value, context.clone());
        }
        self.evict_while_over_budget(on_flush);
    }

    /// Stages a dirty entry: updates the slot of an existing key in place, or fills a free
    /// slot.
    fn insert(&mut self, key: Bytes, value: Option<Bytes>, context: RecordContext) {
        let size = entry_size(&key, value.as_ref(), &context);
        let entry = CacheEntry {
            value,
            dirty: true,
            context,
        };
        let g = self.group_or_insert(prefix_of(&key));
        let pos = self.search(g, &key);
        let s = match pos {
            Ok(i) => {
                let s = self.groups[g as usize][i];
                if self.slots[s as usize].entry.dirty {
                    self.unlink(Which::Dirty, s);
                }
                self.unlink(Which::Lru, s);
                let slot = &mut self.slots[s as usize];
                slot.entry = entry;
                let old = std::mem::replace(&mut slot.size, size);
                self.uncharge(old);
                s
            }
            Err(i) => {
                let slot = Slot {
                    key,
                    entry,
                    size,
                    in_use: true,
                    lru: UNLINKED,
                    dirty: UNLINKED,
                };
                let s = match self.free_slots.pop() {
                    Some(s) => {
                        self.slots[s as usize] = slot;
                        s
                    }
                    None => {
                        self.slots.push(slot);
                        u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 entries")
                    }
                };
                self.groups[g as usize].insert(i, s);
                self.len += 1;
                s
            }
        };
        self.push_back(Which::Lru, s);
        self.push_back(Which::Dirty, s);
        self.charge(size);
    }

    /// Removes `key` from the cache without flushing it. Returns the removed entry.
    pub fn evict_key(&mut self, key: &[u8]) -> Option<CacheEntry> {
        let (g, i, s) = self.find(key)?;
        Some(self.remove_slot(g, i, s))
    }

    /// Drains every dirty entry in dirty order and marks it clean. Clean tombstones are
    /// then dropped from the cache.
    pub fn flush(&mut self) -> Vec<DirtyEntry> {
        let mut out = Vec::with_capacity(self.dirty.len);
        self.flush_into(&mut out);
        out
    }

    /// [`flush`](Self::flush) appending to a caller's (reused) buffer.
    pub fn flush_into(&mut self, out: &mut Vec<DirtyEntry>) {
        self.metrics.commit_flushes += 1;
        self.drain_dirty(out);
    }

    fn drain_dirty(&mut self, out: &mut Vec<DirtyEntry>) {
        out.reserve(self.dirty.len);
        while self.dirty.head != NIL {
            let s = self.dirty.head;
            self.unlink(Which::Dirty, s);
            let slot = &mut self.slots[s as usize];
            slot.entry.dirty = false;
            if slot.entry.value.is_none() {
                let key = slot.key.clone();
                let (g, i, _) = self.find(&key).expect("a linked slot is indexed");
                let entry = self.remove_slot(g, i, s);
                out.push((key, entry));
            } else {
                out.push((slot.key.clone(), slot.entry.clone()));
            }
        }
    }

    /// Drops every entry, dirty or not, and releases its bytes from the budget.
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free_slots.clear();
        self.groups.clear();
        self.free_groups.clear();
        self.index.clear();
        self.short_group = None;
        self.lru = EMPTY_LIST;
        self.dirty = EMPTY_LIST;
        self.len = 0;
        let bytes = self.bytes;
        self.uncharge(bytes);
    }

    fn evict_while_over_budget(&mut self, on_flush: &mut FlushListener<'_>) {
        while self.budget.over_budget() {
            let eldest = self.lru.head;
            if eldest == NIL {
                return;
            }
            let key = self.slots[eldest as usize].key.clone();
            let (g, i, s) = self.find(&key).expect("a linked slot is indexed");
            let mut entry = self.remove_slot(g, i, s);
            self.metrics.evictions += 1;
            if entry.dirty {
                // Java's `NamedCache.evict`: the eldest leaves first and heads the flush,
                // the other dirty entries follow in dirty order.
                self.metrics.eviction_flushes += 1;
                entry.dirty = false;
                let mut buf = std::mem::take(&mut self.flush_buf);
                buf.push((key, entry));
                self.drain_dirty(&mut buf);
                on_flush(&mut buf);
                buf.clear();
                self.flush_buf = buf;
            }
        }
    }

    /// `(group, position in group, slot)` of `key`.
    fn find(&self, key: &[u8]) -> Option<(u32, usize, u32)> {
        let g = self.find_group(prefix_of(key))?;
        let i = self.search(g, key).ok()?;
        Some((g, i, self.groups[g as usize][i]))
    }

    fn search(&self, g: u32, key: &[u8]) -> Result<usize, usize> {
        let slots = &self.slots;
        self.groups[g as usize].binary_search_by(|&s| in_group_cmp(&slots[s as usize].key, key))
    }

    /// The group of a prefix (`None`: the short keys' group).
    fn find_group(&self, prefix: Option<&[u8]>) -> Option<u32> {
        let Some(prefix) = prefix else {
            return self.short_group;
        };
        self.find_hashed(prefix, self.hasher.hash_one(prefix))
    }

    /// The group of a prefix whose hash is `hash`.
    fn find_hashed(&self, prefix: &[u8], hash: u64) -> Option<u32> {
        self.index
            .find(hash, |&g| self.group_prefix(g) == Some(prefix))
            .copied()
    }

    /// A non-empty long-key group's prefix, read from its first key.
    fn group_prefix(&self, g: u32) -> Option<&[u8]> {
        let &s = self.groups[g as usize].first()?;
        prefix_of(&self.slots[s as usize].key)
    }

    fn group_or_insert(&mut self, prefix: Option<&[u8]>) -> u32 {
        let hash = prefix.map(|p| self.hasher.hash_one(p));
        let found = match (prefix, hash) {
            (Some(p), Some(h)) => self.find_hashed(p, h),
            _ => self.short_group,
        };
        if let Some(g) = found {
            return g;
        }
        let g = match self.free_groups.pop() {
            Some(g) => g,
            None => {
                self.groups.push(Group::new());
                u32::try_from(self.groups.len() - 1).expect("fewer than 2^32 groups")
            }
        };
        match hash {
            None => self.short_group = Some(g),
            Some(hash) => {
                let Self {
                    index,
                    groups,
                    slots,
                    hasher,
                    ..
                } = self;
                // Growing the table rehashes the groups already in it (each has a first
                // key); the new one joins after, empty until the caller fills it.
                index.insert_unique(hash, g, |&h| {
                    let s = groups[h as usize][0];
                    hasher.hash_one(prefix_of(&slots[s as usize].key).unwrap_or_default())
                });
            }
        }
        g
    }

    /// Takes slot `s` (at position `i` of group `g`) out of the index and both lists,
    /// releases its bytes and frees it; returns its entry.
    fn remove_slot(&mut self, g: u32, i: usize, s: u32) -> CacheEntry {
        let emptied = self.groups[g as usize].len() == 1;
        let prefix_hash = emptied
            .then(|| self.group_prefix(g).map(|p| self.hasher.hash_one(p)))
            .flatten();
        self.groups[g as usize].remove(i);
        if emptied {
            match prefix_hash {
                Some(hash) => {
                    if let Ok(e) = self.index.find_entry(hash, |&h| h == g) {
                        e.remove();
                    }
                }
                None => self.short_group = None,
            }
            self.free_groups.push(g);
        }
        self.unlink(Which::Lru, s);
        // A dirty entry is on the dirty list, a clean one never.
        if self.slots[s as usize].entry.dirty {
            self.unlink(Which::Dirty, s);
        }
        let slot = &mut self.slots[s as usize];
        slot.in_use = false;
        slot.key = Bytes::new();
        let size = slot.size;
        let placeholder = CacheEntry {
            value: None,
            dirty: false,
            context: slot.entry.context.clone(),
        };
        let entry = std::mem::replace(&mut slot.entry, placeholder);
        self.free_slots.push(s);
        self.len -= 1;
        self.uncharge(size);
        entry
    }

    fn charge(&mut self, n: usize) {
        self.bytes += n;
        self.budget.add(n);
    }

    fn uncharge(&mut self, n: usize) {
        self.bytes -= n;
        self.budget.sub(n);
    }
}

impl Drop for NamedCache {
    fn drop(&mut self) {
        self.budget.sub(self.bytes);
    }
}

/// An entry's bytes as Kafka Streams counts them (see [`CACHE_ENTRY_OVERHEAD`]): the topic
/// by its `String.toCharArray().length`, UTF-16 code units.
fn entry_size(key: &[u8], value: Option<&Bytes>, context: &RecordContext) -> usize {
    let topic = if context.topic.is_ascii() {
        context.topic.len()
    } else {
        context.topic.encode_utf16().count()
    };
    key.len() + value.map_or(0, |v| v.len()) + topic + CACHE_ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests;
