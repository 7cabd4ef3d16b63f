//! `PersistentBytesStore`: a [`ByteKeyValueStore`] on disk, one `fjall` LSM database per
//! task store under the directory it is given (the runtime passes
//! `state.dir/<application.id>/<task>/<store>`). Owns the on-disk layout, the memory bound
//! of the database (block cache and memtables, from [`PersistentOptions`]), the exact entry
//! count and logical size across restarts, and the time index that expiry uses. Must not
//! know sessions, checkpoints or Kafka: when a write must be durable, and whether the state
//! on disk is trusted after a restart, is decided above (`runtime::task_dir`).
//!
//! Layout: three keyspaces in one database, written together by atomic write batches:
//! - `data`: the entries, keys compared as unsigned bytes.
//! - `ends`: the time index, `time ‖ key → ∅` for every grouped key (at least
//!   [`GROUP_SUFFIX_LEN`] bytes), where `time` is the big-endian `i64` in the first 8 bytes
//!   of the key's suffix (a session key's end), stored with its sign bit flipped so that
//!   byte order is numeric order.
//! - `meta`: the entry count and logical size, written on a clean close ([`Drop`]) and
//!   removed on open. Without it (the process was killed) they are counted by one scan on
//!   open; the journal is replayed in order, so a recovered write after the removal implies
//!   the removal was recovered too.
//!
//! Expiry by an end-time index (the `ends` keyspace), not time segments or range deletes:
//! [`delete_timed_through`](ByteKeyValueStore::delete_timed_through) reads the index from
//! the last horizon it reached to the new one and deletes exactly the keys found, so its
//! cost is what expires, never the store's size. Time segments (Kafka Streams' layout) would
//! drop whole segments cheaply but make every per-record lookup visit each live segment, and
//! keep expired sessions on disk until their segment closes; the caching store already
//! hides expired sessions on reads, so the index only has to bound the bytes held. `fjall`
//! has no range delete, and a range delete by end would need the end first in the main key,
//! breaking the one-range-per-record-key lookup (`key ‖ end ‖ start`). A new grouped key
//! costs one more small write (the index entry, in the same batch); an overwrite costs none.
//!
//! Memory: the block cache takes half of [`PersistentOptions::memory_bytes`]; the `data`
//! keyspace's memtable a sixteenth and the index's a thirty-second. `fjall` keeps at most
//! four sealed memtables per keyspace before it stalls writes, so memtables hold at most
//! 15/32 of the budget and cache plus memtables stay under it. No index or filter block is
//! pinned outside the cache (the engine's default pins those of its smallest levels, which
//! grew the process by ~20 MiB more at ten million sessions): all go through the cache.
//! What the engine holds beyond cache and memtables (table metadata, buffers) still grows
//! slowly with the data: measured ~70 MiB at ten million sessions.
//! [`memory_bytes`](ByteKeyValueStore::memory_bytes) reports cache plus memtables.
//!
//! Errors: a directory that cannot be opened as a store (not a directory, unreadable,
//! corrupt, locked by another open) is [`StoreError::PersistentOpen`]; an I/O failure
//! afterwards is [`StoreError::PersistentIo`] naming the operation. `fjall` refuses writes
//! after a failed journal write, so the task must be failed and its store restored.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::store::bytes_store::{bounds_non_empty, ByteKeyValueStore, GROUP_SUFFIX_LEN};
use crate::store::error::StoreError;

/// Fixed per-entry cost counted by [`PersistentBytesStore`]'s `approximate_bytes` on top of
/// the key and value bytes: the LSM entry header and the time index entry, before
/// compression (the bytes on disk are usually fewer).
pub const PERSISTENT_ENTRY_OVERHEAD: usize = 40;

/// The `meta` key under which a clean close leaves the entry count and logical size.
const CLEAN_CLOSE_KEY: &[u8] = b"clean-close";

/// Index entries deleted per write batch by an expiry pass.
const EXPIRY_BATCH: usize = 4096;

/// Settings of a [`PersistentBytesStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentOptions {
    /// Bytes of memory the store may hold for its block cache and memtables (see the
    /// module doc for the split). At least [`MIN_MEMORY_BYTES`](Self::MIN_MEMORY_BYTES).
    pub memory_bytes: u64,
}

