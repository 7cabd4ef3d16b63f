//! Opening a task's byte store as `store.type` says: a fresh in-memory store, or the
//! persistent store under `<state.dir>/<application.id>/<task id>/<store name>/` (Kafka
//! Streams' layout for a RocksDB store). Owns the policy for a persistent store that cannot
//! be opened: its directory is wiped and opened again empty, and the restore replays the
//! whole changelog (the state on disk is a cache of the changelog, as Kafka Streams treats
//! a corrupted task). Whether what a store holds may be trusted is `task_dir`'s decision.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::membership::TaskId;
use crate::store::{PersistentBytesStore, StoreError, StoreType, TaskBytesStore};

/// The directory of a task's persistent store.
pub(super) fn store_dir(
    state_dir: &Path,
    application_id: &str,
    task: &TaskId,
    store: &str,
) -> PathBuf {
    state_dir
        .join(application_id)
        .join(task.to_string())
        .join(store)
}

/// Opens the store of a task; a persistent store that cannot be opened is wiped and opened
/// empty (a second failure is returned).
pub(super) fn open_task_store(
    store_type: &StoreType,
    dir: &Path,
) -> Result<TaskBytesStore, StoreError> {
    let StoreType::Persistent(options) = store_type else {
        return Ok(TaskBytesStore::default());
    };
    match PersistentBytesStore::open(dir, options) {
        Ok(store) => Ok(store.into()),
        Err(e @ StoreError::PersistentOpen { .. }) => {
            warn!(dir = %dir.display(), error = &e as &dyn std::error::Error,
                "wiping a persistent store that cannot be opened; it is restored from the changelog");
            PersistentBytesStore::destroy(dir)?;
            Ok(PersistentBytesStore::open(dir, options)?.into())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ByteKeyValueStore, PersistentOptions};
    use bytes::Bytes;

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("kstate-task-store-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn the_store_lives_under_the_task_directory() {
        let task = TaskId {
            subtopology: "0".into(),
            partition: 3,
        };
        assert_eq!(
            store_dir(Path::new("/s"), "app", &task, "counts"),
            Path::new("/s/app/0_3/counts")
        );
    }

    #[test]
    fn in_memory_opens_nothing_on_disk() {
        let dir = scratch();
        let store = open_task_store(&StoreType::InMemory, &dir).unwrap();
        assert!(!store.is_persistent());
        assert!(!dir.exists());
    }

    #[test]
    fn a_persistent_store_keeps_its_entries_across_opens() {
        let dir = scratch();
        let kind = StoreType::Persistent(PersistentOptions::default());
        let mut store = open_task_store(&kind, &dir).unwrap();
        assert!(store.is_persistent());
        store
            .put(Bytes::from_static(b"k"), Bytes::from_static(b"v"))
            .unwrap();
        drop(store);
        let store = open_task_store(&kind, &dir).unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(Bytes::from_static(b"v")));
        drop(store);
        PersistentBytesStore::destroy(&dir).unwrap();
    }

    #[test]
    fn a_store_that_cannot_be_opened_is_wiped_and_opened_empty() {
        let dir = scratch();
        std::fs::write(&dir, b"a file where the store's directory should be").unwrap();
        let kind = StoreType::Persistent(PersistentOptions::default());
        let store = open_task_store(&kind, &dir).unwrap();
        assert!(store.is_persistent() && store.is_empty());
        drop(store);
        PersistentBytesStore::destroy(&dir).unwrap();
    }
}
