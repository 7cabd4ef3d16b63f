//! The worker's status board: what the member and each of its tasks are doing right now, for
//! `/readyz`, `/status` and the task gauges of the dashboard. The runtime writes it at a few
//! points of a task's life (assigned, restore progress, running, closed) and the membership
//! driver's status is copied in as it changes; readers take a [`StatusSnapshot`]. Owns the
//! readiness rule (docs/DESIGN.md §9); knows nothing of HTTP and does no I/O beyond reading
//! the input consumer's cached positions and watermarks for the lag.
//!
//! Cheap to clone (one `Arc`) and never held across an `.await`: a write is a short critical
//! section under a `std` mutex.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::Consumer;
use rdkafka::Offset;
use serde::Serialize;
use tokio::sync::watch;

use super::metrics;
use crate::changelog::RestoreProgress;
use crate::membership::{DriverStatus, MemberState, TaskId};

/// Whether a task processes input (active) or only follows a changelog (standby or warm-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Owns an input partition and processes its records.
    Active,
    /// A standby or warm-up copy assigned by the group.
    Standby,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskPhase {
    /// Assigned; its store is being created or loaded from a snapshot.
    Created,
    /// Replaying its changelog; processes no record yet.
    Restoring,
    /// Processing input records.
    Running,
    /// Assigned as a standby: its store follows the changelog, it processes no input.
    Standby,
}

/// How far a task's restore has come.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreStatus {
    /// The next changelog offset to apply.
    pub position: i64,
    /// The changelog end offset captured when the restore started (exclusive).
    pub end: i64,
    /// Records restored so far.
    pub restored: u64,
    /// Records this restore replays in all (`end` minus the start offset).
    pub total: u64,
    /// Restore rate so far.
    pub records_per_sec: f64,
}

/// One assigned task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskStatus {
    /// The task id, `<subtopology>_<partition>`.
    pub id: String,
    /// Its input (and changelog) partition.
    pub partition: i32,
    /// Active or standby.
    pub kind: TaskKind,
    /// Where it is in its life.
    pub state: TaskPhase,
    /// The progress of its latest restore, once one reported.
    pub restore: Option<RestoreStatus>,
    /// Once known: for a running task, input records behind the partition's high watermark;
    /// for a standby, changelog records behind the changelog's end.
    pub lag: Option<i64>,
}

/// The member as the streams group sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    /// The member id (empty until the worker starts joining).
    pub member_id: String,
    /// The member epoch: 0 while joining, -1 once left.
    pub epoch: i32,
    /// The membership state (`joining`, `stable`, …), `starting` before the first heartbeat.
    pub state: String,
    /// Whether the broker counts this member in the group (joined, not leaving).
    pub in_group: bool,
    /// Whether the runtime has taken in an assignment since the member (re)joined: until
    /// then the tasks on the board may not be the ones the group gave it.
    pub assignment_received: bool,
}

impl Default for MemberStatus {
    fn default() -> Self {
        Self {
            member_id: String::new(),
            epoch: 0,
            state: "starting".into(),
            in_group: false,
            assignment_received: false,
        }
    }
}

/// A consistent copy of the board.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusSnapshot {
    /// The member.
    pub member: MemberStatus,
    /// Every assigned task, active ones first, in id order.
    pub tasks: Vec<TaskStatus>,
}

impl StatusSnapshot {
    /// Ready to serve: the member is in the group, the runtime has taken in its assignment,
    /// and no active task is restoring or being created.
    pub fn ready(&self) -> bool {
        self.member.in_group && self.member.assignment_received && self.restoring().is_empty()
    }

