//! `CachingSessionStore`: a write-back [`NamedCache`] over a [`ByteKeyValueStore`], keyed
//! by the session composite key (`key ‖ end ‖ start`, see [`session_schema`]). Owns the
//! merged read view (cache over inner), write-through on flush and eviction, and the expiry
//! of sessions past retention. Must not produce to Kafka or know serdes: flushes return the
//! written entries and the caller logs and forwards them.
//!
//! Semantics (Kafka Streams' `CachingSessionStore` over `InMemorySessionStore`):
//! - `put`/`remove` only stage a dirty entry (a tombstone for `remove`).
//! - Reads merge the cache over the inner store: the cache wins, a cached tombstone hides.
//! - `flush_with_old` drains dirty entries in dirty order; for each it reads `old` from the
//!   inner store, then writes through. An entry with neither a new nor an old value (a
//!   session created and removed within one cache lifetime) is neither written nor returned.
//! - An eviction flush writes through the same way and queues its entries, in order; they
//!   are returned by [`take_evicted`](CachingSessionStore::take_evicted) and otherwise come
//!   first in the next [`flush_with_old`](CachingSessionStore::flush_with_old).
//! - Expiry (with a retention): the store observes the largest session end written (staged,
//!   restored or removed). A session with `end <= observed - retention` is expired: it is
//!   hidden from every read, never written to the inner store, and removed from it without
//!   a tombstone. A dirty expired entry is still flushed and returned, so its last
//!   aggregate reaches the changelog and downstream. Expiry walks an end-ordered index of
//!   the inner store's keys, so its cost per write does not grow with the store size.
//!
//! [`session_schema`]: crate::store::session_schema

use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::Bytes;

use crate::store::bytes_store::{ByteKeyValueStore, InMemoryBytesStore};
use crate::store::cache::{CacheBudget, CacheEntry, DirtyEntry, NamedCache};
use crate::store::context::RecordContext;
use crate::store::error::StoreError;
use crate::store::session_schema::{self, belongs_to, lower_bound, upper_bound};

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

#[derive(Debug, Clone, Copy)]
struct Expiry {
    retention_ms: Option<i64>,
    observed_end: Option<i64>,
}

impl Expiry {
    /// Largest expired end, if anything can be expired yet.
    fn horizon(self) -> Option<i64> {
        Some(self.observed_end?.saturating_sub(self.retention_ms?))
    }

    fn is_expired(self, end: i64) -> bool {
        self.horizon().is_some_and(|h| end <= h)
    }
}

/// Write-back caching session store. See the module doc for its semantics.
pub struct CachingSessionStore<S: ByteKeyValueStore = InMemoryBytesStore> {
    cache: NamedCache,
    inner: S,
    expiry: Expiry,
    by_end: BTreeSet<(i64, Bytes)>,
    evicted: Vec<FlushedEntry>,
}

impl<S: ByteKeyValueStore> CachingSessionStore<S> {
    /// A store named `name` over `inner`, caching within `budget`, without expiry.
    pub fn new(name: impl Into<String>, budget: CacheBudget, inner: S) -> Self {
        Self {
            cache: NamedCache::new(name, budget),
            inner,
            expiry: Expiry {
                retention_ms: None,
                observed_end: None,
            },
            by_end: BTreeSet::new(),
            evicted: Vec::new(),
        }
    }

    /// Like [`new`](Self::new), expiring sessions `retention_ms` behind the largest end
    /// written. Sessions already in `inner` are indexed (one scan) and set the observed end.
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
        store.expiry.retention_ms = Some(retention_ms);
        let mut index = BTreeSet::new();
        let mut max_end = None;
        store
            .inner
            .for_each_in(Bound::Unbounded, Bound::Unbounded, &mut |k, _| {
                if let Ok(d) = session_schema::decode(k) {
                    index.insert((d.end, k.clone()));
                    max_end = max_end.max(Some(d.end));
                }
            })?;
        store.by_end = index;
        if let Some(end) = max_end {
            store.observe(end)?;
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
        &self.inner
    }

    /// Largest session end written so far, the clock of expiry.
    pub fn observed_end(&self) -> Option<i64> {
        self.expiry.observed_end
    }

    /// Approximate bytes held: inner store, cache and expiry index.
    pub fn approximate_bytes(&self) -> usize {
        const INDEX_ENTRY: usize = 56;
        self.inner.approximate_bytes() + self.cache.size_bytes() + self.by_end.len() * INDEX_ENTRY
    }

