//! The task directory's rules for a persistent store, and for switching `store.type`
//! between restarts: a checkpoint is trusted only with its own store type's files.

use super::tests::{entries, fill, id, state_dir as root, task_on, TOPIC};
use super::*;
use crate::store::{PersistentOptions, TaskBytesStore};

fn persistent(dir: &TaskDir) -> Task {
    let store = PersistentBytesStore::open(dir.store_dir(), &PersistentOptions::default()).unwrap();
    task_on(store.into())
}

fn checkpoint_text(root: &Path) -> Option<String> {
    std::fs::read_to_string(root.join("app/0_3/.checkpoint")).ok()
}

#[test]
fn a_persistent_store_is_kept_with_its_checkpoint_and_wiped_without_one() {
    let root = root("keep");
    let dir = TaskDir::new(&root, "app", &id(), "counts");
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), None, "nothing yet");
    let mut t = fill(persistent(&dir));
    let kept = entries(&mut t);
    assert_eq!(kept.len(), 2);
    dir.checkpoint(&mut t, 41);
    assert_eq!(
        checkpoint_text(&root).unwrap(),
        format!("0\n1\n{TOPIC} 3 41\n")
    );
    drop(t);

    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), Some(41));
    let mut reopened = persistent(&dir);
    assert_eq!(entries(&mut reopened), kept, "the store on disk is kept");
    drop(reopened);

    // No checkpoint (a dirty close, or exactly-once after the task ran): wiped.
    dir.discard_checkpoint("0_3");
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), None);
    assert!(!dir.store_dir().exists(), "the store was destroyed");
    assert!(entries(&mut persistent(&dir)).is_empty());
}

#[test]
fn a_checkpoint_of_another_changelog_or_without_the_store_wipes_it() {
    let root = root("other");
    let dir = TaskDir::new(&root, "app", &id(), "counts");
    let mut t = fill(persistent(&dir));
    dir.checkpoint(&mut t, 41);
    drop(t);
    assert_eq!(dir.prepare_persistent("0_3", "other-changelog", 3), None);
    assert!(checkpoint_text(&root).is_none(), "removed before the store");
    assert!(!dir.store_dir().exists());

    // A checkpoint whose store directory is gone.
    let mut cp = Checkpoint::new();
    cp.set(TOPIC, 3, 41);
    cp.write(&root.join("app/0_3/.checkpoint")).unwrap();
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), None);
    assert!(checkpoint_text(&root).is_none());
}

#[test]
fn a_clean_close_of_a_persistent_store_checkpoints_it_without_a_snapshot() {
    let root = root("close");
    let dir = TaskDir::new(&root, "app", &id(), "counts");
    // A snapshot left by an earlier in-memory run must not survive beside the checkpoint.
    dir.save(&mut fill(task_on(TaskBytesStore::default())));
    assert!(root.join("app/0_3/counts.snapshot").exists());
    dir.discard_checkpoint("0_3");
    let mut t = fill(persistent(&dir));
    dir.save(&mut t);
    assert_eq!(
        checkpoint_text(&root).unwrap(),
        format!("0\n1\n{TOPIC} 3 41\n")
    );
    assert!(!root.join("app/0_3/counts.snapshot").exists());
    drop(t);
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), Some(41));
}

#[test]
fn switching_store_type_refuses_the_other_types_checkpoint() {
    // persistent → in_memory: the persistent store's checkpoint is not the snapshot's.
    let root = root("switch");
    let dir = TaskDir::new(&root, "app", &id(), "counts");
    let mut p = fill(persistent(&dir));
    dir.save(&mut p);
    drop(p);
    let mut memory = task_on(TaskBytesStore::default());
    assert!(!dir.load(&mut memory, false));
    assert_eq!(memory.changelog_offset(), None);

    // in_memory's clean close destroys the persistent store before its checkpoint...
    dir.save(&mut fill(task_on(TaskBytesStore::default())));
    assert!(!dir.store_dir().exists());
    assert!(checkpoint_text(&root).is_some());
    // ... and in_memory → persistent: that checkpoint has no persistent store behind it.
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), None);
    assert!(checkpoint_text(&root).is_none());
    assert!(!root.join("app/0_3/counts.snapshot").exists());

    // A stale persistent directory beside an in-memory checkpoint and snapshot (a crash
    // of an older version between the two): refused both ways.
    dir.save(&mut fill(task_on(TaskBytesStore::default())));
    drop(fill(persistent(&dir)));
    assert!(!dir.load(&mut task_on(TaskBytesStore::default()), false));
    assert_eq!(dir.prepare_persistent("0_3", TOPIC, 3), None);
}
