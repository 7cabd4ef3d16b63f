//! A task's directory, `<state.dir>/<application.id>/<task id>/` (Kafka Streams' layout):
//! the `.checkpoint` naming the last changelog offset the task's state on disk reflects, and
//! that state: the snapshot of an in-memory store (`<store name>.snapshot`, see
//! [`crate::store::snapshot`]) or the directory of a persistent one (`<store name>/`). Owns
//! the policy of when those files are trusted, written and removed; the formats live in
//! `store` and `changelog`, the decision of when a task closes or checkpoints in the
//! [`TaskManager`](super::manager::TaskManager).
//!
//! The rule behind every step: a `.checkpoint` exists only while the state on disk holds at
//! least the changelog up to its offset, and it belongs to the store type whose files are
//! there. Each store type's checkpoint removes the other type's files first (the in-memory
//! store's clean close destroys a persistent store directory, a persistent store's
//! checkpoint deletes a snapshot), and each type refuses a checkpoint when its own files are
//! missing or the other type's are present: switching `store.type` between restarts means a
//! full restore, never a store trusted for changelog it does not hold.
//!
//! - In-memory store, clean close (revocation, shutdown; always after a commit): the
//!   snapshot is written and made durable first, then the checkpoint. A crash between the
//!   two leaves a checkpoint that does not match the snapshot's recorded position, which is
//!   refused. At creation (a task not kept in memory) a checkpoint, a valid snapshot and
//!   equal offsets → the snapshot is loaded through `put_inner` and the restore replays only
//!   the changelog after the checkpoint; anything missing, corrupt or mismatching → a warning
//!   and a full restore. Under exactly-once the checkpoint is deleted as soon as it is read,
//!   as Kafka Streams does. Its checkpoints are written only on a clean close: the snapshot
//!   is a full copy of the store, too costly to write every 10,000 records.
//! - Persistent store: checkpointed (`flush_durable`, then the checkpoint) by a clean close
//!   and, as the manager decides, while it restores and after at-least-once commits. Before
//!   it is opened at creation, a checkpoint for its changelog with its directory present is
//!   trusted (the restore replays the changelog after it); otherwise the checkpoint is
//!   deleted and the directory destroyed, and the restore is a full one. Under exactly-once
//!   the manager has the checkpoint deleted when the task starts running (the store then
//!   takes uncommitted writes), so after a crash none is left and the store is wiped.
//! - Dirty close (tasks lost) and a restore that must start over: the checkpoint is deleted,
//!   so a crash never leaves one behind that the state on disk does not back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::task::Task;
use crate::changelog::Checkpoint;
use crate::membership::TaskId;
use crate::store::{read_snapshot, write_snapshot, ByteKeyValueStore, PersistentBytesStore};

/// The files of one task.
#[derive(Debug, Clone)]
pub(super) struct TaskDir {
    checkpoint: PathBuf,
    snapshot: PathBuf,
    store: PathBuf,
}

impl TaskDir {
    pub(super) fn new(state_dir: &Path, application_id: &str, task: &TaskId, store: &str) -> Self {
        let dir = state_dir.join(application_id).join(task.to_string());
        Self {
            checkpoint: dir.join(".checkpoint"),
            snapshot: dir.join(format!("{store}.snapshot")),
            store: super::task_store::store_dir(state_dir, application_id, task, store),
        }
    }

    /// Where the task's persistent store lives.
    pub(super) fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Before the task's persistent store is opened: the checkpointed offset its restore
    /// starts after, when the checkpoint is usable (one for `topic`/`partition`, the store's
    /// directory present, no snapshot of an in-memory store beside it). Otherwise the
    /// checkpoint is deleted and the directory destroyed, for a full restore.
    pub(super) fn prepare_persistent(
        &self,
        task: &str,
        topic: &str,
        partition: i32,
    ) -> Option<i64> {
        let offset = self.read_checkpoint(task, topic, partition);
        let has_store = self.store.is_dir();
        let has_snapshot = self.snapshot.exists();
        if let (Some(offset), true, false) = (offset, has_store, has_snapshot) {
            info!(
                task,
                checkpoint = offset,
                "persistent store kept; restoring the changelog after its checkpoint"
            );
            return Some(offset);
        }
        if offset.is_some() {
            let reason = if has_snapshot {
                "the checkpoint belongs to an in-memory store's snapshot (store.type changed)"
            } else {
                "the persistent store's directory is missing"
            };
            warn!(
                task,
                reason, "cannot use the checkpoint; restoring the whole changelog"
            );
        } else if has_store {
            info!(
                task,
                "a persistent store without a checkpoint: wiping it for a full restore"
            );
        }
        self.discard_checkpoint(task);
        if let Err(e) = PersistentBytesStore::destroy(&self.store) {
            warn!(
                task,
                error = &e as &dyn std::error::Error,
                "cannot destroy the persistent store"
            );
        }
        self.discard_snapshot(task);
        None
    }

