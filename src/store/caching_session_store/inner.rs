//! The store below the cache with its expiry clock, as Java's segmented bytes store keeps
//! it: every write advances the clock to the session's end, and sessions whose end falls
//! out of retention are dropped, through the store's own time index when it has one
//! (the persistent store) or an end-ordered index kept here.

use std::collections::BTreeSet;
use std::hash::BuildHasher;

use bytes::Bytes;

use crate::store::bytes_store::ByteKeyValueStore;
use crate::store::error::StoreError;

/// The store below the cache with its expiry clock (Java's segmented bytes store).
pub(super) struct Inner<S> {
    pub(super) store: S,
    pub(super) retention_ms: Option<i64>,
    pub(super) observed_end: Option<i64>,
    /// Every stored session by end, kept only with a retention and only when the store
    /// has no time index of its own ([`ByteKeyValueStore::is_time_indexed`]).
    pub(super) by_end: BTreeSet<Expiry>,
    /// The horizon the store's own time index was last expired through.
    pub(super) expired_through: Option<i64>,
}

/// An entry of the expiry index: ordered by end, then by a hash of the key, so sessions
/// with the same end (a restored batch, a burst) are told apart without comparing key
/// bytes; the key breaks the rare tie. Which of several sessions with one end expires
/// first is not observable: they expire at the same clock.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Expiry {
    end: i64,
    hash: u64,
    key: Bytes,
}

impl Expiry {
    pub(super) fn new(end: i64, key: Bytes) -> Self {
        Self {
            end,
            hash: foldhash::fast::FixedState::with_seed(0).hash_one(&key[..]),
            key,
        }
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
        while self.by_end.first().is_some_and(|e| e.end <= horizon) {
            if let Some(e) = self.by_end.pop_first() {
                self.store.delete(&e.key)?;
            }
        }
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
        self.observe(end)?;
        if self.is_expired(end) {
            return Ok(());
        }
        if self.keeps_index() {
            self.by_end.insert(Expiry::new(end, key.clone()));
        }
        self.store.put(key, value)
    }

    /// Java's segmented `put(key, null)`: advance the clock, then delete.
    pub(super) fn delete(&mut self, key: Bytes, end: i64) -> Result<(), StoreError> {
        self.observe(end)?;
        if self.store.delete(&key)?.is_some() && self.keeps_index() {
            self.by_end.remove(&Expiry::new(end, key));
        }
        Ok(())
    }
}
