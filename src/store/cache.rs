//! The record cache: `NamedCache` (one per store) and `CacheBudget` (one per worker, shared
//! by all of its caches: `statestore.cache.max.bytes`). Owns LRU order, the dirty set in
//! insertion order and byte accounting. Does no I/O and knows no store: when it must evict
//! a dirty entry it hands that cache's dirty entries to the caller's flush listener, which
//! writes them through before they leave the cache.
//!
//! Eviction follows Kafka Streams' `ThreadCache`: after a put, while the budget's total is
//! over its maximum, the least recently used entry of the cache that was written is
//! evicted; if it is dirty, all dirty entries of that cache are flushed first (in dirty
//! order, so the flush listener sees writes in the order they were made). A key that is
//! dirtied again moves to the end of the dirty order. A clean tombstone is dropped from the
//! cache after a flush: the store below already reflects it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::store::bytes_store::bounds_non_empty;
use crate::store::context::RecordContext;

/// Fixed bytes counted per cache entry on top of key, value and topic: the context fields
/// (offset, timestamp, partition, dirty flag) plus map and LRU bookkeeping.
pub const CACHE_ENTRY_OVERHEAD: usize = 96;

/// A worker-wide cache byte budget shared by every [`NamedCache`] of the worker.
/// Cloning is cheap (an `Arc`); all clones see the same total.
#[derive(Debug, Clone)]
pub struct CacheBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    max_bytes: AtomicUsize,
    used_bytes: AtomicUsize,
}