    /// Cache-first read of one session key: a cached entry (a tombstone reads as `None`)
    /// wins, otherwise the inner store answers. Expired sessions read as `None`.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let end = session_schema::session_end_of(key)?;
        if self.expiry.is_expired(end) {
            return Ok(None);
        }
        if let Some(entry) = self.cache.get(key) {
            return Ok(entry.value.clone());
        }
        self.inner.get(key)
    }

    /// Merged raw range `lo <= key < hi`, key-sorted, expired sessions hidden.
    pub fn range(&self, lo: &[u8], hi: &[u8]) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.merged(Bound::Included(lo), Bound::Excluded(hi))
    }

    /// Every live session, merged and key-sorted.
    pub fn scan_all(&self) -> Result<Vec<(Bytes, Bytes)>, StoreError> {
        self.merged(Bound::Unbounded, Bound::Unbounded)
    }

    /// Sessions of `key` with `end >= earliest_end` and `start <= latest_start`, merged
    /// cache over inner, in composite-key order (end ascending, then start ascending).
    /// Sessions of keys sharing a prefix with `key` are excluded; expired ones are hidden.
    pub fn find_sessions(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut out = Vec::new();
        self.find_sessions_into(key, earliest_end, latest_start, &mut out)?;
        Ok(out)
    }

    /// [`find_sessions`](Self::find_sessions) into a reused buffer (cleared first).
    pub fn find_sessions_into(
        &self,
        key: &[u8],
        earliest_end: i64,
        latest_start: i64,
        out: &mut Vec<StoredSession>,
    ) -> Result<(), StoreError> {
        out.clear();
        let lo = lower_bound(key, earliest_end);
        let hi = upper_bound(key);
        let expiry = self.expiry;
        let matching = |k: &Bytes| -> Option<(i64, i64)> {
            if !belongs_to(k, key) {
                return None;
            }
            let d = session_schema::decode(k).ok()?;
            let wanted =
                d.end >= earliest_end && d.start <= latest_start && !expiry.is_expired(d.end);
            wanted.then_some((d.start, d.end))
        };
        let mut inner_hits = Vec::new();
        self.inner.for_each_in(
            Bound::Included(&lo[..]),
            Bound::Excluded(&hi[..]),
            &mut |k, v| {
                if let Some((start, end)) = matching(k) {
                    inner_hits.push(StoredSession {
                        key: k.clone(),
                        start,
                        end,
                        value: v.clone(),
                    });
                }
            },
        )?;
        let mut inner_iter = inner_hits.into_iter().peekable();
        for (k, entry) in self.cache.range(&lo, &hi) {
            let Some((start, end)) = matching(k) else {
                continue;
            };
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
        let dirty = self.cache.flush();
        let mut out = std::mem::take(&mut self.evicted);
        out.reserve(dirty.len());
        write_through(
            &mut self.inner,
            &mut self.by_end,
            self.expiry,
            dirty,
            &mut out,
        )?;
        Ok(out)
    }

    /// Entries written through by eviction flushes since the last call (or the last
    /// `flush_with_old`), in order.
    pub fn take_evicted(&mut self) -> Vec<FlushedEntry> {
        std::mem::take(&mut self.evicted)
    }

    /// Restore path: writes straight into the inner store, bypassing the cache. An expired
    /// session is skipped. A clean cached copy of the key is dropped; a dirty one still wins.
    pub fn put_inner(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let end = session_schema::session_end_of(&key)?;
        self.observe(end)?;
        self.drop_clean(&key);
        if self.expiry.is_expired(end) {
            return Ok(());
        }
        self.inner.put(key.clone(), value)?;
        self.by_end.insert((end, key));
        Ok(())
    }

    /// Restore path: deletes straight from the inner store, bypassing the cache.
    pub fn delete_inner(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let end = session_schema::session_end_of(key)?;
        self.observe(end)?;
        self.drop_clean(key);
        self.inner.delete(key)?;
        self.by_end.remove(&(end, Bytes::copy_from_slice(key)));
        Ok(())
    }

    /// Empties the cache (dirty entries included), the inner store, the eviction queue and
    /// the expiry clock (EOS rollback: state is restored again from the changelog).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        self.cache.clear();
        self.evicted.clear();
        self.by_end.clear();
        self.expiry.observed_end = None;
        self.inner.clear()
    }

    fn stage(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        context: RecordContext,
    ) -> Result<(), StoreError> {
        let end = session_schema::session_end_of(&key)?;
        self.observe(end)?;
        let mut failure = None;
        let Self {
            cache,
            inner,
            by_end,
            evicted,
            expiry,
        } = self;
        cache.put(key, value, context, &mut |dirty: Vec<DirtyEntry>| {
            if failure.is_none() {
                failure = write_through(inner, by_end, *expiry, dirty, evicted).err();
            }
        });
        failure.map_or(Ok(()), Err)
    }

    fn observe(&mut self, end: i64) -> Result<(), StoreError> {
        self.expiry.observed_end = self.expiry.observed_end.max(Some(end));
        let Some(horizon) = self.expiry.horizon() else {
            return Ok(());
        };
        while let Some((end, _)) = self.by_end.first() {
            if *end > horizon {
                break;
            }
            let Some((_, key)) = self.by_end.pop_first() else {
                break;
            };
            self.inner.delete(&key)?;
            self.drop_clean(&key);
        }
        Ok(())
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
        let expiry = self.expiry;
        let live = |k: &Bytes| {
            session_schema::session_end_of(k).map_or(true, |end| !expiry.is_expired(end))
        };
        let mut merged = std::collections::BTreeMap::new();
        self.inner.for_each_in(lo, hi, &mut |k, v| {
            if live(k) {
                merged.insert(k.clone(), v.clone());
            }
        })?;
        for (k, entry) in self.cache.range_bounds(lo, hi) {
            if !live(k) {
                continue;
            }
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

/// Writes dirty entries through to `inner` in order, appending what was written to `out`.
fn write_through<S: ByteKeyValueStore>(
    inner: &mut S,
    by_end: &mut BTreeSet<(i64, Bytes)>,
    expiry: Expiry,
    dirty: Vec<DirtyEntry>,
    out: &mut Vec<FlushedEntry>,
) -> Result<(), StoreError> {
    for (key, entry) in dirty {
        let old = inner.get(&key)?;
        if entry.value.is_none() && old.is_none() {
            continue;
        }
        let end = session_schema::session_end_of(&key)?;
        match &entry.value {
            Some(v) if !expiry.is_expired(end) => {
                inner.put(key.clone(), v.clone())?;
                by_end.insert((end, key.clone()));
            }
            _ => {
                if old.is_some() {
                    inner.delete(&key)?;
                    by_end.remove(&(end, key.clone()));
                }
            }
        }
        out.push(FlushedEntry {
            key,
            old,
            new: entry.value,
            context: entry.context,
        });
    }
    Ok(())
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
