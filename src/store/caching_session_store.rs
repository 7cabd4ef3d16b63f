//! `CachingSessionStore`: a write-back [`NamedCache`] over a [`ByteKeyValueStore`], keyed
//! by the session composite key (`key ‖ end ‖ start`, see [`session_schema`]). Owns the
//! merged read view (cache over inner), write-through on flush and eviction, and the expiry
//! of sessions past retention. Must not produce to Kafka or know serdes: flushes return the
//! written entries and the caller logs and forwards them.
//!
//! Semantics: Kafka Streams 4.4.0's default DSL session store, `CachingSessionStore` over
//! `ChangeLoggingSessionBytesStore` over `RocksDBSessionStore` /
//! `AbstractRocksDBSegmentedBytesStore` (checked against the 4.4.0 jar and
//! `TopologyTestDriver` runs):
//! - `put`/`remove` only stage a dirty entry (a tombstone for `remove`).
//! - Reads merge the cache over the inner store: the cache wins, a cached tombstone hides.
//!   Order is the composite-key order: for one key, end ascending, then start ascending
//!   (Java's RocksDB order too: `key ‖ end ‖ start` big-endian, segments ascending; equal
//!   to numeric order because the aggregate step never writes negative times).
//! - `flush_with_old` drains dirty entries in dirty order; for each it reads `old` from the
//!   inner store (with the inner clock as it is before this entry), then writes through.
//!   An entry with neither a new nor an old value (a session created and removed within one
//!   cache lifetime, or whose stored copy has expired) is neither written nor returned.
//! - An eviction flush writes through the same way and queues its entries, in order; they
//!   are returned by [`take_evicted`](CachingSessionStore::take_evicted) and otherwise come
//!   first in the next [`flush_with_old`](CachingSessionStore::flush_with_old).
//!
//! Expiry (with a retention; Java's `AbstractRocksDBSegmentedBytesStore`):
//! - The clock, [`observed_end`](CachingSessionStore::observed_end), is the largest session
//!   end that reached the **inner** store: written through (a put or a tombstone) or
//!   restored. Staging in the cache does not move it, so it depends on when flushes and
//!   evictions happen, exactly as in Java.
//! - The inner store shows a session iff `end > observed - retention` (Java's
//!   `getActualFrom`: `end >= observed - retention + 1`, on fetches and on `get`). Java
//!   additionally files sessions into segments of `max(retention / 2, 60 000)` ms by end and
//!   skips a put into an expired segment; a session expired by the per-record rule but in a
//!   live segment is stored yet never shown again (the clock only grows). kstate drops each
//!   session the moment it expires (an end-ordered index, popped from the front: the cost
//!   per write does not grow with the store size) and never writes an expired one. The
//!   two are indistinguishable through every read; only the bytes held differ. The index
//!   is kept in memory here, unless the inner store keeps one on disk
//!   ([`ByteKeyValueStore::is_time_indexed`], the persistent store): then expiry asks the
//!   store to delete through the horizon whenever the horizon moves.
//! - The cache is never filtered by expiry: a cached session (clean or dirty) stays visible
//!   until the cache evicts it, as in Java, whose cache iterator has no expiry check. With
//!   a cache large enough never to evict, a session merged by an out-of-order record is
//!   therefore found however old it is (the aggregate step's close time still bounds
//!   what merges are accepted).
//! - Restore (`put_inner` / `delete_inner`) advances the clock per record and skips expired
//!   records. Java advances it to the largest end of each restored batch first and then
//!   skips records in expired segments; the state shown afterwards is the same.
//!
//! What stays timing-dependent, as in Java: whether a session is still cached (eviction
//! order and budget), and the clock at each flush. A found-and-merged session that has
//! already expired in the inner store gets no tombstone (its `old` reads as absent), so the
//! changelog keeps its last value; restore then skips it as expired. The clock after a
//! reopen is the largest end in the inner store (Java: the largest end restored since
//! start, which may be lower when only a changelog tail is replayed).
//!
//! [`session_schema`]: crate::store::session_schema

use std::collections::BinaryHeap;
use std::ops::Bound;

use bytes::Bytes;

use crate::store::bytes_store::{ByteKeyValueStore, InMemoryBytesStore};
use crate::store::cache::{CacheBudget, CacheEntry, DirtyEntry, NamedCache};
use crate::store::context::RecordContext;
use crate::store::error::StoreError;
use crate::store::session_schema::{self, belongs_to, write_bounds};