    /// Loads the state a clean close left into `task`'s (empty) store and sets its changelog
    /// offset, so that its restore replays only the tail. Returns whether it did; on `false`
    /// the store is empty and the restore is a full one.
    pub(super) fn load(&self, task: &mut Task, exactly_once: bool) -> bool {
        let started = Instant::now();
        let Some(offset) =
            self.read_checkpoint(&task.name, task.changelog_topic(), task.partition())
        else {
            return false;
        };
        if exactly_once {
            self.discard_checkpoint(&task.name);
        }
        if self.store.exists() {
            warn!(task = %task.name, path = %self.store.display(),
                "the checkpoint belongs to a persistent store (store.type changed); restoring the whole changelog");
            return false;
        }
        let snapshot = match read_snapshot(&self.snapshot) {
            Ok(Some(s)) if s.position == offset => s,
            Ok(Some(s)) => {
                warn!(task = %task.name, checkpoint = offset, snapshot = s.position,
                    "the snapshot does not match the checkpoint; restoring the whole changelog");
                return false;
            }
            Ok(None) => {
                warn!(task = %task.name, path = %self.snapshot.display(),
                    "a checkpoint but no snapshot; restoring the whole changelog");
                return false;
            }
            Err(e) => {
                warn!(task = %task.name, error = &e as &dyn std::error::Error,
                    "cannot use the snapshot; restoring the whole changelog");
                return false;
            }
        };
        let entries = snapshot.entries.len();
        let name = task.name.clone();
        let store = task.store();
        for (key, value) in snapshot.entries {
            if let Err(e) = store.put_inner(key, value) {
                warn!(task = %name, error = &e as &dyn std::error::Error,
                    "a snapshot entry is not a session; restoring the whole changelog");
                if let Err(e) = store.clear() {
                    warn!(task = %name, error = &e as &dyn std::error::Error, "clearing the store");
                }
                return false;
            }
        }
        task.resume_after(offset);
        info!(
            task = %task.name,
            entries,
            checkpoint = offset,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "task state loaded from its snapshot"
        );
        true
    }

    /// The checkpointed offset of the task's changelog partition, if there is a usable one.
    fn read_checkpoint(&self, task: &str, topic: &str, partition: i32) -> Option<i64> {
        match Checkpoint::read(&self.checkpoint) {
            Ok(Some(cp)) => {
                let offset = cp.offset(topic, partition);
                if offset.is_none() {
                    warn!(task, path = %self.checkpoint.display(), topic,
                        "the checkpoint has no offset for the changelog; restoring the whole changelog");
                }
                offset
            }
            Ok(None) => {
                debug!(task, "no checkpoint; restoring the whole changelog");
                None
            }
            Err(e) => {
                warn!(
                    task,
                    error = &e as &dyn std::error::Error,
                    "cannot read the checkpoint; restoring the whole changelog"
                );
                None
            }
        }
    }

