//! The store layer: session composite keys, byte stores (in memory, and persistent on
//! disk), the record cache, the caching session store and snapshot files of a byte store.
//! Owns bytes at rest and their write-back
//! caching; must not know Kafka, serdes or session-window rules (those live in `session`).

pub mod bytes_store;
pub mod cache;
pub mod caching_session_store;
pub mod context;
pub mod error;
pub mod persistent;
pub mod session_schema;
pub mod shared_bytes;
pub mod snapshot;
pub mod task_store;

pub use bytes_store::{ByteKeyValueStore, InMemoryBytesStore};
pub use cache::{CacheBudget, CacheEntry, CacheMetrics, DirtyEntry, FlushListener, NamedCache};
pub use caching_session_store::{CachingSessionStore, FlushedEntry, StoredSession};
pub use context::RecordContext;
pub use error::StoreError;
pub use persistent::{PersistentBytesStore, PersistentOptions};
pub use snapshot::{
    read_snapshot, write_snapshot, Corruption, Snapshot, SnapshotError, SnapshotStats,
};
pub use task_store::{StoreType, TaskBytesStore};
