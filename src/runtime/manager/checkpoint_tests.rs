//! The task manager's checkpoints of persistent stores, with a fake clock and the driver's
//! answers played by hand.

use super::*;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);
const POLICY: CheckpointPolicy = CheckpointPolicy {
    records: 100,
    interval: Duration::from_secs(30),
};

fn manager(exactly_once: bool, checkpoint: Option<CheckpointPolicy>) -> (TaskManager, Instant) {
    let now = Instant::now();
    let config = ManagerConfig {
        exactly_once,
        commit_interval: INTERVAL,
        cleanup_delay: Duration::from_secs(600),
        checkpoint,
    };
    (TaskManager::new(config, now), now)
}

fn drain(m: &mut TaskManager) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn set(tasks: &[Partition]) -> BTreeSet<Partition> {
    tasks.iter().copied().collect()
}

fn checkpoints(actions: &[Action]) -> Vec<(Partition, i64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Checkpoint { task, offset } => Some((*task, *offset)),
            _ => None,
        })
        .collect()
}

/// Task 0 restored from a checkpoint at `from` up to an empty tail, then running.
fn running_from(m: &mut TaskManager, now: Instant, from: Option<i64>) -> Vec<Action> {
    m.handle_assignment(now, set(&[0]), set(&[]));
    m.handle_created(0, from);
    m.handle_restore_started(0, from, from.map_or(0, |f| f + 1));
    m.handle_committed(&[(0, Some(0))]);
    drain(m)
}