impl PersistentOptions {
    /// The default budget per store: 64 MiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// The smallest budget accepted: 4 MiB (below it the memtables flush too often to
    /// keep up with writes).
    pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

    /// Options with a memory budget of `memory_bytes`.
    pub fn with_memory_bytes(memory_bytes: u64) -> Self {
        Self { memory_bytes }
    }

    fn cache_bytes(&self) -> u64 {
        self.memory_bytes / 2
    }

    fn data_memtable_bytes(&self) -> u64 {
        self.memory_bytes / 16
    }

    fn index_memtable_bytes(&self) -> u64 {
        self.memory_bytes / 32
    }
}

impl Default for PersistentOptions {
    fn default() -> Self {
        Self::with_memory_bytes(Self::DEFAULT_MEMORY_BYTES)
    }
}

/// A [`ByteKeyValueStore`] on disk. See the module doc for its layout, memory bound and
/// expiry.
pub struct PersistentBytesStore {
    dir: PathBuf,
    db: Database,
    data: Keyspace,
    ends: Keyspace,
    meta: Keyspace,
    len: usize,
    bytes: usize,
    /// Every indexed key with a time at most this has been deleted.
    expired_through: Option<i64>,
    /// A lower bound on the smallest indexed time, when known (`Some(None)`: no indexed
    /// key): an expiry pass that cannot find anything returns without reading the index.
    next_expiry: Option<Option<i64>>,
    /// Tests: drop as a killed process would, without the clean-close record.
    #[cfg(test)]
    skip_clean_close: bool,
}

impl std::fmt::Debug for PersistentBytesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentBytesStore")
            .field("dir", &self.dir)
            .field("len", &self.len)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + PERSISTENT_ENTRY_OVERHEAD
}

/// The time in a grouped key's suffix.
fn suffix_time(key: &[u8]) -> Option<i64> {
    let at = key.len().checked_sub(GROUP_SUFFIX_LEN)?;
    let bytes: [u8; 8] = key[at..at + 8].try_into().ok()?;
    Some(i64::from_be_bytes(bytes))
}