mod inner;

use inner::{Expiry, Inner};

/// One written-through dirty entry: `old` was read from the inner store before `new` was
/// written (`None` = absent / tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushedEntry {
    /// Session composite key.
    pub key: Bytes,
    /// Value the inner store held before the write.
    pub old: Option<Bytes>,
    /// Value written (`None` = deleted).
    pub new: Option<Bytes>,
    /// Context of the write that produced `new`.
    pub context: RecordContext,
}

/// A session found by [`CachingSessionStore::find_sessions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Session composite key (pass it to `remove`).
    pub key: Bytes,
    /// Session start.
    pub start: i64,
    /// Session end.
    pub end: i64,
    /// Aggregate bytes.
    pub value: Bytes,
}

/// Write-back caching session store. See the module doc for its semantics.
pub struct CachingSessionStore<S: ByteKeyValueStore = InMemoryBytesStore> {
    cache: NamedCache,
    inner: Inner<S>,
    evicted: Vec<FlushedEntry>,
    /// Reused by `find_sessions_into`: the two range bounds, and the inner store's hits.
    bounds: Vec<u8>,
    inner_hits: Vec<StoredSession>,
    /// Reused by `flush_with_old`: the cache's dirty entries.
    dirty_buf: Vec<DirtyEntry>,
}

impl<S: ByteKeyValueStore> CachingSessionStore<S> {
    /// A store named `name` over `inner`, caching within `budget`, without expiry.
    pub fn new(name: impl Into<String>, budget: CacheBudget, inner: S) -> Self {
        Self {
            cache: NamedCache::new(name, budget),
            inner: Inner {
                store: inner,
                retention_ms: None,
                observed_end: None,
                by_end: BinaryHeap::new(),
                expired_through: None,
            },
            evicted: Vec::new(),
            bounds: Vec::new(),
            inner_hits: Vec::new(),
            dirty_buf: Vec::new(),
        }
    }

