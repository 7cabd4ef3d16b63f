//! Errors of the store layer. Owns `StoreError`, the one error enum every store type returns.
//! Must not carry Kafka types or stringly-typed catch-alls: each variant names what broke.

use thiserror::Error;

/// Failure of a store-layer operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A session composite key (`key ‖ end ‖ start`) was shorter than its 16-byte suffix.
    #[error("session key of {len} bytes is shorter than the {min} bytes of its end/start suffix")]
    ShortSessionKey {
        /// Length of the buffer that was handed in.
        len: usize,
        /// Minimum length of a session composite key.
        min: usize,
    },
    /// A negative retention period was configured.
    #[error("retention of {retention_ms} ms for store {store} is negative")]
    NegativeRetention {
        /// Name of the store.
        store: String,
        /// Configured retention in milliseconds.
        retention_ms: i64,
    },
    /// A persistent store's directory could not be opened as a store: not a directory,
    /// unreadable, corrupt, locked by another open store, or a memory budget below the
    /// minimum. The runtime's policy: wipe the directory and restore from the changelog.
    #[error("cannot open the persistent store in {dir}: {reason}")]
    PersistentOpen {
        /// The store's directory.
        dir: String,
        /// What failed.
        reason: String,
    },
    /// An operation on an open persistent store failed (an I/O error, or corrupt data
    /// found on a read). The task fails; its store is restored from the changelog.
    #[error("persistent store in {dir}: {op} failed: {reason}")]
    PersistentIo {
        /// The store's directory.
        dir: String,
        /// The operation (`get`, `put`, `scan`, `expire`, `flush_durable`, ...).
        op: &'static str,
        /// What the storage engine said.
        reason: String,
    },
}