    /// Checkpoints a task closed cleanly (committed, its cache flushed): the snapshot of an
    /// in-memory store, or a persistent store made durable, then the checkpoint. Failures are
    /// logged: the next start restores the whole changelog.
    pub(super) fn save(&self, task: &mut Task) {
        let Some(offset) = task.changelog_offset() else {
            // Nothing restored or written: there is nothing to skip next time.
            self.discard_checkpoint(&task.name);
            return;
        };
        if !task.store().is_flushed() {
            warn!(task = %task.name, "the store holds unflushed writes; not checkpointing it");
            self.discard_checkpoint(&task.name);
            return;
        }
        if task.store().inner().is_persistent() {
            self.checkpoint(task, offset);
            return;
        }
        let started = Instant::now();
        if self.store.exists() {
            // The snapshot takes over: a persistent store left from another store.type must
            // never be trusted with this checkpoint.
            self.discard_checkpoint(&task.name);
            if let Err(e) = PersistentBytesStore::destroy(&self.store) {
                warn!(task = %task.name, error = &e as &dyn std::error::Error,
                    "cannot destroy the persistent store of another store.type; not checkpointing");
                return;
            }
        }
        let stats = match write_snapshot(task.store().inner(), offset, &self.snapshot) {
            Ok(stats) => stats,
            Err(e) => {
                warn!(task = %task.name, error = &e as &dyn std::error::Error, "cannot write the snapshot; the next start restores the whole changelog");
                self.discard_checkpoint(&task.name);
                return;
            }
        };
        let mut cp = Checkpoint::new();
        cp.set(task.changelog_topic(), task.partition(), offset);
        if let Err(e) = cp.write(&self.checkpoint) {
            warn!(task = %task.name, error = &e as &dyn std::error::Error, "cannot write the checkpoint; the next start restores the whole changelog");
            return;
        }
        info!(
            task = %task.name,
            checkpoint = offset,
            entries = stats.entries,
            bytes = stats.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "task state saved"
        );
    }

    /// Makes a persistent store durable, then writes its checkpoint at `offset` (the store
    /// holds the changelog up to it). A failure removes the checkpoint: the next start
    /// restores the whole changelog.
    pub(super) fn checkpoint(&self, task: &mut Task, offset: i64) {
        let started = Instant::now();
        if let Err(e) = task.flush_durable() {
            warn!(task = %task.name, error = &e as &dyn std::error::Error,
                "cannot make the store durable; removing its checkpoint");
            self.discard_checkpoint(&task.name);
            return;
        }
        self.discard_snapshot(&task.name);
        let mut cp = Checkpoint::new();
        cp.set(task.changelog_topic(), task.partition(), offset);
        if let Err(e) = cp.write(&self.checkpoint) {
            warn!(task = %task.name, error = &e as &dyn std::error::Error,
                "cannot write the checkpoint; removing it");
            self.discard_checkpoint(&task.name);
            return;
        }
        task.resume_after(offset);
        debug!(
            task = %task.name,
            checkpoint = offset,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "persistent store checkpointed"
        );
    }