    /// Like [`new`](Self::new), expiring sessions `retention_ms` behind the largest end
    /// written to `inner`. Sessions already in `inner` set the clock: a store with its own
    /// time index answers with its largest time; otherwise they are indexed (one scan).
    pub fn with_retention(
        name: impl Into<String>,
        budget: CacheBudget,
        inner: S,
        retention_ms: i64,
    ) -> Result<Self, StoreError> {
        let name = name.into();
        if retention_ms < 0 {
            return Err(StoreError::NegativeRetention {
                store: name,
                retention_ms,
            });
        }
        let mut store = Self::new(name, budget, inner);
        store.inner.retention_ms = Some(retention_ms);
        if store.inner.store.is_time_indexed() {
            if let Some(end) = store.inner.store.max_time()? {
                store.inner.observe(end)?;
            }
            return Ok(store);
        }
        let mut index = Vec::with_capacity(store.inner.store.len());
        let mut max_end = None;
        store
            .inner
            .store
            .for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, _| {
                if let Ok(d) = session_schema::decode(k) {
                    index.push(Expiry::new(d.end, k.clone()));
                    max_end = max_end.max(Some(d.end));
                }
            })?;
        store.inner.by_end = BinaryHeap::from(index);
        if let Some(end) = max_end {
            store.inner.observe(end)?;
        }
        Ok(store)
    }

    /// The store (and cache) name.
    pub fn name(&self) -> &str {
        self.cache.name()
    }

    /// The record cache.
    pub fn cache(&self) -> &NamedCache {
        &self.cache
    }

    /// The inner byte store (read-only; write through `put_inner`/`delete_inner`).
    pub fn inner(&self) -> &S {
        &self.inner.store
    }

    /// The expiry clock: the largest session end written to the inner store (through a
    /// flush, an eviction or a restore). `None` before the first such write, or without a
    /// retention.
    pub fn observed_end(&self) -> Option<i64> {
        self.inner.observed_end
    }

    /// Approximate bytes held: inner store, cache and expiry index.
    pub fn approximate_bytes(&self) -> usize {
        self.inner.store.approximate_bytes()
            + self.cache.size_bytes()
            + self.inner.by_end.capacity() * std::mem::size_of::<Expiry>()
    }

    /// Cache-first read of one session key: a cached entry (a tombstone reads as `None`)
    /// wins whatever its age, otherwise the inner store answers (expired reads as `None`).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let end = session_schema::session_end_of(key)?;
        if let Some(entry) = self.cache.get(key) {
            return Ok(entry.value.clone());
        }
        self.inner.get(key, end)
    }

    /// Merged raw range `lo <= key < hi`, key-sorted.
    pub fn range(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.merged(Bound::Included(lo), Bound::Excluded(hi))
    }

    /// Every visible session, merged and key-sorted.
    pub fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.merged(Bound::Unbounded, Bound::Unbounded)
    }

    /// Sessions of `key` with `end >= earliest_end` and `start <= latest_start`, merged
    /// cache over inner, in composite-key order (end ascending, then start ascending).
    /// Sessions of keys sharing a prefix with `key` are excluded.
    pub fn find_sessions(
        &mut self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut out = Vec::new();
        self.find_sessions_into(key, earliest_end, latest_start, &mut out)?;
        Ok(out)
    }

    /// [`find_sessions`](Self::find_sessions) into a reused buffer (cleared first). Counts
    /// a cache hit when the cache held any of the sessions found (a tombstone included),
    /// a miss otherwise. Once
    /// the store's scratch buffers have grown, allocates only the `Bytes` handles it returns
    /// (reference counts, no copies).
    pub fn find_sessions_into(
        &mut self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
        out: &mut Vec<StoredSession>,
    ) -> Result<(), StoreError> {
        out.clear();
        let split = write_bounds(&mut self.bounds, key, earliest_end);
        let (lo, hi) = self.bounds.split_at(split);
        let matching = |k: &Bytes| -> Option<(i64, i64)> {
            if !belongs_to(k, key) {
                return None;
            }
            let d = session_schema::decode(k).ok()?;
            (d.end >= earliest_end && d.start <= latest_start).then_some((d.start, d.end))
        };
        let inner_hits = &mut self.inner_hits;
        inner_hits.clear();
        let inner = &self.inner;
        inner.store.for_each_in_group(
            key,
            session_schema::SUFFIX_LEN,
            Bound::Included(lo),
            Bound::Excluded(hi),
            &mut |k, v| {
                if let Some((start, end)) = matching(k) {
                    if !inner.is_expired(end) {
                        inner_hits.push(StoredSession {
                            key: k.clone(),
                            start,
                            end,
                            value: v.clone(),
                        });
                    }
                }
            },
        )?;
        let mut inner_iter = inner_hits.drain(..).peekable();
        let mut cached = false;
        for (k, entry) in self.cache.range_in_group(key, lo, hi) {
            let Some((start, end)) = matching(k) else {
                continue;
            };
            cached = true;
            while let Some(s) = inner_iter.next_if(|s| s.key < *k) {
                out.push(s);
            }
            inner_iter.next_if(|s| s.key == *k);
            if let Some(value) = &entry.value {
                out.push(StoredSession {
                    key: k.clone(),
                    start,
                    end,
                    value: value.clone(),
                });
            }
        }
        out.extend(inner_iter);
        let retention_ms = self.inner.retention_ms;
        self.cache.touch_in_group(key, lo, hi, |k| {
            session_schema::decode(k)
                .is_ok_and(|d| passed_by_java_find(d.start, d.end, latest_start, retention_ms))
        });
        self.cache.record_lookup(cached);
        Ok(())
    }

    /// Write-back put: stages `value` for session composite `key` as a dirty entry. The
    /// inner store is written on flush or eviction. Fails on a key shorter than the
    /// session suffix or if an eviction's write-through fails.
    pub fn put(
        &mut self,
        key: Bytes,
        value: Bytes,
        context: RecordContext,
    ) -> Result<(), StoreError> {
        self.stage(key, Some(value), context)
    }

    /// Write-back remove: stages a dirty tombstone for session composite `key`.
    pub fn remove(&mut self, key: Bytes, context: RecordContext) -> Result<(), StoreError> {
        self.stage(key, None, context)
    }

    /// One merge step: stages tombstones for `removed` and then `value` for `merged`, all
    /// with `context`, as Kafka Streams' aggregate does (remove first, then put), with one
    /// eviction pass after the last. So the inner store, and its expiry clock, see the
    /// tombstones before the merged session: a replaced session is still shown when its
    /// tombstone reads `old`, however far `merged` moves the clock (with grace 0 a session
    /// exactly a gap behind the record is found, and expired once the merged end is
    /// written). What is returned to the caller still has the merged session first (see
    /// [`write_through`]: docs/DESIGN.md §4 put-first for the changelog and the output).
    pub fn replace(
        &mut self,
        merged: Bytes,
        value: Bytes,
        removed: &[Bytes],
        context: RecordContext,
    ) -> Result<(), StoreError> {
        session_schema::session_end_of(&merged)?;
        for key in removed {
            session_schema::session_end_of(key)?;
        }
        let mut failure = None;
        let Self {
            cache,
            inner,
            evicted,
            ..
        } = self;
        let entries = removed
            .iter()
            .map(|k| (k.clone(), None))
            .chain(std::iter::once((merged, Some(value))));
        cache.put_all(entries, context, &mut |dirty: &mut Vec<DirtyEntry>| {
            if failure.is_none() {
                failure = write_through(inner, dirty, evicted).err();
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Writes every dirty entry through (see [`flush_with_old`](Self::flush_with_old)) and
    /// returns them as clean cache entries, eviction-flushed ones first.
    pub fn flush(&mut self) -> Result<Vec<(Bytes, CacheEntry)>, StoreError> {
        Ok(self
            .flush_with_old()?
            .into_iter()
            .map(|f| {
                let entry = CacheEntry {
                    value: f.new,
                    dirty: false,
                    context: f.context,
                };
                (f.key, entry)
            })
            .collect())
    }

    /// Drains dirty entries in dirty order, reads each one's old value from the inner store,
    /// writes it through and returns `(key, old, new, context)`, preceded by entries that
    /// eviction flushed since the last call. Entries with neither old nor new value are
    /// skipped. On error the task must be failed: entries after the failing one are lost
    /// from the cache and must be restored from the changelog.
    pub fn flush_with_old(&mut self) -> Result<Vec<FlushedEntry>, StoreError> {
        let mut dirty = std::mem::take(&mut self.dirty_buf);
        self.cache.flush_into(&mut dirty);
        let mut out = std::mem::take(&mut self.evicted);
        out.reserve(dirty.len());
        let written = write_through(&mut self.inner, &mut dirty, &mut out);
        dirty.clear();
        self.dirty_buf = dirty;
        written?;
        Ok(out)
    }

    /// Whether everything staged has reached the inner store and been handed out: no dirty
    /// cache entry and no eviction waiting for [`take_evicted`](Self::take_evicted). Only
    /// then does the inner store alone hold the store's state (what a snapshot saves).
    pub fn is_flushed(&self) -> bool {
        self.cache.dirty_len() == 0 && self.evicted.is_empty()
    }

    /// Entries written through by eviction flushes since the last call (or the last
    /// `flush_with_old`), in order.
    pub fn take_evicted(&mut self) -> Vec<FlushedEntry> {
        std::mem::take(&mut self.evicted)
    }

    /// Restore path: writes straight into the inner store, bypassing the cache, after
    /// advancing the clock to the session's end. An expired session is skipped. A clean
    /// cached copy of the key is dropped; a dirty one still wins.
    pub fn put_inner(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let end = session_schema::session_end_of(&key)?;
        self.drop_clean(&key);
        self.inner.put(key, end, value)
    }

    /// Restore path: deletes straight from the inner store, bypassing the cache, after
    /// advancing the clock to the session's end.
    pub fn delete_inner(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let end = session_schema::session_end_of(key)?;
        self.drop_clean(key);
        self.inner.delete(key, end)
    }

    /// Empties the cache (dirty entries included), the inner store, the eviction queue and
    /// the expiry clock (EOS rollback: state is restored again from the changelog).
    /// Makes the inner store's writes durable ([`ByteKeyValueStore::flush_durable`]); what
    /// the cache still holds is not written.
    pub fn flush_durable(&mut self) -> Result<(), StoreError> {
        self.inner.store.flush_durable()
    }

    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.cache.clear();
        self.evicted.clear();
        self.inner.by_end.clear();
        self.inner.observed_end = None;
        self.inner.expired_through = None;
        self.inner.store.clear()
    }

    fn stage(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        context: RecordContext,
    ) -> Result<(), StoreError> {
        session_schema::session_end_of(&key)?;
        let mut failure = None;
        let Self {
            cache,
            inner,
            evicted,
            ..
        } = self;
        cache.put(key, value, context, &mut |dirty: &mut Vec<DirtyEntry>| {
            if failure.is_none() {
                failure = write_through(inner, dirty, evicted).err();
            }
        });
        failure.map_or(Ok(()), Err)
    }

    fn drop_clean(&mut self, key: &[u8]) {
        if self.cache.peek(key).is_some_and(|e| !e.dirty) {
            self.cache.evict_key(key);
        }
    }

    fn merged(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        let inner = &self.inner;
        let mut merged = std::collections::BTreeMap::new();
        inner.store.for_each_in(lo, hi, &mut |k, v| {
            let live = session_schema::session_end_of(k).map_or(true, |end| !inner.is_expired(end));
            if live {
                merged.insert(k.clone(), v.clone());
            }
        })?;
        for (k, entry) in self.cache.range_bounds(lo, hi) {
            match &entry.value {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
}

/// Whether Kafka Streams' caching session store, finding the sessions of a key up to
/// `latest_start`, passes a cached session of that key ending at or after the earliest end
/// (and so marks it most recently used: its cache iterator reads every key it passes).
/// Over RocksDB it reads the cache segment by segment (`max(retention / 2, 60 000)` ms of
/// session ends, as `RocksDbSessionBytesStoreSupplier.segmentIntervalMs`), each range
/// ending at `key ‖ last ‖ min(latest_start, last)`: only a session ending on a segment's
/// last millisecond and starting after `latest_start` is not passed.
fn passed_by_java_find(start: i64, end: i64, latest_start: i64, retention_ms: Option<i64>) -> bool {
    let Some(retention_ms) = retention_ms else {
        return true;
    };
    let segment_interval = (retention_ms / 2).max(60_000);
    (end + 1) % segment_interval != 0 || start <= latest_start
}

/// Writes dirty entries through to `inner` in order, appending what was written to `out`
/// (Java's `CachingSessionStore.putAndMaybeForward`: read old, skip if both absent, put).
/// A put goes into `out` ahead of the tombstones just before it with the same context (the
/// sessions a [`replace`](CachingSessionStore::replace) merged away): the inner store is
/// written in Kafka Streams' order, the changelog and output in the put-first order of
/// docs/DESIGN.md §4.
fn write_through<S: ByteKeyValueStore>(
    inner: &mut Inner<S>,
    dirty: &mut Vec<DirtyEntry>,
    out: &mut Vec<FlushedEntry>,
) -> Result<(), StoreError> {
    let mut pending = dirty.drain(..);
    while !pending.as_slice().is_empty() {
        for (key, _) in pending.as_slice().iter().take(PREFETCH_BATCH) {
            inner.store.prefetch(key);
        }
        for (key, entry) in pending.by_ref().take(PREFETCH_BATCH) {
            write_one(inner, key, entry, out)?;
        }
    }
    Ok(())
}

/// Dirty entries whose inner-store locations [`write_through`] loads together
/// ([`ByteKeyValueStore::prefetch`]) before writing them, so that their cache misses
/// overlap instead of following one another.
const PREFETCH_BATCH: usize = 16;

/// One entry of [`write_through`].
fn write_one<S: ByteKeyValueStore>(
    inner: &mut Inner<S>,
    key: Bytes,
    entry: CacheEntry,
    out: &mut Vec<FlushedEntry>,
) -> Result<(), StoreError> {
    let end = session_schema::session_end_of(&key)?;
    let old = inner.get(&key, end)?;
    if entry.value.is_none() && old.is_none() {
        return Ok(());
    }
    match &entry.value {
        Some(v) => inner.put_known(key.clone(), end, v.clone(), old.is_some())?,
        None => inner.delete(&key, end)?,
    }
    let at = if entry.value.is_some() {
        let replaced = out
            .iter()
            .rev()
            .take_while(|f| f.new.is_none() && f.context == entry.context)
            .count();
        out.len() - replaced
    } else {
        out.len()
    };
    out.insert(
        at,
        FlushedEntry {
            key,
            old,
            new: entry.value,
            context: entry.context,
        },
    );
    Ok(())
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
