//! Reconciliation of the owned assignment with the broker's target, as the Java client does
//! it: revoke first and wait for the runtime, then hand over the full target. Also the group
//! readiness reported through `Ready` / `NotReady`.
//!
//! Owns the decision of which events to emit when; sends nothing itself (the next heartbeat
//! carries the owned lists, which is the acknowledgement).

use std::collections::BTreeSet;
use std::time::Instant;

use super::machine::{Membership, MembershipEvent, Phase};
use super::task::TaskId;
use crate::protocol::{Status, StatusCode};

impl Membership {
    /// Tells the member that the runtime committed and closed these revoked active tasks. Once
    /// every task of the pending [`MembershipEvent::Revoke`] is released, the member emits
    /// `Assigned` with the full target and its next heartbeat, due at once, reports owned
    /// lists without them. Tasks that were not pending revocation are ignored, as is a call
    /// after `Lost`, `Left` or `Fatal`.
    pub fn tasks_revoked(&mut self, now: Instant, tasks: &BTreeSet<TaskId>) {
        self.last_now = Some(now);
        if self.phase != Phase::Member {
            return;
        }
        let released: BTreeSet<TaskId> = self.pending_revoke.intersection(tasks).cloned().collect();
        if released.is_empty() {
            return;
        }
        for task in &released {
            self.pending_revoke.remove(task);
            self.owned.active.remove(task);
        }
        if self.pending_revoke.is_empty() {
            self.advance();
        }
    }

    /// Moves the owned assignment towards the target: emits `Revoke` for owned active tasks
    /// not in the target and waits, or, with nothing to revoke, adopts the target, emits
    /// `Assigned` and makes the acknowledging heartbeat due at once.
    pub(super) fn reconcile(&mut self) {
        if self.pending_revoke.is_empty() && self.owned != self.target {
            self.advance();
        }
    }

    /// One reconciliation step with no revocation pending. Also runs when the last revoked
    /// task is released, where `owned` may already equal the target but `Assigned` is owed.
    fn advance(&mut self) {
        let revoke: BTreeSet<TaskId> = self
            .owned
            .active
            .difference(&self.target.active)
            .cloned()
            .collect();
        if !revoke.is_empty() {
            self.pending_revoke = revoke.clone();
            self.events
                .push_back(MembershipEvent::Revoke { tasks: revoke });
            return;
        }
        self.owned = self.target.clone();
        self.ack_pending = true;
        self.heartbeat_at = None;
        self.events.push_back(MembershipEvent::Assigned {
            active: self.target.active.clone(),
            standby: self.target.standby_and_warmup(),
        });
    }

    /// Emits `NotReady` on entering the not-ready state or when its status codes change, and
    /// `Ready` on leaving it (or on the first response). Unknown codes never block.
    pub(super) fn update_readiness(&mut self, statuses: &[Status]) {
        let blocking: Vec<StatusCode> = statuses
            .iter()
            .map(|s| s.status_code)
            .filter(|code| code.is_group_not_ready())
            .collect();
        if blocking.is_empty() {
            if self.ready != Some(true) {
                self.ready = Some(true);
                self.not_ready_codes.clear();
                self.events.push_back(MembershipEvent::Ready);
            }
            return;
        }
        if self.ready != Some(false) || self.not_ready_codes != blocking {
            self.ready = Some(false);
            self.not_ready_codes = blocking;
            self.events.push_back(MembershipEvent::NotReady {
                statuses: statuses.to_vec(),
            });
        }
    }
}
