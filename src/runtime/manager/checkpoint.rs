//! When a persistent store's `.checkpoint` is written between clean closes: the policy
//! (`state.checkpoint.records`, `state.checkpoint.interval.ms`) and, per task, the offset and
//! time of the last checkpoint. Decides only; the manager emits the action and the driver
//! makes the store durable and writes the file.
//!
//! Kafka Streams 4.4 writes a task's checkpoint after a commit when its changelog offsets
//! moved by more than 10,000 records since the last one (`OFFSET_DELTA_THRESHOLD_FOR_CHECKPOINT`
//! in `StateManagerUtil`), and during restoration by the same rule. kstate does the same with
//! the threshold configurable, and adds a time bound so that a slow partition's checkpoint
//! does not stay behind for hours: a checkpoint is also due when the offset moved at all and
//! the interval has passed since the last one.

use std::time::{Duration, Instant};

/// How often a persistent store is checkpointed while it runs, restores or follows its
/// changelog as a standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Checkpoint once the changelog offset moved by at least this many records.
    pub records: u64,
    /// Checkpoint once this long has passed since the last one and the offset moved.
    pub interval: Duration,
}

impl CheckpointPolicy {
    /// Kafka Streams' threshold of 10,000 records, and at least every minute.
    pub const DEFAULT: Self = Self {
        records: 10_000,
        interval: Duration::from_secs(60),
    };
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The last checkpoint of one task: the changelog offset it named (`None`: none, or one the
/// store no longer backs) and when it was written (or the task created).
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckpointClock {
    written: Option<i64>,
    at: Instant,
}

impl CheckpointClock {
    pub(super) fn new(written: Option<i64>, now: Instant) -> Self {
        Self { written, at: now }
    }

    /// The store was emptied for a full restore starting after `position`: the old
    /// checkpoint says nothing about it, and records are counted from there.
    pub(super) fn reset(&mut self, position: Option<i64>) {
        self.written = position;
    }

    /// Whether a store holding the changelog up to `offset` is to be checkpointed at `now`.
    pub(super) fn due(&self, policy: &CheckpointPolicy, now: Instant, offset: i64) -> bool {
        let moved = offset - self.written.unwrap_or(-1);
        if moved <= 0 {
            return false;
        }
        u64::try_from(moved).is_ok_and(|m| m >= policy.records)
            || now.saturating_duration_since(self.at) >= policy.interval
    }

    pub(super) fn wrote(&mut self, offset: i64, now: Instant) {
        self.written = Some(offset);
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CheckpointPolicy = CheckpointPolicy {
        records: 100,
        interval: Duration::from_secs(10),
    };

    #[test]
    fn due_after_enough_records_or_enough_time_with_progress() {
        let t0 = Instant::now();
        let mut c = CheckpointClock::new(Some(50), t0);
        assert!(!c.due(&POLICY, t0, 50), "nothing moved");
        assert!(!c.due(&POLICY, t0, 149), "99 records");
        assert!(c.due(&POLICY, t0, 150), "100 records");
        assert!(!c.due(&POLICY, t0 + Duration::from_secs(9), 51));
        assert!(c.due(&POLICY, t0 + Duration::from_secs(10), 51), "time");
        assert!(
            !c.due(&POLICY, t0 + Duration::from_secs(60), 50),
            "time alone writes nothing new"
        );
        c.wrote(150, t0 + Duration::from_secs(1));
        assert!(!c.due(&POLICY, t0 + Duration::from_secs(10), 151));
        assert!(c.due(&POLICY, t0 + Duration::from_secs(11), 151));
    }

    #[test]
    fn without_a_checkpoint_the_records_count_from_the_start() {
        let t0 = Instant::now();
        let c = CheckpointClock::new(None, t0);
        assert!(!c.due(&POLICY, t0, 98), "99 records: offsets 0..=98");
        assert!(c.due(&POLICY, t0, 99));
        let mut reset = CheckpointClock::new(Some(500), t0);
        reset.reset(Some(9));
        assert!(
            !reset.due(&POLICY, t0, 108),
            "counted from the restart point"
        );
        assert!(
            reset.due(&POLICY, t0, 109),
            "a full restore forgets the old one"
        );
    }
}