/// One at-least-once commit cycle at `at` in which task 0 processed `input` and its
/// changelog was acknowledged up to `acked`; returns the actions after the flush.
fn cycle(m: &mut TaskManager, at: Instant, input: i64, acked: i64) -> Vec<Action> {
    m.handle_processed(0, input);
    m.handle_timeout(at);
    let id = drain(m)
        .iter()
        .find_map(|a| match a {
            Action::Flush { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a flush");
    m.handle_changelog_acked(0, acked);
    m.handle_flush_acked(at, id);
    let mut actions = drain(m);
    assert!(
        checkpoints(&actions).is_empty(),
        "no checkpoint before the offsets are committed: {actions:?}"
    );
    m.handle_commit_result(at, Ok(()));
    actions.extend(drain(m));
    actions
}

#[test]
fn at_least_once_checkpoints_after_the_commit_once_enough_records_moved() {
    let (mut m, now) = manager(false, Some(POLICY));
    let started = running_from(&mut m, now, Some(999));
    assert!(checkpoints(&started).is_empty());
    assert!(!started.contains(&Action::DiscardCheckpoint { task: 0 }));
    let at = now + INTERVAL;
    assert!(
        checkpoints(&cycle(&mut m, at, 0, 1098)).is_empty(),
        "99 records"
    );
    let at = at + INTERVAL;
    let actions = cycle(&mut m, at, 1, 1099);
    assert_eq!(checkpoints(&actions), vec![(0, 1099)]);
    let commit = actions
        .iter()
        .position(|a| matches!(a, Action::CommitOffsets { .. }))
        .unwrap();
    let checkpoint = actions
        .iter()
        .position(|a| matches!(a, Action::Checkpoint { .. }))
        .unwrap();
    assert!(commit < checkpoint, "{actions:?}");
    // Counted from the last checkpoint, not from the start.
    let at = at + INTERVAL;
    assert!(checkpoints(&cycle(&mut m, at, 2, 1150)).is_empty());
}

#[test]
fn a_slow_changelog_is_checkpointed_after_the_interval_and_an_idle_one_never() {
    let (mut m, now) = manager(false, Some(POLICY));
    running_from(&mut m, now, Some(10));
    let mut at = now;
    for input in 0..29 {
        at += INTERVAL;
        let acked = 11 + input;
        assert!(checkpoints(&cycle(&mut m, at, input, acked)).is_empty());
    }
    at += INTERVAL;
    assert_eq!(checkpoints(&cycle(&mut m, at, 29, 40)), vec![(0, 40)]);
    // Nothing new for minutes: no checkpoint (the file would say the same).
    at += Duration::from_secs(120);
    assert!(checkpoints(&cycle(&mut m, at, 30, 40)).is_empty());
}

#[test]
fn a_refused_commit_writes_no_checkpoint_and_closes_dirty() {
    let (mut m, now) = manager(false, Some(POLICY));
    running_from(&mut m, now, None);
    m.handle_processed(0, 0);
    m.handle_timeout(now + INTERVAL);
    drain(&mut m);
    m.handle_changelog_acked(0, 5_000);
    m.handle_flush_acked(now + INTERVAL, 1);
    drain(&mut m);
    m.handle_commit_result(now + INTERVAL, Err(CommitFailure::Refused));
    let actions = drain(&mut m);
    assert!(checkpoints(&actions).is_empty(), "{actions:?}");
    assert!(actions.contains(&Action::CloseDirty { task: 0 }));
}

#[test]
fn restores_and_standbys_are_checkpointed_as_their_changelog_moves() {
    for exactly_once in [false, true] {
        let (mut m, now) = manager(exactly_once, Some(POLICY));
        m.handle_assignment(now, set(&[0]), set(&[1]));
        m.handle_created(0, None);
        m.handle_created(1, Some(49));
        drain(&mut m);
        m.handle_restore_started(0, None, 1_000);
        m.handle_restore_started(1, Some(49), 60);
        m.handle_restored(0, 50);
        m.handle_restored(1, 100);
        assert!(checkpoints(&drain(&mut m)).is_empty());
        m.handle_restored(0, 99);
        m.handle_restored(1, 149);
        assert_eq!(checkpoints(&drain(&mut m)), vec![(0, 99), (1, 149)]);
        m.handle_restored(0, 999);
        let done = drain(&mut m);
        assert_eq!(checkpoints(&done), vec![(0, 999)]);
        m.handle_committed(&[(0, Some(7))]);
        let running = drain(&mut m);
        if exactly_once {
            assert_eq!(
                running,
                vec![
                    Action::DiscardCheckpoint { task: 0 },
                    Action::StartProcessing {
                        task: 0,
                        offset: Some(7)
                    }
                ],
                "under exactly-once the store takes uncommitted writes from here on"
            );
        } else {
            assert!(!running.contains(&Action::DiscardCheckpoint { task: 0 }));
        }
    }
}

#[test]
fn a_full_restore_forgets_the_old_checkpoint() {
    let (mut m, now) = manager(false, Some(POLICY));
    m.handle_assignment(now, set(&[0]), set(&[]));
    m.handle_created(0, Some(5_000));
    drain(&mut m);
    // The checkpoint was below the log start: the store was cleared, restored from 9_999.
    m.handle_restore_started(0, Some(9_999), 20_000);
    m.handle_restored(0, 10_098);
    assert!(checkpoints(&drain(&mut m)).is_empty(), "99 records");
    m.handle_restored(0, 10_099);
    assert_eq!(checkpoints(&drain(&mut m)), vec![(0, 10_099)]);
}

#[test]
fn exactly_once_checkpoints_a_running_store_only_by_its_clean_close() {
    let (mut m, now) = manager(true, Some(POLICY));
    running_from(&mut m, now, Some(10));
    let mut at = now;
    for input in 0..40 {
        at += INTERVAL;
        m.handle_processed(0, input);
        m.handle_timeout(at);
        let actions = drain(&mut m);
        assert!(matches!(
            actions.last(),
            Some(Action::CommitTransaction { .. })
        ));
        m.handle_commit_result(at, Ok(()));
        assert!(checkpoints(&drain(&mut m)).is_empty());
    }
    m.shutdown(at);
    drain(&mut m);
    m.handle_commit_result(at, Ok(()));
    let closed = drain(&mut m);
    assert_eq!(
        closed,
        vec![Action::CloseClean { task: 0 }, Action::Leave],
        "the clean close writes the checkpoint"
    );
}

#[test]
fn the_in_memory_store_is_never_checkpointed_between_clean_closes() {
    for exactly_once in [false, true] {
        let (mut m, now) = manager(exactly_once, None);
        m.handle_assignment(now, set(&[0]), set(&[]));
        m.handle_created(0, None);
        m.handle_restore_started(0, None, 100_000);
        m.handle_restored(0, 99_999);
        m.handle_committed(&[(0, None)]);
        let mut actions = drain(&mut m);
        let at = now + Duration::from_secs(120);
        m.handle_processed(0, 0);
        m.handle_timeout(at);
        actions.extend(drain(&mut m));
        if !exactly_once {
            m.handle_changelog_acked(0, 200_000);
            m.handle_flush_acked(at, 1);
        }
        m.handle_commit_result(at, Ok(()));
        actions.extend(drain(&mut m));
        assert!(checkpoints(&actions).is_empty(), "{actions:?}");
        assert!(!actions.contains(&Action::DiscardCheckpoint { task: 0 }));
    }
}