    /// Deletes an in-memory store's snapshot, if any (a persistent store's checkpoint must
    /// never be read with it).
    fn discard_snapshot(&self, task: &str) {
        match std::fs::remove_file(&self.snapshot) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(
                    task,
                    error = &e as &dyn std::error::Error,
                    "cannot delete the snapshot"
                );
            }
            _ => {}
        }
    }

    /// Deletes the checkpoint (the snapshot stays, unused without it, until overwritten).
    pub(super) fn discard_checkpoint(&self, task: &str) {
        if let Err(e) = Checkpoint::delete(&self.checkpoint) {
            warn!(
                task,
                error = &e as &dyn std::error::Error,
                "cannot delete the checkpoint"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{count_factory, ProcessorFactory};
    use crate::session::SessionWindows;
    use crate::store::{ByteKeyValueStore, CacheBudget};
    use std::time::Duration;

    pub(super) const TOPIC: &str = "app-counts-changelog";

    pub(super) fn state_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "kstate-taskdir-{}-{name}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub(super) fn id() -> TaskId {
        TaskId {
            subtopology: "0".into(),
            partition: 3,
        }
    }

    /// A task over `inner`, gap 10 ms, retention 1 h.
    pub(super) fn task_on(inner: crate::store::TaskBytesStore) -> Task {
        let windows = SessionWindows::new(
            Duration::from_millis(10),
            Duration::ZERO,
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
        let processor = count_factory(windows)
            .create("counts", CacheBudget::new(1 << 20), inner)
            .unwrap();
        Task::new(id(), "in".into(), processor, TOPIC.into(), None)
    }

    fn task() -> Task {
        task_on(crate::store::TaskBytesStore::default())
    }

    /// `t` with two sessions written through, at changelog offset 41.
    pub(super) fn fill(mut t: Task) -> Task {
        for (offset, ts) in [(0, 100), (1, 105), (2, 500)] {
            t.process(Some(b"k"), None, offset, ts).unwrap();
        }
        t.flush().unwrap();
        t.resume_after(41);
        t
    }

    /// A task whose store holds two sessions written through, at changelog offset 41.
    fn closed_task() -> Task {
        fill(task())
    }

    pub(super) fn entries(t: &mut Task) -> Vec<(bytes::Bytes, bytes::Bytes)> {
        t.store().inner().scan_all().unwrap()
    }

    #[test]
    fn a_clean_close_is_loaded_back_with_its_offset() {
        let root = state_dir("rt");
        let dir = TaskDir::new(&root, "app", &id(), "counts");
        let mut closed = closed_task();
        dir.save(&mut closed);
        let text = std::fs::read_to_string(root.join("app/0_3/.checkpoint")).unwrap();
        assert_eq!(text, format!("0\n1\n{TOPIC} 3 41\n"));
        assert!(root.join("app/0_3/counts.snapshot").exists());

        let mut fresh = task();
        assert!(dir.load(&mut fresh, false));
        assert_eq!(fresh.changelog_offset(), Some(41));
        assert_eq!(entries(&mut fresh), entries(&mut closed));
        assert_eq!(entries(&mut fresh).len(), 2);
        assert!(
            root.join("app/0_3/.checkpoint").exists(),
            "at_least_once keeps it"
        );
    }

    #[test]
    fn exactly_once_deletes_the_checkpoint_once_read() {
        let root = state_dir("eos");
        let dir = TaskDir::new(&root, "app", &id(), "counts");
        dir.save(&mut closed_task());
        let mut fresh = task();
        assert!(dir.load(&mut fresh, true));
        assert!(!root.join("app/0_3/.checkpoint").exists());
        assert!(
            !dir.load(&mut task(), true),
            "a crash now means a full restore"
        );
    }

    #[test]
    fn a_corrupt_or_mismatching_snapshot_means_a_full_restore() {
        let root = state_dir("bad");
        let dir = TaskDir::new(&root, "app", &id(), "counts");
        let snapshot = root.join("app/0_3/counts.snapshot");
        dir.save(&mut closed_task());
        let mut data = std::fs::read(&snapshot).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(&snapshot, &data).unwrap();
        let mut fresh = task();
        assert!(!dir.load(&mut fresh, false));
        assert_eq!(fresh.changelog_offset(), None);
        assert!(entries(&mut fresh).is_empty());

        // A checkpoint newer than the snapshot (a crash between the two writes).
        dir.save(&mut closed_task());
        let mut cp = Checkpoint::new();
        cp.set(TOPIC, 3, 99);
        cp.write(&root.join("app/0_3/.checkpoint")).unwrap();
        assert!(!dir.load(&mut task(), false));

        // A checkpoint of another changelog, and no snapshot at all.
        let mut cp = Checkpoint::new();
        cp.set("other-changelog", 3, 41);
        cp.write(&root.join("app/0_3/.checkpoint")).unwrap();
        assert!(!dir.load(&mut task(), false));
        dir.save(&mut closed_task());
        std::fs::remove_file(&snapshot).unwrap();
        assert!(!dir.load(&mut task(), false));
    }

    #[test]
    fn nothing_to_checkpoint_and_dirty_closes_leave_no_checkpoint() {
        let root = state_dir("none");
        let dir = TaskDir::new(&root, "app", &id(), "counts");
        dir.save(&mut closed_task());
        dir.discard_checkpoint("0_3");
        assert!(!root.join("app/0_3/.checkpoint").exists());
        dir.save(&mut closed_task());
        dir.save(&mut task());
        assert!(
            !root.join("app/0_3/.checkpoint").exists(),
            "a task without a changelog offset removes the old checkpoint"
        );
        let mut unflushed = closed_task();
        unflushed.process(Some(b"k"), None, 3, 900).unwrap();
        dir.save(&mut unflushed);
        assert!(!root.join("app/0_3/.checkpoint").exists());
    }
}

#[cfg(test)]
mod persistent_tests;
