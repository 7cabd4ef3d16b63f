//! The store below the cache with its expiry clock, as Java's segmented bytes store keeps
//! it: every write advances the clock to the session's end, and sessions whose end falls
//! out of retention are dropped, through the store's own time index when it has one
//! (the persistent store) or an end-ordered index kept here.
//!
//! The index kept here is a min-heap of `(end, key)` that is not told about deletes: a
//! deleted session's entry stays until its end expires, when deleting its key again is a
//! no-op (a key holds its end, so an entry for a key present in the store is that
//! session's). Writes and deletes thus cost no index search. Stale entries are dropped when
//! the heap is full and at least half stale, by looking their keys up.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use bytes::Bytes;

use crate::store::bytes_store::ByteKeyValueStore;
use crate::store::error::StoreError;

/// Stale index entries tolerated on top of one per stored entry before a compaction.
const INDEX_SLACK: usize = 1024;

/// The store below the cache with its expiry clock (Java's segmented bytes store).
pub(super) struct Inner<S> {
    pub(super) store: S,
    pub(super) retention_ms: Option<i64>,
    pub(super) observed_end: Option<i64>,
    /// Every stored session by end, kept only with a retention and only when the store
    /// has no time index of its own ([`ByteKeyValueStore::is_time_indexed`]); may also
    /// hold sessions deleted since (see the module doc).
    pub(super) by_end: BinaryHeap<Expiry>,
    /// The horizon the store's own time index was last expired through.
    pub(super) expired_through: Option<i64>,
}

/// An entry of the expiry index, ordered by end only, earliest first out of the heap
/// (which of several sessions with one end expires first is not observable: they expire
/// at the same clock).
#[derive(Debug, Clone)]
pub(super) struct Expiry {
    pub(super) end: i64,
    pub(super) key: Bytes,
}

impl Expiry {
    pub(super) fn new(end: i64, key: Bytes) -> Self {
        Self { end, key }
    }
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
    }
}

impl Eq for Expiry {}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiry {
    /// Reversed: the greatest entry, the heap's top, has the earliest end.
    fn cmp(&self, other: &Self) -> Ordering {
        other.end.cmp(&self.end)
    }
}

impl<S: ByteKeyValueStore> Inner<S> {
    /// Whether this side keeps the end-ordered index (a retention, and a store without a
    /// time index of its own).
    pub(super) fn keeps_index(&self) -> bool {
        self.retention_ms.is_some() && !self.store.is_time_indexed()
    }

    /// Largest expired end, if anything can be expired yet.
    pub(super) fn horizon(&self) -> Option<i64> {
        Some(self.observed_end?.saturating_sub(self.retention_ms?))
    }

    pub(super) fn is_expired(&self, end: i64) -> bool {
        self.horizon().is_some_and(|h| end <= h)
    }

    /// Advances the clock to `end` and drops every session that expired.
    pub(super) fn observe(&mut self, end: i64) -> Result<(), StoreError> {
        if self.retention_ms.is_none() {
            return Ok(());
        }
        self.observed_end = self.observed_end.max(Some(end));
        let Some(horizon) = self.horizon() else {
            return Ok(());
        };
        if self.store.is_time_indexed() {
            if self.expired_through.is_none_or(|h| h < horizon) {
                self.store.delete_timed_through(horizon)?;
                self.expired_through = Some(horizon);
            }
            return Ok(());
        }
        while self.by_end.peek().is_some_and(|e| e.end <= horizon) {
            if let Some(e) = self.by_end.pop() {
                self.store.delete(&e.key)?;
            }
        }
        Ok(())
    }

    /// Indexes a session just stored that was absent before. When the heap is full and
    /// more than half stale, first drops the entries of deleted sessions (one lookup each)
    /// and the duplicates of sessions deleted and stored again.
    fn index(&mut self, end: i64, key: Bytes) -> Result<(), StoreError> {
        if self.by_end.len() == self.by_end.capacity()
            && self.by_end.len() >= 2 * self.store.len() + INDEX_SLACK
        {
            let mut entries = std::mem::take(&mut self.by_end).into_vec();
            let mut failure = None;
            entries.retain(|e| match self.store.get(&e.key) {
                Ok(found) => found.is_some(),
                Err(err) => {
                    failure.get_or_insert(err);
                    true
                }
            });
            entries.sort_unstable_by(|a, b| a.end.cmp(&b.end).then_with(|| a.key.cmp(&b.key)));
            entries.dedup_by(|a, b| a.key == b.key);
            self.by_end = BinaryHeap::from(entries);
            if let Some(err) = failure {
                return Err(err);
            }
        }
        self.by_end.push(Expiry::new(end, key));
        Ok(())
    }

    /// Value of a live session (expired ones are already gone; checked again for safety).
    pub(super) fn get(&self, key: &[u8], end: i64) -> Result<Option<Bytes>, StoreError> {
        if self.is_expired(end) {
            return Ok(None);
        }
        self.store.get(key)
    }

    /// Java's segmented `put(key, value)`: advance the clock, then store unless expired.
    pub(super) fn put(&mut self, key: Bytes, end: i64, value: Bytes) -> Result<(), StoreError> {
        let present = self.keeps_index() && self.store.get(&key)?.is_some();
        self.put_known(key, end, value, present)
    }

    /// [`put`](Self::put) of a key the caller has just read: `present` is whether the
    /// store held it (a live value was read).
    pub(super) fn put_known(
        &mut self,
        key: Bytes,
        end: i64,
        value: Bytes,
        present: bool,
    ) -> Result<(), StoreError> {
        self.observe(end)?;
        if self.is_expired(end) {
            return Ok(());
        }
        if self.keeps_index() && !present {
            self.index(end, key.clone())?;
        }
        self.store.put(key, value)
    }

    /// Java's segmented `put(key, null)`: advance the clock, then delete (the index entry
    /// goes stale, see the module doc).
    pub(super) fn delete(&mut self, key: &[u8], end: i64) -> Result<(), StoreError> {
        self.observe(end)?;
        self.store.delete(key)?;
        Ok(())
    }
}