    /// The ids of the active tasks that are not running yet.
    pub fn restoring(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|t| {
                t.kind == TaskKind::Active
                    && matches!(t.state, TaskPhase::Created | TaskPhase::Restoring)
            })
            .map(|t| t.id.as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
struct Board {
    member: MemberStatus,
    tasks: BTreeMap<(u8, String), TaskStatus>,
}

/// The shared status of one worker. Clones share the board.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<Board>>,
}

fn key(kind: TaskKind, id: &str) -> (u8, String) {
    (kind as u8, id.to_string())
}

impl StatusBoard {
    /// An empty board: no member yet, no tasks (not ready).
    pub fn new() -> Self {
        Self::default()
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the board as it is now.
    pub fn snapshot(&self) -> StatusSnapshot {
        let b = self.board();
        StatusSnapshot {
            member: b.member.clone(),
            tasks: b.tasks.values().cloned().collect(),
        }
    }

    /// Records the member's id, epoch and state.
    pub fn set_member(&self, member_id: &str, epoch: i32, state: MemberState) {
        let in_group = epoch > 0
            && matches!(
                state,
                MemberState::Stable | MemberState::Reconciling | MemberState::Acknowledging
            );
        let mut b = self.board();
        b.member = MemberStatus {
            member_id: member_id.to_string(),
            epoch,
            state: format!("{state:?}").to_lowercase(),
            in_group,
            // Out of the group, any assignment taken in before is void.
            assignment_received: in_group && b.member.assignment_received,
        };
    }

    /// Copies every status the membership driver publishes into the board, on a tokio task
    /// that ends with the driver.
    pub fn follow(&self, mut driver: watch::Receiver<DriverStatus>) {
        let board = self.clone();
        tokio::spawn(async move {
            loop {
                {
                    let s = driver.borrow_and_update();
                    board.set_member(&s.member_id, s.member_epoch, s.state);
                }
                if driver.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// Adds or updates an active task in `state`, keeping its restore progress and lag.
    pub fn set_task(&self, id: &TaskId, state: TaskPhase) {
        let mut b = self.board();
        let entry = b
            .tasks
            .entry(key(TaskKind::Active, &id.to_string()))
            .or_insert_with(|| TaskStatus {
                id: id.to_string(),
                partition: id.partition,
                kind: TaskKind::Active,
                state,
                restore: None,
                lag: None,
            });
        entry.state = state;
        if state != TaskPhase::Running {
            entry.lag = None;
        }
        Self::publish(&b);
    }

    /// Records a restore progress report of the active task `id`: it is restoring until it is
    /// set running (the last report, `done`, comes before its input partition is assigned).
    pub fn restore_progress(&self, id: &TaskId, p: &RestoreProgress) {
        let restore = RestoreStatus {
            position: p.start + p.restored as i64,
            end: p.end,
            restored: p.restored,
            total: p.total,
            records_per_sec: p.records_per_sec,
        };
        let mut b = self.board();
        if let Some(t) = b.tasks.get_mut(&key(TaskKind::Active, &id.to_string())) {
            // Reports of one restore are cumulative; a new restore starts from zero.
            let before = match &t.restore {
                Some(r) if r.end == restore.end && r.position - r.restored as i64 == p.start => {
                    r.restored
                }
                _ => 0,
            };
            metrics::restored(p.restored.saturating_sub(before));
            t.restore = Some(restore);
            t.state = TaskPhase::Restoring;
        }
        Self::publish(&b);
    }

    /// Removes the active task `id` (closed, revoked or lost).
    pub fn remove_task(&self, id: &TaskId) {
        let mut b = self.board();
        b.tasks.remove(&key(TaskKind::Active, &id.to_string()));
        Self::publish(&b);
    }

    /// Records how many changelog records the standby task `id` is behind its changelog's
    /// end. A task no longer a standby on the board (replaced by a newer assignment) is left
    /// alone.
    pub fn set_standby_lag(&self, id: &TaskId, lag: i64) {
        let mut b = self.board();
        if let Some(t) = b.tasks.get_mut(&key(TaskKind::Standby, &id.to_string())) {
            t.lag = Some(lag);
        }
        Self::publish(&b);
    }

    /// Takes in an assignment as the runtime starts handling it: new active tasks appear as
    /// created (before any await, so readiness never sees the assignment without them), the
    /// standby tasks are replaced (one kept keeps its lag; a task both active and standby is
    /// active). Tasks that are gone are removed by
    /// [`remove_task`](Self::remove_task) when the runtime closes them.
    pub fn set_assignment(&self, active: &BTreeSet<TaskId>, standby: &BTreeSet<TaskId>) {
        let mut b = self.board();
        b.member.assignment_received = true;
        for id in active {
            b.tasks
                .entry(key(TaskKind::Active, &id.to_string()))
                .or_insert_with(|| TaskStatus {
                    id: id.to_string(),
                    partition: id.partition,
                    kind: TaskKind::Active,
                    state: TaskPhase::Created,
                    restore: None,
                    lag: None,
                });
        }
        let standby: BTreeMap<String, i32> = standby
            .iter()
            .filter(|id| !active.contains(id))
            .map(|id| (id.to_string(), id.partition))
            .collect();
        b.tasks
            .retain(|(kind, id), _| *kind != TaskKind::Standby as u8 || standby.contains_key(id));
        for (id, partition) in &standby {
            b.tasks
                .entry(key(TaskKind::Standby, id))
                .or_insert_with(|| TaskStatus {
                    id: id.clone(),
                    partition: *partition,
                    kind: TaskKind::Standby,
                    state: TaskPhase::Standby,
                    restore: None,
                    lag: None,
                });
        }
        Self::publish(&b);
    }

    /// Sets each running task's lag from the input consumer's position and the high
    /// watermark of its last fetch (both cached by librdkafka: no request is sent).
    pub fn refresh_lag<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        topic: &str,
    ) {
        let positions = consumer.position().ok();
        let mut b = self.board();
        for t in b.tasks.values_mut() {
            if t.kind != TaskKind::Active || t.state != TaskPhase::Running {
                continue;
            }
            let position = positions
                .as_ref()
                .and_then(|tpl| tpl.find_partition(topic, t.partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let high = cached_high_watermark(consumer.client(), topic, t.partition);
            t.lag = match (position, high) {
                (Some(p), Some(h)) => Some((h - p).max(0)),
                _ => t.lag,
            };
        }
        Self::publish(&b);
    }

    /// Sets the gauges derived from the board.
    fn publish(b: &Board) {
        let mut standby = 0;
        let mut standby_lag = 0i64;
        let mut restoring = 0;
        let mut pending = 0u64;
        let mut lag = 0i64;
        for t in b.tasks.values() {
            match (t.kind, t.state) {
                (TaskKind::Standby, _) => {
                    standby += 1;
                    standby_lag += t.lag.unwrap_or(0);
                }
                (TaskKind::Active, TaskPhase::Created | TaskPhase::Restoring) => {
                    restoring += 1;
                    if let Some(r) = &t.restore {
                        pending += r.total.saturating_sub(r.restored);
                    }
                }
                (TaskKind::Active, _) => lag += t.lag.unwrap_or(0),
            }
        }
        metrics::task_board(standby, standby_lag, restoring, pending, lag);
    }
}

/// The high watermark librdkafka cached from its last fetch of `topic`/`partition`, without
/// a request (`rd_kafka_get_watermark_offsets`, which rdkafka does not wrap); `None` before
/// the first fetch.
fn cached_high_watermark<X: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<X>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `client` is borrowed, `topic` is a
    // NUL-terminated string that outlives the call, and librdkafka only writes the two
    // out-parameters, which are valid i64s on this stack frame.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(p: i32) -> TaskId {
        TaskId {
            subtopology: "0".into(),
            partition: p,
        }
    }

    fn progress(restored: u64, total: u64, done: bool) -> RestoreProgress {
        RestoreProgress {
            topic: "app-store-changelog".into(),
            partition: 1,
            start: 10,
            end: 10 + total as i64,
            restored,
            total,
            records_per_sec: 100.0,
            done,
        }
    }

    #[test]
    fn ready_only_in_the_group_with_no_active_task_restoring() {
        let board = StatusBoard::new();
        assert!(!board.snapshot().ready(), "no member yet");
        board.set_member("m", 0, MemberState::Joining);
        assert!(!board.snapshot().ready(), "joining is not in the group");
        board.set_member("m", 3, MemberState::Stable);
        assert!(
            !board.snapshot().ready(),
            "in the group, but its assignment not taken in yet"
        );

        board.set_assignment(&[task(1)].into(), &[task(2)].into());
        assert!(
            !board.snapshot().ready(),
            "the new task is created, not running"
        );
        board.restore_progress(&task(1), &progress(5, 20, false));
        let s = board.snapshot();
        assert!(!s.ready());
        assert_eq!(
            s.restoring(),
            vec!["0_1"],
            "a standby never blocks readiness"
        );
        let restore = s.tasks[0].restore.clone().expect("progress recorded");
        assert_eq!(
            (restore.position, restore.end, restore.restored),
            (15, 30, 5)
        );

        board.restore_progress(&task(1), &progress(20, 20, true));
        assert!(!board.snapshot().ready(), "restored is not yet running");
        assert_eq!(board.snapshot().tasks[0].state, TaskPhase::Restoring);
        board.set_task(&task(1), TaskPhase::Running);
        let s = board.snapshot();
        assert!(s.ready());
        assert_eq!(s.tasks[0].restore.as_ref().map(|r| r.restored), Some(20));
        assert_eq!(
            (s.tasks[1].id.as_str(), s.tasks[1].kind, s.tasks[1].state),
            ("0_2", TaskKind::Standby, TaskPhase::Standby)
        );

        board.set_member("m", -1, MemberState::Leaving);
        assert!(!board.snapshot().ready(), "leaving is not in the group");
        board.set_member("m", 0, MemberState::Joining);
        board.set_member("m", 5, MemberState::Stable);
        assert!(
            !board.snapshot().ready(),
            "a rejoined member waits for its new assignment"
        );
        board.set_assignment(&[task(1)].into(), &BTreeSet::new());
        assert!(board.snapshot().ready(), "0_1 is still running");
    }

    #[test]
    fn removed_and_replaced_tasks_leave_the_board() {
        let board = StatusBoard::new();
        board.set_task(&task(1), TaskPhase::Running);
        board.set_assignment(&[task(1)].into(), &[task(2), task(3)].into());
        assert_eq!(
            board.snapshot().tasks[0].state,
            TaskPhase::Running,
            "an assignment keeps the state of a task it already had"
        );
        board.set_assignment(&[task(1)].into(), &[task(3)].into());
        board.remove_task(&task(1));
        let ids: Vec<String> = board.snapshot().tasks.into_iter().map(|t| t.id).collect();
        assert_eq!(ids, vec!["0_3"]);
    }

    #[test]
    fn the_snapshot_serializes_to_the_documented_json() {
        let board = StatusBoard::new();
        board.set_member("m-1", 2, MemberState::Stable);
        board.set_task(&task(0), TaskPhase::Running);
        let json = serde_json::to_value(board.snapshot()).unwrap();
        assert_eq!(json["member"]["member_id"], "m-1");
        assert_eq!(json["member"]["epoch"], 2);
        assert_eq!(json["member"]["state"], "stable");
        assert_eq!(json["tasks"][0]["id"], "0_0");
        assert_eq!(json["tasks"][0]["kind"], "active");
        assert_eq!(json["tasks"][0]["state"], "running");
        assert!(json["tasks"][0]["lag"].is_null());
    }

    #[test]
    fn a_standby_keeps_its_lag_across_assignments_and_an_active_task_wins() {
        let board = StatusBoard::new();
        board.set_assignment(&BTreeSet::new(), &[task(1), task(2)].into());
        board.set_standby_lag(&task(1), 40);
        board.set_standby_lag(&task(3), 7);
        board.set_assignment(&BTreeSet::new(), &[task(1), task(2)].into());
        let s = board.snapshot();
        let lags: Vec<(&str, Option<i64>)> =
            s.tasks.iter().map(|t| (t.id.as_str(), t.lag)).collect();
        assert_eq!(
            lags,
            vec![("0_1", Some(40)), ("0_2", None)],
            "a task not on the board as a standby gets no entry from its lag"
        );

        board.set_assignment(&[task(1)].into(), &[task(1), task(2)].into());
        let s = board.snapshot();
        let kinds: Vec<(&str, TaskKind)> =
            s.tasks.iter().map(|t| (t.id.as_str(), t.kind)).collect();
        assert_eq!(
            kinds,
            vec![("0_1", TaskKind::Active), ("0_2", TaskKind::Standby)],
            "a promoted standby is active only"
        );
    }
}