/// `time` as 8 bytes whose unsigned order is the numeric order.
fn encode_time(time: i64) -> [u8; 8] {
    ((time as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_time(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

fn index_key(time: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&encode_time(time));
    k.extend_from_slice(key);
    k
}

/// The greater of two lower bounds.
fn max_lower<'a>(a: Bound<&'a [u8]>, b: &'a [u8]) -> Bound<&'a [u8]> {
    match a {
        Bound::Included(x) | Bound::Excluded(x) if x >= b => a,
        _ => Bound::Included(b),
    }
}

impl PersistentBytesStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, options: &PersistentOptions) -> Result<Self, StoreError> {
        Self::open_with(dir, options, false)
    }

    /// A store in a fresh directory under the system's temporary directory, deleted when
    /// the store is dropped (tests).
    #[cfg(test)]
    pub(crate) fn temporary(options: &PersistentOptions) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kstate-persistent-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        Self::open_with(&dir, options, true).expect("a temporary persistent store")
    }

    fn open_with(
        dir: &Path,
        options: &PersistentOptions,
        temporary: bool,
    ) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::PersistentOpen {
            dir: dir.display().to_string(),
            reason,
        };
        if options.memory_bytes < PersistentOptions::MIN_MEMORY_BYTES {
            return Err(open_error(format!(
                "a memory budget of {} bytes is below the minimum of {}",
                options.memory_bytes,
                PersistentOptions::MIN_MEMORY_BYTES
            )));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(open_error("the path exists and is not a directory".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let db = Database::builder(dir)
            .cache_size(options.cache_bytes())
            .worker_threads(2)
            .temporary(temporary)
            .open()
            .map_err(|e| open_error(e.to_string()))?;
        let keyspace = |name: &str, memtable: u64| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default()
                    .max_memtable_size(memtable)
                    .index_block_pinning_policy(PinningPolicy::all(false))
                    .filter_block_pinning_policy(PinningPolicy::all(false))
            })
            .map_err(|e| open_error(e.to_string()))
        };
        let data = keyspace("data", options.data_memtable_bytes())?;
        let ends = keyspace("ends", options.index_memtable_bytes())?;
        let meta = keyspace("meta", 1 << 20)?;
        let mut store = Self {
            dir: dir.to_path_buf(),
            db,
            data,
            ends,
            meta,
            len: 0,
            bytes: 0,
            expired_through: None,
            next_expiry: None,
            #[cfg(test)]
            skip_clean_close: false,
        };
        store.load_counts().map_err(|e| match e {
            StoreError::PersistentIo { reason, .. } => open_error(reason),
            other => other,
        })?;
        Ok(store)
    }

    /// Deletes the store in `dir` and everything in it (the store must not be open), or a
    /// file found in its place. A missing directory is not an error.
    pub fn destroy(dir: &Path) -> Result<(), StoreError> {
        let removed = if dir.is_file() {
            std::fs::remove_file(dir)
        } else {
            std::fs::remove_dir_all(dir)
        };
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::PersistentIo {
                dir: dir.display().to_string(),
                op: "destroy",
                reason: e.to_string(),
            }),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the store's files take on disk (journal and tables).
    pub fn disk_bytes(&self) -> Result<u64, StoreError> {
        self.db.disk_space().map_err(|e| self.io("disk_space", e))
    }

    fn io(&self, op: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::PersistentIo {
            dir: self.dir.display().to_string(),
            op,
            reason: e.to_string(),
        }
    }

    /// Takes the counts a clean close left, or counts the entries.
    fn load_counts(&mut self) -> Result<(), StoreError> {
        let saved = self
            .meta
            .get(CLEAN_CLOSE_KEY)
            .map_err(|e| self.io("open", e))?;
        if let Some(saved) = saved.filter(|s| s.len() == 16) {
            let word = |i: usize| u64::from_be_bytes(saved[i..i + 8].try_into().expect("8 bytes"));
            self.len = word(0) as usize;
            self.bytes = word(8) as usize;
            return self
                .meta
                .remove(CLEAN_CLOSE_KEY)
                .map_err(|e| self.io("open", e));
        }
        let (mut len, mut bytes) = (0, 0);
        for guard in self.data.iter() {
            let (k, v) = guard.into_inner().map_err(|e| self.io("open", e))?;
            len += 1;
            bytes += entry_bytes(&k, &v);
        }
        self.len = len;
        self.bytes = bytes;
        Ok(())
    }

    fn to_bytes(slice: fjall::Slice) -> Bytes {
        Bytes::from(slice)
    }
}

impl Drop for PersistentBytesStore {
    fn drop(&mut self) {
        #[cfg(test)]
        if self.skip_clean_close {
            return;
        }
        let mut saved = [0u8; 16];
        saved[..8].copy_from_slice(&(self.len as u64).to_be_bytes());
        saved[8..].copy_from_slice(&(self.bytes as u64).to_be_bytes());
        let closed = self
            .meta
            .insert(CLEAN_CLOSE_KEY, saved)
            .and_then(|()| self.db.persist(PersistMode::SyncAll));
        if let Err(e) = closed {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "closing the persistent store; the next open counts its entries");
        }
    }
}

