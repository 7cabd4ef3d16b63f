//! `TaskBytesStore`: the byte store a task's caching session store sits on, in memory or on
//! disk as `store.type` chooses. Owns only the dispatch (an enum, not a trait object, so the
//! per-record path stays statically dispatched within each arm); opening, sizing and
//! placing the store is the runtime's, what each kind does is its own module's.

use std::ops::Bound;

use bytes::Bytes;

use crate::store::bytes_store::{ByteKeyValueStore, InMemoryBytesStore};
use crate::store::error::StoreError;
use crate::store::persistent::{PersistentBytesStore, PersistentOptions};

/// Which byte store a task's caching store sits on (`store.type`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreType {
    /// `in_memory`: entries in memory, a snapshot file written on a clean close.
    #[default]
    InMemory,
    /// `persistent`: entries on disk ([`PersistentBytesStore`]) with these options.
    Persistent(PersistentOptions),
}

impl StoreType {
    /// The value of `store.type` that selects this type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InMemory => "in_memory",
            Self::Persistent(_) => "persistent",
        }
    }
}

/// A task's byte store: in memory or persistent.
#[derive(Debug)]
pub enum TaskBytesStore {
    /// Entries in memory (saved to a snapshot file on a clean close).
    InMemory(InMemoryBytesStore),
    /// Entries on disk under the task's directory.
    Persistent(PersistentBytesStore),
}

impl Default for TaskBytesStore {
    fn default() -> Self {
        Self::InMemory(InMemoryBytesStore::new())
    }
}

impl From<InMemoryBytesStore> for TaskBytesStore {
    fn from(store: InMemoryBytesStore) -> Self {
        Self::InMemory(store)
    }
}

impl From<PersistentBytesStore> for TaskBytesStore {
    fn from(store: PersistentBytesStore) -> Self {
        Self::Persistent(store)
    }
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            TaskBytesStore::InMemory($s) => $e,
            TaskBytesStore::Persistent($s) => $e,
        }
    };
}

impl ByteKeyValueStore for TaskBytesStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, s => s.get(key))
    }
    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        dispatch!(self, s => s.put(key, value))
    }
    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        dispatch!(self, s => s.delete(key))
    }
    fn for_each_in(
        &self,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.for_each_in(lo, hi, visit))
    }
    fn for_each_in_group(
        &self,
        prefix: &[u8],
        suffix_len: usize,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        visit: &mut dyn FnMut(&Bytes, &Bytes),
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.for_each_in_group(prefix, suffix_len, lo, hi, visit))
    }
    fn prefetch(&self, key: &[u8]) {
        dispatch!(self, s => s.prefetch(key))
    }
    fn clear(&mut self) -> Result<(), StoreError> {
        dispatch!(self, s => s.clear())
    }
    fn len(&self) -> usize {
        dispatch!(self, s => s.len())
    }
    fn approximate_bytes(&self) -> usize {
        dispatch!(self, s => s.approximate_bytes())
    }
    fn flush_durable(&mut self) -> Result<(), StoreError> {
        dispatch!(self, s => s.flush_durable())
    }
    fn is_persistent(&self) -> bool {
        dispatch!(self, s => s.is_persistent())
    }
    fn memory_bytes(&self) -> usize {
        dispatch!(self, s => s.memory_bytes())
    }
    fn is_time_indexed(&self) -> bool {
        dispatch!(self, s => s.is_time_indexed())
    }
    fn delete_timed_through(&mut self, horizon: i64) -> Result<usize, StoreError> {
        dispatch!(self, s => s.delete_timed_through(horizon))
    }
    fn max_time(&self) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.max_time())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::byte_store_contract_tests!(in_memory, || TaskBytesStore::InMemory(
        InMemoryBytesStore::new()
    ));
    crate::byte_store_contract_tests!(persistent, || TaskBytesStore::Persistent(
        PersistentBytesStore::temporary(&PersistentOptions::default())
    ));

    #[test]
    fn dispatch_reports_the_kind() {
        assert!(!TaskBytesStore::default().is_persistent());
        let p = TaskBytesStore::from(PersistentBytesStore::temporary(
            &PersistentOptions::default(),
        ));
        assert!(p.is_persistent() && p.is_time_indexed());
    }
}