impl CacheBudget {
    /// A budget of `max_bytes` (`statestore.cache.max.bytes`); 0 disables caching.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Arc::new(BudgetInner {
                max_bytes: AtomicUsize::new(max_bytes),
                used_bytes: AtomicUsize::new(0),
            }),
        }
    }

    /// The configured maximum.
    pub fn max_bytes(&self) -> usize {
        self.inner.max_bytes.load(Ordering::Relaxed)
    }

    /// Changes the maximum; caches shrink on their next put.
    pub fn set_max_bytes(&self, max_bytes: usize) {
        self.inner.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Bytes currently held by all caches sharing this budget.
    pub fn used_bytes(&self) -> usize {
        self.inner.used_bytes.load(Ordering::Relaxed)
    }

    fn over_budget(&self) -> bool {
        self.used_bytes() > self.max_bytes()
    }

    fn add(&self, n: usize) {
        self.inner.used_bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.inner.used_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

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

#[derive(Debug)]
struct Slot {
    entry: CacheEntry,
    lru_seq: u64,
    dirty_seq: Option<u64>,
    size: usize,
}

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

/// The cache of one store: entries ordered by key (for range reads), an LRU order and a
/// dirty order. Byte usage is charged to the shared [`CacheBudget`].
#[derive(Debug)]
pub struct NamedCache {
    name: String,
    budget: CacheBudget,
    entries: BTreeMap<Bytes, Slot>,
    lru: BTreeMap<u64, Bytes>,
    dirty: BTreeMap<u64, Bytes>,
    next_seq: u64,
    bytes: usize,
    metrics: CacheMetrics,
}

impl NamedCache {
    /// An empty cache named `name` charging `budget`.
    pub fn new(name: impl Into<String>, budget: CacheBudget) -> Self {
        Self {
            name: name.into(),
            budget,
            entries: BTreeMap::new(),
            lru: BTreeMap::new(),
            dirty: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
            metrics: CacheMetrics::default(),
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
        self.entries.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of dirty entries.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
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
        let seq = self.next_seq;
        match self.entries.get_mut(key) {
            Some(slot) => {
                self.next_seq += 1;
                if let Some(k) = self.lru.remove(&slot.lru_seq) {
                    self.lru.insert(seq, k);
                }
                slot.lru_seq = seq;
                self.metrics.hits += 1;
                Some(&slot.entry)
            }
            None => {
                self.metrics.misses += 1;
                None
            }
        }
    }

    /// Counts a lookup the caller answered from [`range`](Self::range) (which counts
    /// nothing itself): a hit when the cache held what was looked for.
    pub fn record_lookup(&mut self, hit: bool) {
        if hit {
            self.metrics.hits += 1;
        } else {
            self.metrics.misses += 1;
        }
    }

    /// Looks `key` up without touching the LRU order.
    pub fn peek(&self, key: &[u8]) -> Option<&CacheEntry> {
        self.entries.get(key).map(|s| &s.entry)
    }

    /// Entries with `lo <= key < hi` in ascending key order (no LRU update).
    pub fn range<'a>(
        &'a self,
        lo: &'a [u8],
        hi: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a CacheEntry)> + 'a {
        self.range_bounds(Bound::Included(lo), Bound::Excluded(hi))
    }

    /// Entries within the bounds in ascending key order (no LRU update).
    pub fn range_bounds<'a>(
        &'a self,
        lo: Bound<&'a [u8]>,
        hi: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a CacheEntry)> + 'a {
        let bounds = if bounds_non_empty(lo, hi) {
            Some((lo, hi))
        } else {
            None
        };
        bounds
            .into_iter()
            .flat_map(move |b| self.entries.range::<[u8], _>(b))
            .map(|(k, s)| (k, &s.entry))
    }

    /// Every entry in ascending key order (no LRU update).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &CacheEntry)> {
        self.entries.iter().map(|(k, s)| (k, &s.entry))
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
        on_flush: &mut dyn FnMut(Vec<DirtyEntry>),
    ) {
        self.insert(key, value, true, context);
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
        on_flush: &mut dyn FnMut(Vec<DirtyEntry>),
    ) {
        for (key, value) in entries {
            self.insert(key, value, true, context.clone());
        }
        self.evict_while_over_budget(on_flush);
    }

    fn insert(&mut self, key: Bytes, value: Option<Bytes>, dirty: bool, context: RecordContext) {
        let size = entry_size(&key, value.as_ref(), &context);
        let lru_seq = self.bump();
        let dirty_seq = dirty.then(|| self.bump());
        let entry = CacheEntry {
            value,
            dirty,
            context,
        };
        let slot = Slot {
            entry,
            lru_seq,
            dirty_seq,
            size,
        };
        if let Some(old) = self.entries.insert(key.clone(), slot) {
            self.lru.remove(&old.lru_seq);
            if let Some(d) = old.dirty_seq {
                self.dirty.remove(&d);
            }
            self.uncharge(old.size);
        }
        self.lru.insert(lru_seq, key.clone());
        if let Some(d) = dirty_seq {
            self.dirty.insert(d, key);
        }
        self.charge(size);
    }

    /// Removes `key` from the cache without flushing it. Returns the removed entry.
    pub fn evict_key(&mut self, key: &[u8]) -> Option<CacheEntry> {
        let slot = self.entries.remove(key)?;
        self.lru.remove(&slot.lru_seq);
        if let Some(d) = slot.dirty_seq {
            self.dirty.remove(&d);
        }
        self.uncharge(slot.size);
        Some(slot.entry)
    }

    /// Drains every dirty entry in dirty order and marks it clean. Clean tombstones are
    /// then dropped from the cache.
    pub fn flush(&mut self) -> Vec<DirtyEntry> {
        self.metrics.commit_flushes += 1;
        self.drain_dirty()
    }

    fn drain_dirty(&mut self) -> Vec<DirtyEntry> {
        let order = std::mem::take(&mut self.dirty);
        let mut out = Vec::with_capacity(order.len());
        for (_, key) in order {
            let Some(slot) = self.entries.get_mut(&key) else {
                continue;
            };
            slot.dirty_seq = None;
            slot.entry.dirty = false;
            let entry = slot.entry.clone();
            if entry.value.is_none() {
                self.evict_key(&key);
            }
            out.push((key, entry));
        }
        out
    }

    /// Drops every entry, dirty or not, and releases its bytes from the budget.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.lru.clear();
        self.dirty.clear();
        let bytes = self.bytes;
        self.uncharge(bytes);
    }

    fn evict_while_over_budget(&mut self, on_flush: &mut dyn FnMut(Vec<DirtyEntry>)) {
        while self.budget.over_budget() {
            let Some((_, eldest)) = self.lru.first_key_value() else {
                return;
            };
            let eldest = eldest.clone();
            if self.entries.get(&eldest).is_some_and(|s| s.entry.dirty) {
                self.metrics.eviction_flushes += 1;
                let flushed = self.drain_dirty();
                on_flush(flushed);
            }
            if self.evict_key(&eldest).is_some() {
                self.metrics.evictions += 1;
            }
        }
    }

    fn bump(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
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

fn entry_size(key: &[u8], value: Option<&Bytes>, context: &RecordContext) -> usize {
    key.len() + value.map_or(0, |v| v.len()) + context.topic.len() + CACHE_ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(offset: i64) -> RecordContext {
        RecordContext::new("t", 0, offset, offset)
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn one_entry_size(key: &str, value: &str) -> usize {
        entry_size(key.as_bytes(), Some(&k(value)), &ctx(0))
    }

    fn no_flush() -> impl FnMut(Vec<DirtyEntry>) {
        |d: Vec<DirtyEntry>| assert!(d.is_empty(), "unexpected flush of {} entries", d.len())
    }

    #[test]
    fn dirty_order_is_insertion_order_and_redirty_moves_to_end() {
        let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
        for key in ["a", "b", "c"] {
            c.put(k(key), Some(k("v")), ctx(0), &mut no_flush());
        }
        c.put(k("a"), Some(k("v2")), ctx(1), &mut no_flush());
        let keys: Vec<Bytes> = c.flush().into_iter().map(|e| e.0).collect();
        assert_eq!(keys, vec![k("b"), k("c"), k("a")]);
        assert_eq!(c.dirty_len(), 0);
        assert!(c.flush().is_empty());
        assert_eq!(c.peek(b"a").map(|e| e.dirty), Some(false));
    }

    #[test]
    fn flush_drops_clean_tombstones_and_keeps_clean_values() {
        let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
        c.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
        c.put(k("b"), None, ctx(0), &mut no_flush());
        let flushed = c.flush();
        assert_eq!(flushed.len(), 2);
        assert_eq!(flushed[1].1.value, None);
        assert!(c.peek(b"b").is_none());
        assert!(c.peek(b"a").is_some());
    }

    #[test]
    fn byte_accounting_is_shared_and_released() {
        let budget = CacheBudget::new(usize::MAX);
        let mut c1 = NamedCache::new("s1", budget.clone());
        let mut c2 = NamedCache::new("s2", budget.clone());
        c1.put(k("a"), Some(k("xyz")), ctx(0), &mut no_flush());
        c2.put(k("bb"), Some(k("1")), ctx(0), &mut no_flush());
        let want = one_entry_size("a", "xyz") + one_entry_size("bb", "1");
        assert_eq!(budget.used_bytes(), want);
        c1.put(k("a"), Some(k("x")), ctx(0), &mut no_flush());
        assert_eq!(c1.size_bytes(), one_entry_size("a", "x"));
        c1.clear();
        assert_eq!(budget.used_bytes(), one_entry_size("bb", "1"));
        drop(c2);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn evicts_lru_clean_entries_without_flushing() {
        let size = one_entry_size("a", "v");
        let mut c = NamedCache::new("s", CacheBudget::new(2 * size));
        c.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
        c.put(k("b"), Some(k("v")), ctx(0), &mut no_flush());
        assert_eq!(c.flush().len(), 2);
        assert!(c.get(b"a").is_some());
        c.put(k("c"), Some(k("v")), ctx(0), &mut no_flush());
        assert!(c.peek(b"b").is_none(), "b was least recently used");
        assert!(c.peek(b"a").is_some());
        assert!(c.peek(b"c").is_some());
        assert_eq!(c.metrics().evictions, 1);
        assert_eq!(c.metrics().eviction_flushes, 0);
    }

    #[test]
    fn evicting_a_dirty_entry_flushes_all_dirty_entries_in_order() {
        let size = one_entry_size("a", "v");
        let mut c = NamedCache::new("s", CacheBudget::new(3 * size));
        let mut flushed: Vec<Vec<Bytes>> = Vec::new();
        let mut listener = |d: Vec<DirtyEntry>| flushed.push(d.into_iter().map(|e| e.0).collect());
        for key in ["a", "b", "c"] {
            c.put(k(key), Some(k("v")), ctx(0), &mut listener);
        }
        c.put(k("b"), Some(k("w")), ctx(1), &mut listener);
        c.put(k("d"), Some(k("v")), ctx(2), &mut listener);
        assert_eq!(flushed, vec![vec![k("a"), k("c"), k("b"), k("d")]]);
        assert!(c.peek(b"a").is_none());
        assert_eq!(c.len(), 3);
        assert_eq!(c.dirty_len(), 0);
        assert_eq!(c.metrics().eviction_flushes, 1);
        assert_eq!(
            c.metrics().commit_flushes,
            0,
            "an eviction flush is not a commit's"
        );
        c.flush();
        assert_eq!(
            (c.metrics().commit_flushes, c.metrics().eviction_flushes),
            (1, 1)
        );
    }

    #[test]
    fn only_the_written_cache_evicts() {
        let size = one_entry_size("a", "v");
        let budget = CacheBudget::new(2 * size);
        let mut c1 = NamedCache::new("s1", budget.clone());
        let mut c2 = NamedCache::new("s2", budget.clone());
        c1.put(k("a"), Some(k("v")), ctx(0), &mut no_flush());
        c1.put(k("b"), Some(k("v")), ctx(0), &mut no_flush());
        let mut flushed = Vec::new();
        c2.put(k("x"), Some(k("v")), ctx(0), &mut |d| flushed.extend(d));
        assert!(c2.is_empty(), "c2 evicts its own entry, c1 keeps its two");
        assert_eq!(
            flushed.len(),
            1,
            "the evicted dirty entry reached the listener"
        );
        assert_eq!(c1.len(), 2);
        assert_eq!(budget.used_bytes(), 2 * size);
    }

    #[test]
    fn zero_budget_flushes_every_put_immediately() {
        let mut c = NamedCache::new("s", CacheBudget::new(0));
        let mut seen = Vec::new();
        c.put(k("a"), Some(k("1")), ctx(0), &mut |d| seen.extend(d));
        c.put(k("a"), Some(k("2")), ctx(1), &mut |d| seen.extend(d));
        let values: Vec<Option<Bytes>> = seen.into_iter().map(|e| e.1.value).collect();
        assert_eq!(values, vec![Some(k("1")), Some(k("2"))]);
        assert!(c.is_empty());
    }

    #[test]
    fn inverted_range_is_empty() {
        let mut c = NamedCache::new("s", CacheBudget::new(usize::MAX));
        c.put(k("m"), Some(k("v")), ctx(0), &mut no_flush());
        assert_eq!(c.range(b"z", b"a").count(), 0);
        assert_eq!(c.range(b"a", b"z").count(), 1);
    }
}