impl ByteKeyValueStore for PersistentBytesStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .data
            .get(key)
            .map_err(|e| self.io("get", e))?
            .map(Self::to_bytes))
    }

    fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), StoreError> {
        let old = self.data.get(&key[..]).map_err(|e| self.io("put", e))?;
        let added = entry_bytes(&key, &value);
        match (&old, suffix_time(&key)) {
            (None, Some(time)) => {
                let mut batch = self.db.batch();
                batch.insert(&self.ends, index_key(time, &key), Bytes::new());
                batch.insert(&self.data, key, value);
                batch.commit().map_err(|e| self.io("put", e))?;
                if self.expired_through.is_some_and(|h| time <= h) {
                    self.expired_through = Some(time.saturating_sub(1));
                }
                if let Some(next) = &mut self.next_expiry {
                    *next = Some(next.map_or(time, |n| n.min(time)));
                }
            }
            _ => {
                let removed = old.as_ref().map(|v| entry_bytes(&key, v));
                self.data
                    .insert(key, value)
                    .map_err(|e| self.io("put", e))?;
                if let Some(removed) = removed {
                    self.bytes -= removed;
                }
            }
        }
        if old.is_none() {
            self.len += 1;
        }
        self.bytes += added;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let Some(old) = self.data.get(key).map_err(|e| self.io("delete", e))? else {
            return Ok(None);
        };
        let mut batch = self.db.batch();
        batch.remove(&self.data, key);
        if let Some(time) = suffix_time(key) {
            batch.remove(&self.ends, index_key(time, key));
        }
        batch.commit().map_err(|e| self.io("delete", e))?;
        self.len -= 1;
        self.bytes -= entry_bytes(key, &old);
        Ok(Some(Self::to_bytes(old)))
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
        for guard in self.data.range::<&[u8], _>((lo, hi)) {
            let (k, v) = guard.into_inner().map_err(|e| self.io("scan", e))?;
            visit(&Self::to_bytes(k), &Self::to_bytes(v));
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
        let lo = max_lower(lo, prefix);
        if !bounds_non_empty(lo, hi) {
            return Ok(());
        }
        for guard in self.data.range::<&[u8], _>((lo, hi)) {
            let (k, v) = guard.into_inner().map_err(|e| self.io("scan", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            if k.len() == prefix.len() + suffix_len {
                visit(&Self::to_bytes(k), &Self::to_bytes(v));
            }
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.data.clear().map_err(|e| self.io("clear", e))?;
        self.ends.clear().map_err(|e| self.io("clear", e))?;
        self.len = 0;
        self.bytes = 0;
        self.expired_through = None;
        self.next_expiry = Some(None);
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    fn flush_durable(&mut self) -> Result<(), StoreError> {
        self.db
            .persist(PersistMode::SyncAll)
            .map_err(|e| self.io("flush_durable", e))
    }

    fn is_persistent(&self) -> bool {
        true
    }

    fn memory_bytes(&self) -> usize {
        (self.db.cache_size() + self.db.write_buffer_size()) as usize
    }

    fn is_time_indexed(&self) -> bool {
        true
    }

    fn delete_timed_through(&mut self, horizon: i64) -> Result<usize, StoreError> {
        if self.expired_through.is_some_and(|h| h >= horizon)
            || self
                .next_expiry
                .is_some_and(|next| next.is_none_or(|t| t > horizon))
        {
            return Ok(0);
        }
        let from = self
            .expired_through
            .map(|h| encode_time(h.saturating_add(1)));
        let lo = from
            .as_ref()
            .map_or(Bound::Unbounded, |f| Bound::Included(&f[..]));
        let mut deleted = 0;
        let mut expired: Vec<fjall::Slice> = Vec::new();
        let mut iter = self.ends.range::<&[u8], _>((lo, Bound::Unbounded));
        let mut next = None;
        loop {
            expired.clear();
            for guard in iter.by_ref() {
                let k = guard.key().map_err(|e| self.io("expire", e))?;
                let time = decode_time(&k);
                if time.is_none_or(|t| t > horizon) {
                    next = time;
                    break;
                }
                expired.push(k);
                if expired.len() == EXPIRY_BATCH {
                    break;
                }
            }
            if expired.is_empty() {
                break;
            }
            let mut batch = self.db.batch();
            for k in &expired {
                let key = &k[8..];
                if let Some(v) = self.data.get(key).map_err(|e| self.io("expire", e))? {
                    self.len -= 1;
                    self.bytes -= entry_bytes(key, &v);
                    batch.remove(&self.data, key);
                }
                batch.remove(&self.ends, k.clone());
            }
            batch.commit().map_err(|e| self.io("expire", e))?;
            deleted += expired.len();
            if expired.len() < EXPIRY_BATCH {
                break;
            }
        }
        self.expired_through = Some(horizon);
        self.next_expiry = Some(next);
        Ok(deleted)
    }

    fn max_time(&self) -> Result<Option<i64>, StoreError> {
        match self.ends.last_key_value() {
            None => Ok(None),
            Some(guard) => {
                let k = guard.key().map_err(|e| self.io("max_time", e))?;
                Ok(decode_time(&k))
            }
        }
    }
}

#[cfg(test)]
mod tests;
